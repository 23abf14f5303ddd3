/**
 * Background jobs on TestClock under the real lifecycle: runs on schedule, failures logged and
 * survived, the bounded release that interrupts only between batches, and the singleton lock.
 */
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Context, Deferred, Effect, Fiber, Layer, Logger, References, Schedule } from "effect"
import { TestClock } from "effect/testing"
import * as Crypto from "node:crypto"
import { Health } from "../../src/kit/Health.ts"
import * as Job from "../../src/kit/Job.ts"
import * as Lifecycle from "../../src/kit/Lifecycle.ts"
import { Postgres } from "../../src/kit/Postgres.ts"
import * as Testing from "../../src/kit/testing.ts"
import { makeHarness } from "../../src/kit/testing.ts"

/** A store the job uses, built with the kit's `resource`: its acquire and release go to `journal`. */
class Store extends Context.Service<Store, { readonly isOpen: () => boolean }>()("test/Store") {
  static readonly layer = (journal: Array<string>) =>
    Layer.effect(
      Store,
      Lifecycle.resource(
        "store",
        Effect.gen(function*() {
          let open = false
          yield* Effect.acquireRelease(
            Effect.sync(() => {
              open = true
              journal.push("acquire store")
            }),
            () =>
              Effect.sync(() => {
                open = false
                journal.push("release store")
              })
          )
          return { isOpen: () => open }
        })
      )
    )
}

const warnings = (harness: Effect.Success<typeof makeHarness>, message: string) =>
  harness.logs.filter((entry) => entry.message === message)

const jobPhase = (harness: Effect.Success<typeof makeHarness>, name: string) =>
  harness.phases().find((p) => p.phase === "releasing" && p.resource === `job ${name}`)

