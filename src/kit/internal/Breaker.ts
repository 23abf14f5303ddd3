/**
 * A circuit breaker for a remote store: after a failure that means "not answering" no caller
 * waits on it again until a background probe, once per cool-down, finds it answering.
 */
import { Duration, Effect, Scope } from "effect"
import { describeError } from "../Log.ts"

export type BreakerState = "closed" | "open" | "probing"

export interface Breaker {
  /**
   * Runs `effect` while closed; while open, fails at once with `rejected()` without running it.
   * A failure `trips` accepts opens the breaker, and so does an interruption that came after the
   * call had waited `slowAfter` (a caller's own timeout cut it: the store is not answering).
   */
  readonly guard: <A, E, R, E2>(
    effect: Effect.Effect<A, E, R>,
    options: { readonly trips: (error: E) => boolean; readonly rejected: () => E2 }
  ) => Effect.Effect<A, E | E2, R>
  readonly state: () => BreakerState
  /** How many times it has opened (for tests and logs). */
  readonly openings: () => number
}

export interface BreakerOptions {
  /** Wait this long after opening (and after each failed probe) before probing again. */
  readonly coolDown: Duration.Duration
  /** A call interrupted after waiting this long counts as a timeout. */
  readonly slowAfter: Duration.Duration
  /** Succeeds when the store answers again; it should be bounded by its own timeout. */
  readonly probe: Effect.Effect<unknown, unknown>
  readonly onOpen?: (reason: string) => Effect.Effect<void>
  readonly onClose?: Effect.Effect<void>
}

/**
 * The probe runs in the background, not on a request: a request never pays for finding out
 * whether the store is back, so an outage costs requests at most the one timeout that opened it
 * (and the calls already in flight with it). Probes belong to the scope and stop with it.
 */
export const make = (options: BreakerOptions): Effect.Effect<Breaker, never, Scope.Scope> =>
  Effect.gen(function*() {
    const scope = yield* Effect.scope
    let state: BreakerState = "closed"
    let openings = 0
    const slowAfterMs = Duration.toMillis(options.slowAfter)

    const probeLoop: Effect.Effect<void> = Effect.sleep(options.coolDown).pipe(
      Effect.andThen(Effect.sync(() => {
        state = "probing"
      })),
      Effect.andThen(Effect.exit(options.probe)),
      Effect.flatMap((exit) => {
        if (exit._tag === "Success") {
          state = "closed"
          return options.onClose ?? Effect.void
        }
        state = "open"
        return probeLoop
      })
    )

    const open = (reason: string): Effect.Effect<void> =>
      Effect.suspend(() => {
        if (state !== "closed") return Effect.void
        state = "open"
        openings++
        return Effect.andThen(
          options.onOpen?.(reason) ?? Effect.void,
          Effect.asVoid(Effect.forkIn(probeLoop, scope))
        )
      })

    const guard: Breaker["guard"] = <A, E, R, E2>(
      effect: Effect.Effect<A, E, R>,
      { rejected, trips }: { readonly trips: (error: E) => boolean; readonly rejected: () => E2 }
    ) =>
      Effect.clockWith((clock): Effect.Effect<A, E | E2, R> => {
        if (state !== "closed") return Effect.fail(rejected())
        const startedAt = clock.currentTimeMillisUnsafe()
        return effect.pipe(
          Effect.tapError((error) => trips(error) ? open(describeError(error)) : Effect.void),
          Effect.onInterrupt(() =>
            clock.currentTimeMillisUnsafe() - startedAt >= slowAfterMs
              ? open(`no answer within ${slowAfterMs}ms`)
              : Effect.void
          )
        )
      })

    return { guard, state: () => state, openings: () => openings } satisfies Breaker
  })
