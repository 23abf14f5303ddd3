/**
 * The health registry in-process, on TestClock: per-check timeouts, one shared run for
 * concurrent probes, disabled checks, and registration tied to the owner's scope.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Layer, Scope } from "effect"
import { TestClock } from "effect/testing"
import { Health } from "../../src/kit/Health.ts"

const withHealth = Effect.provide(Health.layer)

describe("Health", () => {
  it.effect("a check that outlives its timeout fails with a message; the others are reported as they are", () =>
    Effect.gen(function*() {
      const health = yield* Health
      yield* health.register("slow", Effect.never, { timeout: "1 second" })
      yield* health.register("fine", Effect.void)
      yield* health.register("broken", Effect.fail(new Error("connection refused")))
      const fiber = yield* Effect.forkChild(health.report)
      yield* TestClock.adjust("1 second")
      const report = yield* Fiber.join(fiber)
      assert.isFalse(report.healthy)
      assert.deepStrictEqual(report.checks, {
        slow: { status: "failed", latencyMs: 1000, error: "timed out after 1000ms" },
        fine: { status: "ok", latencyMs: 0 },
        broken: { status: "failed", latencyMs: 0, error: "connection refused" }
      })
    }).pipe(Effect.scoped, withHealth))

  it.effect("concurrent probes share one run of the checks", () =>
    Effect.gen(function*() {
      const health = yield* Health
      let runs = 0
      yield* health.register("db", Effect.andThen(Effect.sync(() => runs++), Effect.sleep("100 millis")))
      const fibers = yield* Effect.forEach(Array.from({ length: 10 }), () => Effect.forkChild(health.report))
      yield* TestClock.adjust("100 millis")
      const reports = yield* Effect.forEach(fibers, Fiber.join)
      assert.strictEqual(runs, 1)
      assert.isTrue(reports.every((report) => report === reports[0]))
      // The next probe after the run runs the checks again: nothing stale is served.
      const next = yield* Effect.forkChild(health.report)
      yield* TestClock.adjust("100 millis")
      yield* Fiber.join(next)
      assert.strictEqual(runs, 2)
    }).pipe(Effect.scoped, withHealth))

  it.effect("a probe that goes away does not cancel the run the others are waiting for", () =>
    Effect.gen(function*() {
      const health = yield* Health
      yield* health.register("db", Effect.sleep("100 millis"))
      const leaver = yield* Effect.forkChild(health.report)
      const stayer = yield* Effect.forkChild(health.report)
      yield* Effect.yieldNow
      yield* Fiber.interrupt(leaver)
      yield* TestClock.adjust("100 millis")
      const report = yield* Fiber.join(stayer)
      assert.deepStrictEqual(report.checks.db, { status: "ok", latencyMs: 100 })
    }).pipe(Effect.scoped, withHealth))

  it.effect("a disabled dependency is shown and never fails health", () =>
    Effect.gen(function*() {
      const health = yield* Health
      yield* health.registerDisabled("redis")
      const report = yield* health.report
      assert.isTrue(report.healthy)
      assert.deepStrictEqual(report.checks, { redis: { status: "disabled", latencyMs: 0 } })
    }).pipe(Effect.scoped, withHealth))

  it.effect("a check lives as long as the scope that registered it", () =>
    Effect.gen(function*() {
      const health = yield* Health
      const owner = yield* Scope.make()
      yield* health.register("cache", Effect.fail("down")).pipe(Scope.provide(owner))
      assert.isFalse((yield* health.report).healthy)
      yield* Scope.close(owner, Exit.void)
      assert.deepStrictEqual(yield* health.report, { healthy: true, degraded: false, checks: {} })
    }).pipe(Effect.scoped, withHealth))

  it.effect("a failing non-critical check is degraded: shown with its error, readiness kept", () =>
    Effect.gen(function*() {
      const health = yield* Health
      yield* health.register("redis", Effect.fail(new Error("connection refused")), { critical: false })
      yield* health.register("database", Effect.void)
      const report = yield* health.report
      assert.isTrue(report.healthy)
      assert.isTrue(report.degraded)
      assert.deepStrictEqual(report.checks.redis, { status: "degraded", latencyMs: 0, error: "connection refused" })
      // A critical failure still fails readiness, degraded or not.
      yield* health.register("queue", Effect.fail(new Error("down")))
      const failing = yield* health.report
      assert.isFalse(failing.healthy)
      assert.strictEqual(failing.checks.queue?.status, "failed")
    }).pipe(Effect.scoped, withHealth))

  it.effect("HEALTH_CHECK_TIMEOUT is the default bound", () =>
    Effect.gen(function*() {
      const health = yield* Health
      yield* health.register("slow", Effect.never)
      const fiber = yield* Effect.forkChild(health.report)
      yield* TestClock.adjust("2 seconds")
      const report = yield* Fiber.join(fiber)
      assert.strictEqual(report.checks.slow?.error, "timed out after 2000ms")
    }).pipe(Effect.scoped, Effect.provide(Health.layer.pipe(Layer.fresh))))
})
