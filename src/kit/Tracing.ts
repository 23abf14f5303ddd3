/**
 * Traces, logs and metrics over OTLP/HTTP through Effect's own exporters, when the standard
 * OTEL_* variables name an endpoint; the exporters are one lifecycle resource, flushed after the drain.
 */
import { Config, ConfigProvider, Context, Effect, Layer, Option, References, Tracer } from "effect"
import { FetchHttpClient, HttpMiddleware, type HttpServerRequest } from "effect/http"
import { Otlp, OtlpSerialization } from "effect/observability"
import * as Sampler from "./internal/tracing/Sampler.ts"
import * as Lifecycle from "./Lifecycle.ts"
import * as Settings from "./Settings.ts"

/**
 * The OpenTelemetry SDK's own variables: Effect reads the endpoint, per-signal endpoints,
 * headers, timeouts, batch sizes and resource from them; these decide whether anything runs.
 */
export const TracingConfig = Config.all({
  endpoint: Config.option(Config.NonEmptyString("OTEL_EXPORTER_OTLP_ENDPOINT")),
  tracesEndpoint: Config.option(Config.NonEmptyString("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")),
  logsEndpoint: Config.option(Config.NonEmptyString("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT")),
  metricsEndpoint: Config.option(Config.NonEmptyString("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")),
  sdkDisabled: Settings.boolean("OTEL_SDK_DISABLED", { default: false }),
  /** The spec's default is protobuf; `http/json` is easier to read off the wire. */
  protocol: Settings.literal("OTEL_EXPORTER_OTLP_PROTOCOL", ["http/protobuf", "http/json"], {
    default: "http/protobuf"
  }),
  serviceName: Config.option(Config.NonEmptyString("OTEL_SERVICE_NAME")),
  resourceAttributes: Config.option(Config.String("OTEL_RESOURCE_ATTRIBUTES")),
  /** `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`, checked even while tracing is off. */
  sampler: Sampler.SamplerConfig
})
export type TracingSettings = Config.Success<typeof TracingConfig>

/** Probes and scrapes: frequent, uninteresting, and they would crowd out every real trace. */
export const untracedPaths: ReadonlyArray<string> = ["/livez", "/readyz", "/health", "/metrics"]

const untraced = (paths: ReadonlyArray<string>) => {
  const set = new Set(paths)
  return (request: HttpServerRequest.HttpServerRequest) => {
    const query = request.url.indexOf("?")
    return set.has(query === -1 ? request.url : request.url.slice(0, query))
  }
}

const isConfigured = (settings: TracingSettings) =>
  !settings.sdkDisabled && [settings.endpoint, settings.tracesEndpoint, settings.logsEndpoint, settings.metricsEndpoint]
    .some(Option.isSome)

/**
 * The exporters' context with their tracer wrapped by the sampler. Only there: with no trace
 * exporter (no endpoint, or `OTEL_TRACES_EXPORTER=none`) there is nothing to sample, and the spec's
 * default sampler is what Effect does already, so it installs nothing either.
 */
const withSampler = (sampler: Sampler.SamplerSettings) => <R>(context: Context.Context<R>): Context.Context<R> => {
  const inner = Context.getOrUndefined(context, Tracer.Tracer)
  return inner === undefined || Sampler.isDefault(sampler)
    ? context
    : Context.add(context, Tracer.Tracer, Sampler.tracer(inner, sampler))
}

const tracerDisabled: Layer.Layer<never> = Layer.succeed(References.TracerEnabled)(false)

/**
 * The exporters for `settings`, as one resource: built before the server (so released after it
 * has drained), flushed on release within the exporters' own timeout and `RELEASE_TIMEOUT`.
 * With no endpoint set, tracing is off (`References.TracerEnabled`): the server then takes Effect's
 * untraced path, and no span is made below it either. An application that brings a tracer of its
 * own provides it with `References.TracerEnabled` set back to true, or sets an OTLP endpoint.
 */
export const layer = (settings: TracingSettings): Layer.Layer<never, never, Lifecycle.Lifecycle> => {
  // No exporter: spans are not built at all (Effect's no-op span, no clock reads, no attributes),
  // not built and dropped; that is the server span and every SQL and Redis span of a request.
  if (!isConfigured(settings)) return tracerDisabled
  const named = Option.isSome(settings.serviceName) ||
    Option.exists(settings.resourceAttributes, (attributes) => /(^|,)\s*service\.name\s*=/.test(attributes))
  const exporters = Otlp.layerFromConfig({
    resource: named ? undefined : { serviceName: "scoped-server" },
    loggerMergeWithExisting: true
  }).pipe(
    Layer.provide(settings.protocol === "http/json" ? OtlpSerialization.layerJson : OtlpSerialization.layerProtobuf),
    Layer.provide(FetchHttpClient.layer),
    // The SDK's default for each OTEL_<SIGNAL>_EXPORTER is `otlp`; Effect's is none. Set, they win.
    Layer.provide(ConfigProvider.layerAdd(ConfigProvider.fromUnknown({
      OTEL_TRACES_EXPORTER: ["otlp"],
      OTEL_LOGS_EXPORTER: ["otlp"],
      OTEL_METRICS_EXPORTER: ["otlp"]
    })))
  )
  return Layer.effectContext(
    Lifecycle.resource("telemetry", Effect.map(Layer.build(exporters), withSampler(settings.sampler)))
  ).pipe(
    Layer.merge(Layer.succeed(HttpMiddleware.TracerDisabledWhen)(untraced(untracedPaths)))
  ) as Layer.Layer<never, never, Lifecycle.Lifecycle>
}

/** `layer` with the settings read from the environment (`TracingConfig`). */
export const layerConfig: Layer.Layer<never, Config.ConfigError, Lifecycle.Lifecycle> = Layer.unwrap(
  Effect.map(TracingConfig, layer)
)
