/**
 * Head sampling per the OpenTelemetry SDK's OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG: a tracer
 * that wraps the exporter's and decides, where a trace enters this process, whether it is exported.
 */
import { Config, Effect, Option, Result, Tracer } from "effect"
import * as Settings from "../../Settings.ts"

/** The spec's built-in samplers, less the remote ones (`jaeger_remote`, `xray`) that need a sampling server. */
export const samplerNames = [
  "always_on",
  "always_off",
  "traceidratio",
  "parentbased_always_on",
  "parentbased_always_off",
  "parentbased_traceidratio"
] as const
export type SamplerName = typeof samplerNames[number]

export interface SamplerSettings {
  readonly sampler: SamplerName
  /** The probability of the ratio samplers, 0 to 1; 1 for the others. */
  readonly ratio: number
}

/** The spec's default: a parent's decision is followed, every new trace is sampled. Effect does this by itself. */
export const defaultSampler: SamplerSettings = { sampler: "parentbased_always_on", ratio: 1 }

const takesRatio = (sampler: SamplerName) => sampler === "traceidratio" || sampler === "parentbased_traceidratio"

// With an exponent, as the Java, Go and JavaScript SDKs read the argument (`1e-3`); never NaN, Infinity or hex.
const decimal = /^(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?$/i

/** `0`, `0.25`, `.5`, `1.0`, `1e-3`: a probability. */
export const parseRatio = (raw: string): Result.Result<number, string> => {
  const text = raw.trim()
  const value = Number(text)
  if (!decimal.test(text)) {
    return Result.fail(`${JSON.stringify(raw)} is not a ratio; write a number from 0 to 1, e.g. 0.25`)
  }
  if (value > 1) return Result.fail(`${text} is out of range; expected from 0 to 1`)
  return Result.succeed(value)
}

/**
 * The SDK's variables. The spec says an unknown sampler or a bad argument is logged and replaced by
 * the default; this project refuses to start instead, in one line naming the variable, as it does
 * for every other setting. An argument given to a sampler that takes none is refused as a conflict:
 * it is almost always a ratio meant for `traceidratio`.
 */
export const SamplerConfig: Config.Config<SamplerSettings> = Config.all({
  sampler: Settings.literal("OTEL_TRACES_SAMPLER", samplerNames, { default: defaultSampler.sampler }),
  ratio: Config.option(Settings.parsed("OTEL_TRACES_SAMPLER_ARG", parseRatio))
}).pipe(Config.mapEffect(({ ratio, sampler }) =>
  Option.isSome(ratio) && !takesRatio(sampler)
    ? Effect.fail(Settings.conflict(
      `OTEL_TRACES_SAMPLER_ARG is set but OTEL_TRACES_SAMPLER=${sampler} takes no argument; ` +
        "unset it, or use traceidratio or parentbased_traceidratio"
    ))
    : Effect.succeed({ sampler, ratio: Option.getOrElse(ratio, () => 1) })
))

/**
 * Whether a trace entering this process is sampled: a new trace (`parentSampled` undefined) or one
 * continued from a remote parent with its sampled flag. Spans under a local parent never ask: they
 * inherit, so a trace is exported whole or not at all.
 */
export type Decide = (traceId: string, parentSampled: boolean | undefined) => boolean

const two56 = 2n ** 56n

/**
 * TraceIdRatioBased: sampled when the trace id's rightmost 56 bits (the part W3C Trace Context
 * level 2 requires to be random) are at least `(1 − ratio) · 2^56`. Deterministic per trace id, so
 * every process with the same ratio agrees, and a trace sampled at one ratio is sampled at any
 * higher one (the spec's two requirements); OpenTelemetry's consistent-probability samplers use the
 * same bits and comparison. Compared as two numbers (24 and 32 bits) so no BigInt is made per trace.
 */
export const traceIdRatio = (ratio: number): (traceId: string) => boolean => {
  if (ratio >= 1) return () => true
  if (ratio <= 0) return () => false
  const threshold = two56 - BigInt(Math.round(ratio * 2 ** 56))
  const high = Number(threshold >> 32n)
  const low = Number(threshold & 0xffffffffn)
  return (traceId) => {
    const id = traceId.length >= 14 ? traceId : traceId.padStart(14, "0")
    const idHigh = Number.parseInt(id.slice(-14, -8), 16)
    const idLow = Number.parseInt(id.slice(-8), 16)
    return idHigh > high || (idHigh === high && idLow >= low)
  }
}

/** The decision function for `settings`. */
export const decider = (settings: SamplerSettings): Decide => {
  switch (settings.sampler) {
    case "always_on":
      return () => true
    case "always_off":
      return () => false
    case "traceidratio":
      return traceIdRatio(settings.ratio)
    case "parentbased_always_on":
      return (_, parentSampled) => parentSampled ?? true
    case "parentbased_always_off":
      return (_, parentSampled) => parentSampled ?? false
    case "parentbased_traceidratio": {
      const root = traceIdRatio(settings.ratio)
      return (traceId, parentSampled) => parentSampled ?? root(traceId)
    }
  }
}

/**
 * A span this process does not record: it keeps the trace id that was decided on and has its own
 * span id, so logs still correlate and outgoing calls still carry `traceparent` with flag 00 (the
 * spec's non-recording span); nothing under it is sampled, as Effect does not sample the child of
 * an unsampled parent.
 */
class UnsampledSpan extends Tracer.NativeSpan {
  constructor(options: ConstructorParameters<typeof Tracer.NativeSpan>[0], private readonly decidedTraceId: string) {
    super({ ...options, sampled: false })
  }
  override get traceId(): string {
    return this.decidedTraceId
  }
}

/**
 * `inner` (the exporter's tracer) with `settings` applied where a trace enters this process. A new
 * trace's id is the one `inner` generated, so the decision is deterministic on the id that is
 * exported or propagated. Spans with a local parent go straight to `inner` with Effect's own
 * decision, which is the parent's.
 */
export const tracer = (inner: Tracer.Tracer, settings: SamplerSettings): Tracer.Tracer => {
  const decide = decider(settings)
  return Tracer.make({
    span(options) {
      const parent = options.parent
      if (Option.isSome(parent)) {
        if (parent.value._tag === "Span") return inner.span(options)
        // Effect has already set `sampled` false under an unsampled remote parent; under a sampled
        // one it carries the trace-level filter, which the decision must not override.
        const sampled = decide(parent.value.traceId, parent.value.sampled) &&
          (options.sampled || !parent.value.sampled)
        return inner.span(sampled === options.sampled ? options : { ...options, sampled })
      }
      if (!options.sampled) return inner.span(options)
      const span = inner.span(options)
      return decide(span.traceId, undefined) ? span : new UnsampledSpan(options, span.traceId)
    },
    ...(inner.context === undefined ? {} : { context: inner.context })
  })
}

/** Whether `settings` changes anything over Effect's own behaviour (the spec's default does not). */
export const isDefault = (settings: SamplerSettings): boolean => settings.sampler === "parentbased_always_on"
