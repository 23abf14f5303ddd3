/**
 * The supervisor's state machine in-process, on TestClock, with a fake Host: readiness gating, one
 * upgrade at a time, timeout, probation and rollback, crash backoff, WORKERS kept, heartbeat, shutdown.
 */
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Duration, Effect, Fiber, Layer, Queue } from "effect"
import { TestClock } from "effect/testing"
import {
  Host,
  type UpgradeRequest,
  WorkerError,
  type WorkerExit,
  type WorkerProcess
} from "../../src/kit/internal/supervisor/Host.ts"
import { Supervisor, type SupervisorSettings, WorkerEnv } from "../../src/kit/internal/supervisor/Supervisor.ts"
import { makeHarness } from "../../src/kit/testing.ts"

interface FakeWorker extends WorkerProcess {
  drains: number
  serving: boolean
  killed: boolean
  /** Answers no ping (a stopped or blocked worker). */
  hung: boolean
  readonly markReady: Effect.Effect<void>
  readonly exit: (code: number) => Effect.Effect<void>
  readonly alive: () => boolean
}

/** A Host whose workers do what the test says; by default a drained worker exits 0 at once. */
const makeHost = Effect.gen(function*() {
  const spawned: Array<FakeWorker> = []
  const upgrades = yield* Queue.unbounded<UpgradeRequest>()
  const notes: Array<string> = []
  const drainExits = new Map<number, number | "never">()
  let nextPid = 100
  const host = Host.of({
    spawn: (generation) =>
      Effect.gen(function*() {
        const ready = yield* Deferred.make<void, WorkerError>()
        const exited = yield* Deferred.make<WorkerExit>()
        const exit = (code: number | null, signal: string | null = null) =>
          Effect.andThen(
            Deferred.fail(
              ready,
              new WorkerError({
                reason: "ExitedBeforeReady",
                message: `worker exited before it was ready (code ${code})`
              })
            ),
            Deferred.succeed(exited, { code, signal })
          ).pipe(Effect.asVoid)
        const worker: FakeWorker = {
          pid: nextPid++,
          generation,
          drains: 0,
          killed: false,
          hung: false,
          ping: Effect.suspend(() => worker.hung ? Effect.never : Effect.void),
          ready: Deferred.await(ready),
          exited: Deferred.await(exited),
          drain: Effect.suspend(() => {
            worker.drains++
            const code = drainExits.get(worker.pid) ?? 0
            return code === "never" ? Effect.void : exit(code)
          }),
          kill: Effect.suspend(() => {
            worker.killed = true
            return exit(null, "SIGKILL")
          }),
          serving: false,
          serve: Effect.sync(() => void (worker.serving = true)),
          unserve: Effect.sync(() => void (worker.serving = false)),
          counters: Effect.succeed({ open: 0, received: 0, requests: 0, inFlight: 0, handed: 0 }),
          markReady: Deferred.succeed(ready, undefined).pipe(Effect.asVoid),
          exit: (code) => exit(code),
          alive: () => !Deferred.isDoneUnsafe(exited)
        }
        spawned.push(worker)
        return worker
      }),
    upgrades: Queue.take(upgrades),
    stopListening: Effect.sync(() => void notes.push("stop listening")),
    notify: (...assignments) =>
      Effect.sync(() =>
        void notes.push(
          assignments.filter((a) => !a.startsWith("MONOTONIC_USEC") && !a.startsWith("MAINPID")).join(" ")
        )
      )
  })
  return {
    host,
    spawned,
    notes,
    drainExits,
    requestUpgrade: Queue.offer(upgrades, { signal: "SIGUSR2", from: 1 }),
    generation: (gen: number) => spawned.filter((worker) => worker.generation === gen),
    readyAll: (gen: number) =>
      Effect.forEach(spawned.filter((worker) => worker.generation === gen), (worker) => worker.markReady, {
        discard: true
      })
  }
})

const settings = (overrides: Partial<SupervisorSettings> = {}): SupervisorSettings => ({
  workers: 2,
  upgradeTimeout: Duration.seconds(10),
  upgradeStrategy: "all-at-once",
  restartDelay: Duration.millis(100),
  restartDelayMax: Duration.seconds(10),
  restartLimit: 5,
  restartWindow: Duration.seconds(60),
  upgradeProbation: Duration.zero,
  heartbeatTimeout: Duration.seconds(5),
  ...overrides
})

