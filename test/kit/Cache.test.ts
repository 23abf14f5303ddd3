/**
 * The in-memory cache and cache generations on TestClock: entries expire and are swept, the
 * store never holds more bytes than its bound, the generation survives eviction, and reads fail closed.
 */
import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Option } from "effect"
import { TestClock } from "effect/testing"
import { BoundedMap } from "../../src/kit/BoundedMap.ts"
import { CacheError, makeGenerations, makeMemoryStore, type Store } from "../../src/kit/Cache.ts"

describe("in-memory cache", () => {
  it.effect("an entry is served until its TTL, then gone", () =>
    Effect.gen(function*() {
      const store = yield* makeMemoryStore({ maxBytes: 1 << 20 })
      yield* store.set("a", "1", Duration.seconds(5))
      yield* TestClock.adjust("4999 millis")
      assert.deepStrictEqual(yield* store.get("a"), Option.some("1"))
      yield* TestClock.adjust("1 millis")
      assert.deepStrictEqual(yield* store.get("a"), Option.none())
    }))

  it.effect("expired entries are swept even if never read again", () =>
    Effect.gen(function*() {
      const store = yield* makeMemoryStore({ maxBytes: 1 << 20 })
      yield* Effect.forEach(["a", "b", "c"], (key) => store.set(key, key, Duration.seconds(1)))
      assert.strictEqual(store.size(), 3)
      yield* TestClock.adjust("10 seconds")
      assert.strictEqual(store.size(), 0)
      assert.strictEqual(store.bytes(), 0)
    }))

  it.effect("CACHE_MAX_ENTRIES still bounds the count; the least recently used goes first", () =>
    Effect.gen(function*() {
      const store = yield* makeMemoryStore({ maxBytes: 1 << 20, maxEntries: 3 })
      yield* Effect.forEach(["a", "b", "c"], (key) => store.set(key, key, Duration.minutes(1)))
      // Reading `a` makes `b` the least recently used.
      assert.deepStrictEqual(yield* store.get("a"), Option.some("a"))
      yield* store.set("d", "d", Duration.minutes(1))
      assert.strictEqual(store.size(), 3)
      assert.deepStrictEqual(yield* store.get("b"), Option.none())
      assert.deepStrictEqual(yield* store.get("a"), Option.some("a"))
      assert.deepStrictEqual(yield* store.get("d"), Option.some("d"))
    }))

  it.effect("the byte bound holds under large values, and a value larger than the bound is refused", () =>
    Effect.gen(function*() {
      const maxBytes = 1 << 20
      const store = yield* makeMemoryStore({ maxBytes, maxEntries: 1_000_000 })
      const large = "x".repeat(100_000) // ~200 KB as a JavaScript string
      for (let i = 0; i < 50; i++) {
        yield* store.set(`page-${i}`, large, Duration.minutes(1))
        assert.isAtMost(store.bytes(), maxBytes)
      }
      // Only the most recent few fit; the oldest are gone, the newest is there.
      assert.isAtMost(store.size(), 5)
      assert.deepStrictEqual(yield* store.get("page-0"), Option.none())
      assert.deepStrictEqual(yield* store.get("page-49"), Option.some(large))
      const huge = "y".repeat(maxBytes)
      const refused = yield* Effect.flip(store.put("huge", huge, Duration.minutes(1)))
      assert.instanceOf(refused, CacheError)
      assert.strictEqual(refused.reason, "Rejected")
      assert.deepStrictEqual(yield* store.get("huge"), Option.none())
      // An over-large write also drops the value it meant to replace: never serve what was replaced.
      yield* store.set("page-49", huge, Duration.minutes(1))
      assert.deepStrictEqual(yield* store.get("page-49"), Option.none())
    }))

  it.effect("a pinned entry (the generation) survives any eviction pressure", () =>
    Effect.gen(function*() {
      const store = yield* makeMemoryStore({ maxBytes: 64 * 1024, maxEntries: 10 })
      yield* store.put("items:generation", "g1")
      for (let i = 0; i < 1_000; i++) yield* store.set(`items:entry:${i}`, "z".repeat(1_000), Duration.minutes(1))
      assert.isAtMost(store.bytes(), 64 * 1024)
      assert.deepStrictEqual(yield* store.get("items:generation"), Option.some("g1"))
      // And it does not expire with the entries around it.
      yield* TestClock.adjust("2 minutes")
      assert.strictEqual(store.size(), 1)
      assert.deepStrictEqual(yield* store.get("items:generation"), Option.some("g1"))
    }))
})

