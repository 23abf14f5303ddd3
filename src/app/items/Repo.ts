/**
 * The items table: one query per operation, each through the pool's bounded checkout.
 * Timestamps are formatted by PostgreSQL, so what is stored is what is returned.
 */
import { Context, Effect, Layer, Option } from "effect"
import { Postgres } from "../../kit/index.ts"
import type { Item } from "./Api.ts"

const columns =
  `id, name, description, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS "createdAt"`

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
        create: ({ description, name }) =>
          use(
            sql<Item>`INSERT INTO items (name, description) VALUES (${name}, ${description ?? ""}) RETURNING ${select}`
          )
            .pipe(Effect.map((rows) => rows[0]!)),
        remove: (id) =>
          use(sql`DELETE FROM items WHERE id = ${id} RETURNING id`).pipe(Effect.map((rows) => rows.length > 0))
      }
    })
  )
}
