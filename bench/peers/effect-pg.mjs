// Peer for the items benchmark: Effect's own stack with nothing of scoped-server's, the floor of
// that path here: an HttpApi endpoint (query decoded, body encoded by schema) on
// @effect/sql-pg (pool of 10) running the same single query, behind the same HS256 check as
// Fastify+pg's (jose on every request, key imported once); Effect's default NodeHttpServer.
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as PgClient from "@effect/sql-pg/PgClient"
import { Effect, Layer, Redacted, Schema } from "effect"
import { HttpRouter } from "effect/http"
import {
  HttpApi,
  HttpApiBuilder,
  HttpApiEndpoint,
  HttpApiError,
  HttpApiGroup,
  HttpApiMiddleware,
  HttpApiSecurity
} from "effect/http-api"
import { jwtVerify } from "jose"
import * as Http from "node:http"

class Auth extends HttpApiMiddleware.Service()("Auth", {
  security: { bearer: HttpApiSecurity.bearer },
  error: HttpApiError.Unauthorized
}) {}

const Item = Schema.Struct({
  id: Schema.Int,
  name: Schema.String,
  description: Schema.String,
  createdAt: Schema.String
})
const ItemPage = Schema.Struct({
  items: Schema.Array(Item),
  pagination: Schema.Struct({ page: Schema.Int, perPage: Schema.Int, total: Schema.Int })
})
const Query = Schema.Struct({
  page: Schema.optionalKey(
    Schema.NumberFromString.check(Schema.isInt(), Schema.isBetween({ minimum: 1, maximum: 1_000_000 }))
  ),
  perPage: Schema.optionalKey(
    Schema.NumberFromString.check(Schema.isInt(), Schema.isBetween({ minimum: 1, maximum: 100 }))
  )
})
const Api = HttpApi.make("peer").add(
  HttpApiGroup.make("items")
    .add(HttpApiEndpoint.get("list", "/items", { query: Query, success: ItemPage }))
    .middleware(Auth)
    .prefix("/api/v1")
)

const AuthLive = Layer.effect(
  Auth,
  Effect.gen(function*() {
    const key = yield* Effect.promise(() =>
      crypto.subtle.importKey(
        "raw",
        new TextEncoder().encode(process.env.JWT_SECRET),
        { name: "HMAC", hash: "SHA-256" },
        false,
        ["verify"]
      )
    )
    return {
      bearer: (httpEffect, { credential }) =>
        Effect.tryPromise(() => jwtVerify(Redacted.value(credential), key, { algorithms: ["HS256"] })).pipe(
          Effect.mapError(() => new HttpApiError.Unauthorized()),
          Effect.andThen(httpEffect)
        )
    }
  })
)

const ItemsLive = HttpApiBuilder.group(Api, "items", (handlers) =>
  Effect.gen(function*() {
    const sql = yield* PgClient.PgClient
    return handlers.handle("list", ({ query }) => {
      const page = query.page ?? 1
      const perPage = query.perPage ?? 20
      return sql`
      SELECT (SELECT count(*)::int FROM items) AS total,
             COALESCE((SELECT json_agg(p) FROM (
               SELECT id, name, description, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS "createdAt"
               FROM items ORDER BY id LIMIT ${perPage} OFFSET ${(page - 1) * perPage}
             ) p), '[]'::json) AS items`.pipe(
        Effect.map(([row]) => ({ items: row.items, pagination: { page, perPage, total: row.total } })),
        Effect.orDie
      )
    })
  }))

const Routes = HttpApiBuilder.layer(Api).pipe(Layer.provide(ItemsLive), Layer.provide(AuthLive))
const Main = HttpRouter.serve(Routes, { disableLogger: true, disableListenLog: true }).pipe(
  Layer.provide(
    NodeHttpServer.layer(Http.createServer, { port: Number(process.env.PORT), host: process.env.HOST ?? "127.0.0.1" })
  ),
  Layer.provide(PgClient.layer({ url: Redacted.make(process.env.DATABASE_URL), maxConnections: 10 }))
)
NodeRuntime.runMain(Layer.launch(Main))
