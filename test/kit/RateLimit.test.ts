/**
 * The in-memory rate-limit store on TestClock: windows count and reset, expired keys are swept,
 * and it never grows past RATE_LIMIT_MAX_KEYS.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as RateLimiter from "effect/persistence/RateLimiter"
import { TestClock } from "effect/testing"
import * as RateLimit from "../../src/kit/RateLimit.ts"

describe("in-memory rate-limit store", () => {
  const limiterWith = (maxKeys: number) =>
    Effect.gen(function*() {
      const store = yield* RateLimit.makeMemoryStore(maxKeys)
      const limiter = yield* RateLimiter.make.pipe(Effect.provideService(RateLimiter.RateLimiterStore, store))
      const consume = (key: string) =>
        Effect.exit(limiter.consume({ key, limit: 2, window: "1 minute", algorithm: "fixed-window" }))
      return { store, consume }
    })

  it.effect("counts per key within the window and starts over after it", () =>
    Effect.gen(function*() {
      const { consume } = yield* limiterWith(100)
      const first = yield* Effect.forEach([1, 2, 3], () => consume("k"))
      assert.deepStrictEqual(first.map((exit) => exit._tag), ["Success", "Success", "Failure"])
      yield* TestClock.adjust("1 minute")
      assert.strictEqual((yield* consume("k"))._tag, "Success")
    }))

  it.effect("expired windows are swept (the library's memory store keeps every key forever)", () =>
    Effect.gen(function*() {
      const { consume, store } = yield* limiterWith(100)
      yield* Effect.forEach(["a", "b", "c"], consume)
      assert.strictEqual(store.size(), 3)
      yield* TestClock.adjust("2 minutes")
      assert.strictEqual(store.size(), 0)
    }))

  it.effect("never holds more than RATE_LIMIT_MAX_KEYS keys", () =>
    Effect.gen(function*() {
      const { consume, store } = yield* limiterWith(50)
      yield* Effect.forEach(Array.from({ length: 500 }, (_, i) => `client-${i}`), consume)
      assert.strictEqual(store.size(), 50)
    }))
})
