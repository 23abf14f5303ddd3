/**
 * The lifecycle kernel: build Main, wait for a signal, release in reverse within a budget,
 * and return an exit code that tells the truth (0 clean, 1 failed, forced or overran).
 */
import {
  Cause,
  Clock,
  Config,
  Context,
  Deferred,
  Duration,
  Effect,
  Exit,
  Fiber,
  Layer,
  Option,
  Queue,
  References,
  Scope
} from "effect"
import * as Log from "./Log.ts"
import { check, duration, formatDuration, optionalDuration } from "./Settings.ts"

/** Shorter when the budget left after the drain delay is shorter: a default never conflicts. */
const defaultReleaseTimeout = Duration.seconds(5)

/**
 * How the process starts, drains and stops. The drain delay and every release are spent inside
 * the shutdown budget, so settings that cannot fit it are refused at startup.
 */
export const LifecycleConfig = Config.all({
  /** Serve normally after the signal (readiness already 503) so load balancers notice. */
  drainDelay: duration("DRAIN_DELAY", { default: 0, max: "10 minutes", seconds: true }),
  /** The whole shutdown budget, signal to exit. */
  shutdownTimeout: duration("SHUTDOWN_TIMEOUT", { default: "25 seconds", min: "100 millis", max: "1 hour" }),
  /** An idle keep-alive socket is closed only after this long with no request on it. */
  quietWindow: duration("DRAIN_QUIET_WINDOW", { default: 300, max: "1 minute" }),
  /** Default bound on each resource's release. */
  releaseTimeout: optionalDuration("RELEASE_TIMEOUT", { min: "10 millis", max: "10 minutes" })
}).pipe(
  check(({ drainDelay, releaseTimeout, shutdownTimeout }) => {
    if (Duration.isGreaterThanOrEqualTo(drainDelay, shutdownTimeout)) {
      return `DRAIN_DELAY (${formatDuration(drainDelay)}) must be shorter than SHUTDOWN_TIMEOUT (${
        formatDuration(shutdownTimeout)
      }): the delay is spent inside the shutdown budget`
    }
    const left = Duration.subtract(shutdownTimeout, drainDelay)
    if (Option.isSome(releaseTimeout) && Duration.isGreaterThan(releaseTimeout.value, left)) {
      return Duration.isZero(drainDelay)
        ? `RELEASE_TIMEOUT (${formatDuration(releaseTimeout.value)}) must not exceed SHUTDOWN_TIMEOUT (${
          formatDuration(shutdownTimeout)
        })`
        : `RELEASE_TIMEOUT (${formatDuration(releaseTimeout.value)}) does not fit in SHUTDOWN_TIMEOUT (${
          formatDuration(shutdownTimeout)
        }) after DRAIN_DELAY (${formatDuration(drainDelay)})`
    }
    return undefined
  }),
  Config.map((settings) => ({
    ...settings,
    releaseTimeout: Option.getOrElse(
      settings.releaseTimeout,
      () => Duration.min(defaultReleaseTimeout, Duration.subtract(settings.shutdownTimeout, settings.drainDelay))
    )
  }))
)
export type LifecycleSettings = Config.Success<typeof LifecycleConfig>

/**
 * The phases of a run, in order; `releasing` is logged once per resource. The summary line
 * is `stopped`.
 */
export type Phase = "starting" | "ready" | "draining" | "closing" | "releasing" | "stopped"

/**
 * The signals the process handles. SIGHUP stops it like SIGTERM until the process model gives it
 * a meaning of its own; SIGQUIT too (see `stopSignals`).
 */
export type Signal = "SIGTERM" | "SIGINT" | "SIGHUP" | "SIGQUIT"

/**
 * Every signal that would otherwise kill the process with no log line and no release (leaving
 * the embedded database behind). SIGQUIT drains like SIGTERM rather than dying at once: the
 * conventions disagree (Go dumps stacks and exits, nginx stops gracefully on it), a graceful stop
 * loses nothing, and a second signal still forces the close.
 */
export const stopSignals: ReadonlyArray<Signal> = ["SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT"]

/** An exception nothing caught, or a rejection nothing handled: the run is failed, but still drains. */
export interface Crash {
  readonly kind: "uncaughtException" | "unhandledRejection"
  readonly error: unknown
}

/**
 * The operating system as the lifecycle sees it: signals and crashes in, a hard exit out.
 * Tests provide their own to send signals and observe exits deterministically.
 */