describe("Job", () => {
  it.effect("runs at start, then each time the schedule says, and is released as `releasing job <name>`", () =>
    Effect.gen(function*() {
      const harness = yield* makeHarness
      let runs = 0
      const job = Job.layer({
        name: "sweep",
        schedule: Schedule.spaced("1 minute"),
        run: Effect.sync(() => runs++)
      })
      const fiber = yield* Effect.forkChild(harness.run(job))
      yield* Effect.yieldNow
      assert.strictEqual(runs, 1)
      yield* TestClock.adjust("59 seconds")
      assert.strictEqual(runs, 1)
      yield* TestClock.adjust("1 second")
      assert.strictEqual(runs, 2)
      yield* TestClock.adjust("1 minute")
      assert.strictEqual(runs, 3)
      assert.strictEqual(harness.logs.find((entry) => entry.message === "job started")?.annotations.job, "sweep")
      yield* harness.send("SIGTERM")
      assert.strictEqual(yield* Fiber.join(fiber), 0)
      assert.strictEqual(jobPhase(harness, "sweep")?.outcome, "ok")
    }))

  it.effect("startImmediately: false waits for the schedule's first delay", () =>
    Effect.gen(function*() {
      const harness = yield* makeHarness
      let runs = 0
      const job = Job.layer({
        name: "later",
        schedule: Schedule.spaced("1 minute"),
        startImmediately: false,
        run: Effect.sync(() => runs++)
      })
      const fiber = yield* Effect.forkChild(harness.run(job))
      yield* Effect.yieldNow
      assert.strictEqual(runs, 0)
      yield* TestClock.adjust("1 minute")
      assert.strictEqual(runs, 1)
      yield* harness.send("SIGTERM")
      assert.strictEqual(yield* Fiber.join(fiber), 0)
    }))

  it.effect("a failing run is logged as a warning with its error, and the next run still starts", () =>
    Effect.gen(function*() {
      const harness = yield* makeHarness
      let runs = 0
      const job = Job.layer({
        name: "flaky",
        schedule: Schedule.spaced("1 minute"),
        run: Effect.suspend(() => ++runs === 1 ? Effect.fail(new Error("connection refused")) : Effect.void)
      })
      const fiber = yield* Effect.forkChild(harness.run(job))
      yield* Effect.yieldNow
      const failed = warnings(harness, "job run failed")
      assert.strictEqual(failed.length, 1)
      assert.strictEqual(failed[0]?.level, "Warn")
      assert.strictEqual(failed[0]?.annotations.job, "flaky")
      assert.strictEqual(failed[0]?.annotations.error, "connection refused")
      yield* TestClock.adjust("1 minute")
      assert.strictEqual(runs, 2)
      assert.strictEqual(warnings(harness, "job run failed").length, 1)
      yield* harness.send("SIGTERM")
      // A failed run is the job's business: the process still exits 0.
      assert.strictEqual(yield* Fiber.join(fiber), 0)
    }))

  it.effect("with no run in flight, release is immediate", () =>
    Effect.gen(function*() {
      const harness = yield* makeHarness
      const job = Job.layer({
        name: "idle",
        schedule: Schedule.spaced("1 hour"),
        releaseTimeout: "10 seconds",
        run: Effect.sleep("1 second")
      })
      const fiber = yield* Effect.forkChild(harness.run(job))
      yield* Effect.yieldNow
      yield* TestClock.adjust("1 second")
      yield* harness.send("SIGTERM")
      // No clock advances: the release ends the schedule's sleep at once.
      const code = yield* Fiber.join(fiber)
      assert.strictEqual(code, 0)
      assert.strictEqual(jobPhase(harness, "idle")?.durationMs, 0)
      assert.lengthOf(warnings(harness, "job run overran its release timeout; interrupting"), 0)
    }))

  it.effect("a run in flight that ends within the bound is awaited, not interrupted, and its work kept", () =>
    Effect.gen(function*() {
      const harness = yield* makeHarness
      const journal: Array<string> = []
      const job = Job.layer({
        name: "sweep",
        schedule: Schedule.spaced("1 minute"),
        releaseTimeout: "5 seconds",
        run: Effect.sleep("3 seconds").pipe(
          Effect.andThen(Effect.sync(() => journal.push("committed"))),
          Effect.onInterrupt(() => Effect.sync(() => journal.push("interrupted")))
        )
      })
      const fiber = yield* Effect.forkChild(harness.run(job))
      yield* Effect.yieldNow
      yield* harness.send("SIGTERM")
      yield* TestClock.adjust("2999 millis")
      assert.isUndefined(fiber.pollUnsafe())
      assert.deepStrictEqual(journal, [])
      yield* TestClock.adjust("1 millis")
      assert.strictEqual(yield* Fiber.join(fiber), 0)
      assert.deepStrictEqual(journal, ["committed"])
      assert.strictEqual(jobPhase(harness, "sweep")?.durationMs, 3000)
      assert.lengthOf(warnings(harness, "job run overran its release timeout; interrupting"), 0)
    }))

  it.effect("a run longer than the bound is interrupted at the bound and the overrun logged", () =>
    Effect.gen(function*() {
      const harness = yield* makeHarness
      const journal: Array<string> = []
      const job = Job.layer({
        name: "slow",
        schedule: Schedule.spaced("1 minute"),
        releaseTimeout: "2 seconds",
        run: Effect.sleep("10 seconds").pipe(
          Effect.andThen(Effect.sync(() => journal.push("committed"))),
          Effect.onInterrupt(() => Effect.sync(() => journal.push("interrupted")))
        )
      })
      const fiber = yield* Effect.forkChild(harness.run(job))
      yield* Effect.yieldNow
      yield* harness.send("SIGTERM")
      yield* TestClock.adjust("1999 millis")
      assert.isUndefined(fiber.pollUnsafe())
      yield* TestClock.adjust("1 millis")
      assert.strictEqual(yield* Fiber.join(fiber), 0)
      assert.deepStrictEqual(journal, ["interrupted"])
      const overran = warnings(harness, "job run overran its release timeout; interrupting")
      assert.lengthOf(overran, 1)
      assert.deepStrictEqual(overran[0]?.annotations, { job: "slow", timeoutMs: 2000 })
      assert.strictEqual(jobPhase(harness, "slow")?.durationMs, 2000)
    }))

  it.effect("a run of uninterruptible batches is interrupted between batches, never inside one", () =>
    Effect.gen(function*() {
      const harness = yield* makeHarness
      let started = 0
      let finished = 0
      const batch = Effect.gen(function*() {
        started++
        yield* Effect.sleep("1 second")
        finished++
        return 1000
      })
      const job = Job.layer({
        name: "batched",
        schedule: Schedule.spaced("1 minute"),
        releaseTimeout: "2500 millis",
        run: Job.batches(batch)
      })
      const fiber = yield* Effect.forkChild(harness.run(job))
      yield* Effect.yieldNow
      yield* harness.send("SIGTERM")
      yield* TestClock.adjust("2500 millis")
      // Interrupted at the bound with the third batch in flight: that batch still ends.
      assert.isUndefined(fiber.pollUnsafe())
      assert.deepStrictEqual({ started, finished }, { started: 3, finished: 2 })
      yield* TestClock.adjust("500 millis")
      assert.strictEqual(yield* Fiber.join(fiber), 0)
      assert.deepStrictEqual({ started, finished }, { started: 3, finished: 3 })
      assert.lengthOf(warnings(harness, "job run overran its release timeout; interrupting"), 1)
      assert.strictEqual(jobPhase(harness, "batched")?.durationMs, 3000)
    }))

  it.effect("Job.batches repeats until a batch processes nothing and returns the total", () =>
    Effect.gen(function*() {
      const left = [1000, 1000, 17, 0, 5]
      const total = yield* Job.batches(Effect.sync(() => left.shift()!))
      assert.strictEqual(total, 2017)
      assert.deepStrictEqual(left, [5])
      const short = [1000, 400, 1000]
      assert.strictEqual(yield* Job.batches(Effect.sync(() => short.shift()!), { until: (n) => n < 1000 }), 1400)
    }))

  it.effect("is built after a resource it uses and released before it, its run interrupted first", () =>
    Effect.gen(function*() {
      const harness = yield* makeHarness
      const journal: Array<string> = []
      const job = Job.layer({
        name: "uses-store",
        schedule: Schedule.spaced("1 minute"),
        releaseTimeout: "1 second",
        run: Effect.gen(function*() {
          const store = yield* Store
          journal.push(`run sees store ${store.isOpen() ? "open" : "closed"}`)
          yield* Effect.sleep("1 hour")
        }).pipe(
          Effect.onInterrupt(() => Effect.sync(() => journal.push("run interrupted")))
        )
      }).pipe(Layer.provide(Store.layer(journal)))
      const fiber = yield* Effect.forkChild(harness.run(job))
      yield* Effect.yieldNow
      yield* harness.send("SIGTERM")
      yield* TestClock.adjust("1 second")
      assert.strictEqual(yield* Fiber.join(fiber), 0)
      assert.deepStrictEqual(journal, ["acquire store", "run sees store open", "run interrupted", "release store"])
      const order = harness.phases().filter((p) => p.phase === "releasing").map((p) => p.resource)
      assert.deepStrictEqual(order, ["job uses-store", "store"])
    }))

  it.effect("once release is requested no new run starts, even when the schedule is due", () =>
    Effect.gen(function*() {
      let runs = 0
      const job = Job.layer({
        name: "eager",
        schedule: Schedule.spaced("1 millis"),
        releaseTimeout: "10 seconds",
        run: Effect.sync(() => runs++).pipe(Effect.andThen(Effect.sleep("3 seconds")))
      })
      // Released by closing its scope, with no signal: only the job's own release stops it.
      const closed = yield* Deferred.make<void>()
      const built = yield* Effect.forkChild(Effect.scoped(Effect.gen(function*() {
        yield* Layer.build(job.pipe(
          Layer.provide(Lifecycle.Lifecycle.layerTest),
          Layer.provide(ConfigProvider.layer(ConfigProvider.fromUnknown({})))
        ))
        yield* Deferred.await(closed)
      })))
      yield* Effect.yieldNow
      assert.strictEqual(runs, 1)
      yield* TestClock.adjust("1 second")
      yield* Deferred.succeed(closed, undefined)
      yield* Effect.yieldNow
      yield* TestClock.adjust("2 seconds")
      yield* Fiber.join(built)
      yield* TestClock.adjust("10 seconds")
      assert.strictEqual(runs, 1)
    }))
})

