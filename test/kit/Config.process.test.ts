/**
 * Settings as an operator meets them from the built server: a conflict or a bare-seconds value
 * stops startup before anything listens, with exit 1 and one line naming the variables.
 */
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { request } from "../support/http.ts"
import { type ServerProcess, spawnServer } from "../support/process.ts"

const running = new Set<ServerProcess>()
afterAll(() => {
  for (const server of running) server.child.kill("SIGKILL")
})

const refusedWith = async (env: Record<string, string>, options: { readonly listened?: boolean } = {}) => {
  const server = await spawnServer({ env, waitReady: false })
  running.add(server)
  const exit = await server.exited
  expect(exit.code).toBe(1)
  const failures = server.lines.filter((line) => line.message === "startup failed")
  expect(failures).toHaveLength(1)
  expect(failures[0]!.annotations.cause).toBeUndefined()
  // Refused before anything was served, and nothing anywhere looks like a stack.
  expect(server.lines.some((line) => line.message === "ready")).toBe(false)
  for (const line of server.lines) expect(JSON.stringify(line)).not.toMatch(/\\n\s+at |\n\s+at /)
  if (options.listened === false) expect(server.lines.some((line) => line.message === "listening")).toBe(false)
  expect(server.stderr()).toBe("")
  return String(failures[0]!.annotations.error)
}

describe("configuration refused at startup", () => {
  it("DRAIN_DELAY not shorter than SHUTDOWN_TIMEOUT: exit 1, one line naming both", async () => {
    expect(await refusedWith({ DRAIN_DELAY: "30s", SHUTDOWN_TIMEOUT: "10s" }, { listened: false })).toBe(
      "invalid configuration: DRAIN_DELAY (30s) must be shorter than SHUTDOWN_TIMEOUT (10s): the delay is spent inside the shutdown budget"
    )
  })

  it("JWT_SECRET beside JWKS_URL names both", async () => {
    expect(await refusedWith({ JWT_SECRET: "x".repeat(32), JWKS_URL: "https://keys.example/jwks.json" }))
      .toMatch(/^invalid configuration: JWT_SECRET and JWKS_URL are both set/)
  })

  it("a bare number of seconds is refused with the unit suggested", async () => {
    expect(await refusedWith({ SHUTDOWN_TIMEOUT: "30" })).toMatch(
      /^invalid configuration: SHUTDOWN_TIMEOUT: .*did you mean 30s\?$/
    )
  })

  it("RATE_LIMIT_MAX_KEYS=-1 is refused instead of hanging", async () => {
    expect(await refusedWith({ RATE_LIMIT_MAX_KEYS: "-1" })).toMatch(
      /^invalid configuration: RATE_LIMIT_MAX_KEYS: -1 is out of range/
    )
  })

  it("an unknown LOG_LEVEL is refused in the same shape, before the logger exists", async () => {
    expect(await refusedWith({ LOG_LEVEL: "loud" })).toMatch(/^invalid configuration: LOG_LEVEL: "loud" is not one of /)
  })

  it("an app's setting (and a kit one read late) is refused before any resource starts", async () => {
    // No DATABASE_URL: a server that read its settings as it went would initdb first.
    for (const env of [{ RESERVATION_TTL: "abc" }, { PORT: "http" }]) {
      const server = await spawnServer({
        env: {
          ...env,
          DATABASE_URL: undefined,
          EMBEDDED_POSTGRES_DIR: Fs.mkdtempSync(Path.join(Os.tmpdir(), "refused-"))
        },
        waitReady: false
      })
      running.add(server)
      expect((await server.exited).code).toBe(1)
      const [name] = Object.keys(env)
      expect(server.lines.find((line) => line.message === "startup failed")?.annotations.error).toMatch(
        new RegExp(`^invalid configuration: ${name}: `)
      )
      expect(server.lines.filter((line) => /postgres/i.test(JSON.stringify(line)))).toEqual([])
    }
  })

  it("the forms people write start the server", async () => {
    const server = await spawnServer({
      env: {
        LOG_LEVEL: "INFO",
        SHUTDOWN_TIMEOUT: "1m30s",
        DRAIN_DELAY: "0S",
        MAX_BODY_SIZE: "1mb",
        ACCESS_LOG: "FALSE",
        RATE_LIMIT_ON_STORE_ERROR: "Closed"
      }
    })
    running.add(server)
    expect((await request(server.port, "/livez")).status).toBe(200)
    server.signal("SIGTERM")
    expect((await server.exited).code).toBe(0)
  })
})