/** Lets forked fibers run to their next wait. */
const settle = Effect.forEach(Array.from({ length: 20 }), () => Effect.yieldNow, { discard: true })

const start = (overrides: Partial<SupervisorSettings> = {}) =>
  Effect.gen(function*() {
    const harness = yield* makeHarness
    const fake = yield* makeHost
    const main = Supervisor.layer(settings(overrides), { stop: harness.send("SIGTERM").pipe(Effect.asVoid) }).pipe(
      Layer.provide(Layer.succeed(WorkerEnv, {})),
      Layer.provide(Layer.succeed(Host, fake.host))
    )
    const fiber = yield* Effect.forkChild(harness.run(main, { SHUTDOWN_TIMEOUT: "5s" }))
    yield* settle
    yield* fake.readyAll(1)
    yield* settle
    return { harness, fake, fiber }
  })

/** Asks for an upgrade and reports every worker of the new generation ready. */
const upgradeReady = (fake: Effect.Success<typeof makeHost>) =>
  Effect.gen(function*() {
    yield* fake.requestUpgrade
    yield* settle
    yield* fake.readyAll(2)
    yield* settle
  })

const upgradeLines = (logs: ReadonlyArray<{ message: string; annotations: Readonly<Record<string, unknown>> }>) =>
  logs.filter((entry) => entry.message === "upgrade").map((entry) => entry.annotations)