describe("Job singleton", () => {
  /** A job's Layer as a worker would build it, on the suite's PostgreSQL. */
  const pool = Layer.mergeAll(Postgres.layerConfig(), Health.layer).pipe(
    Layer.provideMerge(Health.layer),
    Layer.provideMerge(Lifecycle.Lifecycle.layerTest),
    Layer.provide(Layer.unwrap(Effect.map(
      Testing.databaseServer,
      (url) => ConfigProvider.layer(ConfigProvider.fromUnknown({ DATABASE_URL: url }))
    )))
  )

  it.live(
    "runs in one place at a time: a second copy skips while the first holds the lock, then runs",
    () =>
      Effect.gen(function*() {
        const name = `sweep-${Crypto.randomBytes(4).toString("hex")}`
        const gate = yield* Deferred.make<void>()
        const first = yield* Deferred.make<void>()
        let aRuns = 0
        let bRuns = 0
        const skips: Array<unknown> = []
        const logger = Logger.make((options) => {
          const message = Array.isArray(options.message) ? options.message[0] : options.message
          if (message === "job run skipped: another process holds its lock") {
            skips.push(options.fiber.getRef(References.CurrentLogAnnotations).job)
          }
        })
        const a = Job.layer({
          name,
          singleton: true,
          run: Effect.gen(function*() {
            aRuns++
            yield* Deferred.succeed(first, undefined)
            yield* Deferred.await(gate)
          })
        })
        const b = Job.layer({
          name,
          singleton: true,
          schedule: Schedule.spaced("20 millis"),
          startImmediately: false,
          run: Effect.sync(() => bRuns++)
        })
        yield* Effect.scoped(Effect.gen(function*() {
          const context = yield* Layer.build(a.pipe(Layer.provideMerge(pool)))
          yield* Deferred.await(first)
          yield* Layer.build(b).pipe(Effect.provide(context))
          // Wait (on events, bounded) for the second copy to have found the lock held three times.
          yield* Effect.sync(() => skips.length).pipe(
            Effect.repeat({ until: (n) => n >= 3, schedule: Schedule.spaced("10 millis") }),
            Effect.timeout("10 seconds")
          )
          assert.strictEqual(bRuns, 0)
          assert.strictEqual(aRuns, 1)
          const postgres = Context.get(context, Postgres)
          const held = yield* postgres.sql<{ n: number }>`
          SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND classid = ${Job.lockSpace}
            AND objid = ${Job.lockKey(name) >>> 0}`
          assert.strictEqual(held[0]?.n, 1)
          yield* Deferred.succeed(gate, undefined)
          yield* Effect.sync(() => bRuns).pipe(
            Effect.repeat({ until: (n) => n >= 1, schedule: Schedule.spaced("10 millis") }),
            Effect.timeout("10 seconds")
          )
          assert.isAtLeast(bRuns, 1)
          assert.strictEqual(aRuns, 1)
        })).pipe(
          Effect.provide(Logger.layer([logger])),
          Effect.provideService(References.MinimumLogLevel, "Debug")
        )
        assert.isTrue(skips.every((job) => job === name))
        // Released with its scope: no lock is left behind on a pooled connection.
        const after = yield* Effect.scoped(Effect.gen(function*() {
          const context = yield* Layer.build(pool)
          return yield* Context.get(context, Postgres).sql<{ n: number }>`
          SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND classid = ${Job.lockSpace}`
        }))
        assert.strictEqual(after[0]?.n, 0)
      }),
    { timeout: 60_000 }
  )
})