describe("BoundedMap", () => {
  it("accounts bytes exactly across replace and delete", () => {
    const map = new BoundedMap<string>({ maxBytes: 100, weigh: (_, value) => value.length })
    map.set("a", "x".repeat(40))
    map.set("b", "x".repeat(40))
    map.set("a", "x".repeat(10))
    assert.strictEqual(map.bytes, 50)
    map.set("c", "x".repeat(60))
    assert.strictEqual(map.bytes, 70)
    assert.isUndefined(map.peek("b"))
    map.delete("a")
    assert.strictEqual(map.bytes, 60)
  })
})

/** A memory store whose writes can be switched off, as a Redis that rejects writes behaves. */
const rejectingStore = (inner: Store) => {
  let rejecting = false
  let failingReads = false
  const store: Store = {
    ...inner,
    lookup: (keys) =>
      failingReads ? Effect.fail(new CacheError({ reason: "Unavailable", message: "timed out" })) : inner.lookup(keys),
    put: (key, value, ttl) =>
      rejecting ? Effect.fail(new CacheError({ reason: "Rejected", message: "OOM" })) : inner.put(key, value, ttl),
    set: (key, value, ttl) => rejecting ? Effect.void : inner.set(key, value, ttl)
  }
  return {
    store,
    rejectWrites: (on: boolean) => {
      rejecting = on
    },
    failReads: (on: boolean) => {
      failingReads = on
    }
  }
}

describe("cache generations", () => {
  it.effect("a write whose invalidation did not land: reads skip the cache until one does", () =>
    Effect.gen(function*() {
      const memory = yield* makeMemoryStore({ maxBytes: 1 << 20 })
      const { rejectWrites, store } = rejectingStore(memory)
      const pages = makeGenerations(store, "items", Duration.minutes(1))
      let source = "v1"
      let computed = 0
      const read = pages.through("page", Effect.sync(() => (computed++, source)))
      assert.strictEqual(yield* read, "v1")
      assert.strictEqual(yield* read, "v1")
      assert.strictEqual(computed, 1)

      rejectWrites(true)
      source = "v2"
      yield* pages.invalidate
      assert.isTrue(pages.pending())
      assert.strictEqual(yield* read, "v2")
      assert.strictEqual(yield* read, "v2")
      assert.strictEqual(computed, 3)

      rejectWrites(false)
      assert.strictEqual(yield* read, "v2")
      assert.isFalse(pages.pending())
      assert.strictEqual(yield* read, "v2")
      assert.strictEqual(computed, 4)
    }))

  it.effect("a failed generation read skips the cache and never starts a new generation", () =>
    Effect.gen(function*() {
      const memory = yield* makeMemoryStore({ maxBytes: 1 << 20 })
      const { failReads, store } = rejectingStore(memory)
      const pages = makeGenerations(store, "items", Duration.minutes(1))
      let computed = 0
      const read = pages.through("page", Effect.sync(() => ++computed))
      assert.strictEqual(yield* read, 1)
      const generation = yield* memory.get("items:generation")
      failReads(true)
      assert.strictEqual(yield* read, 2)
      failReads(false)
      assert.deepStrictEqual(yield* memory.get("items:generation"), generation)
      // The page cached before the blip is still served: the cache was not emptied.
      assert.strictEqual(yield* read, 1)
    }))

  it.effect("a page filed under an older generation is not served", () =>
    Effect.gen(function*() {
      const store = yield* makeMemoryStore({ maxBytes: 1 << 20 })
      const pages = makeGenerations(store, "items", Duration.minutes(1))
      let computed = 0
      const read = pages.through("page", Effect.sync(() => ++computed))
      assert.strictEqual(yield* read, 1)
      yield* pages.invalidate
      assert.strictEqual(yield* read, 2)
      assert.strictEqual(yield* read, 2)
    }))
})