describe("Supervisor", () => {
  it.effect("is ready only when every first worker is; SIGTERM drains them all; exit 0 when all exit 0", () =>
    Effect.gen(function*() {
      const harness = yield* makeHarness
      const fake = yield* makeHost
      const main = Supervisor.layer(settings({ workers: 3 }), { stop: Effect.void }).pipe(
        Layer.provide(Layer.succeed(WorkerEnv, {})),
        Layer.provide(Layer.succeed(Host, fake.host))
      )
      const fiber = yield* Effect.forkChild(harness.run(main))
      yield* settle
      assert.strictEqual(fake.spawned.length, 3)
      yield* fake.spawned[0]!.markReady
      yield* fake.spawned[1]!.markReady
      yield* settle
      assert.isUndefined(harness.logs.find((entry) => entry.message === "workers ready"))
      assert.notInclude(fake.notes, "READY=1")
      yield* fake.spawned[2]!.markReady
      yield* settle
      assert.isDefined(harness.logs.find((entry) => entry.message === "workers ready"))
      assert.include(fake.notes, "READY=1")
      yield* harness.send("SIGTERM")
      assert.strictEqual(yield* Fiber.join(fiber), 0)
      assert.isTrue(fake.spawned.every((worker) => worker.drains === 1 && !worker.alive()))
      assert.deepStrictEqual(fake.notes.slice(-2), ["stop listening", "STOPPING=1"])
    }))

  it.effect("exits 1 when a worker exits non-zero during shutdown, naming it", () =>
    Effect.gen(function*() {
      const { fake, fiber, harness } = yield* start()
      fake.drainExits.set(fake.spawned[1]!.pid, 1)
      yield* harness.send("SIGTERM")
      assert.strictEqual(yield* Fiber.join(fiber), 1)
      const line = harness.logs.find((entry) => entry.message === "workers did not stop cleanly")
      assert.deepStrictEqual(line?.annotations.workers, [{ pid: fake.spawned[1]!.pid, exit: "code 1" }])
    }))

  it.effect("an upgrade drains no old worker until every new one is ready; a second request meanwhile is ignored", () =>
    Effect.gen(function*() {
      const { fake, fiber, harness } = yield* start()
      const old = fake.generation(1)
      yield* fake.requestUpgrade
      yield* settle
      assert.strictEqual(fake.generation(2).length, 2)
      assert.include(fake.notes, "RELOADING=1")
      yield* fake.requestUpgrade
      yield* settle
      assert.strictEqual(fake.spawned.length, 4, "the ignored request started nothing")
      assert.isDefined(harness.logs.find((entry) => entry.message === "upgrade already in progress; request ignored"))
      yield* fake.generation(2)[0]!.markReady
      yield* settle
      assert.isTrue(
        old.every((worker) => worker.drains === 0 && worker.alive()),
        "old workers untouched while one new worker is not ready"
      )
      yield* fake.generation(2)[1]!.markReady
      yield* settle
      assert.isTrue(old.every((worker) => worker.drains === 1 && !worker.alive()))
      assert.deepStrictEqual(upgradeLines(harness.logs).map((line) => line.step), ["starting", "ready", "completed"])
      assert.strictEqual(upgradeLines(harness.logs)[2]!.outcome, "ok")
      assert.strictEqual(fake.notes.at(-1), "READY=1")
      // A retired worker's exit is no crash: nothing replaces it.
      yield* TestClock.adjust("1 second")
      assert.strictEqual(fake.spawned.length, 4)
      // The next upgrade is accepted once this one is done.
      yield* fake.requestUpgrade
      yield* settle
      assert.strictEqual(fake.generation(3).length, 2)
      yield* harness.send("SIGTERM")
      assert.strictEqual(yield* Fiber.join(fiber), 0)
    }))

  it.effect("a worker that crashes during an upgrade is replaced in the generation serving at the time, and an old one is retired with its generation", () =>
    Effect.gen(function*() {
      const { fake, fiber, harness } = yield* start()
      const [first, second] = fake.generation(1)
      yield* fake.requestUpgrade
      yield* settle
      // An old worker dies while the new generation is still starting.
      yield* first!.exit(1)
      yield* settle
      yield* TestClock.adjust("100 millis")
      yield* settle
      const replacement = fake.spawned.at(-1)!
      assert.strictEqual(replacement.generation, 1, "the old generation still serves: its replacement is old too")
      yield* replacement.markReady
      yield* fake.readyAll(2)
      yield* settle
      assert.isTrue(!second!.alive() && !replacement.alive(), "the replacement is retired with the old generation")
      assert.isTrue(fake.generation(2).every((worker) => worker.alive() && worker.serving))
      const completed = upgradeLines(harness.logs).find((line) => line.step === "completed")!
      assert.sameMembers((completed.retired as Array<{ pid: number }>).map((worker) => worker.pid), [
        second!.pid,
        replacement.pid
      ])
      // After the upgrade a crash is replaced in the new generation.
      yield* fake.generation(2)[0]!.exit(1)
      yield* TestClock.adjust("1 second")
      yield* settle
      assert.strictEqual(fake.spawned.at(-1)!.generation, 2)
      yield* fake.spawned.at(-1)!.markReady
      yield* settle
      assert.strictEqual(fake.spawned.filter((worker) => worker.alive() && worker.serving).length, 2)
      yield* harness.send("SIGTERM")
      assert.strictEqual(yield* Fiber.join(fiber), 0)
    }))

  it.effect("a new worker not ready within UPGRADE_TIMEOUT is stopped; the old generation keeps serving untouched", () =>
    Effect.gen(function*() {
      const { fake, fiber, harness } = yield* start({ upgradeTimeout: Duration.seconds(10) })
      const old = fake.generation(1)
      yield* fake.requestUpgrade
      yield* settle
      const fresh = fake.generation(2)
      yield* fresh[0]!.markReady
      fake.drainExits.set(fresh[1]!.pid, "never")
      yield* TestClock.adjust("9999 millis")
      assert.isTrue(fresh.every((worker) => worker.alive()))
      yield* TestClock.adjust("1 millis")
      yield* settle
      // The late one was asked to drain, ignored it, and is killed after its grace.
      yield* TestClock.adjust("1 second")
      yield* settle
      assert.isTrue(fresh[1]!.killed)
      assert.isFalse(fresh[0]!.alive(), "the ready new worker is stopped too: all or nothing")
      assert.isTrue(old.every((worker) => worker.drains === 0 && worker.alive()))
      const failed = upgradeLines(harness.logs).find((line) => line.step === "failed")!
      assert.strictEqual(failed.outcome, "old generation kept")
      assert.match(String(failed.error), /not ready within 10000ms \(UPGRADE_TIMEOUT\)/)
      assert.strictEqual(fake.notes.at(-1), "READY=1")
      // A later upgrade with a good build succeeds.
      yield* fake.requestUpgrade
      yield* settle
      yield* fake.readyAll(3)
      yield* settle
      assert.strictEqual(upgradeLines(harness.logs).at(-1)!.step, "completed")
      assert.isTrue(old.every((worker) => !worker.alive()))
      yield* harness.send("SIGTERM")
      assert.strictEqual(yield* Fiber.join(fiber), 0)
    }))

  it.effect("a new worker that exits at startup fails the upgrade at once, naming why", () =>
    Effect.gen(function*() {
      const { fake, fiber, harness } = yield* start()
      yield* fake.requestUpgrade
      yield* settle
      yield* fake.generation(2)[0]!.exit(1)
      yield* settle
      const failed = upgradeLines(harness.logs).find((line) => line.step === "failed")!
      assert.match(String(failed.error), /exited before it was ready \(code 1\)/)
      assert.isTrue(fake.generation(1).every((worker) => worker.alive() && worker.drains === 0))
      yield* harness.send("SIGTERM")
      assert.strictEqual(yield* Fiber.join(fiber), 0)
    }))

  it.effect("one-at-a-time: each old worker drains only after its replacement is ready", () =>
    Effect.gen(function*() {
      const { fake, fiber, harness } = yield* start({ upgradeStrategy: "one-at-a-time" })
      const old = fake.generation(1)
      yield* fake.requestUpgrade
      yield* settle
      assert.strictEqual(fake.generation(2).length, 1, "one new worker at a time")
      yield* fake.generation(2)[0]!.markReady
      yield* settle
      assert.deepStrictEqual(old.map((worker) => worker.alive()), [false, true])
      assert.strictEqual(fake.generation(2).length, 2)
      yield* fake.generation(2)[1]!.markReady
      yield* settle
      assert.isTrue(old.every((worker) => !worker.alive()))
      assert.strictEqual(upgradeLines(harness.logs).at(-1)!.step, "completed")
      yield* harness.send("SIGTERM")
      assert.strictEqual(yield* Fiber.join(fiber), 0)
    }))

  it.effect("a crashed worker is replaced after a backoff that doubles; too many crashes stop the supervisor with exit 1", () =>
    Effect.gen(function*() {
      const { fake, fiber, harness } = yield* start({ restartLimit: 3 })
      yield* fake.spawned[0]!.exit(1)
      yield* settle
      yield* TestClock.adjust("99 millis")
      assert.strictEqual(fake.spawned.length, 2, "no restart before RESTART_DELAY")
      yield* TestClock.adjust("1 millis")
      yield* settle
      assert.strictEqual(fake.spawned.length, 3)
      yield* fake.spawned[2]!.markReady
      yield* settle
      assert.isDefined(harness.logs.find((entry) => entry.message === "worker replaced"))
      yield* fake.spawned[2]!.exit(1)
      yield* settle
      yield* TestClock.adjust("199 millis")
      assert.strictEqual(fake.spawned.length, 3, "the second crash waits twice as long")
      yield* TestClock.adjust("1 millis")
      yield* settle
      assert.strictEqual(fake.spawned.length, 4)
      // The replacement itself dies at startup: the third failure in the window reaches the limit.
      yield* fake.spawned[3]!.exit(1)
      yield* settle
      assert.strictEqual(yield* Fiber.join(fiber), 1)
      assert.strictEqual(fake.spawned.length, 4)
      assert.isDefined(harness.logs.find((entry) => entry.message === "workers keep failing; stopping"))
      assert.isFalse(fake.spawned[1]!.alive(), "the healthy worker was drained")
    }))

  it.effect("the deadline forces the workers: a second drain, then SIGKILL; exit 1", () =>
    Effect.gen(function*() {
      const { fake, fiber, harness } = yield* start()
      fake.drainExits.set(fake.spawned[0]!.pid, "never")
      yield* harness.send("SIGTERM")
      yield* settle
      yield* TestClock.adjust("5 seconds")
      yield* settle
      assert.strictEqual(fake.spawned[0]!.drains, 2)
      assert.isFalse(fake.spawned[0]!.killed)
      yield* TestClock.adjust("1 second")
      assert.strictEqual(yield* Fiber.join(fiber), 1)
      assert.isTrue(fake.spawned[0]!.killed)
    }))
})