export class Os extends Context.Service<Os, {
  /** Waits for the next signal. */
  readonly signal: Effect.Effect<Signal>
  /** Waits for the next crash (an uncaught exception or unhandled rejection). */
  readonly crash: Effect.Effect<Crash>
  /** Ends the process now; used only when a finalizer ignores its own bound. */
  readonly exit: (code: number) => Effect.Effect<void>
  /** Tells whoever started us that every resource proved itself (a supervisor, systemd). */
  readonly ready?: Effect.Effect<void>
}>()("scoped-server/Os") {
  /**
   * The real process, stopping on `signals`: a program that gives one of them another meaning
   * (the supervisor's SIGHUP upgrade) leaves it out and handles it itself.
   */
  static readonly layerSignals = (
    signals: ReadonlyArray<Signal>,
    options: {
      /** Signals whose default action (ending the process at once) is replaced by a log line. */
      readonly ignore?: ReadonlyArray<{ readonly signal: NodeJS.Signals; readonly reason: string }>
    } = {}
  ): Layer.Layer<Os> =>
    Layer.effect(
      Os,
      Effect.gen(function*() {
        const queue = yield* Queue.unbounded<Signal>()
        const crashes = yield* Queue.unbounded<Crash>()
        const log = Effect.runForkWith(yield* Effect.context<never>())
        const listeners: ReadonlyArray<readonly [string, (...args: Array<any>) => void]> = [
          ...(options.ignore ?? []).map(({ reason, signal }) =>
            [signal, () => {
              log(Effect.logWarning("signal ignored").pipe(Effect.annotateLogs({ signal, reason })))
            }] as const
          ),
          ...signals.map((signal) =>
            [signal, () => {
              Queue.offerUnsafe(queue, signal)
            }] as const
          ),
          // With a listener Node no longer dies on these: the lifecycle drains and releases instead.
          ["uncaughtException", (error: unknown) => {
            Queue.offerUnsafe(crashes, { kind: "uncaughtException", error })
          }],
          ["unhandledRejection", (error: unknown) => {
            Queue.offerUnsafe(crashes, { kind: "unhandledRejection", error })
          }]
        ]
        yield* Effect.acquireRelease(
          Effect.sync(() => listeners.forEach(([event, listener]) => process.on(event, listener))),
          () => Effect.sync(() => listeners.forEach(([event, listener]) => process.off(event, listener)))
        )
        return {
          signal: Queue.take(queue),
          crash: Queue.take(crashes),
          exit: (code) => Effect.sync(() => process.exit(code))
        }
      })
    )

  /**
   * The real process, stopping on every signal in `stopSignals`. SIGUSR2 asks a supervisor for an
   * upgrade; one process has none, and Node's default for it would end the process unlogged.
   */
  static readonly layer: Layer.Layer<Os> = Os.layerSignals(stopSignals, {
    ignore: [{ signal: "SIGUSR2", reason: "upgrades need a supervisor (WORKERS); this process keeps serving" }]
  })
}

/** What the summary line reports; the HTTP servers count, the lifecycle prints. */
export interface Totals {
  requestsDuringDrain: number
  /** Pipelined or late requests parsed on a closing socket and never run: their answer could not be sent. */
  requestsNotRun: number
  /** Idle keep-alive sockets closed with a FIN; the client sent nothing after it. */
  socketsClosedIdle: number
  /** Sockets closed with a FIN whose client sent bytes across it: it was just sending, and may retry. */
  socketsClosedRaced: number
  /** Responses cut at WRITE_TIMEOUT because their client read nothing. */
  responsesCut: number
  socketsDestroyed: number
  /** Server-Sent Events streams sent their final event and ended at the start of closing. */
  eventStreamsEnded: number
  /** WebSockets sent close code 1001 (going away) at the start of closing. */
  webSocketsClosed: number
}

export type Outcome = "ok" | "failed" | "timeout" | "forced"

