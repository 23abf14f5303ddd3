/**
 * Background jobs as Layers: a named run on a `Schedule`, built after what it uses and released
 * before it; a run in flight at release is awaited up to its bound, then interrupted between batches.
 */
import { Clock, Deferred, Duration, Effect, Exit, Fiber, Layer, Option, Pull, Schedule, type Scope } from "effect"
import { observe } from "./internal/metrics/Registry.ts"
import { Lifecycle } from "./Lifecycle.ts"
import { describeCause } from "./Log.ts"
import { Postgres } from "./Postgres.ts"

export interface Options<A, E, R, SR, Singleton extends boolean> {
  /** Names the job in its log lines (`job started`, `releasing job <name>`) and metrics. */
  readonly name: string
  /**
   * One run: a sweep, a refresh. Give it its own scope if it needs one (each run gets one, closed
   * when the run ends). Work it must never leave half-done goes in `Job.batches`.
   */
  readonly run: Effect.Effect<A, E, R>
  /**
   * When runs start: the first at once (unless `startImmediately: false`), each next one when the
   * schedule says after the previous one ended (`Effect.repeat`'s rule; runs never overlap). A
   * failed run does not stop it, nor back it off. Without one the job runs once (a long-running
   * job: a consumer that loops by itself).
   */
  readonly schedule?: Schedule.Schedule<unknown, unknown, never, SR>
  /** True (default): the first run starts when the job does; false: when the schedule's first delay ends. */
  readonly startImmediately?: boolean
  /**
   * How long a run in flight at release is awaited before it is interrupted (default: the
   * lifecycle's RELEASE_TIMEOUT). The interrupted run then has as long again to end the batch in
   * flight; past that the release overruns as any resource's does (`release overran its
   * timeout`, exit 1).
   */
  readonly releaseTimeout?: Duration.Input
  /**
   * True: each run first takes a PostgreSQL advisory lock named after the job
   * (`pg_try_advisory_lock`, on one of the pool's connections, held for the run) and is skipped
   * when another process holds it, so across workers, generations and replicas one sweep runs
   * at a time. Requires `Postgres`.
   */
  readonly singleton?: Singleton
}

/** Counts by outcome, read by the metrics on a scrape. */
interface Counts {
  ok: number
  failed: number
  interrupted: number
  skipped: number
}

/**
 * The job as a Layer. Its requirements are the run's, so providing it with what it uses builds
 * it after them and releases it before them. Logged as `job started`, `job run failed` (a
 * warning with the error; the schedule continues), `job run overran its release timeout;
 * interrupting` and the lifecycle's `releasing job <name>` phase line.
 */
export const layer = <A, E, R, SR = never, const Singleton extends boolean = false>(
  options: Options<A, E, R, SR, Singleton>
): Layer.Layer<
  never,
  never,
  Lifecycle | Exclude<R, Scope.Scope> | SR | (Singleton extends true ? Postgres : never)
