/**
 * Redis failing under the built server: health follows it down within the check timeout (degraded,
 * or not ready when it is critical) and back without a restart; a hung Redis does not hold requests.
 */
import { Effect, Exit, Scope } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { json, request } from "../support/http.ts"
import { type ServerProcess, spawnServer } from "../support/process.ts"
import { privateRedis } from "../support/redis.ts"

const scope = Effect.runSync(Scope.make())
let redis: Effect.Success<typeof privateRedis>
const running = new Set<ServerProcess>()
beforeAll(async () => {
  redis = await Effect.runPromise(privateRedis.pipe(Scope.provide(scope)))
})
afterAll(async () => {
  for (const server of running) server.child.kill("SIGKILL")
  await Effect.runPromise(Scope.close(scope, Exit.void))
})

const start = async (env: Record<string, string> = {}) => {
  const server = await spawnServer({
    env: { REDIS_URL: redis.url, REDIS_HEALTH_TIMEOUT: "300ms", REDIS_COMMAND_TIMEOUT: "300ms", ...env }
  })
  running.add(server)
  return server
}

const untilRedisOk = async (port: number) => {
  for (let attempt = 0; attempt < 50; attempt++) {
    const answer = await request(port, "/readyz")
    if (answer.status === 200 && json(answer).checks.redis.status === "ok") return answer
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  return request(port, "/readyz")
}

describe("redis failing under the server", () => {
  it("SIGKILLed: /readyz stays 200 and says degraded within the check timeout; restarted: ok again without restarting the server", async () => {
    const server = await start()
    expect(json(await request(server.port, "/readyz")).checks.redis.status).toBe("ok")
    await Effect.runPromise(redis.kill)
    const started = performance.now()
    const down = await request(server.port, "/readyz")
    expect(performance.now() - started).toBeLessThan(600)
    expect(down.status).toBe(200)
    expect(json(down)).toMatchObject({
      status: "degraded",
      checks: { redis: { status: "degraded" }, database: { status: "ok" } }
    })
    const health = await request(server.port, "/health")
    expect(health.status).toBe(200)
    expect(json(health).status).toBe("degraded")
    await Effect.runPromise(redis.restart)
    expect(json(await untilRedisOk(server.port)).status).toBe("ready")
    server.signal("SIGTERM")
    expect((await server.exited).code).toBe(0)
  })

  it("SIGKILLed while requests need it (RATE_LIMIT_ON_STORE_ERROR=closed): /readyz 503 naming redis", async () => {
    const server = await start({ RATE_LIMIT_ON_STORE_ERROR: "closed" })
    await Effect.runPromise(redis.kill)
    try {
      const down = await request(server.port, "/readyz")
      expect(down.status).toBe(503)
      expect(json(down)).toMatchObject({ status: "unready", checks: { redis: { status: "failed" } } })
    } finally {
      await Effect.runPromise(redis.restart)
    }
    expect((await untilRedisOk(server.port)).status).toBe(200)
  })

  it("SIGSTOPped: the probe gives up at its timeout instead of hanging; SIGCONT heals it", async () => {
    const server = await start()
    await Effect.runPromise(redis.signal("SIGSTOP"))
    try {
      const started = performance.now()
      const down = await request(server.port, "/readyz")
      expect(performance.now() - started).toBeLessThan(700)
      expect(down.status).toBe(200)
      expect(json(down).checks.redis.status).toBe("degraded")
      expect(json(down).checks.redis.error).toMatch(/timed out after 300ms/)
    } finally {
      await Effect.runPromise(redis.signal("SIGCONT"))
    }
    expect((await untilRedisOk(server.port)).status).toBe(200)
  })

  it("a Redis that will not close in time is named in the log and the exit code is 1; the pool still closes", async () => {
    const server = await spawnServer({
      env: { REDIS_URL: redis.url, RELEASE_TIMEOUT: "500ms", REDIS_HEALTH_TIMEOUT: "200ms" }
    })
    running.add(server)
    await Effect.runPromise(redis.signal("SIGSTOP"))
    try {
      // A probe leaves a PING waiting on the hung server; closing the client waits for its reply.
      expect(json(await request(server.port, "/readyz")).checks.redis.status).toBe("degraded")
      server.signal("SIGTERM")
      const exit = await server.exited
      expect(exit.code).toBe(1)
      expect(server.lines.find((l) => l.message === "release overran its timeout")?.annotations.resource).toBe("redis")
      const releases = server.lines.filter((l) => l.message === "phase" && l.annotations.phase === "releasing")
      expect(releases.map((l) => [l.annotations.resource, l.annotations.outcome])).toEqual([
        ["listen items", "ok"],
        ["job expire-reservations", "ok"],
        ["redis", "timeout"],
        ["postgres", "ok"]
      ])
    } finally {
      await Effect.runPromise(redis.signal("SIGCONT"))
    }
  })
})
