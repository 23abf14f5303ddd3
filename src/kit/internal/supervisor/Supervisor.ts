/**
 * The process model: a supervisor that holds the listening sockets and runs generations of workers
 * on them, upgrades them on SIGUSR2/SIGHUP (readiness, probation, rollback), replaces crashed and hung ones.
 */
import {
  Clock,
  Config,
  Context,
  Deferred,
  Duration,
  Effect,
  Exit,
  Layer,
  Option,
  Queue,
  Redacted,
  Schema,
  SchemaIssue,
  SchemaTransformation
} from "effect"
import { EmbeddedPostgres } from "../../EmbeddedPostgres.ts"
import * as Lifecycle from "../../Lifecycle.ts"
import { check, duration, formatDuration, int, literal } from "../../Settings.ts"
import { observe } from "../metrics/Registry.ts"
import { availableCpus } from "./Cpus.ts"
import {
  describeExit,
  HeartbeatTimeoutConfig,
  Host,
  type UpgradeRequest,
  WorkerError,
  type WorkerExit,
  type WorkerProcess
} from "./Host.ts"
import { barrierTimeoutEnv, workersEnv } from "./Protocol.ts"

const WorkerCount = Schema.String.pipe(
  Schema.decodeTo(
    Schema.Int,
    SchemaTransformation.transformEffect<number, string>({
      decode: (input, options) => {
        const text = input.trim().toLowerCase()
        const count = text === "auto" ? availableCpus() : /^\d+$/.test(text) ? Number(text) : Number.NaN
        return count >= 1 && count <= 1024
          ? Effect.succeed(count)
          : Effect.fail(
            new SchemaIssue.InvalidValue(
              { expected: "auto or a whole number of workers from 1 to 1024" },
              input,
              options
            )
          )
      },
      encode: (count) => Effect.succeed(String(count))
    })
  )
)

/** How many workers, and how they are upgraded and restarted. */
export const SupervisorConfig = Config.all({
  /** `auto` is the cores this process may run on, capped by its cgroup's CPU quota (v1 or v2). */
  workers: Config.schema(WorkerCount, "WORKERS"),
  /** A new worker must report ready within this, at start, on upgrade and on restart. */
  upgradeTimeout: duration("UPGRADE_TIMEOUT", { default: "60 seconds", min: "1 second", max: "1 hour" }),
  /**
   * `all-at-once`: the whole new generation starts, and only when every worker is ready does the
   * old one drain (twice the workers for a moment; a failure leaves the old generation untouched).
   * `one-at-a-time`: one new worker, then one old drains, and so on (one extra worker at most;
   * a failure after the first replacement leaves the generations mixed).
   */
  upgradeStrategy: literal("UPGRADE_STRATEGY", ["all-at-once", "one-at-a-time"], { default: "all-at-once" }),
  /** The first restart of a crashed worker waits this long; each further crash in the window doubles it. */
  restartDelay: duration("RESTART_DELAY", { default: "100 millis" }),
  restartDelayMax: duration("RESTART_DELAY_MAX", { default: "10 seconds" }),
  /** This many worker crashes within RESTART_WINDOW stop the supervisor (exit 1). */
  restartLimit: int("RESTART_LIMIT", { min: 1, max: 1000, default: 5 }),
  /** At least 1 s: a shorter window forgets each crash before the next, and the limit never trips. */
  restartWindow: duration("RESTART_WINDOW", { default: "60 seconds", min: "1 second" }),
  /**
   * After an all-at-once upgrade the old generation waits this long, alive but handed no new
   * connections, before it drains; a new worker that dies within it rolls the upgrade back.
   * 0 retires the old generation as soon as the new one is ready (no rollback).
   */
  upgradeProbation: duration("UPGRADE_PROBATION", { default: "15 seconds", max: "1 hour" }),
  /** A ready worker that answers no ping for this long is SIGKILLed and replaced (a crash). */
  heartbeatTimeout: HeartbeatTimeoutConfig
}).pipe(
  check(({ restartDelay, restartDelayMax }) =>
    Duration.isLessThan(restartDelayMax, restartDelay)
      ? `RESTART_DELAY_MAX (${formatDuration(restartDelayMax)}) must not be shorter than RESTART_DELAY (${
        formatDuration(restartDelay)
      }): the cap would be below the first delay`
      : undefined
  )
)
export type SupervisorSettings = Config.Success<typeof SupervisorConfig>

