/**
 * The embedded database under the built server: committed rows survive a SIGKILL of the server,
 * Ctrl+C stops the database only after the drain, a failed startup leaves no PostgreSQL behind,
 * a database that dies fails the run, and a second server cannot take over a running one's.
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import { Effect, Redacted } from "effect"
import * as Reactivity from "effect/reactivity/Reactivity"
import { spawnSync } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { afterAll, afterEach, describe, expect, it } from "vitest"
import * as EmbeddedPostgres from "../../src/kit/internal/EmbeddedPostgres.ts"
import { request } from "../support/http.ts"
import { optionsFor } from "../support/postgres.ts"
import { phases, type ServerProcess, spawnServer } from "../support/process.ts"

const running = new Set<ServerProcess>()
const dirs: Array<string> = []
afterEach(() => {
  for (const server of running) server.child.kill("SIGKILL")
  running.clear()
})
afterAll(() => {
  for (const dir of dirs) Fs.rmSync(dir, { recursive: true, force: true })
})

const dataDir = () => {
  const root = Fs.mkdtempSync(Path.join(Os.tmpdir(), "scoped-server-embedded-process-"))
  Fs.chmodSync(root, 0o755)
  dirs.push(root)
  return Path.join(root, "pg")
}

/** A data directory with a cluster already in it, so the server's start fits the harness's wait on a loaded machine. */
const initialisedDataDir = async () => {
  const dir = dataDir()
  await Effect.runPromise(Effect.scoped(EmbeddedPostgres.start(optionsFor(dir))))
  return dir
}

const start = async (
  dir: string,
  extra: { readonly detached?: boolean; readonly env?: Record<string, string> } = {}
) => {
  const server = await spawnServer({
    env: { DEBUG_ROUTES: "true", DATABASE_URL: undefined, EMBEDDED_POSTGRES_DIR: dir, ...extra.env },
    detached: extra.detached ?? false
  })
  running.add(server)
  return server
}

const embedded = (server: ServerProcess) => {
  const line = server.lines.find((l) => l.message === "embedded PostgreSQL ready")!
  return line.annotations as { port: number; pid: number; socketDir: string }
}

const isAlive = (pid: number) =>
  Fs.existsSync(`/proc/${pid}`) && !/State:\s+Z/.test(Fs.readFileSync(`/proc/${pid}/status`, "utf8"))

const count = (database: { port: number; socketDir: string }, marker: string) =>
  Effect.runPromise(
    Effect.scoped(Effect.gen(function*() {
      const url = `postgres://postgres@localhost:${database.port}/postgres?host=${
        encodeURIComponent(database.socketDir)
      }`
      const sql = yield* PgClient.make({ url: Redacted.make(url), maxConnections: 1 })
      const rows = yield* sql<{ count: string }>`SELECT count(*) AS count FROM items WHERE name = ${marker}`
      return Number(rows[0]!.count)
    })).pipe(Effect.provide(Reactivity.layer))
  )

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** The server exits 1 with exactly one error line, `startup failed`, whose error matches `pattern`. */
const expectOneStartupError = async (server: ServerProcess, pattern: RegExp) => {
  const exit = await server.exited
  expect(exit.code).toBe(1)
  const errors = server.lines.filter((l) => l.level === "ERROR" || l.level === "FATAL" || l.level === "RAW")
  expect(errors.map((l) => l.message)).toEqual(["startup failed"])
  expect(errors[0]!.annotations.error).toMatch(pattern)
}

