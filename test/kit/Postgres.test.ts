/**
 * The pool against a real private PostgreSQL: proven at startup, migrated once under
 * concurrency, a bounded checkout, and health that follows the server down and back.
 */
import { assert, describe, it, layer } from "@effect/vitest"
import { ConfigProvider, Context, Effect, Exit, Fiber, Layer, Redacted } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { Health } from "../../src/kit/Health.ts"
import * as Lifecycle from "../../src/kit/Lifecycle.ts"
import * as Log from "../../src/kit/Log.ts"
import { migrationLockKey, type Migrations, Postgres } from "../../src/kit/Postgres.ts"
import { privatePostgres } from "../support/postgres.ts"

/** The kit's own test schema: one table, as an app would pass its migrations. */
const migrations: Migrations = {
  "0001_create_widgets": Effect.gen(function*() {
    const sql = yield* SqlClient
    yield* sql`CREATE TABLE widgets (id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL)`
  })
}

class Server extends Context.Service<Server, Effect.Success<typeof privatePostgres>>()("test/PostgresServer") {
  static readonly layer = Layer.effect(Server, privatePostgres)
}

/** The pool as the app builds it, on `env`, with a Health registry to inspect. */
const pool = (env: Record<string, string>) =>
  Layer.mergeAll(Postgres.layerConfig({ migrations }), Health.layer).pipe(
    Layer.provideMerge(Health.layer),
    Layer.provide(Lifecycle.Lifecycle.layerTest),
    Layer.provide(ConfigProvider.layer(ConfigProvider.fromUnknown(env)))
  )

const build = <A>(
  env: Record<string, string>,
  f: (services: { postgres: Postgres["Service"]; health: Health["Service"] }) => Effect.Effect<A, unknown>
) =>
  Effect.scoped(Effect.gen(function*() {
    const context = yield* Layer.build(pool(env))
    const postgres = Context.get(context, Postgres)
    const health = Context.get(context, Health)
    return yield* f({ postgres, health })
  }))

const createDatabase = (server: Server["Service"], name: string) =>
  build(server.env(), ({ postgres }) => postgres.sql.unsafe(`CREATE DATABASE ${name}`))

