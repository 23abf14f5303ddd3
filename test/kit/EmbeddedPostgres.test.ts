/**
 * The embedded PostgreSQL: a dedicated account, reachable only through its owner's socket, one
 * server per data directory, never signalling or chowning what is not its own, initdb bounded.
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Exit, Scope } from "effect"
import * as Reactivity from "effect/reactivity/Reactivity"
import { spawn, spawnSync } from "node:child_process"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Path from "node:path"
import * as EmbeddedPostgres from "../../src/kit/EmbeddedPostgres.ts"
import { makeTempDir, optionsFor } from "../support/postgres.ts"

const procField = (pid: number, field: string) =>
  Fs.readFileSync(`/proc/${pid}/status`, "utf8").split("\n").find((line) => line.startsWith(`${field}:`))?.split(
    /\s+/
  )[1]
const processGroup = (pid: number) => Number(Fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ")[2])
const isAlive = (pid: number) => Fs.existsSync(`/proc/${pid}`) && procField(pid, "State") !== "Z"
const isRoot = process.getuid?.() === 0

const query = <A>(instance: EmbeddedPostgres.Instance, f: (sql: PgClient.PgClient) => Effect.Effect<A, unknown>) =>
  Effect.scoped(Effect.flatMap(PgClient.make({ url: instance.url, maxConnections: 1 }), f)).pipe(
    Effect.provide(Reactivity.layer)
  )
const selectOne = (instance: EmbeddedPostgres.Instance) =>
  query(instance, (sql) => sql<{ one: number }>`SELECT 1 AS one`)

const unusedTcpPort = Effect.callback<number>((resume) => {
  const server = Net.createServer()
  server.listen(0, "127.0.0.1", () => {
    const { port } = server.address() as Net.AddressInfo
    server.close(() => resume(Effect.succeed(port)))
  })
})

const failureText = (exit: Exit.Exit<unknown, unknown>) => Exit.isFailure(exit) ? String(exit.cause) : "succeeded"

/** A throwaway local account, removed with the scope: the "any local user" of the threat. */
const localUser = Effect.acquireRelease(
  Effect.sync(() => {
    const name = `ssintruder${process.pid % 100000}`
    spawnSync("userdel", [name])
    const made = spawnSync("useradd", ["--no-create-home", "--shell", "/bin/sh", name], { encoding: "utf8" })
    assert.strictEqual(made.status, 0, made.stderr)
    return name
  }),
  (name) => Effect.sync(() => spawnSync("userdel", [name]))
)

/** psql as `user` (through runuser), never prompting for a password; its exit status and output. */
const psqlAs = (user: string | undefined, args: ReadonlyArray<string>) => {
  const psql = ["psql", "-w", "-X", "-A", "-t", "-U", "postgres", "-d", "postgres", ...args, "-c", "SELECT 'connected'"]
  const result = user === undefined
    ? spawnSync(psql[0]!, psql.slice(1), { encoding: "utf8", timeout: 10_000 })
    : spawnSync("runuser", ["-u", user, "--", ...psql], { encoding: "utf8", timeout: 10_000, cwd: "/" })
  return { status: result.status, output: `${result.stdout}${result.stderr}` }
}