describe("Supervisor: a signal during an upgrade", () => {
  it.effect("SIGTERM while old workers are retiring drains nobody twice: a retiring worker finishes its drain; exit 0", () =>
    Effect.gen(function*() {
      const { fake, fiber, harness } = yield* start()
      const old = fake.generation(1)
      // The old workers' drains take a while (a slow request in flight).
      old.forEach((worker) => fake.drainExits.set(worker.pid, "never"))
      yield* upgradeReady(fake)
      assert.isTrue(old.every((worker) => worker.drains === 1 && worker.alive()), "old workers are retiring")
      // However the assertions go, the old workers end, so the supervisor's release does too.
      yield* Effect.addFinalizer(() => Effect.forEach(old, (worker) => worker.exit(0), { discard: true }))
      yield* harness.send("SIGTERM")
      yield* settle
      // A second drain message is a worker's second signal: it would cut the slow request.
      assert.deepStrictEqual(old.map((worker) => worker.drains), [1, 1])
      assert.isTrue(fake.generation(2).every((worker) => worker.drains === 1 && !worker.alive()))
      yield* Effect.forEach(old, (worker) => worker.exit(0), { discard: true })
      assert.strictEqual(yield* Fiber.join(fiber), 0)
    }))
})

describe("Supervisor: probation and rollback", () => {
  const servingNow = (fake: Effect.Success<typeof makeHost>) =>
    fake.spawned.filter((worker) => worker.alive() && worker.serving)

  it.effect("the old generation waits out UPGRADE_PROBATION alive and unserved, then drains; the upgrade completes after it", () =>
    Effect.gen(function*() {
      const { fake, fiber, harness } = yield* start({ upgradeProbation: Duration.seconds(15) })
      const old = fake.generation(1)
      yield* upgradeReady(fake)
      assert.isTrue(old.every((worker) => worker.alive() && !worker.serving && worker.drains === 0), "kept, unserved")
      assert.deepStrictEqual(servingNow(fake), fake.generation(2))
      assert.deepStrictEqual(upgradeLines(harness.logs).map((line) => line.step), ["starting", "ready", "probation"])
      yield* TestClock.adjust("14999 millis")
      yield* settle
      assert.isTrue(old.every((worker) => worker.alive()))
      yield* TestClock.adjust("1 millis")
      yield* settle
      assert.isTrue(old.every((worker) => worker.drains === 1 && !worker.alive()))
      assert.strictEqual(upgradeLines(harness.logs).at(-1)!.step, "completed")
      // Passed: a new worker's crash is an ordinary crash now, replaced in its generation.
      yield* fake.generation(2)[0]!.exit(1)
      yield* TestClock.adjust("100 millis")
      yield* settle
      assert.strictEqual(fake.spawned.at(-1)!.generation, 2)
      assert.isDefined(harness.logs.find((entry) => entry.message === "worker exited unexpectedly"))
      yield* harness.send("SIGTERM")
      assert.strictEqual(yield* Fiber.join(fiber), 0)
    }))

  it.effect("a new worker that dies within probation rolls back: the old workers serve again, the new ones drain, nothing is replaced, exit 0 later", () =>
    Effect.gen(function*() {
      const { fake, fiber, harness } = yield* start({ upgradeProbation: Duration.seconds(15) })
      const old = fake.generation(1)
      yield* upgradeReady(fake)
      const [dies, other] = fake.generation(2)
      yield* TestClock.adjust("2 seconds")
      yield* dies!.exit(1)
      yield* settle
      assert.isTrue(old.every((worker) => worker.alive() && worker.serving && worker.drains === 0), "old serve again")
      assert.isTrue(other!.drains === 1 && !other!.alive() && !other!.serving, "the other new worker drained")
      const line = upgradeLines(harness.logs).at(-1)!
      assert.strictEqual(line.step, "rolled back")
      assert.strictEqual(line.serving, 1)
      assert.match(
        String(line.reason),
        new RegExp(`worker ${dies!.pid} exited \\(code 1\\) 2000 ms into UPGRADE_PROBATION`)
      )
      assert.deepStrictEqual(line.pids, old.map((worker) => worker.pid))
      // A rollback is no crash: nothing replaces the dead new worker, nothing counts toward RESTART_LIMIT.
      yield* TestClock.adjust("1 minute")
      yield* settle
      assert.strictEqual(fake.spawned.length, 4)
      assert.isUndefined(harness.logs.find((entry) => entry.message === "worker exited unexpectedly"))
      assert.deepStrictEqual(servingNow(fake), old)
      assert.strictEqual(fake.notes.at(-1), "READY=1")
      // The next upgrade is accepted.
      yield* fake.requestUpgrade
      yield* settle
      assert.strictEqual(fake.generation(3).length, 2)
      yield* fake.readyAll(3)
      yield* TestClock.adjust("15 seconds")
      yield* settle
      assert.strictEqual(upgradeLines(harness.logs).at(-1)!.step, "completed")
      yield* harness.send("SIGTERM")
      assert.strictEqual(yield* Fiber.join(fiber), 0)
    }))

  it.effect("both new workers dying together roll back once, and neither is replaced", () =>
    Effect.gen(function*() {
      const { fake, fiber, harness } = yield* start({ upgradeProbation: Duration.seconds(15) })
      yield* upgradeReady(fake)
      const [first, second] = fake.generation(2)
      yield* first!.exit(1)
      yield* second!.exit(1)
      yield* settle
      yield* TestClock.adjust("1 minute")
      yield* settle
      assert.strictEqual(fake.spawned.length, 4)
      assert.strictEqual(upgradeLines(harness.logs).filter((line) => line.step === "rolled back").length, 1)
      assert.deepStrictEqual(servingNow(fake), fake.generation(1))
      yield* harness.send("SIGTERM")
      assert.strictEqual(yield* Fiber.join(fiber), 0)
    }))

  it.effect("an old worker that dies in reserve counts as a crash; a rollback then replaces it, so WORKERS serve", () =>
    Effect.gen(function*() {
      const { fake, fiber, harness } = yield* start({ upgradeProbation: Duration.seconds(15) })
      const [lost, kept] = fake.generation(1)
      yield* upgradeReady(fake)
      yield* lost!.exit(1)
      yield* settle
      const crash = harness.logs.find((entry) => entry.message === "worker exited unexpectedly")
      assert.strictEqual(crash?.annotations.reserve, true)
      assert.strictEqual(fake.spawned.length, 4, "not replaced while the new generation serves")
      yield* fake.generation(2)[0]!.exit(1)
      yield* settle
      assert.deepStrictEqual(servingNow(fake), [kept])
      yield* TestClock.adjust("200 millis")
      yield* settle
      const replacement = fake.spawned.at(-1)!
      assert.strictEqual(fake.spawned.length, 5)
      assert.strictEqual(replacement.generation, 1)
      yield* replacement.markReady
      yield* settle
      assert.sameMembers(servingNow(fake), [kept, replacement])
      yield* harness.send("SIGTERM")
      assert.strictEqual(yield* Fiber.join(fiber), 0)
    }))

  it.effect("SIGTERM during probation drains every worker, reserve included; exit 0", () =>
    Effect.gen(function*() {
      const { fake, fiber, harness } = yield* start({ upgradeProbation: Duration.seconds(15) })
      yield* upgradeReady(fake)
      yield* harness.send("SIGTERM")
      assert.strictEqual(yield* Fiber.join(fiber), 0)
      assert.isTrue(fake.spawned.every((worker) => worker.drains === 1 && !worker.alive()))
      assert.isUndefined(upgradeLines(harness.logs).find((line) => line.step === "rolled back"))
    }))
})