/** What the workers are started with beyond our own environment (the embedded database's URL). */
export class WorkerEnv
  extends Context.Service<WorkerEnv, Readonly<Record<string, string>>>()("scoped-server/supervisor/WorkerEnv")
{
  static readonly layerConfig = Layer.unwrap(
    Effect.gen(function*() {
      const url = yield* Config.option(Config.String("DATABASE_URL"))
      if (Option.isSome(url)) return Layer.succeed(WorkerEnv, {})
      // One database for every worker, owned by the supervisor: it outlives upgrades and restarts.
      const fromEmbedded = Effect.gen(function*() {
        const db = yield* EmbeddedPostgres
        return { DATABASE_URL: Redacted.value(db.url) }
      })
      return Layer.effect(WorkerEnv, fromEmbedded).pipe(
        Layer.provide(EmbeddedPostgres.layerConfig)
      )
    })
  )
}

export interface SupervisorOptions {
  /** Stops the supervisor as a signal would; called (after `Lifecycle.fail`) when workers crash-loop. */
  readonly stop: Effect.Effect<void>
}

const millis = (duration: Duration.Duration) => Duration.toMillis(duration)

const make = Effect.fnUntraced(function*(settings: SupervisorSettings, options: SupervisorOptions) {
  const host = yield* Host
  const lifecycle = yield* Lifecycle.Lifecycle
  const env = yield* WorkerEnv
  const scope = yield* Effect.scope

  /** Every worker process not yet exited, whatever its state. */
  const live = new Set<WorkerProcess>()
  /** The workers that serve: their exit is a crash. Retired workers leave this set first. */
  const serving = new Set<WorkerProcess>()
  /**
   * The old generation during an upgrade's probation: alive, pools and all, but handed no new
   * connection, so a rollback only has to hand them connections again.
   */
  const reserve = new Set<WorkerProcess>()
  /** The upgrade on probation: a crash of one of its workers completes `rollback` with the reason. */
  let probation:
    | { readonly generation: number; readonly since: number; readonly rollback: Deferred.Deferred<string> }
    | undefined
  let generation = 1
  let lastGeneration = 1
  let upgrading = false
  let stopping = false
  const crashes: Array<number> = []
  const upgrades = { completed: 0, failed: 0, rolledBack: 0, lastSeconds: 0, restarts: 0, hung: 0 }
  yield* supervisorMetrics(() => generation, () => serving.size, upgrades)

  const pids = (workers: Iterable<WorkerProcess>) => [...workers].map((worker) => worker.pid)

  const spawn = (gen: number) =>
    Effect.tap(
      host.spawn(gen, {
        ...env,
        [workersEnv]: String(settings.workers),
        [barrierTimeoutEnv]: String(millis(settings.heartbeatTimeout))
      }),
      (worker) =>
        Effect.sync(() => {
          live.add(worker)
        }).pipe(
          Effect.andThen(Effect.forkIn(
            Effect.flatMap(
              worker.exited,
              (exit) => Effect.andThen(Effect.sync(() => live.delete(worker)), exited(worker, exit))
            ),
            scope
          ))
        )
    )

  /**
   * Tells a worker to drain, once: a worker asked again forces its close, so a SIGTERM while old
   * workers are retiring must not repeat it (it would cut their in-flight requests). Only the
   * deadline or a second signal asks again, through `worker.drain` itself.
   */
  const toldToDrain = new WeakSet<WorkerProcess>()
  const drainOnce = (worker: WorkerProcess) =>
    Effect.suspend(() => {
      if (toldToDrain.has(worker)) return Effect.void
      toldToDrain.add(worker)
      return worker.drain
    })

  /** Stops a worker that is not serving: drain, then SIGKILL if it has not exited within `grace`. */
  const stopWorker = (worker: WorkerProcess, grace: Duration.Duration) =>
    Effect.gen(function*() {
      yield* drainOnce(worker)
      const exit = yield* worker.exited.pipe(
        Effect.timeoutOrElse({ duration: grace, orElse: () => Effect.succeed(undefined) })
      )
      if (exit !== undefined) return exit
      yield* worker.kill
      return yield* worker.exited
    })

  /**
   * Pings a ready worker every second (or every WORKER_HEARTBEAT_TIMEOUT, if shorter); one that
   * does not answer within WORKER_HEARTBEAT_TIMEOUT is stopped, frozen or spinning, and cannot
   * drain: SIGKILL, and its exit is a crash like any other. A worker told to drain is left to its
   * drain's own bounds.
   */
  const heartbeat = (worker: WorkerProcess) => {
    const interval = Duration.min(Duration.seconds(1), settings.heartbeatTimeout)
    const loop: Effect.Effect<void> = Effect.gen(function*() {
      while (true) {
        yield* Effect.sleep(interval)
        if (toldToDrain.has(worker) || stopping) return
        const answered = yield* Effect.timeoutOption(worker.ping, settings.heartbeatTimeout)
        if (Option.isSome(answered) || toldToDrain.has(worker) || stopping) continue
        upgrades.hung++
        yield* Effect.logError("worker not answering; killing it").pipe(Effect.annotateLogs({
          pid: worker.pid,
          generation: worker.generation,
          silentMs: millis(settings.heartbeatTimeout),
          hint:
            "no answer to the supervisor's ping within WORKER_HEARTBEAT_TIMEOUT (stopped, or its event loop blocked)"
        }))
        return yield* worker.kill
      }
    })
    return Effect.forkIn(Effect.raceFirst(loop, Effect.asVoid(worker.exited)), scope)
  }

  /** A new worker, ready within UPGRADE_TIMEOUT, or stopped (also when interrupted) and the reason why. */
  const startWorker = (gen: number) =>
    Effect.flatMap(spawn(gen), (worker) =>
      worker.ready.pipe(
        Effect.timeoutOrElse({
          duration: settings.upgradeTimeout,
          orElse: () =>
            Effect.fail(
              new WorkerError({
                reason: "NotReadyInTime",
                message: `worker ${worker.pid} was not ready within ${
                  millis(settings.upgradeTimeout)
                }ms (UPGRADE_TIMEOUT)`
              })
            )
        }),
        // Not serving yet, so nothing to drain gracefully: a short grace, then SIGKILL.
        Effect.onError(() => stopWorker(worker, Duration.seconds(1))),
        Effect.andThen(heartbeat(worker)),
        Effect.as(worker)
      ))

  /** `count` new workers, all ready, or none: the first failure stops the rest. */
  const startGeneration = (gen: number, count: number) =>
    Effect.gen(function*(): Effect.fn.Return<Array<WorkerProcess>, WorkerError> {
      const fresh: Array<WorkerProcess> = []
      const started = yield* Effect.exit(
        Effect.forEach(
          Array.from({ length: count }),
          () => Effect.tap(startWorker(gen), (worker) => Effect.sync(() => fresh.push(worker))),
          {
            concurrency: "unbounded",
            discard: true
          }
        )
      )
      if (Exit.isSuccess(started)) return fresh
      yield* Effect.forEach(fresh, (worker) => stopWorker(worker, Duration.seconds(1)), {
        concurrency: "unbounded",
        discard: true
      })
      return yield* Effect.failCause(started.cause)
    })

  const adopt = (worker: WorkerProcess) => Effect.andThen(Effect.sync(() => serving.add(worker)), worker.serve)

  /**
   * Every worker's exit comes here; what it means depends on where the worker was. Serving: a
   * crash, replaced, unless the worker is on probation, whose crash rolls the upgrade back.
   * Reserve (the old generation on probation): counted as a crash, replaced only if a rollback
   * needs it. Anywhere else it was being stopped, or never served.
   */
  const exited = (worker: WorkerProcess, exit: WorkerExit): Effect.Effect<void> =>
    Effect.gen(function*() {
      if (stopping) {
        serving.delete(worker)
        reserve.delete(worker)
        return
      }
      if (serving.has(worker) && probation !== undefined && worker.generation === probation.generation) {
        serving.delete(worker)
        const intoMs = (yield* Clock.currentTimeMillis) - probation.since
        yield* Deferred.succeed(
          probation.rollback,
          `worker ${worker.pid} exited (${describeExit(exit)}) ${intoMs} ms into UPGRADE_PROBATION`
        )
        return
      }
      if (serving.has(worker)) return yield* crashed(worker, exit)
      if (reserve.delete(worker)) yield* countCrash(worker, exit, { reserve: true })
    })

  const countCrash = (worker: WorkerProcess, exit: WorkerExit, extra: Record<string, unknown> = {}) =>
    Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      crashes.push(now)
      while (crashes.length > 0 && crashes[0]! <= now - millis(settings.restartWindow)) crashes.shift()
      yield* Effect.logError("worker exited unexpectedly").pipe(Effect.annotateLogs({
        pid: worker.pid,
        generation: worker.generation,
        exit: describeExit(exit),
        crashesInWindow: crashes.length,
        ...extra
      }))
    })

  /** A serving worker died: replace it after a backoff, unless they keep dying. */
  const crashed = (worker: WorkerProcess, exit: WorkerExit): Effect.Effect<void> =>
    Effect.gen(function*() {
      serving.delete(worker)
      yield* countCrash(worker, exit)
      yield* replace()
    })

  /**
   * A replacement runs the code on disk now, so it belongs to the generation serving when it
   * starts, not to the one it replaces: during an upgrade an old-generation replacement is retired
   * with the rest of its generation, a new-generation one stays. Once ready it serves only if
   * fewer than WORKERS do (an upgrade may have filled the places meanwhile): otherwise it fills
   * the reserve of an upgrade on probation, or is stopped, so WORKERS is what serves.
   */
  const replace = (): Effect.Effect<void> =>
    Effect.gen(function*() {
      if (crashes.length >= settings.restartLimit) {
        stopping = true
        yield* lifecycle.fail("workers keep failing; stopping", {
          failures: crashes.length,
          windowMs: millis(settings.restartWindow),
          hint: "RESTART_LIMIT failures within RESTART_WINDOW; the lines before this one say why each failed"
        })
        return yield* options.stop
      }
      const delay = Math.min(
        millis(settings.restartDelay) * 2 ** (crashes.length - 1),
        millis(settings.restartDelayMax)
      )
      yield* Effect.sleep(delay)
      if (stopping) return
      const gen = generation
      const started = yield* Effect.exit(startWorker(gen))
      if (Exit.isSuccess(started)) {
        const worker = started.value
        // Shutdown began while it started: the shutdown drains every live worker, this one too.
        if (stopping) return
        if (serving.size < settings.workers) {
          upgrades.restarts++
          yield* adopt(worker)
          yield* Effect.logInfo("worker replaced").pipe(
            Effect.annotateLogs({ pid: worker.pid, generation: gen, delayMs: delay })
          )
        } else if (probation !== undefined && gen !== probation.generation && reserve.size < settings.workers) {
          reserve.add(worker)
          yield* Effect.logInfo("worker replaced").pipe(
            Effect.annotateLogs({ pid: worker.pid, generation: gen, delayMs: delay, into: "reserve" })
          )
        } else {
          yield* Effect.logInfo("replacement not needed; stopping it").pipe(Effect.annotateLogs({
            pid: worker.pid,
            generation: gen,
            serving: serving.size,
            workers: settings.workers
          }))
          yield* stopWorker(worker, Duration.seconds(1))
        }
        return
      }
      if (stopping) return
      crashes.push(yield* Clock.currentTimeMillis)
      yield* Effect.logError("replacement worker failed").pipe(Effect.annotateLogs({
        generation: gen,
        error: describeFailure(started),
        crashesInWindow: crashes.length
      }))
      return yield* replace()
    })

  /** The grace for a retired worker's drain: its own SHUTDOWN_TIMEOUT, and release, then SIGKILL. */
  const retireGrace = Duration.sum(lifecycle.settings.shutdownTimeout, lifecycle.settings.releaseTimeout)

  /** Retires workers (serving or in reserve): out of both sets first (their exit is no crash), then drained. */
  const retire = (workers: ReadonlyArray<WorkerProcess>) =>
    Effect.gen(function*() {
      workers.forEach((worker) => {
        serving.delete(worker)
        reserve.delete(worker)
      })
      // No connection is handed to a worker after its drain message: the channel keeps the order.
      yield* Effect.forEach(workers, (worker) => worker.unserve, { discard: true })
      return yield* Effect.forEach(workers, (worker) =>
        Effect.gen(function*() {
          const exit = yield* stopWorker(worker, retireGrace)
          const served = yield* worker.counters
          return {
            pid: worker.pid,
            generation: worker.generation,
            exit: describeExit(exit),
            ok: exit.code === 0,
            requests: served.requests
          }
        }), { concurrency: "unbounded" })
    })

  const upgrade = (request: UpgradeRequest) =>
    Effect.gen(function*() {
      const gen = ++lastGeneration
      const old = [...serving]
      const startedAt = yield* Clock.currentTimeMillis
      const elapsed = Effect.map(Clock.currentTimeMillis, (now) => now - startedAt)
      const completed = Effect.map(elapsed, (durationMs) => {
        upgrades.completed++
        upgrades.lastSeconds = durationMs / 1000
      })
      yield* host.notify("RELOADING=1", `MONOTONIC_USEC=${process.hrtime.bigint() / 1000n}`)
      yield* Effect.logInfo("upgrade").pipe(Effect.annotateLogs({
        step: "starting",
        generation: gen,
        from: generation,
        signal: request.signal,
        requestedBy: request.from,
        strategy: settings.upgradeStrategy,
        oldPids: pids(old)
      }))
      const failed = (error: string, started: number) =>
        Effect.flatMap(elapsed, (durationMs) =>
          Effect.andThen(
            Effect.sync(() => {
              upgrades.failed++
              upgrades.lastSeconds = durationMs / 1000
            }),
            Effect.logError("upgrade")
          ).pipe(Effect.annotateLogs({
            step: "failed",
            outcome: started === 0 ? "old generation kept" : "generations mixed",
            generation: gen,
            serving: generation,
            replaced: started,
            error,
            durationMs
          })))

      /** Counts the upgrade and logs its last line: which workers serve now, how the old ones left. */
      const complete = (fresh: ReadonlyArray<WorkerProcess>, retired: ReadonlyArray<{ readonly ok: boolean }>) =>
        Effect.gen(function*() {
          yield* completed
          yield* Effect.logInfo("upgrade").pipe(Effect.annotateLogs({
            step: "completed",
            outcome: retired.every((worker) => worker.ok) ? "ok" : "old workers exited non-zero",
            generation: gen,
            pids: pids(fresh),
            retired,
            durationMs: yield* elapsed
          }))
        })

      if (settings.upgradeStrategy === "all-at-once") {
        const started = yield* Effect.exit(startGeneration(gen, settings.workers))
        if (Exit.isFailure(started)) return yield* failed(describeFailure(started), 0)
        const fresh = started.value
        const from = generation
        const rollback = yield* Deferred.make<string>()
        // On probation from its first connection: a new worker's exit from then on is a rollback.
        if (!Duration.isZero(settings.upgradeProbation)) {
          probation = { generation: gen, since: yield* Clock.currentTimeMillis, rollback }
        }
        yield* Effect.forEach(fresh, adopt, { discard: true })
        generation = gen
        yield* Effect.logInfo("upgrade").pipe(
          Effect.annotateLogs({ step: "ready", generation: gen, pids: pids(fresh), durationMs: yield* elapsed })
        )
        // Crash replacements started while the new generation was starting are old too.
        const previous = [...serving].filter((worker) => worker.generation !== gen)
        if (probation === undefined) return yield* complete(fresh, yield* retire(previous))

        for (const worker of previous) {
          serving.delete(worker)
          reserve.add(worker)
        }
        yield* Effect.forEach(previous, (worker) => worker.unserve, { discard: true })
        yield* Effect.logInfo("upgrade").pipe(Effect.annotateLogs({
          step: "probation",
          generation: gen,
          probationMs: millis(settings.upgradeProbation),
          reserve: pids(previous)
        }))
        const reason = yield* Effect.raceFirst(
          Deferred.await(rollback),
          Effect.as(Effect.sleep(settings.upgradeProbation), undefined)
        ).pipe(Effect.onInterrupt(() => Effect.sync(() => (probation = undefined))))
        if (reason === undefined) {
          // Passed: from now on a new worker's exit is a crash like any other.
          probation = undefined
          return yield* complete(fresh, yield* retire([...reserve]))
        }

        // Rolled back: the old generation serves again before the new one is told anything.
        const restored = [...reserve]
        reserve.clear()
        yield* Effect.forEach(restored, adopt, { discard: true })
        generation = from
        const stopped = yield* retire(fresh.filter((worker) => serving.has(worker)))
        const durationMs = yield* elapsed
        upgrades.rolledBack++
        upgrades.lastSeconds = durationMs / 1000
        yield* Effect.logError("upgrade").pipe(Effect.annotateLogs({
          step: "rolled back",
          outcome: "old generation serves again",
          generation: gen,
          serving: from,
          reason,
          pids: pids(restored),
          stopped,
          durationMs
        }))
        // Old workers that died in reserve: their places are filled as any crash's are.
        // Until the new workers are out of `serving`, another one's exit must not count as a crash.
        probation = undefined
        const missing = settings.workers - serving.size
        for (let index = 0; index < missing; index++) yield* Effect.forkIn(replace(), scope)
        return
      }

      const fresh: Array<WorkerProcess> = []
      const retired: Array<{ pid: number; exit: string; ok: boolean }> = []
      for (let index = 0; index < settings.workers; index++) {
        const started = yield* Effect.exit(startWorker(gen))
        if (Exit.isFailure(started)) return yield* failed(describeFailure(started), fresh.length)
        fresh.push(started.value)
        yield* adopt(started.value)
        if (index === 0) generation = gen
        const previous = old[index]
        if (previous !== undefined && serving.has(previous)) retired.push(...(yield* retire([previous])))
      }
      // Crash replacements of the old generation started during the upgrade are old too.
      const leftovers = [...serving].filter((worker) => worker.generation !== gen)
      if (leftovers.length > 0) retired.push(...(yield* retire(leftovers)))
      yield* complete(fresh, retired)
    }).pipe(Effect.ensuring(host.notify("READY=1")))
  // Shutdown: registered before the first worker starts, so a failed start stops what did start.
  yield* Lifecycle.acquireRelease(
    "workers",
    Effect.void,
    () =>
      Effect.gen(function*() {
        stopping = true
        // The workers still hold the sockets and serve through their drain; each closes its copy
        // when it stops accepting, and the socket closes with the last one, as a single process's would.
        yield* host.stopListening
        yield* host.notify("STOPPING=1")
        const workers = [...live]
        const startedAt = yield* Clock.currentTimeMillis
        const results = yield* Effect.forEach(workers, (worker) =>
          Effect.gen(function*() {
            yield* drainOnce(worker)
            const exit = yield* Effect.raceFirst(
              worker.exited,
              Effect.gen(function*() {
                // Deadline or second signal: the worker forces its own close (a second drain is its
                // second signal), and is killed if even that does not end it.
                yield* Deferred.await(lifecycle.forced)
                yield* worker.drain
                yield* Effect.sleep(Duration.seconds(1))
                yield* worker.kill
                return yield* worker.exited
              })
            )
            const served = yield* worker.counters
            return { pid: worker.pid, generation: worker.generation, exit, requests: served.requests }
          }), { concurrency: "unbounded" })
        const failures = results.filter((result) => result.exit.code !== 0)
        yield* Effect.logInfo("workers stopped").pipe(Effect.annotateLogs({
          workers: results.map((result) => ({
            pid: result.pid,
            generation: result.generation,
            exit: describeExit(result.exit),
            requests: result.requests
          })),
          durationMs: (yield* Clock.currentTimeMillis) - startedAt
        }))
        if (failures.length > 0) {
          yield* lifecycle.fail("workers did not stop cleanly", {
            workers: failures.map((result) => ({ pid: result.pid, exit: describeExit(result.exit) }))
          })
        }
      }),
    // The workers' drain has the whole shutdown budget; the deadline or a second signal forces them.
    { releaseTimeout: Duration.sum(lifecycle.settings.shutdownTimeout, Duration.seconds(2)), forceable: true }
  )

  const startedAt = yield* Clock.currentTimeMillis
  const workers = yield* startGeneration(generation, settings.workers)
  yield* Effect.forEach(workers, adopt, { discard: true })
  yield* Effect.logInfo("workers ready").pipe(Effect.annotateLogs({
    generation,
    pids: pids(workers),
    durationMs: (yield* Clock.currentTimeMillis) - startedAt
  }))

  yield* Effect.forkIn(
    Effect.forever(Effect.gen(function*() {
      const request = yield* host.upgrades
      if (stopping) return
      if (upgrading) {
        yield* Effect.logWarning("upgrade already in progress; request ignored").pipe(
          Effect.annotateLogs({ signal: request.signal, requestedBy: request.from, generation: lastGeneration })
        )
        return
      }
      upgrading = true
      yield* Effect.forkIn(upgrade(request).pipe(Effect.ensuring(Effect.sync(() => (upgrading = false)))), scope)
    })),
    scope
  )
  yield* host.notify("READY=1", `MAINPID=${process.pid}`)
})

