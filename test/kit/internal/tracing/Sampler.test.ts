/**
 * The sampler's decision per the OpenTelemetry SDK's samplers, its ratio on the trace id's random
 * bits, its settings refused in one line, and the tracer it wraps deciding only where a trace enters.
 */
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Effect, Exit, Option, Result, Tracer } from "effect"
import { HttpTraceContext } from "effect/http"
import * as Sampler from "../../../../src/kit/internal/tracing/Sampler.ts"
import { describeCause } from "../../../../src/kit/Log.ts"

const randomTraceId = () => Array.from({ length: 32 }, () => Math.floor(Math.random() * 16).toString(16)).join("")

/** A trace id whose rightmost 56 bits are `low56` (14 hex digits). */
const withLow56 = (low56: string) => "0123456789abcdef00" + low56

describe("traceIdRatio", () => {
  it("samples nothing at 0 and everything at 1", () => {
    const never = Sampler.traceIdRatio(0)
    const always = Sampler.traceIdRatio(1)
    for (const id of [withLow56("ffffffffffffff"), withLow56("00000000000000"), randomTraceId()]) {
      assert.isFalse(never(id), id)
      assert.isTrue(always(id), id)
    }
  })

  it("compares the rightmost 56 bits with (1 − ratio) · 2^56, exactly at the boundary", () => {
    const half = Sampler.traceIdRatio(0.5)
    assert.isTrue(half(withLow56("80000000000000")))
    assert.isFalse(half(withLow56("7fffffffffffff")))
    // The leftmost bits play no part.
    assert.isTrue(half("ffffffffffffffff0080000000000000"))
    assert.isFalse(half("ffffffffffffffff7f7fffffffffffff"))
    // 0.25: threshold 0xc0000000000000, across the 24/32-bit split.
    const quarter = Sampler.traceIdRatio(0.25)
    assert.isTrue(quarter(withLow56("c0000000000000")))
    assert.isFalse(quarter(withLow56("bfffffffffffff")))
    assert.isTrue(quarter(withLow56("c0000100000000")))
    assert.isFalse(quarter(withLow56("bfffff00000000")))
  })

  it("is deterministic, monotone in the ratio, and samples the ratio's share of random ids", () => {
    const ratios = [0.01, 0.1, 0.25, 0.5, 0.9]
    const deciders = ratios.map(Sampler.traceIdRatio)
    const counts = ratios.map(() => 0)
    const n = 20_000
    for (let i = 0; i < n; i++) {
      const id = randomTraceId()
      let sampledBelow = false
      deciders.forEach((decide, index) => {
        const sampled = decide(id)
        assert.strictEqual(decide(id), sampled)
        // Sampled at a lower ratio means sampled at every higher one.
        if (sampledBelow) assert.isTrue(sampled, `${id} at ${ratios[index]}`)
        sampledBelow ||= sampled
        if (sampled) counts[index]!++
      })
    }
    ratios.forEach((ratio, index) => {
      // Binomial: 5 standard deviations either side.
      const bound = 5 * Math.sqrt(n * ratio * (1 - ratio))
      assert.approximately(counts[index]!, n * ratio, bound, `ratio ${ratio}`)
    })
  })
})

describe("decider", () => {
  // [sampler, ratio] → decisions for [new trace, remote parent sampled, remote parent not sampled]
  const table: Array<[Sampler.SamplerName, number, [boolean, boolean, boolean]]> = [
    ["always_on", 1, [true, true, true]],
    ["always_off", 1, [false, false, false]],
    ["traceidratio", 0, [false, false, false]],
    ["traceidratio", 1, [true, true, true]],
    ["parentbased_always_on", 1, [true, true, false]],
    ["parentbased_always_off", 1, [false, true, false]],
    ["parentbased_traceidratio", 0, [false, true, false]],
    ["parentbased_traceidratio", 1, [true, true, false]]
  ]
  it("follows the spec's samplers: the parent-based ones follow a remote parent, the others decide alone", () => {
    for (const [sampler, ratio, expected] of table) {
      const decide = Sampler.decider({ sampler, ratio })
      const id = randomTraceId()
      assert.deepStrictEqual(
        [decide(id, undefined), decide(id, true), decide(id, false)],
        expected,
        `${sampler} ${ratio}`
      )
    }
  })

  it("decides a new trace by the ratio on its id under traceidratio and parentbased_traceidratio", () => {
    for (const sampler of ["traceidratio", "parentbased_traceidratio"] as const) {
      const decide = Sampler.decider({ sampler, ratio: 0.5 })
      assert.isTrue(decide(withLow56("80000000000000"), undefined))
      assert.isFalse(decide(withLow56("7fffffffffffff"), undefined))
    }
    // Plain traceidratio decides a remote parent's trace by its id too, whatever the flag says.
    const plain = Sampler.decider({ sampler: "traceidratio", ratio: 0.5 })
    assert.isFalse(plain(withLow56("7fffffffffffff"), true))
    assert.isTrue(plain(withLow56("80000000000000"), false))
  })
})

