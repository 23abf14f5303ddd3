/**
 * The HTTP server's metrics: `http.server.request.duration` recorded where Node creates the
 * response, the route template taken from Effect's router, and the `/metrics` route itself.
 */
import { Context, Effect, Layer, Metric, Tracer } from "effect"
import { HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import { PrometheusMetrics } from "effect/observability"
import type * as Http from "node:http"
import { errorResponse } from "../../Problem.ts"
import * as Worker from "../supervisor/Worker.ts"
import { scrapeAll } from "./Workers.ts"

/** OpenTelemetry's recommended boundaries for `http.server.request.duration`, in seconds. */
export const durationBuckets: ReadonlyArray<number> = [
  0.005,
  0.01,
  0.025,
  0.05,
  0.075,
  0.1,
  0.25,
  0.5,
  0.75,
  1,
  2.5,
  5,
  7.5,
  10
]

const requestDurationName = "http_server_request_duration_seconds"
const requestDurationHelp = "Duration of HTTP server requests (http.server.request.duration)."

/**
 * The request methods OpenTelemetry names; anything else is `_OTHER`, so a client inventing
 * methods cannot mint series. The index is part of a series' numeric key.
 */
const knownMethods = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]
const methodIndex = new Map(knownMethods.map((method, index) => [method, index]))

/**
 * One histogram series, updated with plain arithmetic: Effect's `Metric.update` looks the series
 * up in the registry on every request; here the registry reads the state on a scrape.
 */
class Series {
  private readonly counts = new Float64Array(durationBuckets.length)
  private count = 0
  private sum = 0
  private min = Number.MAX_VALUE
  private max = -Number.MAX_VALUE

  observe(seconds: number): void {
    let bucket = 0
    while (bucket < durationBuckets.length && seconds > durationBuckets[bucket]!) bucket++
    if (bucket < durationBuckets.length) this.counts[bucket]!++
    this.count++
    this.sum += seconds
    if (seconds < this.min) this.min = seconds
    if (seconds > this.max) this.max = seconds
  }

  state(): Metric.HistogramState {
    let cumulated = 0
    const buckets = durationBuckets.map((
      boundary,
      index
    ): [number, number] => [boundary, cumulated += this.counts[index]!])
    return { buckets, count: this.count, min: this.min, max: this.max, sum: this.sum }
  }
}

/** Where the matched route template is left on the Node request for the response to read. */
export const kRoute = Symbol.for("scoped-server/route")

/** Where the request's server span is left for the access-log line (tracing on only). */
export const kSpan = Symbol.for("scoped-server/span")

interface RoutedRequest extends Http.IncomingMessage {
  [kRoute]?: string
  [kSpan]?: Tracer.AnySpan
}

/** The server span the request runs under, when an exporter is installed (Effect's native spans are nobody's trace). */
const recordSpan = (
  fiber: { readonly context: Context.Context<never>; getRef: <A>(ref: Context.Reference<A>) => A },
  source: RoutedRequest
) => {
  const span = Context.getOrUndefined(fiber.context, Tracer.ParentSpan)
  if (span !== undefined && fiber.getRef(Tracer.Tracer) !== Tracer.nativeTracer) source[kSpan] = span
}

/**
 * The per-request bookkeeping the Node response calls: one counter for requests in flight, and
 * one histogram series per (method, route template, status, error type), created once and kept,
 * found again by a number (method, status, finished) within the route's map: no string or label
 * set is built per request. Every label is drawn from a bounded set: known methods or `_OTHER`,
 * the router's templates (none when nothing matched), the status codes the app writes.
 */
export class RequestMetrics {
  active = 0
  private readonly byRoute = new Map<string | undefined, Map<number, Series>>()
  constructor(private readonly context: Context.Context<never>) {}

  end(request: Http.IncomingMessage, status: number, finished: boolean, seconds: number): void {
    this.active--
    const method = methodIndex.get(request.method!) ?? knownMethods.length
    const route = (request as RoutedRequest)[kRoute]
    const key = (method * 1000 + status) * 2 + (finished ? 1 : 0)
    let series = this.byRoute.get(route)
    if (series === undefined) this.byRoute.set(route, series = new Map())
    let handle = series.get(key)
    if (handle === undefined) series.set(key, handle = this.register(method, route, status, finished))
    handle.observe(seconds)
  }

  private register(method: number, route: string | undefined, status: number, finished: boolean): Series {
    // OTel: a 5xx is an error named by its status; a response cut off before its end is `aborted`.
    const errorType = !finished ? "aborted" : status >= 500 ? String(status) : undefined
    const attributes: Record<string, string> = {
      http_request_method: knownMethods[method] ?? "_OTHER",
      http_response_status_code: String(status)
    }
    if (route !== undefined) attributes.http_route = route
    if (errorType !== undefined) attributes.error_type = errorType
    const series = new Series()
    const metric = Metric.histogram(requestDurationName, {
      description: requestDurationHelp,
      boundaries: durationBuckets,
      attributes
    })
    Metric.registerUnsafe(metric, this.context, { get: () => series.state(), update: () => {}, modify: () => {} })
    return series
  }
}

/**
 * Leaves the matched route's template (and, tracing, the server span) on the Node request. Router-global, so it runs around the
 * route lookup; when the handler exits the fiber still holds the route the router found.
 */
export const routeLabel: Layer.Layer<never, never, HttpRouter.HttpRouter> = HttpRouter.middleware(
  (app) =>
    Effect.withFiber((fiber) => {
      const request = Context.getUnsafe(fiber.context, HttpServerRequest.HttpServerRequest)
      recordSpan(fiber, request.source as RoutedRequest)
      return Effect.onExit(app, () => {
        const route = Context.getOrUndefined(fiber.context, HttpRouter.RouteContext)
        if (route !== undefined) (request.source as RoutedRequest)[kRoute] = route.route.path
        return Effect.void
      })
    }),
  { global: true }
)

/** With METRICS=false and tracing on: only the span, for the access-log line. */
export const spanLabel: Layer.Layer<never, never, HttpRouter.HttpRouter> = HttpRouter.middleware(
  (app) =>
    Effect.withFiber((fiber) => {
      recordSpan(fiber, Context.getUnsafe(fiber.context, HttpServerRequest.HttpServerRequest).source as RoutedRequest)
      return app
    }),
  { global: true }
)

const exposition = (body: string) =>
  HttpServerResponse.text(body, { contentType: "text/plain; version=0.0.4; charset=utf-8" })

/**
 * `GET /metrics`: everything in the registry, as Prometheus text 0.0.4. In a supervisor's worker,
 * every worker's series and the supervisor's (see `Workers.ts`), or 503 if the supervisor does not answer.
 */
export const metricsRoute: Layer.Layer<never, never, HttpRouter.HttpRouter> = HttpRouter.add(
  "GET",
  "/metrics",
  Worker.identity === undefined
    ? Effect.map(PrometheusMetrics.format(), exposition)
    : Effect.map(scrapeAll, (body) =>
      body === undefined
        ? errorResponse(503, "the supervisor did not answer with the workers' metrics; try again", {
          "retry-after": "1"
        })
        : exposition(body))
)
