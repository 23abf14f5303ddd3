/**
 * The built server stopped by SIGTERM in the middle of a long expiry sweep: the job is awaited up
 * to RELEASE_TIMEOUT, then stopped between two batches, the batch in flight ends whole, the pool
 * closes in its own bound with nothing held, and the exit code is 0.
 */
import { ConfigProvider, Effect, Layer } from "effect"
import { afterEach, describe, expect, it } from "vitest"
import { migrations } from "../../../src/app/migrations.ts"
import { Health, Lifecycle, Postgres } from "../../../src/kit/index.ts"
import * as Testing from "../../../src/kit/testing.ts"
import { phases, type ServerProcess, spawnServer } from "../../support/process.ts"

const servers = new Set<ServerProcess>()
afterEach(() => {
  for (const server of servers) server.child.kill("SIGKILL")
  servers.clear()
})

const run = <A, E>(effect: Effect.Effect<A, E>) => Effect.runPromise(Effect.orDie(effect))
const count = (url: string, where: string): Promise<number> =>
  run(Effect.map(
    Testing.sql(url, `SELECT count(*)::int AS n FROM reservations WHERE ${where}`),
    ([row]) => Number(row!.n)
  ))

const backlog = 400_000
const batch = 50

describe("the expiry job across SIGTERM", () => {
  it(
    "with a sweep in flight: stopped between batches at RELEASE_TIMEOUT, nothing cut, pool closed in bound, exit 0",
    async () => {
      const url = await run(Testing.freshDatabase)
      await run(
        Effect.scoped(Layer.build(Postgres.layerConfig({ migrations }))).pipe(
          Effect.provide([Health.layer, Lifecycle.layerTest]),
          Effect.provide(ConfigProvider.layer(ConfigProvider.fromUnknown({ DATABASE_URL: url })))
        )
      )
      // A backlog of holds that ran out while no server was sweeping.
      await run(Testing.sql(url, "INSERT INTO items (name) VALUES ('lamp')"))
      await run(Testing.sql(
        url,
        `INSERT INTO reservations (item_id, holder, quantity, expires_at)
       SELECT (SELECT min(id) FROM items), 'h' || g % 100, 1, now() - interval '1 hour' FROM generate_series(1, ${backlog}) g`
      ))
      await run(Testing.sql(url, "ANALYZE reservations"))

      const server = await spawnServer({
        env: {
          DATABASE_URL: url,
          RESERVATION_SWEEP_BATCH: String(batch),
          RELEASE_TIMEOUT: "300ms",
          LOG_LEVEL: "Info"
        }
      })
      servers.add(server)
      const started = await server.waitForLine((line) => line.message === "job started")
      expect(started.annotations).toMatchObject({ job: "expire-reservations", releaseTimeoutMs: 300 })
      // The sweep is under way (rows are going) and far from done.
      let left = backlog
      while (left === backlog) left = await count(url, "true")
      expect(left).toBeGreaterThan(backlog / 2)
      expect(server.lines.some((line) => line.message === "expired reservations deleted")).toBe(false)

      server.signal("SIGTERM")
      const exit = await server.exited
      expect(exit.code).toBe(0)
      expect(server.stderr()).toBe("")

      const overran = server.lines.filter((line) =>
        line.message === "job run overran its release timeout; interrupting"
      )
      expect(overran).toHaveLength(1)
      expect(overran[0]!.annotations).toMatchObject({ job: "expire-reservations", timeoutMs: 300 })
      const released = phases(server.lines).filter((p) => p.phase === "releasing")
      const job = released.find((p) => p.resource === "job expire-reservations")
      expect(job?.outcome).toBe("ok")
      // The bound, plus at most the one batch it waited for.
      expect(job!.durationMs).toBeGreaterThanOrEqual(300)
      expect(job!.durationMs).toBeLessThan(600)
      const postgres = released.find((p) => p.resource === "postgres")
      expect(postgres?.outcome).toBe("ok")
      expect(released.map((p) => p.resource).indexOf("job expire-reservations")).toBeLessThan(
        released.map((p) => p.resource).indexOf("postgres")
      )
      expect(server.lines.filter((line) => line.level === "ERROR")).toEqual([])
      const stopped = server.lines.find((line) => line.message === "phase" && line.annotations.phase === "stopped")
      expect(stopped?.annotations.exitCode).toBe(0)

      // Stopped part-way, by whole batches, and nothing of the server left connected.
      const remaining = await count(url, "true")
      expect(remaining).toBeGreaterThan(0)
      expect((backlog - remaining) % batch).toBe(0)
      const name = new URL(url).pathname.slice(1)
      const sessions = await run(Testing.sql(
        url.replace(`/${name}`, "/postgres"),
        `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = '${name}' AND pid <> pg_backend_pid()`
      ))
      expect(sessions[0]!.n).toBe(0)
    },
    60_000
  )
})