export class Lifecycle extends Context.Service<Lifecycle, {
  readonly settings: LifecycleSettings
  /** True from the first signal on; readiness reads it on every probe. */
  readonly isStopping: () => boolean
  /** Completes when the deadline fires or a second signal arrives: stop waiting, force. */
  readonly forced: Deferred.Deferred<void>
  readonly isForced: () => boolean
  /**
   * Completes when a second signal finds nothing to cut (see `trackWork`): stop waiting (the
   * drain delay) and go on, without forcing, so the exit code stays what the run earned.
   */
  readonly hurried: Deferred.Deferred<void>
  /**
   * Tells the lifecycle, for the scope's life, whether forcing would cut anything (open
   * sockets, requests running). Without any tracker a second signal always forces.
   */
  readonly trackWork: (hasWork: () => boolean) => Effect.Effect<void, never, Scope.Scope>
  /** Runs one phase of the timeline and logs one line with its duration and outcome. */
  readonly phase: <A, E, R>(
    name: Phase,
    self: Effect.Effect<A, E, R>,
    annotations?: Record<string, unknown>
  ) => Effect.Effect<A, E, R>
  /**
   * Releases one resource within its own bound (`RELEASE_TIMEOUT` unless given). A failure
   * or overrun is logged with the resource's name and makes the exit code 1; it never stops
   * the releases after it. `forceable`: the release drains something that waits on `forced`
   * (the supervisor's workers), so a second signal during it forces, as it does in a drain.
   */
  readonly release: <E, R>(
    resource: string,
    self: Effect.Effect<void, E, R>,
    timeout?: Duration.Input,
    options?: { readonly forceable?: boolean }
  ) => Effect.Effect<void, never, R>
  /** Marks the run as failed (exit 1) with a reason for the log. */
  readonly fail: (reason: string, annotations?: Record<string, unknown>) => Effect.Effect<void>
  /**
   * Asks the run to stop as a signal would (drain, release, exit), for a resource that can no
   * longer serve, e.g. a child process that died. Pair it with `fail` when the exit must be 1.
   */
  readonly shutdown: (reason: string) => Effect.Effect<void>
  readonly totals: Totals
  /** The phase now (`releasing <resource>` while one releases), read by the metrics on a scrape. */
  readonly currentPhase: () => string
  /** When the first signal arrived (Clock millis), undefined while serving. */
  readonly stoppedAt: () => number | undefined
}>()("scoped-server/Lifecycle") {
  /**
   * For tests of a service's own Layers: a Lifecycle with no signals and no exit, settings from
   * the ConfigProvider. Resources release through it exactly as they do under `run`.
   */
  static readonly layerTest: Layer.Layer<Lifecycle, Config.ConfigError> = Layer.suspend(() =>
    Layer.effect(
      Lifecycle,
      Effect.gen(function*() {
        const settings = yield* LifecycleConfig
        return (yield* makeController(settings)).service
      })
    )
  )
}

/**
 * A resource as one scoped acquisition: acquire (bounded by `acquireTimeout` when given),
 * release bounded and logged as `releasing <name>` by the lifecycle.
 */
export const acquireRelease = <A, E, R, E2, R2>(
  name: string,
  acquire: Effect.Effect<A, E, R>,
  release: (resource: A) => Effect.Effect<void, E2, R2>,
  options?: { readonly releaseTimeout?: Duration.Input; readonly forceable?: boolean }
) =>
  Effect.gen(function*() {
    const lifecycle = yield* Lifecycle
    return yield* Effect.acquireRelease(
      naming(name, acquire),
      (resource) =>
        lifecycle.release(name, release(resource), options?.releaseTimeout, { forceable: options?.forceable ?? false })
    )
  })

/**
 * The resource whose acquire failed, carried on the failure's cause so `startup failed` can name
 * it. The innermost name wins (Cause.annotate keeps a key already there): a pool inside a
 * `postgres` resource is named by the step that failed, not the one around it.
 */
class FailedResource extends Context.Service<FailedResource, string>()("scoped-server/Lifecycle/FailedResource") {}

