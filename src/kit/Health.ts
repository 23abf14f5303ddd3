/**
 * The health-check registry and its routes: /livez, /readyz, /health. Each resource Layer
 * registers its own check; concurrent probes share one run; an optional one only degrades.
 */
import { Clock, Config, Context, Deferred, Duration, Effect, Exit, Fiber, Layer, Scope } from "effect"
import { HttpRouter, HttpServerResponse } from "effect/http"
import * as Worker from "./internal/supervisor/Worker.ts"
import { Lifecycle } from "./Lifecycle.ts"
import { describeCause } from "./Log.ts"
import { duration } from "./Settings.ts"

export const HealthConfig = Config.all({
  /** Default timeout of one check; a Layer may give its check its own. */
  checkTimeout: duration("HEALTH_CHECK_TIMEOUT", { default: "2 seconds", min: "10 millis", max: "1 minute" })
})

/** `degraded`: a non-critical check failed; the server still serves (with less). */
export type CheckStatus = "ok" | "failed" | "degraded" | "disabled"

export interface CheckResult {
  readonly status: CheckStatus
  readonly latencyMs: number
  readonly error?: string
}

export interface Report {
  /** No critical check failed: ready for traffic. */
  readonly healthy: boolean
  /** Some non-critical check failed. */
  readonly degraded: boolean
  readonly checks: Readonly<Record<string, CheckResult>>
}

interface Check {
  readonly name: string
  readonly run: Effect.Effect<void, unknown> | undefined
  readonly timeout: Duration.Duration
  readonly critical: boolean
}

export class Health extends Context.Service<Health, {
  /**
   * Registers `check` under `name` for as long as the calling scope lives. A check that
   * fails or outlives its timeout (`HEALTH_CHECK_TIMEOUT` unless given) fails readiness; with
   * `critical: false` (a dependency the server can serve without) it is reported `degraded`
   * instead, so a blip in it does not take every replica out of the load balancer at once.
   */
  readonly register: (
    name: string,
    check: Effect.Effect<unknown, unknown>,
    options?: { readonly timeout?: Duration.Input; readonly critical?: boolean }
  ) => Effect.Effect<void, never, Scope.Scope>
  /** Reports `name` as disabled (configured off): shown, never failing. */
  readonly registerDisabled: (name: string) => Effect.Effect<void, never, Scope.Scope>
  /** Runs every check once; callers that arrive during a run share its result. */
  readonly report: Effect.Effect<Report>
}>()("scoped-server/Health") {
  static readonly layer: Layer.Layer<Health, Config.ConfigError> = Layer.effect(
    Health,
    Effect.gen(function*() {
      const { checkTimeout } = yield* HealthConfig
      const scope = yield* Effect.scope
      const checks = new Map<string, Check>()
      let inflight: Deferred.Deferred<Report> | undefined

      const add = (check: Check) =>
        Effect.acquireRelease(
          Effect.sync(() => {
            checks.set(check.name, check)
          }),
          () =>
            Effect.sync(() => {
              checks.delete(check.name)
            })
        )

      const runOne = (check: Check): Effect.Effect<readonly [string, CheckResult]> => {
        const run = check.run
        if (run === undefined) {
          return Effect.succeed([check.name, { status: "disabled", latencyMs: 0 }] as const)
        }
        return Effect.gen(function*() {
          const start = yield* Clock.currentTimeMillis
          // A hung dependency may not give up its call when interrupted (a query waiting on a
          // stopped server): the probe stops waiting at the timeout and leaves the call to finish.
          const fiber = yield* Effect.forkIn(run, scope, { startImmediately: true })
          const exit = yield* Fiber.join(fiber).pipe(
            Effect.timeoutOrElse({
              duration: check.timeout,
              orElse: () =>
                Effect.andThen(
                  Effect.forkIn(Fiber.interrupt(fiber), scope),
                  Effect.fail(new Error(`timed out after ${Duration.toMillis(check.timeout)}ms`))
                )
            }),
            Effect.exit
          )
          const latencyMs = (yield* Clock.currentTimeMillis) - start
          const result: CheckResult = Exit.isSuccess(exit)
            ? { status: "ok", latencyMs }
            : { status: check.critical ? "failed" : "degraded", latencyMs, error: describeCause(exit.cause) }
          return [check.name, result] as const
        })
      }

      const runAll = Effect.suspend(() => Effect.forEach([...checks.values()], runOne, { concurrency: "unbounded" }))
        .pipe(
          Effect.map((results): Report => ({
            healthy: results.every(([, result]) => result.status !== "failed"),
            degraded: results.some(([, result]) => result.status === "degraded"),
            checks: Object.fromEntries(results)
          }))
        )

      // The run belongs to no single caller: a probe that disconnects must not cancel it for the rest.
      const report = Effect.suspend(() => {
        if (inflight !== undefined) return Deferred.await(inflight)
        const deferred = Deferred.makeUnsafe<Report>()
        inflight = deferred
        return runAll.pipe(
          // Cleared before the waiters resume, so a probe right after a run starts a fresh one.
          Effect.onExit((exit) =>
            Effect.suspend(() => {
              inflight = undefined
              return Deferred.done(deferred, exit)
            })
          ),
          Effect.forkIn(scope),
          Effect.andThen(Deferred.await(deferred))
        )
      })

      return {
        register: (name, check, options) =>
          add({
            name,
            run: Effect.asVoid(check),
            timeout: options?.timeout === undefined ? checkTimeout : Duration.fromInputUnsafe(options.timeout),
            critical: options?.critical ?? true
          }),
        registerDisabled: (name) => add({ name, run: undefined, timeout: checkTimeout, critical: false }),
        report
      }
    })
  )

  /** The probe routes; served on the main server and, when configured, the admin server. */
  static readonly routes = HttpRouter.addAll([
    HttpRouter.route("GET", "/livez", Effect.succeed(HttpServerResponse.jsonUnsafe({ status: "ok" }))),
    HttpRouter.route(
      "GET",
      "/readyz",
      Effect.gen(function*() {
        const lifecycle = yield* Lifecycle
        if (lifecycle.isStopping()) {
          return HttpServerResponse.jsonUnsafe({ status: "draining" }, { status: 503 })
        }
        const { checks, degraded, healthy } = yield* (yield* Health).report
        return HttpServerResponse.jsonUnsafe(
          { status: !healthy ? "unready" : degraded ? "degraded" : "ready", checks },
          { status: healthy ? 200 : 503 }
        )
      })
    ),
    HttpRouter.route(
      "GET",
      "/health",
      Effect.gen(function*() {
        const lifecycle = yield* Lifecycle
        const { checks, degraded, healthy } = yield* (yield* Health).report
        const status = !healthy ? "unhealthy" : lifecycle.isStopping() ? "draining" : degraded ? "degraded" : "ok"
        // Under a supervisor, which worker answered: an upgrade's progress can be read from outside.
        const body = Worker.identity === undefined ? { status, checks } : { status, checks, worker: Worker.identity }
        return HttpServerResponse.jsonUnsafe(body, { status: status === "ok" || status === "degraded" ? 200 : 503 })
      })
    )
  ])
}
