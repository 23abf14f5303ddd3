/**
 * The lifecycle kernel in-process, on TestClock: reverse release order, the deadline race,
 * bounded releases and the exit code each outcome earns.
 */
import { assert, describe, it } from "@effect/vitest"
import { Deferred, type Duration, Effect, Fiber, Layer } from "effect"
import { TestClock } from "effect/testing"
import { Health } from "../../src/kit/Health.ts"
import { HttpServer } from "../../src/kit/HttpServer.ts"
import * as Lifecycle from "../../src/kit/Lifecycle.ts"
import { makeHarness } from "../../src/kit/testing.ts"

/** A resource that records its acquisition and release. */
const resource = (
  name: string,
  journal: Array<string>,
  release: Effect.Effect<void, unknown> = Effect.void,
  options?: { readonly releaseTimeout?: Duration.Input; readonly forceable?: boolean }
) =>
  Layer.effectDiscard(Lifecycle.acquireRelease(
    name,
    Effect.sync(() => journal.push(`acquire ${name}`)),
    () => Effect.andThen(Effect.sync(() => journal.push(`release ${name}`)), release),
    options
  ))

/** A stage that waits for its work like a server drain: until done or forced. */
const drainUntilForced = Layer.effectDiscard(Effect.gen(function*() {
  const lifecycle = yield* Lifecycle.Lifecycle
  yield* Effect.addFinalizer(() =>
    lifecycle.phase("closing", Effect.raceFirst(Effect.never, Deferred.await(lifecycle.forced)))
  )
}))

/** A drain stage with nothing in flight: it finishes at once. */
const drainQuickly = Layer.effectDiscard(Effect.gen(function*() {
  const lifecycle = yield* Lifecycle.Lifecycle
  yield* Effect.addFinalizer(() =>
    lifecycle.phase("closing", Effect.raceFirst(Effect.void, Deferred.await(lifecycle.forced)))
  )
}))

/** Waits in real time (the server's sockets are real) for `done`, at most 2 s. */
const realTimeUntil = (done: () => boolean) =>
  Effect.promise(async () => {
    for (let waited = 0; !done() && waited < 2_000; waited += 10) {
      await new Promise((resolve) => setTimeout(resolve, 10))
    }
  })

const chain = (...layers: ReadonlyArray<Layer.Layer<never, any, Lifecycle.Lifecycle>>) =>
  layers.reduce((below, above) => Layer.provide(above, below))

