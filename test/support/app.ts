/**
 * The reference application in-process, on a free port, against a fresh database of its own on
 * the suite's private PostgreSQL, with a known JWT secret so tests can mint any token.
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import { Context, Effect, Layer, Redacted } from "effect"
import * as Reactivity from "effect/reactivity/Reactivity"
import * as Jose from "jose"
import * as Crypto from "node:crypto"
import { inject } from "vitest"
import { Main } from "../../src/app/App.ts"
import * as Testing from "../../src/kit/testing.ts"

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
  // Only the path names the database; the query may carry the socket directory.
  const url = new URL(base)
  url.pathname = `/${name}`
  return url.toString()
})

export class App extends Context.Service<
  App,
  Testing.TestServer["Service"] & {
    readonly databaseUrl: string
  }
>()("test/App") {
  static readonly layer = (env: Record<string, string> = {}) =>
    Layer.unwrap(Effect.gen(function*() {
      const databaseUrl = env.DATABASE_URL ?? (yield* freshDatabase)
      return Layer.effect(
        App,
        Effect.gen(function*() {
          return { ...(yield* Testing.TestServer), databaseUrl }
        })
      ).pipe(
        Layer.provide(Testing.layer(Main, { JWT_SECRET: jwtSecret, ...env, DATABASE_URL: databaseUrl }))
      )
    }))
}

/** Runs a SQL statement on the app's database directly, bypassing the API. */
export const sqlOn = (url: string, text: string) =>
  Effect.scoped(Effect.gen(function*() {
    const sql = yield* PgClient.make({ url: Redacted.make(url), maxConnections: 1 })
    return yield* sql.unsafe<Record<string, unknown>>(text)
  })).pipe(Effect.provide(Reactivity.layer))
