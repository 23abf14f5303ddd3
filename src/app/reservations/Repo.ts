/**
 * The reservations table: each caller sees only its own live holds (expired ones are filtered
 * at read, so the sweep's cadence never shows), and the expiry job deletes them in batches.
 */
import { Context, Effect, Layer, Option } from "effect"
import { Postgres } from "../../kit/index.ts"
import type { Reservation } from "./Api.ts"

const iso = (column: string) => `to_char(${column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`
const columns = `id, item_id AS "itemId", quantity, ${iso("created_at")} AS "createdAt", ${
  iso("expires_at")
} AS "expiresAt"`

/** PostgreSQL's foreign_key_violation: the item named does not exist. */
const foreignKeyViolation = "23503"

const sqlState = (error: unknown): string | undefined => {
  for (let cause: unknown = error, depth = 0; cause !== undefined && depth < 5; depth++) {
    const code = (cause as { code?: unknown }).code
    if (typeof code === "string" && /^[0-9A-Z]{5}$/.test(code)) return code
    cause = (cause as { cause?: unknown }).cause
  }
  return undefined
}

export class ReservationsRepo extends Context.Service<ReservationsRepo, {
  /** The holder's live reservations, a page in id order, and their total, in one round trip. */
  readonly list: (
    holder: string,
    page: { readonly perPage: number; readonly offset: number }
  ) => Effect.Effect<{ readonly reservations: ReadonlyArray<Reservation>; readonly total: number }, unknown>
  readonly get: (holder: string, id: number) => Effect.Effect<Option.Option<Reservation>, unknown>
  /** None: no such item. */
  readonly create: (
    holder: string,
    input: { readonly itemId: number; readonly quantity: number; readonly ttlMs: number }
  ) => Effect.Effect<Option.Option<Reservation>, unknown>
  /** True when the holder had such a live reservation. */
  readonly remove: (holder: string, id: number) => Effect.Effect<boolean, unknown>
  /**
   * Deletes up to `limit` expired reservations (the longest expired first, by the expiry index)
   * and says how many. Concurrent sweeps (workers, replicas) skip each other's rows instead of
   * waiting on them.
   */
  readonly deleteExpired: (limit: number) => Effect.Effect<number, unknown>
}>()("scoped-server/ReservationsRepo") {
  static readonly layer = Layer.effect(
    ReservationsRepo,
    Effect.gen(function*() {
      const { sql, use } = yield* Postgres
      const select = sql.literal(columns)
      return {
        list: (holder, { offset, perPage }) =>
          use(sql<{ total: number; reservations: ReadonlyArray<Reservation> }>`
            SELECT (SELECT count(*)::int FROM reservations WHERE holder = ${holder} AND expires_at > now()) AS total,
                   COALESCE((SELECT json_agg(p) FROM (
                     SELECT ${select} FROM reservations WHERE holder = ${holder} AND expires_at > now()
                     ORDER BY id LIMIT ${perPage} OFFSET ${offset}
                   ) p), '[]'::json) AS reservations`).pipe(
            Effect.map(([row]) => ({ reservations: row!.reservations, total: row!.total }))
          ),
        get: (holder, id) =>
          use(sql<Reservation>`
            SELECT ${select} FROM reservations WHERE id = ${id} AND holder = ${holder} AND expires_at > now()`).pipe(
            Effect.map((rows) => Option.fromNullishOr(rows[0]))
          ),
        create: (holder, { itemId, quantity, ttlMs }) =>
          use(sql<Reservation>`
            INSERT INTO reservations (item_id, holder, quantity, expires_at)
            VALUES (${itemId}, ${holder}, ${quantity}, now() + make_interval(secs => ${ttlMs / 1000}))
            RETURNING ${select}`).pipe(
            Effect.map((rows) => Option.some(rows[0]!)),
            Effect.catchIf((error) => sqlState(error) === foreignKeyViolation, () => Effect.succeedNone)
          ),
        remove: (holder, id) =>
          use(sql`
            DELETE FROM reservations WHERE id = ${id} AND holder = ${holder} AND expires_at > now() RETURNING id`)
            .pipe(Effect.map((rows) => rows.length > 0)),
        deleteExpired: (limit) =>
          use(sql<{ deleted: number }>`
            WITH deleted AS (
              DELETE FROM reservations WHERE id IN (
                SELECT id FROM reservations WHERE expires_at <= now() ORDER BY expires_at LIMIT ${limit} FOR UPDATE SKIP LOCKED
              ) RETURNING 1
            ) SELECT count(*)::int AS deleted FROM deleted`).pipe(Effect.map(([row]) => row!.deleted))
      }
    })
  )
}
