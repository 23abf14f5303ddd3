/**
 * The HTTP server's metrics: `http.server.request.duration` recorded where Node creates the
 * response, the route template taken from Effect's router, and the `/metrics` route itself.
 */
import { Context, Effect, Layer, Metric } from "effect"
import { HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import { PrometheusMetrics } from "effect/observability"
import type * as Http from "node:http"
import { errorResponse } from "../http/Problem.ts"
import * as Worker from "../supervisor/Worker.ts"
import { scrapeAll } from "./Workers.ts"

/** OpenTelemetry's recommended boundaries for `http.server.request.duration`, in seconds. */
export const durationBuckets: ReadonlyArray<number> = [
  0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10
]

const requestDuration = Metric.histogram("http_server_request_duration_seconds", {
  description: "Duration of HTTP server requests (http.server.request.duration).",
  boundaries: durationBuckets
})

/**
 * The request methods OpenTelemetry names; anything else is `_OTHER`, so a client inventing
 * methods cannot mint series.
 */
const knownMethods = new Set(["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"])

/** Where the matched route template is left on the Node request for the response to read. */
export const kRoute = Symbol.for("scoped-server/route")

interface RoutedRequest extends Http.IncomingMessage {
  [kRoute]?: string
}

/**
 * The per-request bookkeeping the Node response calls: one counter for requests in flight, and
 * one histogram series per (method, route template, status, error type), resolved once and kept.
 * Every label is drawn from a bounded set: known methods or `_OTHER`, the router's templates
 * (none when nothing matched), the status codes the app writes.
 */
export class RequestMetrics {
  active = 0
  private readonly series = new Map<string, Metric.Metric<number, Metric.HistogramState>>()
  constructor(private readonly context: Context.Context<never>) {}

  end(request: Http.IncomingMessage, status: number, finished: boolean, seconds: number): void {
    this.active--
    const method = knownMethods.has(request.method!) ? request.method! : "_OTHER"
    const route = (request as RoutedRequest)[kRoute]
    // OTel: a 5xx is an error named by its status; a response cut off before its end is `aborted`.
    const errorType = !finished ? "aborted" : status >= 500 ? String(status) : undefined
    const key = `${method} ${status} ${route} ${errorType}`
    let metric = this.series.get(key)
    if (metric === undefined) {
      const attributes: Record<string, string> = {
        http_request_method: method,
        http_response_status_code: String(status)
      }
      if (route !== undefined) attributes.http_route = route
      if (errorType !== undefined) attributes.error_type = errorType
      metric = Metric.withAttributes(requestDuration, attributes)
      this.series.set(key, metric)
    }
    metric.updateUnsafe(seconds, this.context)
  }
}

/**
 * Leaves the matched route's template on the Node request. Router-global, so it runs around the
 * route lookup; when the handler exits the fiber still holds the route the router found.
 */
export const routeLabel: Layer.Layer<never, never, HttpRouter.HttpRouter> = HttpRouter.middleware(
  (app) =>
    Effect.withFiber((fiber) => {
      const request = Context.getUnsafe(fiber.context, HttpServerRequest.HttpServerRequest)
      return Effect.onExit(app, () => {
        const route = Context.getOrUndefined(fiber.context, HttpRouter.RouteContext)
        if (route !== undefined) (request.source as RoutedRequest)[kRoute] = route.route.path
        return Effect.void
      })
    }),
  { global: true }
)

const exposition = (body: string) => HttpServerResponse.text(body, { contentType: "text/plain; version=0.0.4; charset=utf-8" })

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
        ? errorResponse(503, "the supervisor did not answer with the workers' metrics; try again", { "retry-after": "1" })
        : exposition(body))
)