describe("embedded PostgreSQL under the server", () => {
  it("keeps committed rows across a SIGKILL of the server and the next start", async () => {
    const dir = await initialisedDataDir()
    const first = await start(dir)
    expect((await request(first.port, "/debug/transaction?marker=survivor&ms=0", { method: "POST" })).status).toBe(200)
    first.child.kill("SIGKILL")
    await first.exited
    const second = await start(dir)
    expect(second.lines.some((l) => l.message === "stopping a PostgreSQL left running by a previous crash")).toBe(true)
    expect(isAlive(embedded(first).pid)).toBe(false)
    expect(await count(embedded(second), "survivor")).toBe(2)
    second.signal("SIGTERM")
    expect((await second.exited).code).toBe(0)
    expect(isAlive(embedded(second).pid)).toBe(false)
  })

  it("Ctrl+C to the process group stops the database only after the drain", async () => {
    const server = await start(await initialisedDataDir(), { detached: true })
    const database = embedded(server)
    const inFlight = request(server.port, "/debug/transaction?marker=ctrl-c&ms=300", { method: "POST" })
    await sleep(100)
    // What a terminal does on Ctrl+C: SIGINT to the foreground process group.
    process.kill(-server.child.pid!, "SIGINT")
    await sleep(50)
    expect(isAlive(database.pid)).toBe(true)
    expect((await inFlight).status).toBe(200)
    const exit = await server.exited
    expect(exit.code).toBe(0)
    expect(
      phases(server.lines).filter((p) => p.phase === "closing" || p.phase === "releasing").map((p) =>
        p.resource ?? p.phase
      )
    )
      .toEqual(["closing", "listen items", "job expire-reservations", "postgres", "embedded-postgres"])
    expect(isAlive(database.pid)).toBe(false)
  })

  it("a startup that fails after the database started leaves no PostgreSQL behind", async () => {
    const server = await spawnServer({
      env: {
        DATABASE_URL: undefined,
        EMBEDDED_POSTGRES_DIR: dataDir(),
        REDIS_URL: "redis://127.0.0.1:1",
        REDIS_CONNECT_TIMEOUT: "1s"
      },
      waitReady: false
    })
    running.add(server)
    const exit = await server.exited
    expect(exit.code).toBe(1)
    const failure = server.lines.find((l) => l.message === "startup failed")!
    expect(failure.annotations.error).toMatch(/^cannot reach redis at 127\.0\.0\.1:1/)
    expect(isAlive(embedded(server).pid)).toBe(false)
    expect(server.stderr()).toBe("")
  })

  it("an unreachable DATABASE_URL fails startup within DB_CONNECT_TIMEOUT with the host named", async () => {
    const started = performance.now()
    const server = await spawnServer({
      env: { DATABASE_URL: "postgres://app:pw@127.0.0.1:1/app", DB_CONNECT_TIMEOUT: "1s" },
      waitReady: false
    })
    running.add(server)
    const exit = await server.exited
    expect(exit.code).toBe(1)
    // Well inside the default 10s connect timeout, so the 1s setting is what ended it; the slack
    // is Node's own boot, which varies with the machine's load.
    expect(exit.at - started).toBeLessThan(6_000)
    const failure = server.lines.find((l) => l.message === "startup failed")!
    expect(failure.annotations.error).toMatch(/^cannot reach postgres at app@127\.0\.0\.1:1\/app/)
    expect(JSON.stringify(server.lines)).not.toContain("pw@")
  })

  it("a SIGKILLed database fails the run: readiness 503 at once, drain, release, exit 1", async () => {
    const server = await start(await initialisedDataDir(), { env: { DRAIN_DELAY: "1s" } })
    const database = embedded(server)
    expect((await request(server.port, "/readyz")).status).toBe(200)
    const killedAt = performance.now()
    process.kill(database.pid, "SIGKILL")
    await server.waitForLine((line) => line.message === "embedded PostgreSQL exited while the server was running")
    // Inside DRAIN_DELAY: still answering, and telling the load balancer to go away.
    expect((await request(server.port, "/readyz")).status).toBe(503)
    const exit = await server.exited
    expect(exit.code).toBe(1)
    expect(exit.at - killedAt).toBeLessThan(6_000)
    const failed = server.lines.find((l) => l.message === "embedded PostgreSQL exited while the server was running")!
    expect(failed.annotations).toMatchObject({ pid: database.pid, signal: "SIGKILL" })
    expect(phases(server.lines).at(-1)).toMatchObject({ phase: "stopped", exitCode: 1 })
    expect(server.stderr()).toBe("")
  })

  it("a second server on a running server's data directory exits 1 at once; the first keeps serving", async () => {
    const dir = await initialisedDataDir()
    const first = await start(dir)
    const database = embedded(first)
    const started = performance.now()
    const second = await spawnServer({ env: { DATABASE_URL: undefined, EMBEDDED_POSTGRES_DIR: dir }, waitReady: false })
    running.add(second)
    const exit = await second.exited
    expect(exit.code).toBe(1)
    expect(exit.at - started).toBeLessThan(5_000)
    const failure = second.lines.find((l) => l.message === "startup failed")!
    expect(failure.annotations.error).toMatch(/is in use by another running server/)
    expect(second.lines.some((l) => l.message === "stopping a PostgreSQL left running by a previous crash")).toBe(false)
    expect(isAlive(database.pid)).toBe(true)
    expect((await request(first.port, "/readyz")).status).toBe(200)
    expect((await request(first.port, "/debug/transaction?marker=still-serving&ms=0", { method: "POST" })).status).toBe(
      200
    )
    first.signal("SIGTERM")
    expect((await first.exited).code).toBe(0)
  })

  it("PostgreSQL binaries that cannot be run: one clear line, exit 1, nothing on stderr", async () => {
    const server = await spawnServer({
      env: { DATABASE_URL: undefined, EMBEDDED_POSTGRES_DIR: dataDir(), EMBEDDED_POSTGRES_BIN_DIR: "/nonexistent/bin" },
      waitReady: false
    })
    running.add(server)
    await expectOneStartupError(server, /cannot run \/nonexistent\/bin\/initdb: ENOENT/)
    expect(server.stderr()).toBe("")
  })

  // What systemd's DynamicUser= gives a host without nss-systemd: a uid that getpwuid cannot name.
  it.skipIf(process.getuid?.() !== 0)(
    "a uid with no passwd entry: one line naming nss-systemd, exit 1, no initdb run",
    async () => {
      let uid = 61_000 + (process.pid % 900)
      while (spawnSync("getent", ["passwd", String(uid)]).status === 0) uid++
      const dir = dataDir()
      Fs.chownSync(Path.dirname(dir), uid, uid)
      const server = await spawnServer({
        env: { DATABASE_URL: undefined, EMBEDDED_POSTGRES_DIR: dir },
        shell: `exec setpriv --reuid=${uid} --regid=${uid} --clear-groups $NODE $MAIN`,
        waitReady: false
      })
      running.add(server)
      await expectOneStartupError(
        server,
        new RegExp(`^uid ${uid} has no passwd entry, and initdb needs one.*nss-systemd.*libnss-systemd`)
      )
      expect(server.lines.some((l) => l.message === "initialising the embedded PostgreSQL cluster")).toBe(false)
      expect(Fs.readdirSync(Path.dirname(dir)).filter((entry) => entry.startsWith("pg.init-"))).toEqual([])
      expect(server.stderr()).toBe("")
    }
  )

  // What root meets when it starts the server from its home (0700): the database's own account cannot get in.
  it.skipIf(process.getuid?.() !== 0)(
    "as root from a 0700 directory: one line naming the directory, the database's account and the fix, exit 1",
    async () => {
      const home = Fs.mkdtempSync(Path.join(Os.tmpdir(), "scoped-server-embedded-home-"))
      dirs.push(home)
      Fs.chmodSync(home, 0o700)
      const server = await spawnServer({
        // The default EMBEDDED_POSTGRES_DIR, .data/postgres, under the directory the server starts in.
        env: { DATABASE_URL: undefined },
        shell: `cd ${home} && exec $NODE $MAIN`,
        waitReady: false
      })
      running.add(server)
      await expectOneStartupError(
        server,
        new RegExp(
          `^the embedded PostgreSQL runs as scoped-server-pg \\(uid \\d+\\), which cannot reach its data directory ${home}/\\.data/postgres: ${home} \\(mode 700, owner uid 0\\) is not searchable by it; set EMBEDDED_POSTGRES_DIR to a directory it can reach .*, or chmod o\\+x ${home}$`
        )
      )
      expect(server.lines.some((l) => l.message === "initialising the embedded PostgreSQL cluster")).toBe(false)
      expect(Fs.readdirSync(Path.join(home, ".data")).filter((entry) => entry.startsWith("postgres"))).toEqual([])
      expect(server.stderr()).toBe("")
    }
  )
})
