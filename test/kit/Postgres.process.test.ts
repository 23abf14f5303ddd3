/**
 * The database seen from outside the built server: transactions across SIGTERM and the deadline,
 * readiness that follows the database down and back, and the release order.
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import { Effect, Exit, Redacted, Scope } from "effect"
import * as Reactivity from "effect/reactivity/Reactivity"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { json, request } from "../support/http.ts"
import { privatePostgres } from "../support/postgres.ts"
import { phases, type ServerProcess, spawnServer } from "../support/process.ts"
import { privateRedis } from "../support/redis.ts"

const scope = Effect.runSync(Scope.make())
let postgres: Effect.Success<typeof privatePostgres>
let redis: Effect.Success<typeof privateRedis>
const running = new Set<ServerProcess>()

beforeAll(async () => {
  postgres = await Effect.runPromise(privatePostgres.pipe(Scope.provide(scope)))
  redis = await Effect.runPromise(privateRedis.pipe(Scope.provide(scope)))
}, 60_000)
afterAll(async () => {
  for (const server of running) server.child.kill("SIGKILL")
  await Effect.runPromise(Scope.close(scope, Exit.void))
})

const start = async (env: Record<string, string | undefined> = {}) => {
  const server = await spawnServer({
    env: {
      DEBUG_ROUTES: "true",
      DATABASE_URL: Redacted.value(postgres.url),
      DB_APPLICATION_NAME: "scoped-server-under-test",
      ...env
    }
  })
  running.add(server)
  return server
}

const query = <A extends object>(text: string) =>
  Effect.runPromise(
    Effect.scoped(Effect.gen(function*() {
      const sql = yield* PgClient.make({ url: postgres.url, maxConnections: 1 })
      return yield* sql.unsafe<A>(text)
    })).pipe(Effect.provide(Reactivity.layer))
  )

const countMarker = async (marker: string) =>
  Number((await query<{ count: string }>(`SELECT count(*) AS count FROM items WHERE name = '${marker}'`))[0]!.count)

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

describe("transactions across shutdown", () => {
  it("SIGTERM mid-transaction: the drain lets it finish, and it commits whole", async () => {
    const server = await start()
    const pending = request(server.port, "/debug/transaction?marker=drained&ms=400", { method: "POST" })
    await sleep(150)
    server.signal("SIGTERM")
    const answer = await pending
    const exit = await server.exited
    expect(answer.status).toBe(200)
    expect(exit.code).toBe(0)
    expect(await countMarker("drained")).toBe(2)
  })

  it("forced at the deadline mid-transaction: it rolls back whole, never half", async () => {
    const server = await start({ SHUTDOWN_TIMEOUT: "300ms" })
    const pending = request(server.port, "/debug/transaction?marker=forced&ms=3000", { method: "POST" }).catch(
      (error: NodeJS.ErrnoException) => error.code
    )
    await sleep(150)
    server.signal("SIGTERM")
    const exit = await server.exited
    expect(exit.code).toBe(1)
    expect(await pending).toBe("ECONNRESET")
    // The backend may still be finishing its pg_sleep; the transaction cannot commit either way.
    await sleep(200)
    expect(await countMarker("forced")).toBe(0)
  })
})

describe("a database that goes away", () => {
  it("/readyz answers 503 naming the database while it is down, and 200 once it is back, without a restart", async () => {
    const server = await start({ DB_HEALTH_TIMEOUT: "300ms" })
    expect((await request(server.port, "/readyz")).status).toBe(200)
    await Effect.runPromise(postgres.kill)
    const down = await request(server.port, "/readyz")
    expect(down.status).toBe(503)
    expect(json(down)).toMatchObject({ status: "unready", checks: { database: { status: "failed" } } })
    expect((await request(server.port, "/livez")).status).toBe(200)
    // A route that needs the database answers a 503 problem, at once.
    const write = await request(server.port, "/debug/transaction?marker=down&ms=0", { method: "POST" })
    expect(write.status).toBe(503)
    expect(write.headers["retry-after"]).toBe("1")
    expect(write.headers["content-type"]).toBe("application/problem+json")
    expect(json(write)).toEqual({
      type: "about:blank",
      title: "Service Unavailable",
      status: 503,
      detail: "the database is unavailable; try again",
      requestId: write.headers["x-request-id"]
    })
    await Effect.runPromise(postgres.restart.pipe(Scope.provide(scope)))
    let up = await request(server.port, "/readyz")
    for (let attempt = 0; attempt < 30 && up.status !== 200; attempt++) {
      await sleep(100)
      up = await request(server.port, "/readyz")
    }
    expect(up.status).toBe(200)
    server.signal("SIGTERM")
    expect((await server.exited).code).toBe(0)
  })
})

describe("a pool with no free connection", () => {
  it("a request that cannot get a connection within DB_ACQUIRE_TIMEOUT gets 503 at once, not a hung socket", async () => {
    const server = await start({ DB_POOL_SIZE: "1", DB_ACQUIRE_TIMEOUT: "200ms" })
    const holder = request(server.port, "/debug/transaction?marker=holder&ms=1000", { method: "POST" })
    await sleep(100)
    const started = performance.now()
    const refused = await request(server.port, "/debug/transaction?marker=waiter&ms=0", { method: "POST" })
    const waited = performance.now() - started
    expect(refused.status).toBe(503)
    expect(json(refused).detail ?? json(refused).message).toBe("the database is busy; try again")
    expect(waited).toBeGreaterThan(190)
    expect(waited).toBeLessThan(600)
    expect((await holder).status).toBe(200)
    expect(await countMarker("waiter")).toBe(0)
    server.signal("SIGTERM")
    expect((await server.exited).code).toBe(0)
  })
})

describe("release order", () => {
  it("drains, then releases the items LISTEN, Redis, then the pool: no connection of ours is left on either", async () => {
    const server = await start({ REDIS_URL: redis.url, DB_APPLICATION_NAME: "scoped-server-release-order" })
    expect(json(await request(server.port, "/readyz")).checks).toMatchObject({
      database: { status: "ok" },
      redis: { status: "ok" }
    })
    const inFlight = request(server.port, "/debug/transaction?marker=ordered&ms=300", { method: "POST" })
    await sleep(100)
    server.signal("SIGTERM")
    expect((await inFlight).status).toBe(200)
    expect((await server.exited).code).toBe(0)
    const order = phases(server.lines)
      .filter((phase) => phase.phase !== "starting" && phase.phase !== "ready")
      .map((phase) => phase.resource ?? phase.phase)
    expect(order).toEqual([
      "draining",
      "closing",
      "listen items",
      "job expire-reservations",
      "redis",
      "postgres",
      "stopped"
    ])
    const ours = await query<{ count: string }>(
      "SELECT count(*) AS count FROM pg_stat_activity WHERE application_name = 'scoped-server-release-order'"
    )
    expect(Number(ours[0]!.count)).toBe(0)
    expect(await countMarker("ordered")).toBe(2)
  })
})
