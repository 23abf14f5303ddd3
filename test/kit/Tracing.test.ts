/**
 * Tracing off costs nothing: with no OTLP endpoint (or OTEL_SDK_DISABLED=true) the tracer is
 * disabled, so `withSpan` (sql-pg's per-query spans, the server span) builds Effect's no-op span.
 * With an endpoint spans are real: test/kit/Tracing.process.test.ts exports them.
 */
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Effect, Layer, References } from "effect"
import * as Tracing from "../../src/kit/Tracing.ts"

const settings = (env: Record<string, string>) => Tracing.TracingConfig.parse(ConfigProvider.fromEnv({ env }))

/** What code under `Tracing.layer` sees: whether tracing is on, and the span `withSpan` makes. */
const seen = Effect.gen(function*() {
  const enabled = yield* References.TracerEnabled
  const span = yield* Effect.currentSpan.pipe(Effect.withSpan("query"))
  return { enabled, sampled: span.sampled, spanType: span.constructor.name }
})

describe("Tracing.layer without an exporter", () => {
  for (
    const [name, env] of [
      ["no endpoint", {}],
      ["OTEL_SDK_DISABLED=true beside an endpoint", {
        OTEL_SDK_DISABLED: "true",
        OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318"
      }]
    ] as const
  ) {
    it.effect(`${name}: the tracer is disabled, and a span is the no-op one`, () =>
      Effect.gen(function*() {
        const layer = Tracing.layer(yield* settings(env)) as Layer.Layer<never>
        const inside = yield* seen.pipe(Effect.provide(layer))
        assert.deepStrictEqual({ enabled: inside.enabled, sampled: inside.sampled }, { enabled: false, sampled: false })
        // Outside it, Effect's default: a real (native) span.
        const outside = yield* seen
        assert.deepStrictEqual({ enabled: outside.enabled, sampled: outside.sampled }, { enabled: true, sampled: true })
        assert.notStrictEqual(inside.spanType, outside.spanType)
      }))
  }
})
