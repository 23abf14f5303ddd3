/**
 * The whole application in-process, on a free port, against a fresh database of its own on the
 * suite's private PostgreSQL, with a known JWT secret so tests can mint any token.
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import { ConfigProvider, Context, Effect, Layer, Redacted } from "effect"
import * as Reactivity from "effect/reactivity/Reactivity"
import * as Jose from "jose"
import * as Crypto from "node:crypto"
import { inject } from "vitest"
import { Main } from "../../src/App.ts"
import { HttpServer } from "../../src/HttpServer.ts"
import * as Lifecycle from "../../src/Lifecycle.ts"

export const jwtSecret = "test-secret-with-enough-entropy-0123456789"

export const mint = (options: {
  readonly subject?: string | undefined
  readonly expiresIn?: string | number | undefined
  readonly secret?: string | undefined
} = {}) => {
  let jwt = new Jose.SignJWT({}).setProtectedHeader({ alg: "HS256" }).setIssuedAt()
  if (options.subject !== "") jwt = jwt.setSubject(options.subject ?? "tester")
  jwt = jwt.setExpirationTime(options.expiresIn ?? "1h")
  return jwt.sign(new TextEncoder().encode(options.secret ?? jwtSecret))
}

/** A new empty database on the suite's server; the app migrates it when it starts. */
export const freshDatabase = Effect.gen(function*() {
  const base = inject("databaseUrl")
  const name = `app_${Crypto.randomBytes(6).toString("hex")}`
  yield* Effect.scoped(Effect.gen(function*() {
    const sql = yield* PgClient.make({ url: Redacted.make(base), maxConnections: 1 })
    yield* sql.unsafe(`CREATE DATABASE ${name}`)
  })).pipe(Effect.provide(Reactivity.layer))
  return base.replace(/\/[^/]*$/, `/${name}`)
})

export class App extends Context.Service<App, {
  readonly port: number
  readonly databaseUrl: string
  readonly fetch: (path: string, init?: RequestInit & { readonly token?: string | undefined }) => Promise<Response>
}>()("test/App") {
  static readonly layer = (env: Record<string, string> = {}) =>
    Layer.unwrap(Effect.gen(function*() {
      const databaseUrl = env.DATABASE_URL ?? (yield* freshDatabase)
      const config = ConfigProvider.fromUnknown({
        PORT: "0",
        HOST: "127.0.0.1",
        JWT_SECRET: jwtSecret,
        ACCESS_LOG: "false",
        LOG_LEVEL: "Warn",
        ...env,
        DATABASE_URL: databaseUrl
      })
      return Layer.effect(
        App,
        Effect.gen(function*() {
          const { address } = yield* HttpServer
          const port = (address as { readonly port: number }).port
          return {
            port,
            databaseUrl,
            fetch: (path, init = {}) => {
              const headers = new Headers(init.headers)
              if (init.token !== undefined) headers.set("authorization", `Bearer ${init.token}`)
              return fetch(`http://127.0.0.1:${port}${path}`, { ...init, headers })
            }
          }
        })
      ).pipe(
        Layer.provide(Main),
        Layer.provide(Lifecycle.Lifecycle.layerTest),
        Layer.provide(ConfigProvider.layer(config))
      )
    }))
}

/** Runs a SQL statement on the app's database directly, bypassing the API. */
export const sqlOn = (url: string, text: string) =>
  Effect.scoped(Effect.gen(function*() {
    const sql = yield* PgClient.make({ url: Redacted.make(url), maxConnections: 1 })
    return yield* sql.unsafe<Record<string, unknown>>(text)
  })).pipe(Effect.provide(Reactivity.layer))