describe("Lifecycle", () => {
  it.effect("releases resources in reverse order of acquisition and exits 0", () =>
    Effect.gen(function*() {
      const harness = yield* makeHarness
      const journal: Array<string> = []
      const main = chain(resource("postgres", journal), resource("redis", journal), resource("server", journal))
      const fiber = yield* Effect.forkChild(harness.run(main))
      yield* Effect.yieldNow
      assert.deepStrictEqual(journal, ["acquire postgres", "acquire redis", "acquire server"])
      yield* harness.send("SIGTERM")
      const code = yield* Fiber.join(fiber)
      assert.strictEqual(code, 0)
      assert.deepStrictEqual(journal.slice(3), ["release server", "release redis", "release postgres"])
      const phases = harness.phases()
      assert.deepStrictEqual(phases.map((p) => p.resource ?? p.phase), [
        "starting",
        "ready",
        "server",
        "redis",
        "postgres",
        "stopped"
      ])
      assert.isTrue(phases.every((p) => p.outcome === undefined || p.outcome === "ok"))
    }))

  it.effect("forces the drain at SHUTDOWN_TIMEOUT, still runs the remaining releases, and exits 1 naming the phase", () =>
    Effect.gen(function*() {
      const harness = yield* makeHarness
      const journal: Array<string> = []
      const main = chain(resource("postgres", journal), drainUntilForced)
      const fiber = yield* Effect.forkChild(harness.run(main, { SHUTDOWN_TIMEOUT: "10s" }))
      yield* Effect.yieldNow
      yield* harness.send("SIGTERM")
      yield* TestClock.adjust("9999 millis")
      assert.isUndefined(fiber.pollUnsafe())
      assert.notInclude(journal, "release postgres")
      yield* TestClock.adjust("1 millis")
      const code = yield* Fiber.join(fiber)
      assert.strictEqual(code, 1)
      assert.include(journal, "release postgres")
      const overran = harness.logs.find((entry) => entry.message === "shutdown deadline exceeded")
      assert.strictEqual(overran?.annotations.phase, "closing")
      assert.strictEqual(harness.phases().find((p) => p.phase === "closing")?.outcome, "forced")
      assert.deepStrictEqual(harness.phases().find((p) => p.phase === "closing")?.durationMs, 10_000)
    }))

  it.effect("a second signal forces the close at once and exits 1", () =>
    Effect.gen(function*() {
      const harness = yield* makeHarness
      const journal: Array<string> = []
      const fiber = yield* Effect.forkChild(harness.run(chain(resource("postgres", journal), drainUntilForced)))
      yield* Effect.yieldNow
      yield* harness.send("SIGTERM")
      yield* TestClock.adjust("1 second")
      assert.isUndefined(fiber.pollUnsafe())
      yield* harness.send("SIGINT")
      const code = yield* Fiber.join(fiber)
      assert.strictEqual(code, 1)
      assert.include(journal, "release postgres")
      assert.strictEqual(
        harness.logs.find((entry) => entry.message === "shutdown forced")?.annotations.reason,
        "second signal"
      )
    }))

  it.effect("a release that overruns its own timeout is cut and named; the releases after it still run; exit 1", () =>
    Effect.gen(function*() {
      const harness = yield* makeHarness
      const journal: Array<string> = []
      const main = chain(
        resource("postgres", journal),
        resource("redis", journal, Effect.never, { releaseTimeout: "2 seconds" })
      )
      const fiber = yield* Effect.forkChild(harness.run(main))
      yield* Effect.yieldNow
      yield* harness.send("SIGTERM")
      yield* TestClock.adjust("1999 millis")
      assert.notInclude(journal, "release postgres")
      yield* TestClock.adjust("1 millis")
      const code = yield* Fiber.join(fiber)
      assert.strictEqual(code, 1)
      assert.include(journal, "release postgres")
      const overran = harness.logs.find((entry) => entry.message === "release overran its timeout")
      assert.deepStrictEqual(overran?.annotations, { resource: "redis", timeoutMs: 2000 })
      assert.deepStrictEqual(
        harness.phases().filter((p) => p.phase === "releasing").map((p) => [p.resource, p.outcome]),
        [["redis", "timeout"], ["postgres", "ok"]]
      )
    }))

  it.effect("a release that cannot be interrupted (finalizers never can) is still cut at its bound", () =>
    Effect.gen(function*() {
      const harness = yield* makeHarness
      const journal: Array<string> = []
      const stuck = Effect.uninterruptible(Effect.never)
      const main = chain(
        resource("postgres", journal),
        resource("redis", journal, stuck, { releaseTimeout: "2 seconds" })
      )
      const fiber = yield* Effect.forkChild(harness.run(main))
      yield* Effect.yieldNow
      yield* harness.send("SIGTERM")
      yield* TestClock.adjust("2 seconds")
      assert.strictEqual(yield* Fiber.join(fiber), 1)
      assert.include(journal, "release postgres")
      assert.strictEqual(
        harness.logs.find((entry) => entry.message === "release overran its timeout")?.annotations.resource,
        "redis"
      )
    }))

  it.effect("a failing release is logged with its error, the rest still run, exit 1", () =>
    Effect.gen(function*() {
      const harness = yield* makeHarness
      const journal: Array<string> = []
      const main = chain(
        resource("postgres", journal),
        resource("redis", journal, Effect.fail(new Error("QUIT refused")))
      )
      const fiber = yield* Effect.forkChild(harness.run(main))
      yield* Effect.yieldNow
      yield* harness.send("SIGTERM")
      assert.strictEqual(yield* Fiber.join(fiber), 1)
      assert.include(journal, "release postgres")
      assert.deepStrictEqual(
        harness.logs.find((entry) => entry.message === "release failed")?.annotations,
        { resource: "redis", error: "QUIT refused" }
      )
    }))

  it.effect("a startup failure releases what was acquired, logs one line naming the cause, and exits 1", () =>
    Effect.gen(function*() {
      const harness = yield* makeHarness
      const journal: Array<string> = []
      const failing = Layer.effectDiscard(Effect.fail(new Error("connect ECONNREFUSED 127.0.0.1:6379")))
      const code = yield* harness.run(chain(resource("postgres", journal), failing))
      assert.strictEqual(code, 1)
      assert.deepStrictEqual(journal, ["acquire postgres", "release postgres"])
      const failures = harness.logs.filter((entry) => entry.message === "startup failed")
      assert.deepStrictEqual(failures.map((entry) => entry.annotations.error), ["connect ECONNREFUSED 127.0.0.1:6379"])
    }))

  it.effect("startup failed names the resource whose acquire failed and keeps the error's cause chain", () =>
    Effect.gen(function*() {
      const harness = yield* makeHarness
      const journal: Array<string> = []
      const root = new Error("getaddrinfo ENOTFOUND quotes.internal")
      const broken = Layer.effectDiscard(Lifecycle.resource(
        "quotes-client",
        Effect.fail(new Error("quotes client could not start", { cause: new Error("lookup failed", { cause: root }) }))
      ))
      assert.strictEqual(yield* harness.run(chain(resource("postgres", journal), broken)), 1)
      const line = harness.logs.find((entry) => entry.message === "startup failed")?.annotations
      assert.deepStrictEqual(line, {
        resource: "quotes-client",
        error:
          "quotes client could not start; caused by: lookup failed; caused by: getaddrinfo ENOTFOUND quotes.internal"
      })
    }))

  it.effect("a defect while building a Layer is logged with its stack, so the Layer is named by where it threw", () =>
    Effect.gen(function*() {
      const harness = yield* makeHarness
      const thrown = new TypeError("_.Agent is not a constructor")
      const defective = Layer.effectDiscard(Effect.sync(() => {
        throw thrown
      }))
      assert.strictEqual(yield* harness.run(defective), 1)
      const line = harness.logs.find((entry) => entry.message === "startup failed")?.annotations
      assert.strictEqual(line?.error, "_.Agent is not a constructor")
      assert.strictEqual(line?.resource, undefined)
      assert.include(String(line?.cause), "TypeError: _.Agent is not a constructor")
      assert.include(String(line?.cause), "Lifecycle.test.ts")
    }))

  it.effect("invalid lifecycle settings fail startup with the variable named", () =>
    Effect.gen(function*() {
      const harness = yield* makeHarness
      const code = yield* harness.run(Layer.empty, { SHUTDOWN_TIMEOUT: "whenever" })
      assert.strictEqual(code, 1)
      const error = String(harness.logs.find((entry) => entry.message === "startup failed")?.annotations.error)
      assert.match(error, /^invalid configuration: .*SHUTDOWN_TIMEOUT/)
    }))

  it.effect("a signal during startup stops cleanly with exit 0", () =>
    Effect.gen(function*() {
      const harness = yield* makeHarness
      const journal: Array<string> = []
      const slowStart = Layer.effectDiscard(Effect.sleep("1 minute"))
      const fiber = yield* Effect.forkChild(harness.run(chain(resource("postgres", journal), slowStart)))
      yield* Effect.yieldNow
      yield* harness.send("SIGTERM")
      assert.strictEqual(yield* Fiber.join(fiber), 0)
      assert.deepStrictEqual(journal, ["acquire postgres", "release postgres"])
    }))

  it.effect("a finalizer that ignores every bound is cut by a hard exit at SHUTDOWN_TIMEOUT + RELEASE_TIMEOUT", () =>
    Effect.gen(function*() {
      const harness = yield* makeHarness
      const stubborn = Layer.effectDiscard(Effect.addFinalizer(() => Effect.uninterruptible(Effect.sleep("1 hour"))))
      const fiber = yield* Effect.forkChild(harness.run(stubborn, { SHUTDOWN_TIMEOUT: "10s", RELEASE_TIMEOUT: "5s" }))
      yield* Effect.yieldNow
      yield* harness.send("SIGTERM")
      yield* TestClock.adjust("14999 millis")
      assert.deepStrictEqual(harness.exits, [])
      yield* TestClock.adjust("1 millis")
      assert.deepStrictEqual(harness.exits, [1])
      yield* TestClock.adjust("1 hour")
      assert.strictEqual(yield* Fiber.join(fiber), 1)
    }))
  it.effect("a crash logs once, still drains and releases within the budget, and exits 1", () =>
    Effect.gen(function*() {
      const harness = yield* makeHarness
      const journal: Array<string> = []
      const fiber = yield* Effect.forkChild(
        harness.run(chain(resource("postgres", journal), resource("server", journal)))
      )
      yield* Effect.yieldNow
      yield* harness.crash({ kind: "uncaughtException", error: new Error("boom in a callback") })
      yield* harness.crash({ kind: "unhandledRejection", error: new Error("a second one while stopping") })
      assert.strictEqual(yield* Fiber.join(fiber), 1)
      assert.deepStrictEqual(journal.slice(2), ["release server", "release postgres"])
      const crashes = harness.logs.filter((entry) => entry.message === "crashed")
      assert.deepStrictEqual(crashes.map((entry) => entry.annotations), [{
        kind: "uncaughtException",
        error: "boom in a callback"
      }])
      assert.isTrue(harness.phases().filter((p) => p.phase === "releasing").every((p) => p.outcome === "ok"))
    }))

  it.effect("SIGHUP and SIGQUIT stop like SIGTERM: drained, released, exit 0", () =>
    Effect.gen(function*() {
      for (const signal of ["SIGHUP", "SIGQUIT"] as const) {
        const harness = yield* makeHarness
        const journal: Array<string> = []
        const fiber = yield* Effect.forkChild(harness.run(resource("postgres", journal)))
        yield* Effect.yieldNow
        yield* harness.send(signal)
        assert.strictEqual(yield* Fiber.join(fiber), 0, signal)
        assert.include(journal, "release postgres")
        assert.strictEqual(harness.logs.find((entry) => entry.message === "signal")?.annotations.signal, signal)
      }
    }))

  it.effect("a second signal while a startup step still runs exits 1 at once instead of waiting the step out", () =>
    Effect.gen(function*() {
      const harness = yield* makeHarness
      const journal: Array<string> = []
      // An acquire (uninterruptible), like the embedded database starting: 60 s.
      const slowStart = Layer.effectDiscard(Lifecycle.acquireRelease(
        "postgres",
        Effect.sleep("60 seconds"),
        () => Effect.sync(() => journal.push("release postgres"))
      ))
      const fiber = yield* Effect.forkChild(harness.run(slowStart))
      yield* Effect.yieldNow
      yield* harness.send("SIGTERM")
      yield* TestClock.adjust("1 second")
      assert.deepStrictEqual(harness.exits, [])
      yield* harness.send("SIGINT")
      yield* TestClock.adjust("10 millis")
      assert.deepStrictEqual(harness.exits, [1])
      assert.strictEqual(
        harness.logs.find((entry) => entry.message === "shutdown forced")?.annotations.phase,
        "starting"
      )
      assert.isUndefined(harness.logs.find((entry) => entry.message === "second signal: nothing left to force"))
      // The process is gone by now; here the run goes on until the step ends, then releases.
      yield* TestClock.adjust("60 seconds")
      assert.strictEqual(yield* Fiber.join(fiber), 1)
    }))

  it.effect("a second signal once the drain is over forces nothing and leaves the exit code 0", () =>
    Effect.gen(function*() {
      const harness = yield* makeHarness
      const journal: Array<string> = []
      const slowRelease = Effect.sleep("2 seconds")
      const fiber = yield* Effect.forkChild(
        harness.run(chain(resource("postgres", journal, slowRelease), drainQuickly))
      )
      yield* Effect.yieldNow
      yield* harness.send("SIGTERM")
      yield* TestClock.adjust("1 second")
      // Now releasing postgres: there is nothing left to force.
      yield* harness.send("SIGINT")
      yield* TestClock.adjust("1 second")
      assert.strictEqual(yield* Fiber.join(fiber), 0)
      assert.isUndefined(harness.logs.find((entry) => entry.message === "shutdown forced"))
      assert.isDefined(harness.logs.find((entry) => entry.message === "second signal: nothing left to force"))
    }))

  it.effect("a second signal forces a release that drains (forceable, as the supervisor's wait for its workers) and exits 1", () =>
    Effect.gen(function*() {
      const harness = yield* makeHarness
      const journal: Array<string> = []
      const lifecycle = yield* Deferred.make<Lifecycle.Lifecycle["Service"]>()
      // Waits, like workers draining behind a slow request, until the lifecycle is forced.
      const drainsWorkers = Effect.flatMap(Deferred.await(lifecycle), (service) => Deferred.await(service.forced))
      const capture = Layer.effectDiscard(Effect.gen(function*() {
        yield* Deferred.succeed(lifecycle, yield* Lifecycle.Lifecycle)
      }))
      const fiber = yield* Effect.forkChild(harness.run(chain(
        resource("postgres", journal),
        capture,
        resource("workers", journal, drainsWorkers, { releaseTimeout: "60 seconds", forceable: true })
      )))
      yield* Effect.yieldNow
      yield* harness.send("SIGTERM")
      yield* TestClock.adjust("5 seconds")
      assert.isUndefined(fiber.pollUnsafe())
      yield* harness.send("SIGINT")
      yield* TestClock.adjust("10 millis")
      assert.strictEqual(yield* Fiber.join(fiber), 1)
      assert.deepStrictEqual(journal.filter((entry) => entry.startsWith("release")), [
        "release workers",
        "release postgres"
      ])
      assert.strictEqual(
        harness.logs.find((entry) => entry.message === "shutdown forced")?.annotations.reason,
        "second signal"
      )
      assert.isUndefined(harness.logs.find((entry) => entry.message === "second signal: nothing left to force"))
    }))

  it.effect("a second signal during DRAIN_DELAY with no socket and no request ends the delay and leaves the exit code 0", () =>
    Effect.gen(function*() {
      const harness = yield* makeHarness
      const journal: Array<string> = []
      const server = HttpServer.layerConfig().pipe(Layer.provide(Health.layer))
      const env = { PORT: "0", HOST: "127.0.0.1", ACCESS_LOG: "false", METRICS: "false", DRAIN_DELAY: "5s" }
      const fiber = yield* Effect.forkChild(harness.run(chain(resource("postgres", journal), server), env))
      yield* realTimeUntil(() => harness.logs.some((entry) => entry.message === "ready"))
      yield* harness.send("SIGTERM")
      yield* TestClock.adjust("5 millis")
      assert.isUndefined(fiber.pollUnsafe())
      yield* harness.send("SIGTERM")
      // No clock advance: the 5s delay must end on the second signal alone.
      yield* realTimeUntil(() => fiber.pollUnsafe() !== undefined)
      assert.strictEqual(yield* Fiber.join(fiber), 0)
      assert.include(journal, "release postgres")
      assert.isUndefined(harness.logs.find((entry) => entry.message === "shutdown forced"))
      assert.isDefined(harness.logs.find((entry) => entry.message === "second signal: nothing left to force"))
      assert.isBelow(harness.phases().find((p) => p.phase === "draining")?.durationMs as number, 5_000)
    }))
})
