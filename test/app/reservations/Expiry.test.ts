/**
 * The expiry job on TestClock against a real database: expired holds are swept at start and then
 * every RESERVATION_SWEEP_INTERVAL, in batches of RESERVATION_SWEEP_BATCH; live holds stay.
 */
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Effect, Fiber, Layer } from "effect"
import { TestClock } from "effect/testing"
import { migrations } from "../../../src/app/migrations.ts"
import { ExpiryJob } from "../../../src/app/reservations/Expiry.ts"
import { Health, Lifecycle, Postgres } from "../../../src/kit/index.ts"
import * as Testing from "../../../src/kit/testing.ts"

const count = (url: string, where: string) =>
  Effect.map(Testing.sql(url, `SELECT count(*)::int AS n FROM reservations WHERE ${where}`), ([row]) => row!.n)

const hold = (url: string, n: number, expiresIn: string) =>
  Testing.sql(
    url,
    `INSERT INTO reservations (item_id, holder, quantity, expires_at)
     SELECT (SELECT min(id) FROM items), 'alice', 1, now() + interval '${expiresIn}' FROM generate_series(1, ${n})`
  )

/** Waits in real time (the database is real) until `done`, at most 10 s. */
const until = (done: () => boolean) =>
  Effect.promise(async () => {
    for (let waited = 0; !done() && waited < 10_000; waited += 10) {
      await new Promise((resolve) => setTimeout(resolve, 10))
    }
  })

describe("the reservations expiry job", () => {
  it.effect(
    "sweeps expired holds at start and every RESERVATION_SWEEP_INTERVAL, in batches, and keeps live ones",
    () =>
      Effect.gen(function*() {
        const url = yield* Testing.freshDatabase
        const env = { DATABASE_URL: url, RESERVATION_SWEEP_INTERVAL: "1 minute", RESERVATION_SWEEP_BATCH: "2" }
        // The table as an earlier run left it: migrated, five holds run out, two still live.
        yield* Effect.scoped(Layer.build(Postgres.layerConfig({ migrations }))).pipe(
          Effect.provide([Health.layer, Lifecycle.layerTest]),
          Effect.provide(ConfigProvider.layer(ConfigProvider.fromUnknown(env)))
        )
        yield* Testing.sql(url, "INSERT INTO items (name) VALUES ('lamp')")
        yield* hold(url, 5, "-1 minute")
        yield* hold(url, 2, "1 hour")

        const harness = yield* Testing.makeHarness
        const main = ExpiryJob.pipe(Layer.provide(Postgres.layerConfig({ migrations })), Layer.provide(Health.layer))
        const fiber = yield* Effect.forkChild(harness.run(main, env))
        const swept = () => harness.logs.filter((entry) => entry.message === "expired reservations deleted")

        yield* until(() => swept().length === 1)
        assert.deepStrictEqual(swept().map((entry) => entry.annotations.deleted), [5])
        assert.strictEqual(yield* count(url, "true"), 2)

        yield* hold(url, 3, "-1 second")
        yield* TestClock.adjust("59 seconds")
        assert.strictEqual(swept().length, 1)
        yield* TestClock.adjust("1 second")
        yield* until(() => swept().length === 2)
        assert.deepStrictEqual(swept().map((entry) => entry.annotations.deleted), [5, 3])
        assert.strictEqual(yield* count(url, "expires_at <= now()"), 0)
        assert.strictEqual(yield* count(url, "expires_at > now()"), 2)

        yield* harness.send("SIGTERM")
        assert.strictEqual(yield* Fiber.join(fiber), 0)
        const release = harness.phases().find((p) => p.resource === "job expire-reservations")
        assert.strictEqual(release?.outcome, "ok")
      }),
    { timeout: 60_000 }
  )
})
