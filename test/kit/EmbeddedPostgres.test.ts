/**
 * The embedded PostgreSQL: unprivileged, in its own process group, stopped with its scope, and
 * recovering from a crashed parent or a stale lock file without losing committed rows.
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Scope } from "effect"
import * as Reactivity from "effect/reactivity/Reactivity"
import * as Fs from "node:fs"
import * as Path from "node:path"
import * as EmbeddedPostgres from "../../src/kit/EmbeddedPostgres.ts"
import { makeTempDir, optionsFor } from "../support/postgres.ts"

const procField = (pid: number, field: string) =>
  Fs.readFileSync(`/proc/${pid}/status`, "utf8").split("\n").find((line) => line.startsWith(`${field}:`))?.split(/\s+/)[1]
const processGroup = (pid: number) => Number(Fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ")[2])
const isAlive = (pid: number) => Fs.existsSync(`/proc/${pid}`) && procField(pid, "State") !== "Z"

const query = <A>(instance: EmbeddedPostgres.Instance, f: (sql: PgClient.PgClient) => Effect.Effect<A, unknown>) =>
  Effect.scoped(Effect.flatMap(PgClient.make({ url: instance.url, maxConnections: 1 }), f)).pipe(
    Effect.provide(Reactivity.layer)
  )

describe("EmbeddedPostgres", () => {
  it.live("runs unprivileged in its own process group and stops when its scope closes", () =>
    Effect.gen(function*() {
      const root = yield* makeTempDir("scoped-server-embedded-")
      const scope = yield* Scope.make()
      const instance = yield* EmbeddedPostgres.start(optionsFor(Path.join(root, "data"))).pipe(Scope.provide(scope))
      const rows = yield* query(instance, (sql) => sql<{ one: number }>`SELECT 1 AS one`)
      assert.deepStrictEqual(rows, [{ one: 1 }])
      if (process.getuid?.() === 0) assert.strictEqual(procField(instance.pid, "Uid"), "65534")
      assert.notStrictEqual(processGroup(instance.pid), processGroup(process.pid))
      assert.strictEqual(processGroup(instance.pid), instance.pid)
      yield* Scope.close(scope, Exit.void)
      assert.isFalse(isAlive(instance.pid))
      assert.isFalse(Fs.existsSync(Path.join(root, "data", "postmaster.pid")))
    }))

  it.live("takes over from a server a crashed parent left running, keeping committed rows", () =>
    Effect.gen(function*() {
      const root = yield* makeTempDir("scoped-server-embedded-")
      const dataDir = Path.join(root, "data")
      // The first parent "crashes": its scope is never closed while the second one starts.
      const orphanScope = yield* Scope.make()
      const orphan = yield* EmbeddedPostgres.start(optionsFor(dataDir)).pipe(Scope.provide(orphanScope))
      yield* query(orphan, (sql) =>
        Effect.andThen(sql`CREATE TABLE kept (id int)`, sql`INSERT INTO kept VALUES (1), (2)`))
      const next = yield* EmbeddedPostgres.start(optionsFor(dataDir))
      assert.isFalse(isAlive(orphan.pid))
      const rows = yield* query(next, (sql) => sql<{ id: number }>`SELECT id FROM kept ORDER BY id`)
      assert.deepStrictEqual(rows.map((row) => row.id), [1, 2])
      yield* Scope.close(orphanScope, Exit.void)
    }))

  it.live("starts over a stale postmaster.pid whose process is gone", () =>
    Effect.gen(function*() {
      const root = yield* makeTempDir("scoped-server-embedded-")
      const dataDir = Path.join(root, "data")
      yield* Effect.scoped(EmbeddedPostgres.start(optionsFor(dataDir)))
      const stale = ["4194000", dataDir, "1700000000", "5432", "", "127.0.0.1", "1 1", "ready", ""].join("\n")
      Fs.writeFileSync(Path.join(dataDir, "postmaster.pid"), stale)
      const instance = yield* EmbeddedPostgres.start(optionsFor(dataDir))
      assert.deepStrictEqual(yield* query(instance, (sql) => sql<{ one: number }>`SELECT 1 AS one`), [{ one: 1 }])
    }))

  it.live("refuses a non-empty directory that holds no cluster", () =>
    Effect.gen(function*() {
      const root = yield* makeTempDir("scoped-server-embedded-")
      const dataDir = Path.join(root, "data")
      Fs.mkdirSync(dataDir)
      Fs.writeFileSync(Path.join(dataDir, "precious.txt"), "not a database")
      const exit = yield* Effect.exit(EmbeddedPostgres.start(optionsFor(dataDir)))
      assert.isTrue(Exit.isFailure(exit))
      assert.match(String(Exit.isFailure(exit) && exit.cause), /not empty and holds no PostgreSQL cluster/)
      assert.isTrue(Fs.existsSync(Path.join(dataDir, "precious.txt")))
    }))
})