describe("Supervisor: accounting", () => {
  const servingNow = (fake: Effect.Success<typeof makeHost>) =>
    fake.spawned.filter((worker) => worker.alive() && worker.serving)

  it.effect("an old worker's replacement that is ready only after the new generation serves is stopped: WORKERS serve", () =>
    Effect.gen(function*() {
      const { fake, fiber, harness } = yield* start()
      const [first] = fake.generation(1)
      yield* fake.requestUpgrade
      yield* settle
      yield* first!.exit(1)
      yield* TestClock.adjust("100 millis")
      yield* settle
      const replacement = fake.spawned.at(-1)!
      assert.strictEqual(replacement.generation, 1)
      yield* fake.readyAll(2)
      yield* settle
      assert.strictEqual(upgradeLines(harness.logs).at(-1)!.step, "completed")
      yield* replacement.markReady
      yield* settle
      assert.isFalse(replacement.alive(), "stopped, not serving as a third worker")
      assert.isDefined(harness.logs.find((entry) => entry.message === "replacement not needed; stopping it"))
      assert.deepStrictEqual(servingNow(fake), fake.generation(2))
      yield* harness.send("SIGTERM")
      assert.strictEqual(yield* Fiber.join(fiber), 0)
    }))

  it.effect("with probation, that late replacement fills the reserve instead, and a rollback serves with it", () =>
    Effect.gen(function*() {
      const { fake, fiber, harness } = yield* start({ upgradeProbation: Duration.seconds(15) })
      const [first, second] = fake.generation(1)
      yield* fake.requestUpgrade
      yield* settle
      yield* first!.exit(1)
      yield* TestClock.adjust("100 millis")
      yield* settle
      const replacement = fake.spawned.at(-1)!
      yield* fake.readyAll(2)
      yield* settle
      yield* replacement.markReady
      yield* settle
      assert.isTrue(replacement.alive() && !replacement.serving, "in reserve")
      yield* fake.generation(2)[1]!.exit(1)
      yield* settle
      assert.sameMembers(servingNow(fake), [second, replacement])
      yield* harness.send("SIGTERM")
      assert.strictEqual(yield* Fiber.join(fiber), 0)
    }))
})

