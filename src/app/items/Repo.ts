/**
 * The items table: one statement per operation, each through the pool's bounded checkout. Writes
 * NOTIFY their change in the same statement, so it is sent only if, and in the order, they commit.
 */
import { Context, Effect, Layer, Option } from "effect"
import { Postgres } from "../../kit/index.ts"
import type { Item } from "./Api.ts"

const columns =
  `id, name, description, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS "createdAt"`

/** The NOTIFY channel the writes send their changes on (ItemEvents listens to it). */
export const channel = "items"

/**
 * PostgreSQL refuses a NOTIFY payload of 8000 bytes or more (in the database's encoding), and an
 * item can be larger (2000 control characters are 12000 bytes of JSON): such a change is sent
 * as its id alone, and each listener reads the item back.
 */
export const payloadLimit = 8000

export class ItemsRepo extends Context.Service<ItemsRepo, {
  /** A page in a stable order (by id) and the total, in one round trip. */
  readonly list: (
    page: number,
    perPage: number
  ) => Effect.Effect<{ readonly items: ReadonlyArray<Item>; readonly total: number }, unknown>
  readonly get: (id: number) => Effect.Effect<Option.Option<Item>, unknown>
  readonly create: (input: { readonly name: string; readonly description?: string }) => Effect.Effect<Item, unknown>
  /** True when there was such an item. */
  readonly remove: (id: number) => Effect.Effect<boolean, unknown>
}>()("scoped-server/ItemsRepo") {
  static readonly layer = Layer.effect(
    ItemsRepo,
    Effect.gen(function*() {
      const { sql, use } = yield* Postgres
      const select = sql.literal(columns)
      // pg_notify sits in the select list (a FROM-clause call the planner may drop); its void
      // column is not part of the item.
      const item = ({ notified: _, ...item }: Item & { readonly notified: unknown }): Item => item
      return {
        list: (page, perPage) =>
          use(sql<{ total: number; items: ReadonlyArray<Item> }>`
            SELECT (SELECT count(*)::int FROM items) AS total,
                   COALESCE((SELECT json_agg(p) FROM (
                     SELECT ${select} FROM items ORDER BY id LIMIT ${perPage} OFFSET ${(page - 1) * perPage}
                   ) p), '[]'::json) AS items`).pipe(
            Effect.map(([row]) => ({ items: row!.items, total: row!.total }))
          ),
        get: (id) =>
          use(sql<Item>`SELECT ${select} FROM items WHERE id = ${id}`).pipe(
            Effect.map((rows) => Option.fromNullishOr(rows[0]))
          ),
        // The change whole when it fits the payload limit, else its id (ItemEvents reads it back).
        create: ({ description, name }) =>
          use(sql<Item & { readonly notified: unknown }>`
            WITH inserted AS (
              INSERT INTO items (name, description) VALUES (${name}, ${description ?? ""}) RETURNING ${select}
            )
            SELECT inserted.*, pg_notify(${channel}, CASE
              WHEN octet_length(change) < ${payloadLimit} THEN change
              ELSE json_build_object('type', 'created', 'id', id)::text
            END) AS notified
            FROM inserted, LATERAL (SELECT json_build_object('type', 'created', 'item', json_build_object(
              'id', id, 'name', name, 'description', description, 'createdAt', "createdAt"
            ))::text AS change) AS c`).pipe(Effect.map((rows) => item(rows[0]!))),
        remove: (id) =>
          use(sql`
            WITH removed AS (DELETE FROM items WHERE id = ${id} RETURNING id)
            SELECT pg_notify(${channel}, json_build_object('type', 'removed', 'id', id)::text) FROM removed`)
            .pipe(Effect.map((rows) => rows.length > 0))
      }
    })
  )
}
