/**
 * Metrics, the public face: what an app adds to its routes, and what its own code uses to count.
 * Names follow OpenTelemetry's semantic conventions mapped to Prometheus (base units, `_total`).
 */
import { Effect, Layer, Option, Tracer } from "effect"
import type { Generations } from "./Cache.ts"
import { HttpServer } from "./HttpServer.ts"
import { metricsRoute, routeLabel, spanLabel } from "./internal/metrics/Http.ts"
import { observe } from "./internal/metrics/Registry.ts"

export {
  durationBuckets,
  kRoute,
  kSpan,
  metricsRoute,
  RequestMetrics,
  routeLabel,
  spanLabel
} from "./internal/metrics/Http.ts"
export { counter, observe } from "./internal/metrics/Registry.ts"

/**
 * For the app's router: the route template on every request's metric and, when there is no
 * admin server (which serves `/metrics` itself), `GET /metrics` here; the server span for the
 * access log when tracing. Nothing with `METRICS=false` and tracing off.
 */
export const routes = Layer.unwrap(Effect.gen(function*() {
  const server = yield* HttpServer
  // The access log's trace ids come from the same middleware; without metrics it runs only when tracing.
  if (!server.metrics) return (yield* Tracer.Tracer) === Tracer.nativeTracer ? Layer.empty : spanLabel
  return Option.isSome(server.adminPort) ? routeLabel : Layer.merge(routeLabel, metricsRoute)
}))

/**
 * A cache's reads as `scoped_server_cache_requests_total{cache, result}` (hit, miss, bypass), read
 * on a scrape from the counts `generations` keeps; registered for the caller's scope.
 */
export const observeCache = (generations: Generations) =>
  Effect.forEach(["hit", "miss", "bypass"] as const, (result) =>
    observe(
      "scoped_server_cache_requests_total",
      "Cache reads: hit (served from the cache), miss (computed and filed), bypass (computed; the cache's state was not known).",
      () => generations.counts[result],
      { counter: true, attributes: { cache: generations.name, result } }
    ), { discard: true })