> =>
  Layer.effectDiscard(Effect.gen(function*() {
    const lifecycle = yield* Lifecycle
    const { name } = options
    const bound = options.releaseTimeout === undefined
      ? lifecycle.settings.releaseTimeout
      : Duration.fromInputUnsafe(options.releaseTimeout)
    const run: Effect.Effect<unknown, unknown, Exclude<R, Scope.Scope>> = options.singleton === true
      ? exclusive(yield* Postgres, name, Effect.scoped(options.run))
      : Effect.scoped(options.run)

    const counts: Counts = { ok: 0, failed: 0, interrupted: 0, skipped: 0 }
    for (const outcome of ["ok", "failed", "interrupted", "skipped"] as const) {
      yield* observe(
        "scoped_server_job_runs_total",
        "Background job runs by outcome: ok, failed (logged; the schedule continues), interrupted (at release), skipped (singleton held elsewhere).",
        () => counts[outcome],
        { counter: true, attributes: { job: name, outcome } }
      )
    }

    let stopping = false
    /** Completed when the run in flight ends; undefined between runs. */
    let inFlight: Deferred.Deferred<void> | undefined
    let failures = 0

    const once = Effect.gen(function*() {
      const start = yield* Clock.currentTimeMillis
      const exit = yield* Effect.exit(run)
      const durationMs = (yield* Clock.currentTimeMillis) - start
      if (Exit.isSuccess(exit)) {
        failures = 0
        if (exit.value === skipped) {
          counts.skipped++
          yield* Effect.logDebug("job run skipped: another process holds its lock").pipe(
            Effect.annotateLogs({ job: name })
          )
        } else {
          counts.ok++
          yield* Effect.logDebug("job run").pipe(Effect.annotateLogs({ job: name, durationMs }))
        }
      } else if (Exit.hasInterrupts(exit)) {
        counts.interrupted++
      } else {
        counts.failed++
        failures++
        yield* Effect.logWarning("job run failed").pipe(
          Effect.annotateLogs({
            job: name,
            error: describeCause(exit.cause),
            durationMs,
            consecutiveFailures: failures
          })
        )
      }
    })

    /** Starts a run unless release (or the process's stop) was requested: checked and marked in one step. */
    const begin = Effect.sync(() => {
      if (stopping || lifecycle.isStopping()) return undefined
      inFlight = Deferred.makeUnsafe<void>()
      return inFlight
    })
    const runOnce = Effect.flatMap(begin, (started) =>
      started === undefined
        ? Effect.succeed(false)
        : once.pipe(
          Effect.ensuring(Effect.suspend(() => {
            inFlight = undefined
            return Deferred.succeed(started, undefined)
          })),
          Effect.as(true)
        ))

    const loop = Effect.gen(function*() {
      if (options.schedule === undefined) return yield* runOnce
      const step = yield* Schedule.toStepWithSleep(options.schedule)
      let first = options.startImmediately ?? true
      while (true) {
        if (!first) {
          const next = yield* Effect.exit(step(undefined))
          if (Exit.isFailure(next)) {
            // The schedule ended (`Schedule.recurs(n)`): the job is done.
            if (!Pull.isDoneCause(next.cause)) {
              yield* Effect.logWarning("job schedule failed; no more runs").pipe(
                Effect.annotateLogs({ job: name, error: describeCause(next.cause) })
              )
            }
            return false
          }
        }
        first = false
        if (!(yield* runOnce)) return false
      }
    })

    yield* Effect.acquireRelease(
      Effect.gen(function*() {
        const fiber = yield* Effect.forkDetach(loop, { startImmediately: true })
        yield* Effect.logInfo("job started").pipe(
          Effect.annotateLogs({
            job: name,
            releaseTimeoutMs: Duration.toMillis(bound),
            ...(options.singleton === true ? { singleton: true } : {})
          })
        )
        return fiber
      }),
      (fiber) =>
        lifecycle.release(
          `job ${name}`,
          Effect.gen(function*() {
            stopping = true
            const running = inFlight
            if (running !== undefined) {
              const ended = yield* Deferred.await(running).pipe(Effect.timeoutOption(bound))
              if (Option.isNone(ended)) {
                yield* Effect.logWarning("job run overran its release timeout; interrupting").pipe(
                  Effect.annotateLogs({ job: name, timeoutMs: Duration.toMillis(bound) })
                )
              }
            }
            // Between runs this ends the schedule's sleep; mid-run it waits for the batch in flight.
            yield* Fiber.interrupt(fiber)
          }),
          Duration.sum(bound, bound)
        )
    )
    // Postgres is required only when `singleton` is true, which the conditional type says and the
    // compiler cannot follow.
  })) as Layer.Layer<never, never, any>

/**
 * Runs `batch` (returning how many rows it processed) again and again until `until` says
 * (default: a batch processed 0), each batch uninterruptible and the loop interruptible between
 * them: a release waits for at most one batch and never cuts one in half. Returns the total.
 */
export const batches = <E, R>(
  batch: Effect.Effect<number, E, R>,
  options: {
    /** True when the batch that processed `processed` rows was the last. Default: `processed === 0`. */
    readonly until?: (processed: number) => boolean
    /** A pause between batches (interruptible), leaving the database to other work. */
    readonly pause?: Duration.Input
  } = {}
): Effect.Effect<number, E, R> =>
  Effect.gen(function*() {
    const until = options.until ?? ((processed: number) => processed === 0)
    let total = 0
    while (true) {
      const processed = yield* Effect.uninterruptible(batch)
      total += processed
      if (until(processed)) return total
      if (options.pause !== undefined) yield* Effect.sleep(options.pause)
      else yield* Effect.yieldNow
    }
  })

/** What a singleton run returns when another process holds the job's lock. */
const skipped: unique symbol = Symbol.for("scoped-server/Job/skipped")

/** The advisory-lock namespace (the first of two int4 keys) the kit's jobs use; the second is the name's hash. */
export const lockSpace = 0x5ca0ed5f

/** FNV-1a of the job's name as a signed int4: the same in every process that runs this code. */
export const lockKey = (name: string): number => {
  let hash = 0x811c9dc5
  for (const byte of new TextEncoder().encode(name)) {
    hash ^= byte
    hash = Math.imul(hash, 0x01000193)
  }
  return hash | 0
}

/**
 * `run` holding the job's advisory lock, or `skipped` without running when another session holds
 * it. The lock lives on one reserved pool connection (taken through `use`, so it counts against
 * DB_POOL_SIZE like any request) and is unlocked before the connection goes back; a process that
 * dies loses its session and so its lock.
 */
const exclusive = <A, E, R>(postgres: Postgres["Service"], name: string, run: Effect.Effect<A, E, R>) =>
  postgres.use(Effect.scoped(Effect.gen(function*() {
    const connection = yield* postgres.sql.reserve
    const key = lockKey(name)
    const [row] = yield* connection.execute(
      "SELECT pg_try_advisory_lock($1::int4, $2::int4) AS locked",
      [lockSpace, key],
      undefined
    )
    if (row?.locked !== true) return skipped
    yield* Effect.addFinalizer(() =>
      connection.execute("SELECT pg_advisory_unlock($1::int4, $2::int4)", [lockSpace, key], undefined).pipe(
        Effect.ignore
      )
    )
    return yield* run
  })))
