/**
 * The embedded database under the built server: committed rows survive a SIGKILL of the server,
 * Ctrl+C to the terminal's process group stops the database only after the drain, and a failed
 * startup leaves no PostgreSQL behind.
 */
import { afterAll, afterEach, describe, expect, it } from "vitest"
import * as PgClient from "@effect/sql-pg/PgClient"
import { Effect, Redacted } from "effect"
import * as Reactivity from "effect/reactivity/Reactivity"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { request } from "../support/http.ts"
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

const start = async (dir: string, extra: { readonly detached?: boolean; readonly env?: Record<string, string> } = {}) => {
  const server = await spawnServer({
    env: { DEBUG_ROUTES: "true", DATABASE_URL: undefined, EMBEDDED_POSTGRES_DIR: dir, ...extra.env },
    detached: extra.detached ?? false
  })
  running.add(server)
  return server
}

const embedded = (server: ServerProcess) => {
  const line = server.lines.find((l) => l.message === "embedded PostgreSQL ready")!
  return line.annotations as { port: number; pid: number }
}

const isAlive = (pid: number) => Fs.existsSync(`/proc/${pid}`) && !/State:\s+Z/.test(Fs.readFileSync(`/proc/${pid}/status`, "utf8"))

const count = (port: number, marker: string) =>
  Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const sql = yield* PgClient.make({ url: Redacted.make(`postgres://postgres@127.0.0.1:${port}/postgres`), maxConnections: 1 })
    const rows = yield* sql<{ count: string }>`SELECT count(*) AS count FROM items WHERE name = ${marker}`
    return Number(rows[0]!.count)
  })).pipe(Effect.provide(Reactivity.layer)))

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

describe("embedded PostgreSQL under the server", () => {
  it("keeps committed rows across a SIGKILL of the server and the next start", async () => {
    const dir = dataDir()
    const first = await start(dir)
    expect((await request(first.port, "/debug/transaction?marker=survivor&ms=0", { method: "POST" })).status).toBe(200)
    first.child.kill("SIGKILL")
    await first.exited
    const second = await start(dir)
    expect(second.lines.some((l) => l.message === "stopping a PostgreSQL left running by a previous crash")).toBe(true)
    expect(isAlive(embedded(first).pid)).toBe(false)
    expect(await count(embedded(second).port, "survivor")).toBe(2)
    second.signal("SIGTERM")
    expect((await second.exited).code).toBe(0)
    expect(isAlive(embedded(second).pid)).toBe(false)
  })

  it("Ctrl+C to the process group stops the database only after the drain", async () => {
    const server = await start(dataDir(), { detached: true })
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
    expect(phases(server.lines).filter((p) => p.phase === "closing" || p.phase === "releasing").map((p) => p.resource ?? p.phase))
      .toEqual(["closing", "postgres", "embedded-postgres"])
    expect(isAlive(database.pid)).toBe(false)
  })

  it("a startup that fails after the database started leaves no PostgreSQL behind", async () => {
    const server = await spawnServer({
      env: { DATABASE_URL: undefined, EMBEDDED_POSTGRES_DIR: dataDir(), REDIS_URL: "redis://127.0.0.1:1", REDIS_CONNECT_TIMEOUT: "1s" },
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
    expect(exit.at - started).toBeLessThan(2_500)
    const failure = server.lines.find((l) => l.message === "startup failed")!
    expect(failure.annotations.error).toMatch(/^cannot reach postgres at app@127\.0\.0\.1:1\/app/)
    expect(JSON.stringify(server.lines)).not.toContain("pw@")
  })
})