describe("Postgres", () => {
  layer(Server.layer, { excludeTestServices: true, timeout: "60 seconds" })((it) => {
    it.effect("proves the connection, runs the migrations and reports the database healthy", () =>
      Effect.gen(function*() {
        const server = yield* Server
        yield* createDatabase(server, "fresh")
        yield* build(server.env("fresh"), ({ postgres, health }) =>
          Effect.gen(function*() {
            const tables = yield* postgres.sql<{ table_name: string }>`
              SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name`
            assert.deepStrictEqual(tables.map((t) => t.table_name), ["effect_sql_migrations", "widgets"])
            const report = yield* health.report
            assert.strictEqual(report.checks.database?.status, "ok")
          }))
      }))

    it.effect("several replicas starting at once migrate exactly once", () =>
      Effect.gen(function*() {
        const server = yield* Server
        yield* createDatabase(server, "replicas")
        yield* Effect.all(
          Array.from({ length: 4 }, () => build(server.env("replicas"), () => Effect.void)),
          { concurrency: "unbounded" }
        )
        const applied = yield* build(server.env("replicas"), ({ postgres }) =>
          postgres.sql<{ migration_id: number }>`SELECT migration_id FROM effect_sql_migrations`)
        assert.deepStrictEqual(
          applied.map((row) =>
            row.migration_id
          ),
          [1]
        )
      }))

    it.effect("a database already migrated is not locked again: a start does not wait on another's migration lock", () =>
      Effect.gen(function*() {
        const server = yield* Server
        yield* createDatabase(server, "current")
        yield* build(server.env("current"), () => Effect.void)
        yield* build(server.env("current"), ({ postgres }) =>
          // Another replica holds the migration lock (as while it migrates), on one connection
          // until this transaction ends...
          postgres.sql.withTransaction(Effect.gen(function*() {
            yield* postgres.sql`SELECT pg_advisory_xact_lock(${migrationLockKey})`
            // ...and this one still starts, at once.
            const started = Date.now()
            yield* build(server.env("current"), () => Effect.void).pipe(Effect.timeout("5 seconds"))
            assert.isBelow(Date.now() - started, 2_000)
          })))
      }))

    it.effect("a freed connection goes to the request already waiting, not to one arriving as it frees", () =>
      Effect.gen(function*() {
        const server = yield* Server
        const order = yield* build({ ...server.env(), DB_POOL_SIZE: "1" }, ({ postgres }) =>
          Effect.gen(function*() {
            const order: Array<string> = []
            const holder = yield* Effect.forkChild(
              // The holder asks again the moment it gives its permit back.
              postgres.use(Effect.sleep("150 millis")).pipe(
                Effect.andThen(postgres.use(Effect.sync(() => order.push("arriving"))))
              )
            )
            yield* Effect.sleep("30 millis")
            const waiter = yield* Effect.forkChild(postgres.use(Effect.sync(() => order.push("waiting"))))
            yield* Fiber.join(holder)
            yield* Fiber.join(waiter)
            return order
          }))
        assert.deepStrictEqual(order, ["waiting", "arriving"])
      }))

    it.effect("a request waiting past DB_ACQUIRE_TIMEOUT for a connection fails fast with a 503 error", () =>
      Effect.gen(function*() {
        const server = yield* Server
        yield* build(
          { ...server.env(), DB_POOL_SIZE: "1", DB_ACQUIRE_TIMEOUT: "200ms" },
          ({ postgres }) =>
            Effect.gen(function*() {
              const holder = yield* Effect.forkChild(postgres.use(postgres.sql`SELECT pg_sleep(1)`))
              yield* Effect.sleep("50 millis")
              const started = Date.now()
              const exit = yield* Effect.exit(postgres.use(postgres.sql`SELECT 1`))
              const waited = Date.now() - started
              assert.isTrue(Exit.isFailure(exit))
              assert.match(
                String(Exit.isFailure(exit) && exit.cause),
                /AcquireTimeout|no database connection free within 200ms/
              )
              assert.isAtLeast(waited, 190)
              assert.isBelow(waited, 600)
              yield* Fiber.join(holder)
              // Once the holder is done, the connection is free again.
              assert.deepStrictEqual(yield* postgres.use(postgres.sql<{ one: number }>`SELECT 1 AS one`), [{ one: 1 }])
            })
        )
      }))

    it.effect("health follows a hung server (SIGSTOP) within the check timeout and recovers on SIGCONT", () =>
      Effect.gen(function*() {
        const server = yield* Server
        yield* build({ ...server.env(), DB_HEALTH_TIMEOUT: "300ms" }, ({ health }) =>
          Effect.gen(function*() {
            yield* server.signal("SIGSTOP")
            const started = Date.now()
            const down = yield* health.report
            const took = Date.now() - started
            yield* server.signal("SIGCONT")
            assert.deepStrictEqual(down.checks.database?.status, "failed")
            assert.strictEqual(down.checks.database?.error, "timed out after 300ms")
            assert.isBelow(took, 800)
            // The check's own connection was cut at the timeout; the next checks reconnect.
            let up = yield* health.report
            for (let attempt = 0; attempt < 30 && up.checks.database?.status !== "ok"; attempt++) {
              yield* Effect.sleep("100 millis")
              up = yield* health.report
            }
            assert.strictEqual(up.checks.database?.status, "ok")
          }).pipe(Effect.ensuring(server.signal("SIGCONT"))))
      }))

    it.effect("a pool saturated by slow queries is busy, not down: the check has its own connection", () =>
      Effect.gen(function*() {
        const server = yield* Server
        yield* build(
          { ...server.env(), DB_POOL_SIZE: "2", DB_HEALTH_TIMEOUT: "300ms" },
          ({ health, postgres }) =>
            Effect.gen(function*() {
              // Every pooled connection held, as by requests running slow queries.
              const holders = yield* Effect.forEach([1, 2], () => Effect.forkChild(postgres.sql`SELECT pg_sleep(1.5)`))
              yield* Effect.sleep("200 millis")
              const started = Date.now()
              const report = yield* health.report
              const took = Date.now() - started
              assert.strictEqual(report.checks.database?.status, "ok")
              assert.isTrue(report.healthy)
              assert.isBelow(took, 300)
              yield* Effect.forEach(holders, Fiber.join)
            })
        )
      }))

    const startupFailure = (env: Record<string, string>) =>
      Effect.gen(function*() {
        const started = Date.now()
        const exit = yield* Effect.exit(build({ DB_CONNECT_TIMEOUT: "10s", ...env }, () => Effect.void))
        assert.isTrue(Exit.isFailure(exit))
        return { took: Date.now() - started, message: Exit.isFailure(exit) ? Log.describeCause(exit.cause) : "" }
      })

    it.effect("a wrong password fails startup at once, naming pg's error, not after DB_CONNECT_TIMEOUT", () =>
      Effect.gen(function*() {
        const server = yield* Server
        // Password auth for one role only (first match wins), so the suite's trust entries stay.
        const hba = Path.join(server.dataDir, "pg_hba.conf")
        Fs.writeFileSync(hba, `local all alice scram-sha-256\n${Fs.readFileSync(hba, "utf8")}`)
        yield* build(server.env(), ({ postgres }) =>
          Effect.andThen(
            postgres.sql.unsafe("CREATE ROLE alice LOGIN PASSWORD 'right-password'"),
            postgres.sql.unsafe("SELECT pg_reload_conf()")
          ))
        const { message, took } = yield* startupFailure({
          // The private server listens on its unix socket only.
          DATABASE_URL: Redacted.value(server.urlFor("postgres")).replace("postgres@", "alice:wrong-password@")
        })
        assert.match(
          message,
          /^cannot reach postgres at alice@.*\/postgres: 28P01 password authentication failed for user "alice"$/
        )
        assert.notInclude(message, "wrong-password")
        assert.isBelow(took, 1_000)
      }))

    it.effect("an unknown database fails startup at once, naming it", () =>
      Effect.gen(function*() {
        const server = yield* Server
        const { message, took } = yield* startupFailure(server.env("no_such_db"))
        assert.match(message, /: 3D000 database "no_such_db" does not exist$/)
        assert.isBelow(took, 1_000)
      }))

    it.effect("health follows a killed server and the pool recovers when it is back, without a restart", () =>
      Effect.gen(function*() {
        const server = yield* Server
        yield* build(
          { ...server.env(), DB_HEALTH_TIMEOUT: "500ms", DB_CONNECT_TIMEOUT: "1s" },
          ({ health, postgres }) =>
            Effect.gen(function*() {
              yield* server.kill
              const down = yield* health.report
              assert.strictEqual(down.checks.database?.status, "failed")
              const failed = yield* Effect.exit(postgres.use(postgres.sql`SELECT 1`))
              assert.isTrue(Exit.isFailure(failed))
              yield* server.restart
              const up = yield* health.report.pipe(
                Effect.repeat({ until: (report) => report.healthy, times: 20 }),
                Effect.delay("100 millis")
              )
              assert.strictEqual(up.checks.database?.status, "ok")
            })
        )
      }))
  })

  it.live("an unreachable DATABASE_URL fails within DB_CONNECT_TIMEOUT, naming the host but never the password", () =>
    Effect.gen(function*() {
      const started = Date.now()
      const exit = yield* Effect.exit(build(
        {
          DATABASE_URL: Redacted.value(Redacted.make("postgres://app:s3cret@127.0.0.1:1/appdb")),
          DB_CONNECT_TIMEOUT: "1s"
        },
        () => Effect.void
      ))
      const took = Date.now() - started
      assert.isTrue(Exit.isFailure(exit))
      const message = Exit.isFailure(exit) ? Log.describeCause(exit.cause) : ""
      assert.match(
        message,
        /^cannot reach postgres at app@127\.0\.0\.1:1\/appdb: no answer within 1000ms; last error: .*ECONNREFUSED/
      )
      assert.notInclude(message, "s3cret")
      assert.isBelow(took, 2_000)
    }))
})