describe("Supervisor: heartbeat", () => {
  it.effect("a worker that answers no ping within WORKER_HEARTBEAT_TIMEOUT is SIGKILLed, logged, and replaced as a crash", () =>
    Effect.gen(function*() {
      const { fake, fiber, harness } = yield* start({ heartbeatTimeout: Duration.seconds(5) })
      const [hung, fine] = fake.spawned
      yield* TestClock.adjust("10 seconds")
      yield* settle
      assert.isFalse(hung!.killed, "answering workers are left alone")
      hung!.hung = true
      // Pinged within a second, unanswered for 5 s: killed between 5 and 6 s after it stopped.
      yield* TestClock.adjust("4999 millis")
      yield* settle
      assert.isFalse(hung!.killed)
      yield* TestClock.adjust("1001 millis")
      yield* settle
      assert.isTrue(hung!.killed)
      assert.isFalse(fine!.killed)
      const line = harness.logs.find((entry) => entry.message === "worker not answering; killing it")
      assert.strictEqual(line?.annotations.pid, hung!.pid)
      const crash = harness.logs.find((entry) => entry.message === "worker exited unexpectedly")
      assert.strictEqual(crash?.annotations.exit, "SIGKILL")
      yield* TestClock.adjust("100 millis")
      yield* settle
      assert.strictEqual(fake.spawned.length, 3)
      yield* fake.spawned[2]!.markReady
      yield* settle
      assert.isTrue(fake.spawned[2]!.serving)
      yield* harness.send("SIGTERM")
      assert.strictEqual(yield* Fiber.join(fiber), 0)
    }))
})

