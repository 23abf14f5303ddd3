/**
 * Item events with WORKERS=2, from outside the built server: a write through either worker reaches
 * a stream on each, created before removed; each worker's LISTEN cut by the database says resync;
 * at shutdown the LISTEN is released after the streams end and before the pool.
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import { Effect, Redacted } from "effect"
import * as Reactivity from "effect/reactivity/Reactivity"
import * as Crypto from "node:crypto"
import { afterEach, describe, expect, it } from "vitest"
import * as Testing from "../../../src/kit/testing.ts"
import { request } from "../../support/http.ts"
import { phases, spawnServer } from "../../support/process.ts"
import { changesOf, subscribe, type Subscription } from "../../support/sse.ts"
import { cleanup, start } from "../../support/supervisor.ts"

const streams: Array<Subscription> = []
afterEach(() => {
  for (const stream of streams.splice(0)) stream.close()
  cleanup()
})

const query = <A extends object>(text: string) =>
  Effect.runPromise(
    Effect.scoped(Effect.gen(function*() {
      const sql = yield* PgClient.make({ url: Redacted.make(yield* Testing.databaseServer), maxConnections: 1 })
      return yield* sql.unsafe<A>(text)
    })).pipe(Effect.provide(Reactivity.layer))
  )

/** Opens streams until one is held on each of `count` workers (told apart by X-Worker); closes the rest. */
const streamPerWorker = async (port: number, token: string, count = 2, tries = 40) => {
  const byWorker = new Map<string, Subscription>()
  for (let i = 0; i < tries && byWorker.size < count; i++) {
    const stream = await subscribe(port, token)
    expect(stream.status).toBe(200)
    const worker = String(stream.headers["x-worker"])
    if (byWorker.has(worker)) {
      stream.close()
    } else {
      byWorker.set(worker, stream)
      streams.push(stream)
    }
  }
  expect(byWorker.size).toBe(count)
  return byWorker
}

const write = (port: number, token: string, method: string, path: string, body?: unknown) =>
  request(port, path, {
    method,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    ...(body === undefined ? {} : { body: JSON.stringify(body) })
  })

describe("item events with WORKERS=2", () => {
  it(
    "a write through either worker reaches the stream held on each worker, created before removed; a LISTEN cut by the database is logged, reopened and told as resync",
    async () => {
      const applicationName = `events-${Crypto.randomBytes(4).toString("hex")}`
      const server = await start({ JWT_SECRET: Testing.jwtSecret, DB_APPLICATION_NAME: applicationName })
      const token = await Testing.mint()
      const byWorker = await streamPerWorker(server.port, token)

      // Writes on new connections until each worker has written one; each stream hears every one.
      const writers = new Set<string>()
      const ids: Array<number> = []
      for (let i = 0; i < 40 && writers.size < 2; i++) {
        const created = await write(server.port, token, "POST", "/api/v1/items", { name: `by worker ${i}` })
        expect(created.status).toBe(201)
        writers.add(String(created.headers["x-worker"]))
        ids.push((JSON.parse(created.body) as { id: number }).id)
      }
      expect(writers).toEqual(new Set(byWorker.keys()))
      for (const id of ids) {
        const removed = await write(server.port, token, "DELETE", `/api/v1/items/${id}`)
        expect(removed.status).toBe(204)
      }
      for (const stream of byWorker.values()) {
        await stream.waitFor((event) =>
          event.event === "removed" && event.data === JSON.stringify({ type: "removed", id: ids.at(-1) })
        )
        for (const id of ids) expect(changesOf(stream, id).map((event) => event.event)).toEqual(["created", "removed"])
      }

      // Cut each worker's LISTEN session from the database side.
      const cut = await query<{ pid: number }>(
        `SELECT pg_terminate_backend(pid), pid FROM pg_stat_activity WHERE application_name = '${applicationName}' AND query LIKE 'LISTEN%'`
      )
      expect(cut).toHaveLength(2)
      for (const [worker, stream] of byWorker) {
        const lost = await server.waitForLine((line) =>
          String(line.message).startsWith("postgres listen lost") && line.annotations.worker === worker
        )
        expect(lost.level).toBe("WARN")
        expect(lost.annotations).toMatchObject({ channel: "items", error: expect.stringMatching(/^57P01 /) })
        await server.waitForLine((line) =>
          line.message === "postgres listen resumed" && line.annotations.worker === worker
        )
        await stream.waitFor((event) => event.event === "resync")
        expect(stream.events.at(-1)).toEqual({ event: "resync", data: JSON.stringify({ type: "resync" }) })
      }
      // Listening again: the next write reaches both.
      const after = await write(server.port, token, "POST", "/api/v1/items", { name: "after the cut" })
      expect(after.status).toBe(201)
      const { id } = JSON.parse(after.body) as { id: number }
      for (const stream of byWorker.values()) {
        await stream.waitFor((event) => event.event === "created" && changesOf(stream, id).length > 0)
      }
    },
    60_000
  )

  it("SIGTERM: the stream ends with its final event, then the LISTEN is released, then the pool; exit 0", async () => {
    const server = await spawnServer({ env: { JWT_SECRET: Testing.jwtSecret, ACCESS_LOG: "false" } })
    try {
      const stream = await subscribe(server.port, await Testing.mint())
      streams.push(stream)
      server.signal("SIGTERM")
      await stream.waitFor((event) => event.event === "shutdown")
      expect((await server.exited).code).toBe(0)
      const order = phases(server.lines).map((line) => line.resource === undefined ? line.phase : line.resource)
      const at = (name: string) => order.indexOf(name)
      expect(at("listen items")).toBeGreaterThan(at("closing"))
      expect(at("postgres")).toBeGreaterThan(at("listen items"))
      expect(phases(server.lines).find((line) => line.resource === "listen items")?.outcome).toBe("ok")
    } finally {
      server.child.kill("SIGKILL")
    }
  }, 30_000)
})
