/**
 * The items API in the built server with its backing stores failing: Redis down keeps cached
 * routes answering and applies the rate-limit policy; the database down is 503, not 500. And the
 * token `npm run token` mints is one the server accepts.
 */
import { Effect, Exit, Redacted, Scope } from "effect"
import { execFileSync } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as Testing from "../../../src/kit/testing.ts"
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
const auth = async (subject: string) => ({ authorization: `Bearer ${await Testing.mint({ subject, secret })}` })

describe("items API when Redis fails", () => {
  it("cached pages still answer and the limiter fails open; after a restart both use Redis again", async () => {
    const server = await start({
      REDIS_URL: redis.url,
      REDIS_COMMAND_TIMEOUT: "300ms",
      REDIS_HEALTH_TIMEOUT: "300ms",
      RATE_LIMIT: "1000"
    })
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
    // Served without Redis: degraded, still ready, so the load balancer keeps every replica.
    const readyz = await request(server.port, "/readyz")
    expect(readyz.status).toBe(200)
    expect(json(readyz).checks.redis.status).toBe("degraded")
    await Effect.runPromise(redis.restart)
    for (
      let attempt = 0;
      attempt < 50 && json(await request(server.port, "/readyz")).checks.redis.status !== "ok";
      attempt++
    ) {
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
    // The store's breaker lets commands through again after its cool-down and a good PING; until
    // then the limiter fails open and sends only RateLimit-Policy (it has no count to report).
    let after = await request(server.port, "/api/v1/items", { headers })
    for (let attempt = 0; attempt < 50 && after.headers["ratelimit-limit"] === undefined; attempt++) {
      await new Promise((resolve) => setTimeout(resolve, 100))
      after = await request(server.port, "/api/v1/items", { headers })
    }
    expect(after.status).toBe(200)
    expect(after.headers["ratelimit-limit"]).toBe("1000")
  })

  it("Redis hung (SIGSTOP): the first list pays one command timeout, the next ones none; SIGCONT: Redis is used again", async () => {
    const server = await start({
      REDIS_URL: redis.url,
      REDIS_COMMAND_TIMEOUT: "400ms",
      REDIS_BREAKER_COOLDOWN: "300ms"
    })
    const headers = await auth("hung-reader")
    expect((await request(server.port, "/api/v1/items", { headers })).status).toBe(200)
    await Effect.runPromise(redis.signal("SIGSTOP"))
    const took: Array<number> = []
    try {
      for (let i = 0; i < 6; i++) {
        const started = performance.now()
        expect((await request(server.port, "/api/v1/items", { headers })).status).toBe(200)
        took.push(performance.now() - started)
      }
    } finally {
      await Effect.runPromise(redis.signal("SIGCONT"))
    }
    expect(took[0]).toBeLessThan(800)
    expect(Math.max(...took.slice(1))).toBeLessThan(150)
    await server.waitForLine((line) => line.message === "redis answers again; commands resume", 5_000)
    server.signal("SIGTERM")
    expect((await server.exited).code).toBe(0)
  })

  it("with RATE_LIMIT_ON_STORE_ERROR=closed the API answers 503 while Redis is down", async () => {
    const server = await start({
      REDIS_URL: redis.url,
      REDIS_COMMAND_TIMEOUT: "300ms",
      RATE_LIMIT_ON_STORE_ERROR: "closed"
    })
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
      expect(server.lines.some((line) => line.message === "JWT_SECRET is not set: using the development secret")).toBe(
        true
      )
      const token = execFileSync(process.execPath, [
        Path.resolve(import.meta.dirname, "../../../scripts/token.mjs"),
        "--sub",
        "alice"
      ], {
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
