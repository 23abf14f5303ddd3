/**
 * Metrics, the public face: what an app adds to its routes, and what its own code uses to count.
 * Names follow OpenTelemetry's semantic conventions mapped to Prometheus (base units, `_total`).
 */
import { Effect, Layer, Option } from "effect"
import { HttpServer } from "./HttpServer.ts"
import { metricsRoute, routeLabel } from "./metrics/Http.ts"

export { durationBuckets, kRoute, metricsRoute, RequestMetrics, routeLabel } from "./metrics/Http.ts"
export { counter, observe } from "./metrics/Registry.ts"

/**
 * For the app's router: the route template on every request's metric and, when there is no
 * admin server (which serves `/metrics` itself), `GET /metrics` here. Nothing with `METRICS=false`.
 */
export const routes = Layer.unwrap(Effect.gen(function*() {
  const server = yield* HttpServer
  if (!server.metrics) return Layer.empty
  return Option.isSome(server.adminPort) ? routeLabel : Layer.merge(routeLabel, metricsRoute)
}))
