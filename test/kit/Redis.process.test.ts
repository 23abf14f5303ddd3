/**
 * Redis failing under the built server: readiness follows it down within the check timeout and
 * back without a restart; a hung Redis does not hold requests.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Effect, Exit, Scope } from "effect"
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

const start = async () => {
  const server = await spawnServer({ env: { REDIS_URL: redis.url, REDIS_HEALTH_TIMEOUT: "300ms", REDIS_COMMAND_TIMEOUT: "300ms" } })
  running.add(server)
  return server
}

const untilReady = async (port: number) => {
  for (let attempt = 0; attempt < 50; attempt++) {
    const answer = await request(port, "/readyz")
    if (answer.status === 200) return answer
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  return request(port, "/readyz")
}

describe("redis failing under the server", () => {
  it("SIGKILLed: /readyz 503 within the check timeout; restarted: 200 again without restarting the server", async () => {
    const server = await start()
    expect(json(await request(server.port, "/readyz")).checks.redis.status).toBe("ok")
    await Effect.runPromise(redis.kill)
    const started = performance.now()
    const down = await request(server.port, "/readyz")
    expect(performance.now() - started).toBeLessThan(600)
    expect(down.status).toBe(503)
    expect(json(down).checks).toMatchObject({ redis: { status: "failed" }, database: { status: "ok" } })
    expect((await request(server.port, "/livez")).status).toBe(200)
    await Effect.runPromise(redis.restart)
    expect((await untilReady(server.port)).status).toBe(200)
    server.signal("SIGTERM")
    expect((await server.exited).code).toBe(0)
  })

  it("SIGSTOPped: the probe gives up at its timeout instead of hanging; SIGCONT heals it", async () => {
    const server = await start()
    await Effect.runPromise(redis.signal("SIGSTOP"))
    try {
      const started = performance.now()
      const down = await request(server.port, "/readyz")
      expect(performance.now() - started).toBeLessThan(700)
      expect(json(down).checks.redis.status).toBe("failed")
      expect(json(down).checks.redis.error).toMatch(/timed out after 300ms/)
    } finally {
      await Effect.runPromise(redis.signal("SIGCONT"))
    }
    expect((await untilReady(server.port)).status).toBe(200)
  })

  it("a Redis that will not close in time is named in the log and the exit code is 1; the pool still closes", async () => {
    const server = await spawnServer({ env: { REDIS_URL: redis.url, RELEASE_TIMEOUT: "500ms", REDIS_HEALTH_TIMEOUT: "200ms" } })
    running.add(server)
    await Effect.runPromise(redis.signal("SIGSTOP"))
    try {
      // A probe leaves a PING waiting on the hung server; closing the client waits for its reply.
      expect((await request(server.port, "/readyz")).status).toBe(503)
      server.signal("SIGTERM")
      const exit = await server.exited
      expect(exit.code).toBe(1)
      expect(server.lines.find((l) => l.message === "release overran its timeout")?.annotations.resource).toBe("redis")
      const releases = server.lines.filter((l) => l.message === "phase" && l.annotations.phase === "releasing")
      expect(releases.map((l) => [l.annotations.resource, l.annotations.outcome])).toEqual([["redis", "timeout"], ["postgres", "ok"]])
    } finally {
      await Effect.runPromise(redis.signal("SIGCONT"))
    }
  })
})
