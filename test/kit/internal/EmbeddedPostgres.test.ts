/**
 * The embedded PostgreSQL: a dedicated account, reachable only through its owner's socket, one
 * server per data directory, never signalling or chowning what is not its own, initdb bounded.
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Exit, Scope } from "effect"
import * as Reactivity from "effect/reactivity/Reactivity"
import { spawn, spawnSync } from "node:child_process"
import { createHash } from "node:crypto"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Path from "node:path"
import * as EmbeddedPostgres from "../../../src/kit/internal/EmbeddedPostgres.ts"
import { makeTempDir, optionsFor } from "../../support/postgres.ts"

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
      // Only the (empty, 0700) lock directory stays: removing it could race the next start binding in it.
      assert.deepStrictEqual(Fs.readdirSync(root).filter((entry) => entry.startsWith("data")), ["data.lock.d"])
      assert.deepStrictEqual(Fs.readdirSync(Path.join(root, "data.lock.d")), [])
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
  it.live.skipIf(!isRoot)(
    "another local user cannot take the data directory's lock first",
    () =>
      Effect.gen(function*() {
        const root = yield* makeTempDir("scoped-server-embedded-")
        const dataDir = Path.join(root, "data")
        const lockDir = `${dataDir}.lock.d`
        const intruder = yield* localUser
        // What any local user could do before: bind the abstract name the lock used to be.
        const abstract = `\0scoped-server/embedded-postgres/${createHash("sha256").update(dataDir).digest("hex")}`
        const squatter = yield* Effect.acquireRelease(
          Effect.sync(() =>
            spawn("runuser", [
              "-u",
              intruder,
              "--",
              "python3",
              "-c",
              [
                "import socket, sys, time",
                "s = socket.socket(socket.AF_UNIX)",
                `s.bind(${JSON.stringify(abstract)})`,
                "s.listen(1)",
                "print('bound', flush=True)",
                "time.sleep(60)"
              ].join("\n")
            ], { stdio: ["ignore", "pipe", "inherit"], cwd: "/" })
          ),
          (child) => Effect.sync(() => child.kill("SIGKILL"))
        )
        yield* Effect.callback<void>((resume) => {
          squatter.stdout!.once("data", () => resume(Effect.void))
        }).pipe(Effect.timeout("5 seconds"))
        const instance = yield* EmbeddedPostgres.start(optionsFor(dataDir))
        assert.deepStrictEqual(yield* selectOne(instance), [{ one: 1 }])
        const stat = Fs.lstatSync(lockDir)
        assert.strictEqual(stat.uid, process.getuid!())
        assert.strictEqual(stat.mode & 0o777, 0o700)
        // Nor can the intruder reach the lock's socket: it is inside a directory they cannot enter.
        const planted = spawnSync("runuser", [
          "-u",
          intruder,
          "--",
          "python3",
          "-c",
          [
            "import socket",
            "s = socket.socket(socket.AF_UNIX)",
            `s.bind(${JSON.stringify(Path.join(lockDir, "s"))})`
          ].join("\n")
        ], { encoding: "utf8", cwd: "/" })
        assert.notStrictEqual(planted.status, 0)
        assert.match(planted.stderr, /Permission denied/)
      })
  )

  it.live.skipIf(!isRoot)(
    "a lock directory made by another user is refused, not adopted",
    () =>
      Effect.gen(function*() {
        const root = yield* makeTempDir("scoped-server-embedded-")
        const dataDir = Path.join(root, "data")
        Fs.mkdirSync(`${dataDir}.lock.d`, { mode: 0o700 })
        Fs.chownSync(`${dataDir}.lock.d`, 65534, 65534)
        const exit = yield* Effect.exit(Effect.scoped(EmbeddedPostgres.start(optionsFor(dataDir))))
        assert.match(
          failureText(exit),
          /lock\.d \(the data directory's lock\) is owned by uid 65534 with mode 700, not by uid 0 with mode 700; refusing it/
        )
        assert.isFalse(Fs.existsSync(dataDir))
      })
  )

  it.live("a lock left by a killed holder does not block the next start", () =>
    Effect.gen(function*() {
      const root = yield* makeTempDir("scoped-server-embedded-")
      const dataDir = Path.join(root, "data")
      yield* Effect.scoped(EmbeddedPostgres.start(optionsFor(dataDir)))
      // What a SIGKILLed holder leaves: the socket file, with nothing accepting on it.
      const holder = spawnSync(process.execPath, [
        "-e",
        `require("net").createServer().listen(${
          JSON.stringify(Path.join(`${dataDir}.lock.d`, "s"))
        }, () => process.kill(process.pid, "SIGKILL"))`
      ])
      assert.strictEqual(holder.signal, "SIGKILL")
      assert.isTrue(Fs.existsSync(Path.join(`${dataDir}.lock.d`, "s")))
      const started = Date.now()
      const instance = yield* EmbeddedPostgres.start(optionsFor(dataDir))
      assert.isBelow(Date.now() - started, 10_000)
      assert.deepStrictEqual(yield* selectOne(instance), [{ one: 1 }])
      const second = yield* Effect.exit(Effect.scoped(EmbeddedPostgres.start(optionsFor(dataDir))))
      assert.match(failureText(second), /is in use by another running server/)
    }))

  it.live("PostgreSQL gets a minimal environment: none of the server's secrets", () =>
    Effect.gen(function*() {
      const root = yield* makeTempDir("scoped-server-embedded-")
      const secret = `jwt-secret-${process.pid}-${Date.now()}`
      yield* Effect.acquireRelease(
        Effect.sync(() => {
          process.env.JWT_SECRET = secret
          process.env.REDIS_URL = `redis://:${secret}@127.0.0.1:1/0`
        }),
        () =>
          Effect.sync(() => {
            delete process.env.JWT_SECRET
            delete process.env.REDIS_URL
          })
      )
      const instance = yield* EmbeddedPostgres.start(optionsFor(Path.join(root, "data")))
      const environ = Fs.readFileSync(`/proc/${instance.pid}/environ`, "utf8").split("\0").filter((entry) =>
        entry.length > 0
      )
      assert.notInclude(environ.join("\n"), secret)
      assert.notInclude(environ.join("\n"), "JWT_SECRET")
      assert.include(environ, "LC_ALL=C")
      assert.deepStrictEqual(
        environ.map((entry) => entry.split("=")[0]).filter((name) =>
          !["PATH", "LANG", "LC_ALL", "TZ", "LD_LIBRARY_PATH", "PGLOCALEDIR", "PG_GRANDPARENT_PID", "PGSYSCONFDIR"]
            .includes(name!)
        ),
        []
      )
      assert.deepStrictEqual(yield* selectOne(instance), [{ one: 1 }])
    }))

  describe("a live PID in postmaster.pid, judged without /proc (macOS and the BSDs)", () => {
    const dataDir = "/srv/app/data"
    it("ps saying postgres -D <this directory> is ours; anything else postgres with no -D cannot be verified", () => {
      const ours = {
        comm: "/usr/local/bin/postgres\n",
        args: `/usr/local/bin/postgres -D ${dataDir} -p 5432 -c listen_addresses=\n`
      }
      assert.strictEqual(EmbeddedPostgres.psVerdict(ours, dataDir), "ours")
      assert.strictEqual(
        EmbeddedPostgres.psVerdict({ comm: "postgres", args: `postgres -D ${dataDir}` }, dataDir),
        "ours"
      )
      assert.strictEqual(EmbeddedPostgres.psVerdict({ comm: "sshd", args: `sshd -D ${dataDir}` }, dataDir), "foreign")
      assert.strictEqual(
        EmbeddedPostgres.psVerdict({ comm: "postgres", args: `postgres -D ${dataDir}2 -p 5432` }, dataDir),
        "unverifiable"
      )
      assert.strictEqual(
        EmbeddedPostgres.psVerdict({ comm: "postgres", args: "postgres -p 5432" }, dataDir),
        "unverifiable"
      )
      assert.strictEqual(EmbeddedPostgres.psVerdict({ comm: "", args: "" }, dataDir), "unverifiable")
      assert.strictEqual(EmbeddedPostgres.psVerdict(undefined, dataDir), "unverifiable")
    })

    it.live("with the platform injected: a real postmaster is ours, another directory's is foreign, a sleeper is foreign", () =>
      Effect.gen(function*() {
        const root = yield* makeTempDir("scoped-server-embedded-")
        const instance = yield* EmbeddedPostgres.start(optionsFor(Path.join(root, "data")))
        const other = yield* EmbeddedPostgres.start(optionsFor(Path.join(root, "other")))
        const sleeper = yield* Effect.acquireRelease(
          Effect.sync(() => spawn("sleep", ["60"], { stdio: "ignore" })),
          (child) => Effect.sync(() => child.kill("SIGKILL"))
        )
        const darwin = { platform: "darwin" as const }
        assert.strictEqual(yield* EmbeddedPostgres.postmasterVerdict(instance.pid, instance.dataDir, darwin), "ours")
        assert.strictEqual(yield* EmbeddedPostgres.postmasterVerdict(other.pid, instance.dataDir, darwin), "foreign")
        assert.strictEqual(yield* EmbeddedPostgres.postmasterVerdict(sleeper.pid!, instance.dataDir, darwin), "foreign")
      }))

    it.live("a PID that cannot be verified is never signalled: the start is refused with a line naming it", () =>
      Effect.gen(function*() {
        const root = yield* makeTempDir("scoped-server-embedded-")
        const dataDir = Path.join(root, "data")
        Fs.mkdirSync(dataDir)
        const sleeper = yield* Effect.acquireRelease(
          Effect.sync(() => spawn("sleep", ["60"], { stdio: "ignore" })),
          (child) => Effect.sync(() => child.kill("SIGKILL"))
        )
        const lockFile = Path.join(dataDir, "postmaster.pid")
        Fs.writeFileSync(
          lockFile,
          [String(sleeper.pid), dataDir, "1700000000", "5432", dataDir, "", "1 1", "ready", ""].join("\n")
        )
        const noPs = EmbeddedPostgres.postmasterVerdict.bind(null)
        const exit = yield* Effect.exit(
          EmbeddedPostgres.recoverStaleServer(
            dataDir,
            dataDir,
            Duration.seconds(1),
            (pid, dir) => noPs(pid, dir, { platform: "darwin", ps: () => Effect.succeed(undefined) })
          )
        )
        assert.match(
          failureText(exit),
          new RegExp(
            `names pid ${sleeper.pid}, which is alive but cannot be verified to be this directory's PostgreSQL; check that process`
          )
        )
        yield* Effect.sleep(100)
        assert.isTrue(isAlive(sleeper.pid!))
        assert.isTrue(Fs.existsSync(lockFile))
      }))
  })
})

const uidOf = (user: string) =>
  Fs.readFileSync("/etc/passwd", "utf8").split("\n").find((line) => line.split(":")[0] === user)?.split(":")[2]

describe("the way to the data directory, for the account PostgreSQL runs as", () => {
  const account = { uid: 999, gid: 998 }
  const stats = (table: Record<string, { mode: number; uid: number; gid: number }>) => (path: string) => table[path]
  const open = { mode: 0o755, uid: 0, gid: 0 }

  it("is judged on each directory above by the bit that applies to the account: owner, group, or others", () => {
    const way = (home: { mode: number; uid: number; gid: number }) =>
      EmbeddedPostgres.unsearchable(
        "/root/app/.data",
        account,
        stats({ "/": open, "/root": home, "/root/app": open, "/root/app/.data": open })
      )
    assert.deepStrictEqual(way({ mode: 0o700, uid: 0, gid: 0 }), {
      directory: "/root",
      stat: { mode: 0o700, uid: 0, gid: 0 },
      fix: "chmod o+x /root"
    })
    assert.strictEqual(way({ mode: 0o701, uid: 0, gid: 0 }), undefined)
    // The group bit counts only for the account's own group; others' bit does not open it to the owner.
    assert.strictEqual(way({ mode: 0o710, uid: 0, gid: 998 }), undefined)
    assert.strictEqual(way({ mode: 0o701, uid: 0, gid: 998 })?.fix, "chmod g+x /root")
    assert.strictEqual(way({ mode: 0o077, uid: 999, gid: 0 })?.fix, "chmod u+x /root")
    assert.strictEqual(way({ mode: 0o100, uid: 999, gid: 0 }), undefined)
  })

  it("names the first directory in the way, from the root down; one not made yet is not in the way", () => {
    const found = EmbeddedPostgres.unsearchable(
      "/srv/a/b/c",
      account,
      stats({
        "/": open,
        "/srv": open,
        "/srv/a": { mode: 0o750, uid: 0, gid: 0 },
        "/srv/a/b": { mode: 0o700, uid: 0, gid: 0 }
      })
    )
    assert.strictEqual(found?.directory, "/srv/a")
    assert.strictEqual(
      EmbeddedPostgres.unsearchable("/srv/new/data", account, stats({ "/": open, "/srv": open })),
      undefined
    )
  })

  it("nothing is in root's way", () => {
    assert.strictEqual(
      EmbeddedPostgres.unsearchable(
        "/root/x",
        { uid: 0, gid: 0 },
        stats({ "/": open, "/root": { mode: 0o700, uid: 0, gid: 0 } })
      ),
      undefined
    )
  })

  it.live.skipIf(!isRoot)(
    "as root from a 0700 directory (root's home): one line naming the directory, the account and the fix; no initdb, nothing made",
    () =>
      Effect.gen(function*() {
        const home = yield* makeTempDir("scoped-server-embedded-home-")
        Fs.chmodSync(home, 0o700)
        const dataDir = Path.join(home, ".data", "postgres")
        const exit = yield* Effect.exit(Effect.scoped(EmbeddedPostgres.start(optionsFor(dataDir))))
        assert.strictEqual(
          failureText(exit).match(/EmbeddedPostgresError: (.*)\)\]\)$/)?.[1],
          `the embedded PostgreSQL runs as ${EmbeddedPostgres.defaultUser} (uid ${
            uidOf(EmbeddedPostgres.defaultUser)
          }), which cannot reach its data directory ${dataDir}: ${home} (mode 700, owner uid 0) is not searchable by it; set EMBEDDED_POSTGRES_DIR to a directory it can reach (e.g. under /var/lib), or chmod o+x ${home}`
        )
        assert.deepStrictEqual(Fs.readdirSync(Path.join(home, ".data")), [])
        // The fix it names is enough.
        Fs.chmodSync(home, 0o701)
        const instance = yield* EmbeddedPostgres.start(optionsFor(dataDir))
        assert.deepStrictEqual(yield* selectOne(instance), [{ one: 1 }])
      })
  )
})