const naming = <A, E, R>(name: string, acquire: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.catchCause(
    acquire,
    (cause) =>
      Effect.failCause(
        Cause.hasInterruptsOnly(cause) ? cause : Cause.annotate(cause, Context.make(FailedResource, name))
      )
  )

/** What a `startup failed` line says: the error with its chain, the resource, and for a defect its stack. */
const describeStartupFailure = (cause: Cause.Cause<unknown>, verbose: boolean): Record<string, string> => {
  const resource = Context.getOrUndefined(Cause.annotations(cause), FailedResource)
  // A defect is a bug: where it was thrown (which Layer, which line) is the point of the report.
  const defect = cause.reasons.some(Cause.isDieReason)
  return {
    ...(resource === undefined ? {} : { resource }),
    error: Log.describeCauseChain(cause),
    ...(defect || verbose ? { cause: Cause.pretty(cause) } : {})
  }
}

/**
 * A resource built in a scope of its own (a pool, a client, a child process, with whatever
 * finalizers they register), released as one bounded, logged step: `releasing <name>`.
 * If acquiring fails, what was acquired so far is released at once.
 */
export const resource = <A, E, R>(
  name: string,
  acquire: Effect.Effect<A, E, R>,
  options?: { readonly releaseTimeout?: Duration.Input }
): Effect.Effect<A, E, Lifecycle | Scope.Scope | Exclude<R, Scope.Scope>> =>
  Effect.map(
    acquireRelease(
      name,
      Effect.gen(function*() {
        const scope = yield* Scope.make()
        const value = yield* acquire.pipe(
          Scope.provide(scope),
          Effect.onExit((exit) => Exit.isFailure(exit) ? Scope.close(scope, exit) : Effect.void)
        )
        return [value, scope] as const
      }),
      ([, scope]) => Scope.close(scope, Exit.void),
      options
    ),
    ([value]) => value
  )

interface Controller {
  readonly service: Lifecycle["Service"]
  readonly ready: Effect.Effect<void>
  readonly beginStop: (annotations: Record<string, unknown>) => Effect.Effect<void>
  readonly stopRequested: Deferred.Deferred<"shutdown">
  readonly force: (reason: string) => Effect.Effect<void>
  readonly hasFailed: () => boolean
  readonly stoppedAt: () => number | undefined
}

const makeController = Effect.fnUntraced(function*(settings: LifecycleSettings) {
  const forced = yield* Deferred.make<void>()
  const hurried = yield* Deferred.make<void>()
  const work = new Set<() => boolean>()
  const stopRequested = yield* Deferred.make<"shutdown">()
  const totals: Totals = {
    requestsDuringDrain: 0,
    requestsNotRun: 0,
    socketsClosedIdle: 0,
    socketsClosedRaced: 0,
    responsesCut: 0,
    socketsDestroyed: 0,
    eventStreamsEnded: 0,
    webSocketsClosed: 0
  }
  let current = "starting"
  // Phases that wait on `forced` are running: only then has a second signal anything to force.
  let forceable = 0
  let stopping = false
  let failed = false
  let stoppedAt: number | undefined
  let readyAt: number | undefined

  /** Runs `self` counted as forceable when `waits`: counted and uncounted as one acquire/release, so no interruption leaks the count. */
  const counted = <A, E, R>(waits: boolean, self: Effect.Effect<A, E, R>) =>
    waits
      ? Effect.acquireUseRelease(Effect.sync(() => forceable++), () => self, () => Effect.sync(() => forceable--))
      : self

  const fail = (reason: string, annotations: Record<string, unknown> = {}) =>
    Effect.suspend(() => {
      failed = true
      return Effect.logError(reason).pipe(Effect.annotateLogs(annotations))
    })

  const logPhase = (name: Phase, durationMs: number, outcome: Outcome, annotations: Record<string, unknown>) =>
    Effect.logInfo("phase").pipe(Effect.annotateLogs({ phase: name, durationMs, outcome, ...annotations }))

  const phase = <A, E, R>(name: Phase, self: Effect.Effect<A, E, R>, annotations: Record<string, unknown> = {}) =>
    Effect.gen(function*() {
      current = typeof annotations.resource === "string" ? `${name} ${annotations.resource}` : name
      const wasForced = Deferred.isDoneUnsafe(forced)
      const start = yield* Clock.currentTimeMillis
      const exit = yield* counted(name === "draining" || name === "closing", Effect.exit(self))
      const durationMs = (yield* Clock.currentTimeMillis) - start
      const outcome: Outcome = Exit.isFailure(exit)
        ? "failed"
        : !wasForced && Deferred.isDoneUnsafe(forced)
        ? "forced"
        : "ok"
      yield* logPhase(name, durationMs, outcome, annotations)
      return yield* exit
    })

  const release = <E, R>(
    resource: string,
    self: Effect.Effect<void, E, R>,
    timeout?: Duration.Input,
    options?: { readonly forceable?: boolean }
  ) => {
    return Effect.gen(function*() {
      const bound = timeout === undefined ? settings.releaseTimeout : Duration.fromInputUnsafe(timeout)
      current = `releasing ${resource}`
      const start = yield* Clock.currentTimeMillis
      // Finalizers run uninterruptibly, so a timeout around one would wait for it anyway. The
      // release runs in a fiber of its own and we stop waiting at the bound; it may finish later.
      const exit = yield* counted(
        options?.forceable === true,
        Effect.flatMap(
          Effect.forkDetach(self, { startImmediately: true }),
          (fiber) =>
            Fiber.await(fiber).pipe(Effect.timeoutOrElse({ duration: bound, orElse: () => Effect.succeed(undefined) }))
        )
      )
      const durationMs = (yield* Clock.currentTimeMillis) - start
      if (exit === undefined) {
        yield* fail("release overran its timeout", { resource, timeoutMs: Duration.toMillis(bound) })
        yield* logPhase("releasing", durationMs, "timeout", { resource })
      } else if (Exit.isFailure(exit)) {
        yield* fail("release failed", { resource, error: Log.describeCause(exit.cause) })
        yield* logPhase("releasing", durationMs, "failed", { resource })
      } else {
        yield* logPhase("releasing", durationMs, "ok", { resource })
      }
    })
  }

  const service: Lifecycle["Service"] = {
    settings,
    isStopping: () => stopping,
    forced,
    isForced: () => Deferred.isDoneUnsafe(forced),
    hurried,
    trackWork: (hasWork) =>
      Effect.acquireRelease(Effect.sync(() => work.add(hasWork)), () => Effect.sync(() => work.delete(hasWork))),
    phase,
    release,
    fail,
    shutdown: (reason) =>
      Effect.logWarning("shutdown requested").pipe(
        Effect.annotateLogs({ reason }),
        Effect.andThen(Deferred.succeed(stopRequested, "shutdown")),
        Effect.asVoid
      ),
    totals,
    currentPhase: () => current,
    stoppedAt: () => stoppedAt
  }

  const controller: Controller = {
    service,
    stopRequested,
    ready: Effect.gen(function*() {
      current = "ready"
      readyAt = yield* Clock.currentTimeMillis
    }),
    beginStop: (annotations) =>
      Effect.gen(function*() {
        stopping = true
        stoppedAt = yield* Clock.currentTimeMillis
        if (annotations.signal !== undefined) {
          yield* Effect.logInfo("signal").pipe(Effect.annotateLogs({ ...annotations, phase: current }))
        }
        if (readyAt !== undefined) yield* logPhase("ready", stoppedAt - readyAt, "ok", {})
      }),
    force: (reason) =>
      Effect.suspend(() => {
        if (Deferred.isDoneUnsafe(forced)) return Effect.void
        if (reason === "second signal" && forceable === 0) {
          // The drain is over: forcing would cut nothing, so the exit code stays what it earned.
          return Effect.logInfo("second signal: nothing left to force").pipe(Effect.annotateLogs({ phase: current }))
        }
        if (reason === "second signal" && work.size > 0 && ![...work].some((hasWork) => hasWork())) {
          // Only waits are left (the drain delay): a hurried operator gets them ended, not an exit 1.
          return Effect.logInfo("second signal: nothing left to force").pipe(
            Effect.annotateLogs({ phase: current }),
            Effect.andThen(Deferred.succeed(hurried, undefined))
          )
        }
        return fail(reason === "deadline" ? "shutdown deadline exceeded" : "shutdown forced", {
          reason,
          phase: current,
          shutdownTimeoutMs: Duration.toMillis(settings.shutdownTimeout)
        }).pipe(Effect.andThen(Deferred.succeed(forced, undefined)))
      }),
    hasFailed: () => failed,
    stoppedAt: () => stoppedAt
  }
  return controller
})

/**
 * Builds `main`, serves until a signal, then releases everything in reverse.
 * Returns the process exit code. Time comes from the Clock, so TestClock drives it in tests.
 */
export const runEffect = <A, E>(main: Layer.Layer<A, E, Lifecycle>): Effect.Effect<number, never, Os> =>
  Effect.gen(function*() {
    const os = yield* Os
    const startedAt = yield* Clock.currentTimeMillis
    const settings = yield* Effect.exit(Effect.gen(function*() {
      return yield* LifecycleConfig
    }))
    if (Exit.isFailure(settings)) {
      yield* Effect.logError("startup failed").pipe(
        Effect.annotateLogs({ error: Log.describeCause(settings.cause) })
      )
      return 1
    }
    const controller = yield* makeController(settings.value)
    const lifecycle = controller.service
    const fail = lifecycle.fail

    const serve = Effect.scoped(Effect.gen(function*() {
      yield* lifecycle.phase("starting", Layer.build(main))
      yield* controller.ready
      const readyAt = yield* Clock.currentTimeMillis
      yield* Effect.logInfo("ready").pipe(Effect.annotateLogs({ startupMs: readyAt - startedAt }))
      if (os.ready !== undefined) yield* os.ready
      return yield* Effect.never
    })).pipe(Effect.provideService(Lifecycle, lifecycle))
    const mainFiber = yield* Effect.forkChild(serve, { startImmediately: true })

    const watcher = yield* Effect.forkChild(
      Effect.gen(function*() {
        const first = yield* Effect.raceFirst(
          Effect.raceFirst(
            Effect.map(os.signal, (signal) => ({ signal }) as const),
            Effect.map(Deferred.await(controller.stopRequested), (shutdown) => ({ shutdown }) as const)
          ),
          Effect.map(os.crash, (crash) => ({ crash }) as const)
        )
        if ("crash" in first) {
          yield* fail("crashed", { kind: first.crash.kind, error: Log.describeError(first.crash.error) })
        }
        yield* controller.beginStop(
          "signal" in first
            ? { signal: first.signal }
            : "crash" in first
            ? { crash: first.crash.kind }
            : { shutdown: true }
        )
        const budget = settings.value.shutdownTimeout
        yield* Effect.forkChild(Effect.sleep(budget).pipe(Effect.andThen(controller.force("deadline"))))
        // A finalizer that ignores its own bound must not keep the process alive forever.
        yield* Effect.forkChild(
          Effect.sleep(Duration.sum(budget, settings.value.releaseTimeout)).pipe(
            Effect.andThen(Effect.logError("finalizers still running past the hard limit; exiting")),
            Effect.andThen(os.exit(1))
          )
        )
        // A second signal while a startup step still runs (an acquire cannot be interrupted: the
        // embedded database's start, a connect) has that step to force: nothing watches `forced`
        // there, so the process exits now, as at the hard limit, instead of waiting the step out.
        const secondSignal = Effect.suspend(() =>
          lifecycle.currentPhase().startsWith("starting")
            ? fail("shutdown forced", { reason: "second signal", phase: lifecycle.currentPhase() }).pipe(
              Effect.andThen(Effect.logError("a startup step is still running; exiting without waiting for it")),
              Effect.andThen(os.exit(1))
            )
            : controller.force("second signal")
        )
        yield* Effect.forkChild(Effect.forever(os.signal.pipe(Effect.andThen(secondSignal))))
        // Later crashes are consumed so they cannot kill the process mid-release; the first one
        // already failed the run and was logged.
        yield* Effect.forkChild(Effect.forever(os.crash))
        yield* Fiber.interrupt(mainFiber)
      })
    )

    const exit = yield* Fiber.await(mainFiber)
    yield* Fiber.interrupt(watcher)

    let code = controller.hasFailed() ? 1 : 0
    if (Exit.isFailure(exit) && !Cause.hasInterruptsOnly(exit.cause)) {
      code = 1
      const level = yield* References.MinimumLogLevel
      yield* Effect.logError(lifecycle.isStopping() ? "failed while stopping" : "startup failed").pipe(
        Effect.annotateLogs(
          describeStartupFailure(exit.cause, level === "Debug" || level === "Trace" || level === "All")
        )
      )
    }
    const now = yield* Clock.currentTimeMillis
    const stoppedAt = controller.stoppedAt()
    yield* Effect.logInfo("phase").pipe(Effect.annotateLogs({
      phase: "stopped",
      durationMs: stoppedAt === undefined ? 0 : now - stoppedAt,
      exitCode: code,
      ...lifecycle.totals
    }))
    return code
  })

/**
 * The process entry point: run `main` on the real OS and exit with the code it earned.
 * A supervisor's worker passes its own `os` (signals merged with the supervisor's channel).
 */
export const run = <A, E>(
  main: Layer.Layer<A, E, Lifecycle>,
  os: Layer.Layer<Os> = Os.layer,
  /** Added to every log line of the process (a worker's generation and pid). */
  annotations: Readonly<Record<string, unknown>> = {}
): void => {
  // Annotated outside the Os too, so what it logs itself (a lost channel, an ignored signal) says who spoke.
  const program = runEffect(main).pipe(Effect.provide(os), Effect.annotateLogs(annotations))
  const withLogger = program.pipe(
    Effect.provide(Log.layerConfig),
    Effect.catchCause((cause) =>
      Effect.sync(() => {
        // The logger itself could not be configured: say so in the same JSON shape.
        console.log(Log.startupFailedLine(Log.describeCause(cause)))
        return 1
      })
    )
  )
  Effect.runFork(withLogger).addObserver((exit) => {
    process.exit(Exit.isSuccess(exit) ? exit.value : 1)
  })
}