/** The process model as metrics, read on a scrape; every worker's own series come with them (metrics/Workers.ts). */
const supervisorMetrics = (
  generation: () => number,
  serving: () => number,
  upgrades: {
    readonly completed: number
    readonly failed: number
    readonly rolledBack: number
    readonly lastSeconds: number
    readonly restarts: number
    readonly hung: number
  }
) =>
  Effect.gen(function*() {
    yield* observe(
      "scoped_server_generation",
      "The generation of workers serving (the newest one to have started serving).",
      generation
    )
    yield* observe("scoped_server_workers", "Workers serving.", serving)
    const outcomes = { completed: "completed", failed: "failed", rolledBack: "rolled_back" } as const
    for (const [key, outcome] of Object.entries(outcomes) as Array<[keyof typeof outcomes, string]>) {
      yield* observe(
        "scoped_server_upgrades_total",
        "Upgrades (SIGUSR2 / SIGHUP) by outcome.",
        () => upgrades[key],
        {
          counter: true,
          attributes: { outcome }
        }
      )
    }
    yield* observe(
      "scoped_server_upgrade_duration_seconds",
      "How long the last upgrade took, from request to outcome.",
      () => upgrades.lastSeconds
    )
    yield* observe("scoped_server_worker_restarts_total", "Crashed workers replaced.", () => upgrades.restarts, {
      counter: true
    })
    yield* observe(
      "scoped_server_workers_hung_total",
      "Workers killed for not answering the heartbeat within WORKER_HEARTBEAT_TIMEOUT.",
      () => upgrades.hung,
      { counter: true }
    )
  })