describe("Supervisor: heartbeat and probation, their limits", () => {
  it.effect("a draining worker is not pinged: one that stops answering in its drain is left to the drain's own bound", () =>
    Effect.gen(function*() {
      const { fake, fiber, harness } = yield* start({ heartbeatTimeout: Duration.seconds(1) })
      const old = fake.generation(1)
      old.forEach((worker) => fake.drainExits.set(worker.pid, "never"))
      yield* upgradeReady(fake)
      old.forEach((worker) => (worker.hung = true))
      yield* TestClock.adjust("3 seconds")
      yield* settle
      assert.isTrue(old.every((worker) => worker.alive() && !worker.killed))
      assert.isUndefined(harness.logs.find((entry) => entry.message === "worker not answering; killing it"))
      yield* Effect.forEach(old, (worker) => worker.exit(0), { discard: true })
      yield* settle
      yield* harness.send("SIGTERM")
      assert.strictEqual(yield* Fiber.join(fiber), 0)
    }))

  it.effect("one-at-a-time has no probation: each old worker drains once its replacement is ready", () =>
    Effect.gen(function*() {
      const { fake, fiber, harness } = yield* start({
        upgradeStrategy: "one-at-a-time",
        upgradeProbation: Duration.seconds(15)
      })
      const old = fake.generation(1)
      yield* fake.requestUpgrade
      yield* settle
      yield* fake.generation(2)[0]!.markReady
      yield* settle
      yield* fake.generation(2)[1]!.markReady
      yield* settle
      assert.isTrue(old.every((worker) => !worker.alive()))
      assert.strictEqual(upgradeLines(harness.logs).at(-1)!.step, "completed")
      assert.isUndefined(upgradeLines(harness.logs).find((line) => line.step === "probation"))
      yield* harness.send("SIGTERM")
      assert.strictEqual(yield* Fiber.join(fiber), 0)
    }))
})
