/**
 * The items API in the built server with its backing stores failing: Redis down keeps cached
 * routes answering and applies the rate-limit policy; the database down is 503, not 500. And the
 * token `npm run token` mints is one the server accepts.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Effect, Exit, Redacted, Scope } from "effect"
import { execFileSync } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { mint } from "../../support/app.ts"
import { json, request } from "../../support/http.ts"
import { privatePostgres } from "../../support/postgres.ts"
import { type ServerProcess, spawnServer } from "../../support/process.ts"
import { privateRedis } from "../../support/redis.ts"

const scope = Effect.runSync(Scope.make())
let redis: Effect.Success<typeof privateRedis>
let postgres: Effect.Success<typeof privatePostgres>
const running = new Set<ServerProcess>()
const secret = "process-test-secret-0123456789abcdef"

beforeAll(async () => {
  redis = await Effect.runPromise(privateRedis.pipe(Scope.provide(scope)))
  postgres = await Effect.runPromise(privatePostgres.pipe(Scope.provide(scope)))
}, 60_000)
afterAll(async () => {
  for (const server of running) server.child.kill("SIGKILL")
  await Effect.runPromise(Scope.close(scope, Exit.void))
})

const start = async (env: Record<string, string | undefined>) => {
  const server = await spawnServer({ env: { JWT_SECRET: secret, ACCESS_LOG: "false", ...env } })
  running.add(server)
  return server
}
const auth = async (subject: string) => ({ authorization: `Bearer ${await mint({ subject, secret })}` })

describe("items API when Redis fails", () => {
  it("cached pages still answer and the limiter fails open; after a restart both use Redis again", async () => {
    const server = await start({ REDIS_URL: redis.url, REDIS_COMMAND_TIMEOUT: "300ms", REDIS_HEALTH_TIMEOUT: "300ms", RATE_LIMIT: "1000" })
    const headers = await auth("reader")
    const created = await request(server.port, "/api/v1/items", {
      method: "POST",
      headers: { ...headers, "content-type": "application/json" },
      body: JSON.stringify({ name: "cached" })
    })
    expect(created.status).toBe(201)
    const warm = await request(server.port, "/api/v1/items", { headers })
    expect(warm.status).toBe(200)
    await Effect.runPromise(redis.kill)
    const started = performance.now()
    const during = await request(server.port, "/api/v1/items", { headers })
    expect(performance.now() - started).toBeLessThan(1_000)
    expect(during.status).toBe(200)
    expect(json(during).items.map((item: { name: string }) => item.name)).toContain("cached")
    expect((await request(server.port, "/readyz")).status).toBe(503)
    await Effect.runPromise(redis.restart)
    for (let attempt = 0; attempt < 50 && (await request(server.port, "/readyz")).status !== 200; attempt++) {
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
    const after = await request(server.port, "/api/v1/items", { headers })
    expect(after.status).toBe(200)
    expect(after.headers["ratelimit-limit"]).toBe("1000")
  })

  it("with RATE_LIMIT_ON_STORE_ERROR=closed the API answers 503 while Redis is down", async () => {
    const server = await start({ REDIS_URL: redis.url, REDIS_COMMAND_TIMEOUT: "300ms", RATE_LIMIT_ON_STORE_ERROR: "closed" })
    const headers = await auth("strict")
    expect((await request(server.port, "/api/v1/items", { headers })).status).toBe(200)
    await Effect.runPromise(redis.kill)
    const refused = await request(server.port, "/api/v1/items", { headers })
    expect(refused.status).toBe(503)
    expect(refused.headers["retry-after"]).toBeDefined()
    expect(json(refused)).toMatchObject({ status: 503 })
    expect(json(refused).detail ?? json(refused).message).toBe("rate limiting is unavailable; try again")
    await Effect.runPromise(redis.restart)
  })
})

describe("items API when the database fails", () => {
  it("answers 503 with Retry-After, not 500, and recovers when the database is back", async () => {
    const server = await start({ DATABASE_URL: Redacted.value(postgres.url), CACHE_TTL: "0" })
    const headers = await auth("db-watcher")
    expect((await request(server.port, "/api/v1/items", { headers })).status).toBe(200)
    await Effect.runPromise(postgres.kill)
    const down = await request(server.port, "/api/v1/items", { headers })
    expect(down.status).toBe(503)
    expect(down.headers["retry-after"]).toBe("1")
    expect(down.headers["content-type"]).toBe("application/problem+json")
    expect(json(down)).toEqual({
      type: "about:blank",
      title: "Service Unavailable",
      status: 503,
      detail: "the database is unavailable; try again",
      requestId: down.headers["x-request-id"]
    })
    await Effect.runPromise(postgres.restart.pipe(Scope.provide(scope)))
    let back = await request(server.port, "/api/v1/items", { headers })
    for (let attempt = 0; attempt < 30 && back.status !== 200; attempt++) {
      await new Promise((resolve) => setTimeout(resolve, 100))
      back = await request(server.port, "/api/v1/items", { headers })
    }
    expect(back.status).toBe(200)
  })
})

describe("npm run token", () => {
  it("mints a token the server accepts, from the development secret both share", async () => {
    const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "scoped-server-token-"))
    try {
      const secretFile = Path.join(dir, "jwt-secret")
      const server = await start({ JWT_SECRET: undefined, JWT_DEV_SECRET_FILE: secretFile })
      expect(server.lines.some((line) => line.message === "JWT_SECRET is not set: using the development secret")).toBe(true)
      const token = execFileSync(process.execPath, [Path.resolve(import.meta.dirname, "../../../scripts/token.mjs"), "--sub", "alice"], {
        env: { ...process.env, JWT_DEV_SECRET_FILE: secretFile },
        encoding: "utf8"
      }).trim()
      const answer = await request(server.port, "/api/v1/items", { headers: { authorization: `Bearer ${token}` } })
      expect(answer.status).toBe(200)
      expect((Fs.statSync(secretFile).mode & 0o777).toString(8)).toBe("600")
    } finally {
      Fs.rmSync(dir, { recursive: true, force: true })
    }
  })
})
