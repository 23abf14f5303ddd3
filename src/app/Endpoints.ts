/**
 * What every feature's endpoints share: the errors the middleware in front of them may answer,
 * the `:id` path parameter, and how a backing store's failure reaches the client (one 503).
 */
import { Effect, Schema } from "effect"
import { Log, Problem } from "../kit/index.ts"

/**
 * What the middleware in front of every endpoint may answer (Authentication, RateLimited) and a
 * store that cannot answer now, declared so `/openapi.json` shows those bodies too. The 400
 * comes with `Validation`.
 */
export const guarded = [Problem.Unauthorized, Problem.TooManyRequests, Problem.ServiceUnavailable] as const

/** A positive 32-bit id, as PostgreSQL's `integer` identity columns hold them. */
export const Id = Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 2_147_483_647 }))

/** `/…/:id`, an `integer` id. */
export const IdParams = Schema.Struct({
  id: Schema.NumberFromString.check(Schema.isInt(), Schema.isBetween({ minimum: 1, maximum: 2_147_483_647 }))
})

/**
 * Whatever the store said, the client hears "unavailable, retry" (503 with `Retry-After`); the
 * details go to the log under `feature`.
 */
export const unavailable = (feature: string) => <A, R>(effect: Effect.Effect<A, unknown, R>) =>
  effect.pipe(
    Effect.tapError((error) =>
      Effect.logWarning(`${feature}: backing store failed`).pipe(
        Effect.annotateLogs({ error: Log.describeError(error) })
      )
    ),
    Effect.mapError(() => new Problem.ServiceUnavailable({ detail: "the database is unavailable; try again" }))
  )