const describeFailure = (exit: Exit.Exit<unknown, WorkerError>) =>
  Exit.isFailure(exit)
    ? (Option.getOrUndefined(Exit.findErrorOption(exit)) as WorkerError | undefined)?.message ?? "interrupted"
    : "ok"

export class Supervisor {
  /** The worker pool on a Host, with `WorkerEnv` added to each worker's environment. */
  static readonly layer = (settings: SupervisorSettings, options: SupervisorOptions) =>
    Layer.effectDiscard(make(settings, options))
}

/**
 * Everything the supervisor holds, in the order it is acquired (and released in reverse): the
 * sockets and pid file, the embedded database, the workers.
 */
export const main = (options: SupervisorOptions) =>
  // Settings first: a refused one stops startup before anything binds or logs `listening`.
  Layer.unwrap(Effect.map(SupervisorConfig, (settings) =>
    Supervisor.layer(settings, options).pipe(
      Layer.provide(WorkerEnv.layerConfig),
      Layer.provide(Host.layerConfig)
    )))

/**
 * The supervisor process: `main` under the lifecycle kernel, with a stop it can ask for itself
 * (a crash loop) beside SIGTERM, SIGINT and SIGQUIT; SIGHUP, like SIGUSR2, asks for an upgrade.
 */
export const run = (): void => {
  const stops = Effect.runSync(Queue.unbounded<Lifecycle.Signal>())
  const os = Layer.effect(
    Lifecycle.Os,
    Effect.gen(function*() {
      const os = yield* Lifecycle.Os
      return { ...os, signal: Effect.raceFirst(os.signal, Queue.take(stops)) }
    })
  ).pipe(Layer.provide(Lifecycle.Os.layerSignals(Lifecycle.stopSignals.filter((signal) => signal !== "SIGHUP"))))
  Lifecycle.run(main({ stop: Queue.offer(stops, "SIGTERM").pipe(Effect.asVoid) }), os)
}
