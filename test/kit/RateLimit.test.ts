/**
 * The in-memory rate-limit store on TestClock: counts per key, the counter's expiry moves out by
 * window/limit per request (not a fixed window), expired keys are swept, RATE_LIMIT_MAX_KEYS holds.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { TestClock } from "effect/testing"
import * as RateLimit from "../../src/kit/RateLimit.ts"

const minute = 60_000

describe("in-memory rate-limit store", () => {
  it.effect("counts per key; a burst is refused until window after it began, then starts over", () =>
    Effect.gen(function*() {
      const store = yield* RateLimit.makeMemoryStore(100)
      const decisions = [1, 2, 3].map(() => store.take("k", 2, minute))
      assert.deepStrictEqual(decisions.map((d) => d._tag), ["Allowed", "Allowed", "Exceeded"])
      assert.deepStrictEqual(decisions[0], { _tag: "Allowed", limit: 2, remaining: 1, resetAfterMs: 30_000 })
      assert.deepStrictEqual(decisions[2], { _tag: "Exceeded", limit: 2, retryAfterMs: minute })
      assert.strictEqual(store.take("other", 2, minute)._tag, "Allowed")
      yield* TestClock.adjust("59 seconds")
      assert.deepStrictEqual(store.take("k", 2, minute), { _tag: "Exceeded", limit: 2, retryAfterMs: 1_000 })
      yield* TestClock.adjust("1 second")
      assert.deepStrictEqual(store.take("k", 2, minute), {
        _tag: "Allowed",
        limit: 2,
        remaining: 1,
        resetAfterMs: 30_000
      })
    }))

  it.effect("not a fixed window: a client keeping to limit/window is never refused, however long", () =>
    Effect.gen(function*() {
      const store = yield* RateLimit.makeMemoryStore(100)
      // 2 per minute is one per 30 s: 20 minutes of that is 40 requests, every one allowed.
      for (let i = 0; i < 40; i++) {
        const decision = store.take("steady", 2, minute)
        assert.strictEqual(decision._tag, "Allowed", `request ${i}`)
        // The headers' reset is when the count is back to the full limit: the expiry, exactly.
        if (decision._tag === "Allowed") assert.strictEqual(decision.resetAfterMs, 30_000)
        yield* TestClock.adjust("30 seconds")
      }
      // A request 1 ms early after a full burst is refused for exactly the rest of the expiry.
      store.take("early", 2, minute)
      store.take("early", 2, minute)
      yield* TestClock.adjust(minute - 1)
      assert.deepStrictEqual(store.take("early", 2, minute), { _tag: "Exceeded", limit: 2, retryAfterMs: 1 })
    }))

  it.effect("expired counters are swept", () =>
    Effect.gen(function*() {
      const store = yield* RateLimit.makeMemoryStore(100)
      for (const key of ["a", "b", "c"]) store.take(key, 2, minute)
      assert.strictEqual(store.size(), 3)
      yield* TestClock.adjust("2 minutes")
      assert.strictEqual(store.size(), 0)
    }))

  it.effect("never holds more than RATE_LIMIT_MAX_KEYS keys", () =>
    Effect.gen(function*() {
      const store = yield* RateLimit.makeMemoryStore(50)
      for (let i = 0; i < 500; i++) store.take(`client-${i}`, 2, minute)
      assert.strictEqual(store.size(), 50)
    }))
})