describe("EmbeddedPostgres", () => {
  it("without /proc (macOS), a PID is ours only when ps shows a postgres with -D this directory", () => {
    const dir = "/var/lib/app/.data/postgres"
    assert.isTrue(EmbeddedPostgres.postmasterArgsMatch(`/opt/pg/bin/postgres -D ${dir} -p 5432\n`, dir))
    assert.isFalse(EmbeddedPostgres.postmasterArgsMatch(`/opt/pg/bin/postgres -D /other/dir -p 5432`, dir))
    assert.isFalse(EmbeddedPostgres.postmasterArgsMatch(`/usr/bin/sleep 100 -D ${dir}`, dir))
    assert.isFalse(EmbeddedPostgres.postmasterArgsMatch("", dir))
  })

  it.live("the database's processes get none of the server's environment: no secret reaches /proc/<pid>/environ", () =>
    Effect.gen(function*() {
      const root = yield* makeTempDir("scoped-server-embedded-env-")
      const secret = "jwt-secret-that-must-stay-in-the-server-0123456789"
      process.env.SCOPED_SERVER_TEST_SECRET = secret
      const instance = yield* Effect.scoped(Effect.gen(function*() {
        const instance = yield* EmbeddedPostgres.start(optionsFor(Path.join(root, "data")))
        const environ = Fs.readFileSync(`/proc/${instance.pid}/environ`, "utf8").split("\0")
        assert.notInclude(environ.join("\n"), secret)
        assert.isFalse(environ.some((entry) => entry.startsWith("SCOPED_SERVER_TEST_SECRET=")))
        assert.include(environ, "LC_ALL=C")
        return instance
      })).pipe(Effect.ensuring(Effect.sync(() => delete process.env.SCOPED_SERVER_TEST_SECRET)))
      assert.isFalse(isAlive(instance.pid))
    }))

  it.live("runs as a dedicated account in its own process group and stops when its scope closes", () =>
    Effect.gen(function*() {
      const root = yield* makeTempDir("scoped-server-embedded-")
      const scope = yield* Scope.make()
      const instance = yield* EmbeddedPostgres.start(optionsFor(Path.join(root, "data"))).pipe(Scope.provide(scope))
      assert.deepStrictEqual(yield* selectOne(instance), [{ one: 1 }])
      if (isRoot) {
        const uid = procField(instance.pid, "Uid")
        assert.notStrictEqual(uid, "0")
        assert.notStrictEqual(uid, "65534")
        assert.strictEqual(
          Fs.readFileSync("/etc/passwd", "utf8").split("\n").find((l) => l.split(":")[2] === uid)?.split(":")[0],
          EmbeddedPostgres.defaultUser
        )
      }
      assert.notStrictEqual(processGroup(instance.pid), processGroup(process.pid))
      assert.strictEqual(processGroup(instance.pid), instance.pid)
      yield* Scope.close(scope, Exit.void)
      assert.isFalse(isAlive(instance.pid))
      assert.isFalse(Fs.existsSync(Path.join(root, "data", "postmaster.pid")))
    }))

  it.live.skipIf(!isRoot)(
    "another local user cannot connect, neither over TCP nor through the socket",
    () =>
      Effect.gen(function*() {
        const root = yield* makeTempDir("scoped-server-embedded-")
        // A number no TCP server here uses (the machine may run its own PostgreSQL on 5432).
        const instance = yield* EmbeddedPostgres.start(optionsFor(Path.join(root, "data"), yield* unusedTcpPort))
        const intruder = yield* localUser
        // The control: the same client as the server's own user reaches it.
        const own = psqlAs(undefined, ["-h", instance.socketDir, "-p", String(instance.port)])
        assert.strictEqual(own.status, 0, own.output)
        assert.include(own.output, "connected")
        const overSocket = psqlAs(intruder, ["-h", instance.socketDir, "-p", String(instance.port)])
        assert.notStrictEqual(overSocket.status, 0, overSocket.output)
        assert.notInclude(overSocket.output, "connected")
        assert.match(overSocket.output, /Permission denied/)
        const overTcp = psqlAs(intruder, ["-h", "127.0.0.1", "-p", String(instance.port)])
        assert.notStrictEqual(overTcp.status, 0, overTcp.output)
        assert.notInclude(overTcp.output, "connected")
        // No TCP address at all: postmaster.pid's listen-address line is empty.
        assert.strictEqual(Fs.readFileSync(Path.join(instance.dataDir, "postmaster.pid"), "utf8").split("\n")[5], "")
      })
  )

  it.live.skipIf(!isRoot)(
    "a symlink planted in the data directory is not followed: its target keeps its owner",
    () =>
      Effect.gen(function*() {
        const root = yield* makeTempDir("scoped-server-embedded-")
        const dataDir = Path.join(root, "data")
        yield* Effect.scoped(EmbeddedPostgres.start(optionsFor(dataDir)))
        // What the database account (e.g. through COPY … TO PROGRAM) can do: link to a root-owned path.
        const target = Path.join(root, "root-owned")
        Fs.mkdirSync(target, { mode: 0o700 })
        Fs.writeFileSync(Path.join(target, "secret"), "root only", { mode: 0o600 })
        const owner = Fs.statSync(dataDir)
        for (const [name, to] of [["planted-dir", target], ["planted-file", Path.join(target, "secret")]] as const) {
          Fs.symlinkSync(to, Path.join(dataDir, name))
          Fs.lchownSync(Path.join(dataDir, name), owner.uid, owner.gid)
        }
        const instance = yield* EmbeddedPostgres.start(optionsFor(dataDir))
        assert.deepStrictEqual(yield* selectOne(instance), [{ one: 1 }])
        assert.strictEqual(Fs.statSync(target).uid, 0)
        assert.strictEqual(Fs.statSync(Path.join(target, "secret")).uid, 0)
      })
  )

  it.live("refuses a data directory owned by someone else, and leaves it as it was", () =>
    Effect.gen(function*() {
      const root = yield* makeTempDir("scoped-server-embedded-")
      const dataDir = Path.join(root, "data")
      yield* Effect.scoped(EmbeddedPostgres.start(optionsFor(dataDir)))
      const stranger = isRoot ? 65534 : 0
      if (isRoot) Fs.chownSync(dataDir, stranger, stranger)
      else return
      const exit = yield* Effect.exit(Effect.scoped(EmbeddedPostgres.start(optionsFor(dataDir))))
      assert.match(
        failureText(exit),
        /is owned by uid 65534, not by uid \d+ that runs PostgreSQL; refusing to use or chown it/
      )
      assert.strictEqual(Fs.statSync(dataDir).uid, stranger)
      assert.strictEqual(Fs.statSync(Path.join(dataDir, "PG_VERSION")).uid, Fs.statSync(Path.join(dataDir, "base")).uid)
      assert.notStrictEqual(Fs.statSync(Path.join(dataDir, "PG_VERSION")).uid, stranger)
    }))

  it.live("a second server on the same data directory fails fast; the first keeps serving", () =>
    Effect.gen(function*() {
      const root = yield* makeTempDir("scoped-server-embedded-")
      const dataDir = Path.join(root, "data")
      const first = yield* EmbeddedPostgres.start(optionsFor(dataDir))
      const started = Date.now()
      const second = yield* Effect.exit(Effect.scoped(EmbeddedPostgres.start(optionsFor(dataDir))))
      assert.isBelow(Date.now() - started, 1_000)
      assert.match(failureText(second), /is in use by another running server/)
      assert.isTrue(isAlive(first.pid))
      assert.deepStrictEqual(yield* selectOne(first), [{ one: 1 }])
    }))

  it.live("two first starts racing on an empty directory: one initialises and serves, the other fails fast", () =>
    Effect.gen(function*() {
      const root = yield* makeTempDir("scoped-server-embedded-")
      const dataDir = Path.join(root, "data")
      const [a, b] = yield* Effect.all(
        [
          Effect.exit(EmbeddedPostgres.start(optionsFor(dataDir))),
          Effect.exit(EmbeddedPostgres.start(optionsFor(dataDir)))
        ],
        { concurrency: 2 }
      )
      const winners = [a, b].filter(Exit.isSuccess)
      assert.strictEqual(winners.length, 1, `${failureText(a)} / ${failureText(b)}`)
      assert.match(failureText(Exit.isSuccess(a) ? b : a), /is in use by another running server/)
      assert.deepStrictEqual(yield* selectOne(winners[0]!.value), [{ one: 1 }])
      assert.deepStrictEqual(Fs.readdirSync(root).filter((entry) => entry.includes(".init-")), [])
    }))

  it.live("a postmaster.pid naming another live PostgreSQL leaves that server running", () =>
    Effect.gen(function*() {
      const root = yield* makeTempDir("scoped-server-embedded-")
      const dataDir = Path.join(root, "data")
      const other = yield* EmbeddedPostgres.start(optionsFor(Path.join(root, "other")))
      yield* Effect.scoped(EmbeddedPostgres.start(optionsFor(dataDir)))
      // After a reboot the PID in a stale lock file can be anyone's, the system's PostgreSQL included.
      const stale = [String(other.pid), dataDir, "1700000000", "5432", dataDir, "", "1 1", "ready", ""].join("\n")
      Fs.writeFileSync(Path.join(dataDir, "postmaster.pid"), stale)
      const instance = yield* EmbeddedPostgres.start(optionsFor(dataDir))
      assert.deepStrictEqual(yield* selectOne(instance), [{ one: 1 }])
      assert.isTrue(isAlive(other.pid))
      assert.deepStrictEqual(yield* selectOne(other), [{ one: 1 }])
    }))

  it.live("a postmaster.pid naming an unrelated live process leaves it alone and starts", () =>
    Effect.gen(function*() {
      const root = yield* makeTempDir("scoped-server-embedded-")
      const dataDir = Path.join(root, "data")
      yield* Effect.scoped(EmbeddedPostgres.start(optionsFor(dataDir)))
      const sleeper = yield* Effect.acquireRelease(
        Effect.sync(() => spawn("sleep", ["60"], { stdio: "ignore" })),
        (child) => Effect.sync(() => child.kill("SIGKILL"))
      )
      const stale = [String(sleeper.pid), dataDir, "1700000000", "5432", dataDir, "", "1 1", "ready", ""].join("\n")
      Fs.writeFileSync(Path.join(dataDir, "postmaster.pid"), stale)
      const instance = yield* EmbeddedPostgres.start(optionsFor(dataDir))
      assert.deepStrictEqual(yield* selectOne(instance), [{ one: 1 }])
      assert.isTrue(isAlive(sleeper.pid!))
    }))

  it.live("starts over a stale postmaster.pid whose process is gone", () =>
    Effect.gen(function*() {
      const root = yield* makeTempDir("scoped-server-embedded-")
      const dataDir = Path.join(root, "data")
      yield* Effect.scoped(EmbeddedPostgres.start(optionsFor(dataDir)))
      const stale = ["4194000", dataDir, "1700000000", "5432", "", "127.0.0.1", "1 1", "ready", ""].join("\n")
      Fs.writeFileSync(Path.join(dataDir, "postmaster.pid"), stale)
      const instance = yield* EmbeddedPostgres.start(optionsFor(dataDir))
      assert.deepStrictEqual(yield* selectOne(instance), [{ one: 1 }])
    }))

  it.live("refuses a non-empty directory that holds no cluster", () =>
    Effect.gen(function*() {
      const root = yield* makeTempDir("scoped-server-embedded-")
      const dataDir = Path.join(root, "data")
      Fs.mkdirSync(dataDir)
      if (isRoot) {
        const [, , uid, gid] = Fs.readFileSync("/etc/passwd", "utf8").split("\n").find((l) =>
          l.startsWith(`${EmbeddedPostgres.defaultUser}:`)
        )!.split(":")
        Fs.chownSync(dataDir, Number(uid), Number(gid))
      }
      Fs.writeFileSync(Path.join(dataDir, "precious.txt"), "not a database")
      const exit = yield* Effect.exit(EmbeddedPostgres.start(optionsFor(dataDir)))
      assert.match(failureText(exit), /not empty and holds no PostgreSQL cluster/)
      assert.isTrue(Fs.existsSync(Path.join(dataDir, "precious.txt")))
    }))

  it.live("initdb is bounded by the start timeout and leaves nothing behind", () =>
    Effect.gen(function*() {
      const root = yield* makeTempDir("scoped-server-embedded-")
      const dataDir = Path.join(root, "data")
      const started = Date.now()
      const exit = yield* Effect.exit(
        Effect.scoped(EmbeddedPostgres.start({ ...optionsFor(dataDir), startTimeout: Duration.millis(100) }))
      )
      assert.isBelow(Date.now() - started, 2_000)
      assert.match(failureText(exit), /initdb did not finish within 100ms/)
      assert.deepStrictEqual(Fs.readdirSync(root).filter((entry) => entry.startsWith("data")), [])
      yield* Effect.sleep(100)
      const initdbs = Fs.readdirSync("/proc").filter((entry) => /^\d+$/.test(entry)).filter((pid) => {
        try {
          return Fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(root)
        } catch {
          return false
        }
      })
      assert.deepStrictEqual(initdbs, [])
    }))

  it.live("binaries that cannot be run are a typed failure naming them, not a crash", () =>
    Effect.gen(function*() {
      const root = yield* makeTempDir("scoped-server-embedded-")
      const exit = yield* Effect.exit(
        Effect.scoped(
          EmbeddedPostgres.start({ ...optionsFor(Path.join(root, "data")), binDir: Path.join(root, "no-such-bin") })
        )
      )
      assert.match(failureText(exit), /cannot run \S+no-such-bin\/initdb: ENOENT/)
      assert.isTrue(Exit.isFailure(exit) && exit.cause.reasons.every((reason) => reason._tag === "Fail"))
    }))
})