const read = (env: Record<string, string>) =>
  Effect.map(
    Effect.exit(Sampler.SamplerConfig.parse(ConfigProvider.fromEnv({ env }))),
    (exit) => Exit.isSuccess(exit) ? { value: exit.value } : { error: describeCause(exit.cause) }
  )

describe("SamplerConfig", () => {
  it.effect("defaults to parentbased_always_on, reads every spec sampler in any case, the ratio defaulting to 1", () =>
    Effect.gen(function*() {
      assert.deepStrictEqual(yield* read({}), { value: { sampler: "parentbased_always_on", ratio: 1 } })
      // Empty is unset, as the spec says for every variable.
      assert.deepStrictEqual(yield* read({ OTEL_TRACES_SAMPLER: "", OTEL_TRACES_SAMPLER_ARG: "" }), {
        value: { sampler: "parentbased_always_on", ratio: 1 }
      })
      for (const name of Sampler.samplerNames) {
        assert.deepStrictEqual(yield* read({ OTEL_TRACES_SAMPLER: name }), { value: { sampler: name, ratio: 1 } })
      }
      assert.deepStrictEqual(yield* read({ OTEL_TRACES_SAMPLER: "TraceIdRatio", OTEL_TRACES_SAMPLER_ARG: " 0.25 " }), {
        value: { sampler: "traceidratio", ratio: 0.25 }
      })
      assert.deepStrictEqual(
        yield* read({ OTEL_TRACES_SAMPLER: "parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG: "0" }),
        { value: { sampler: "parentbased_traceidratio", ratio: 0 } }
      )
    }))

  it.effect("refuses an unknown sampler, a bad or out-of-range ratio, and an argument to a sampler without one, in one line", () =>
    Effect.gen(function*() {
      const refused = function*(env: Record<string, string>) {
        const result = yield* read(env)
        assert.isTrue("error" in result, `${JSON.stringify(env)} was accepted`)
        const line = (result as { error: string }).error
        assert.notInclude(line, "\n")
        return line
      }
      assert.strictEqual(
        yield* refused({ OTEL_TRACES_SAMPLER: "jaeger_remote" }),
        `invalid configuration: OTEL_TRACES_SAMPLER: "jaeger_remote" is not one of ${Sampler.samplerNames.join(", ")}`
      )
      assert.strictEqual(
        yield* refused({ OTEL_TRACES_SAMPLER: "traceidratio", OTEL_TRACES_SAMPLER_ARG: "1.5" }),
        "invalid configuration: OTEL_TRACES_SAMPLER_ARG: 1.5 is out of range; expected from 0 to 1"
      )
      assert.strictEqual(
        yield* refused({ OTEL_TRACES_SAMPLER: "traceidratio", OTEL_TRACES_SAMPLER_ARG: "1e1" }),
        "invalid configuration: OTEL_TRACES_SAMPLER_ARG: 1e1 is out of range; expected from 0 to 1"
      )
      for (const arg of ["-0.1", "half", "50%", "NaN", "Infinity", "0x1", "1e", " "]) {
        assert.match(
          yield* refused({ OTEL_TRACES_SAMPLER: "parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG: arg }),
          /^invalid configuration: OTEL_TRACES_SAMPLER_ARG: .* is not a ratio; write a number from 0 to 1/,
          arg
        )
      }
      assert.strictEqual(
        yield* refused({ OTEL_TRACES_SAMPLER: "always_on", OTEL_TRACES_SAMPLER_ARG: "0.1" }),
        "invalid configuration: OTEL_TRACES_SAMPLER_ARG is set but OTEL_TRACES_SAMPLER=always_on takes no argument; " +
          "unset it, or use traceidratio or parentbased_traceidratio"
      )
      // Unset, the sampler is the default, which takes no argument either.
      assert.match(yield* refused({ OTEL_TRACES_SAMPLER_ARG: "0.5" }), /OTEL_TRACES_SAMPLER=parentbased_always_on/)
    }))

  it("parses ratios as written", () => {
    for (
      const [raw, value] of [
        ["0", 0],
        ["1", 1],
        ["1.0", 1],
        [".5", 0.5],
        ["0.125", 0.125],
        ["1.", 1],
        // Other SDKs parse the argument as a float, so a ratio copied from their configuration reads the same.
        ["1e-3", 0.001],
        ["2.5E-1", 0.25],
        ["1e+0", 1]
      ] as const
    ) {
      assert.deepStrictEqual(Sampler.parseRatio(raw), Result.succeed(value), raw)
    }
  })
})

/** Effect's own in-memory tracer, recording every span it made: the exporter's stand-in. */
const recording = () => {
  const made: Array<Tracer.Span> = []
  const inner = Tracer.make({
    span(options) {
      const span = Tracer.nativeTracer.span(options)
      made.push(span)
      return span
    }
  })
  return { made, inner }
}

/** The root span, its child and grandchild, under `tracer`, optionally below a remote parent. */
const trace = (tracer: Tracer.Tracer, parent?: Tracer.ExternalSpan) =>
  Effect.gen(function*() {
    const root = yield* Effect.currentSpan
    const [child, grandchild] = yield* Effect.currentSpan.pipe(
      Effect.flatMap((child) => Effect.map(Effect.currentSpan.pipe(Effect.withSpan("grandchild")), (g) => [child, g])),
      Effect.withSpan("child")
    )
    return [root, child!, grandchild!] as const
  }).pipe(
    Effect.withSpan("root", { kind: "server", ...(parent === undefined ? {} : { parent }) }),
    Effect.withTracer(tracer),
    Effect.runSync
  )

const remote = (sampled: boolean) =>
  Tracer.externalSpan({ traceId: randomTraceId(), spanId: "0123456789abcdef", sampled })

describe("tracer", () => {
  it("decides a new trace on the id the inner tracer generated; children inherit; ids stay for correlation", () => {
    for (let i = 0; i < 50; i++) {
      const { inner, made } = recording()
      const spans = trace(Sampler.tracer(inner, { sampler: "traceidratio", ratio: 0.5 }))
      const generated = made[0]!.traceId
      const expected = Sampler.traceIdRatio(0.5)(generated)
      for (const span of spans) {
        assert.strictEqual(span.traceId, generated)
        assert.strictEqual(span.sampled, expected, span.name)
        assert.match(span.spanId, /^[0-9a-f]{16}$/)
      }
      assert.strictEqual(Option.getOrUndefined(spans[1].parent), spans[0])
    }
  })

  it("drops every trace under always_off, still giving each span its ids", () => {
    const { inner } = recording()
    const spans = trace(Sampler.tracer(inner, { sampler: "always_off", ratio: 1 }))
    assert.deepStrictEqual(spans.map((span) => span.sampled), [false, false, false])
    assert.strictEqual(new Set(spans.map((span) => span.traceId)).size, 1)
    assert.strictEqual(new Set(spans.map((span) => span.spanId)).size, 3)
    // An outgoing call from inside still continues the trace, marked not sampled.
    const [root, child] = spans
    assert.strictEqual(HttpTraceContext.toHeaders(child).traceparent, `00-${root.traceId}-${child.spanId}-00`)
  })

  it("follows a remote parent's flag only in the parent-based variants", () => {
    const cases: Array<[Sampler.SamplerName, boolean, boolean]> = [
      ["parentbased_traceidratio", true, true],
      ["parentbased_traceidratio", false, false],
      ["traceidratio", true, false],
      ["parentbased_always_off", true, true],
      ["always_on", false, true],
      ["always_off", true, false]
    ]
    for (const [sampler, flag, expected] of cases) {
      const parent = remote(flag)
      const spans = trace(Sampler.tracer(recording().inner, { sampler, ratio: 0 }), parent)
      for (const span of spans) {
        assert.strictEqual(span.traceId, parent.traceId)
        assert.strictEqual(span.sampled, expected, `${sampler} under ${flag ? "01" : "00"}: ${span.name}`)
      }
    }
  })

  it("keeps Effect's trace-level filter under a sampled remote parent", () => {
    const span = Effect.currentSpan.pipe(
      Effect.withSpan("debug", { parent: remote(true), level: "Debug" }),
      Effect.withTracer(Sampler.tracer(recording().inner, { sampler: "always_on", ratio: 1 })),
      Effect.provideService(Tracer.MinimumTraceLevel, "Info"),
      Effect.runSync
    )
    assert.isFalse(span.sampled)
  })
})
