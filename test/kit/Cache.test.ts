/**
 * The in-memory cache on TestClock: entries expire and are swept, and the store never grows
 * past its bound.
 */
import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Option } from "effect"
import { TestClock } from "effect/testing"
import { makeMemoryStore } from "../../src/kit/Cache.ts"

describe("in-memory cache", () => {
  it.effect("an entry is served until its TTL, then gone", () =>
    Effect.gen(function*() {
      const store = yield* makeMemoryStore(10)
      yield* store.set("a", "1", Duration.seconds(5))
      yield* TestClock.adjust("4999 millis")
      assert.deepStrictEqual(yield* store.get("a"), Option.some("1"))
      yield* TestClock.adjust("1 millis")
      assert.deepStrictEqual(yield* store.get("a"), Option.none())
    }))

  it.effect("expired entries are swept even if never read again", () =>
    Effect.gen(function*() {
      const store = yield* makeMemoryStore(10)
      yield* Effect.forEach(["a", "b", "c"], (key) => store.set(key, key, Duration.seconds(1)))
      assert.strictEqual(store.size(), 3)
      yield* TestClock.adjust("10 seconds")
      assert.strictEqual(store.size(), 0)
    }))

  it.effect("never holds more than its bound; the oldest write goes first", () =>
    Effect.gen(function*() {
      const store = yield* makeMemoryStore(3)
      yield* Effect.forEach(["a", "b", "c", "d"], (key) => store.set(key, key, Duration.minutes(1)))
      assert.strictEqual(store.size(), 3)
      assert.deepStrictEqual(yield* store.get("a"), Option.none())
      assert.deepStrictEqual(yield* store.get("d"), Option.some("d"))
    }))
})
