/**
 * The verified-token cache on TestClock, with real jose checks: a token is verified once and then
 * accepted until its `exp` or the cache's TTL, whichever comes first; rejections are never
 * remembered; the cache never holds more than its size.
 */
import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect } from "effect"
import { TestClock } from "effect/testing"
import * as Jose from "jose"
import { cachedVerify, type Verify } from "../../src/app/Auth.ts"

const secret = new TextEncoder().encode("auth-test-secret-0123456789abcdef0123456789")
// A fixed instant, so expiry is decided by TestClock alone.
const start = Date.UTC(2026, 10, 23, 12, 0, 0)

const mint = (subject: string, expiresAt: number, key: Uint8Array = secret) =>
  Effect.promise(() =>
    new Jose.SignJWT({}).setProtectedHeader({ alg: "HS256" }).setSubject(subject).setIssuedAt(start / 1000)
      .setExpirationTime(expiresAt / 1000).sign(key)
  )

/** jose's HS256 check, counting how often it runs. */
const countingVerify = () => {
  let calls = 0
  const verify: Verify = async (token, currentDate) => {
    calls++
    return (await Jose.jwtVerify(token, secret, { algorithms: ["HS256"], currentDate })).payload
  }
  return { verify, calls: () => calls }
}

/** The cache over a counting check, with TestClock at `start`. */
const cacheAtStart = (options: { readonly size: number; readonly ttl: Duration.Duration }) =>
  Effect.gen(function*() {
    yield* TestClock.setTime(start)
    const { calls, verify } = countingVerify()
    return { calls, check: cachedVerify(verify, options) }
  })

describe("verified-token cache", () => {
  it.effect("verifies a token once, then accepts it until the TTL, then checks it again", () =>
    Effect.gen(function*() {
      const { calls, check } = yield* cacheAtStart({ size: 100, ttl: Duration.minutes(1) })
      const token = yield* mint("alice", start + 10 * 60_000)
      assert.strictEqual((yield* check(token)).sub, "alice")
      assert.strictEqual((yield* check(token)).sub, "alice")
      yield* TestClock.adjust("59 seconds")
      yield* check(token)
      assert.strictEqual(calls(), 1)
      yield* TestClock.adjust("1 second")
      yield* check(token)
      assert.strictEqual(calls(), 2)
    }))

  it.effect("a remembered token is refused once its exp passes, however recently it was checked", () =>
    Effect.gen(function*() {
      const { calls, check } = yield* cacheAtStart({ size: 100, ttl: Duration.hours(1) })
      const token = yield* mint("bob", start + 30_000)
      yield* check(token)
      yield* TestClock.adjust("29 seconds")
      yield* check(token)
      assert.strictEqual(calls(), 1)
      yield* TestClock.adjust("1 second")
      assert.instanceOf(yield* Effect.flip(check(token)), Jose.errors.JWTExpired)
      assert.strictEqual(calls(), 2)
    }))

  it.effect("rejected tokens are never remembered", () =>
    Effect.gen(function*() {
      const { calls, check } = yield* cacheAtStart({ size: 100, ttl: Duration.minutes(1) })
      const forged = yield* mint("mallory", start + 60_000, new TextEncoder().encode("some-other-secret-0123456789abcdef0123"))
      for (let i = 0; i < 3; i++) {
        assert.instanceOf(yield* Effect.flip(check(forged)), Jose.errors.JWSSignatureVerificationFailed)
      }
      assert.strictEqual(calls(), 3)
      assert.strictEqual(check.size(), 0)
    }))

  it.effect("holds at most `size` tokens, forgetting the oldest first; size 0 remembers nothing", () =>
    Effect.gen(function*() {
      const { calls, check } = yield* cacheAtStart({ size: 2, ttl: Duration.minutes(1) })
      const [a, b, c] = yield* Effect.forEach(["a", "b", "c"], (subject) => mint(subject, start + 60_000))
      yield* Effect.forEach([a!, b!, c!], check)
      assert.strictEqual(check.size(), 2)
      yield* check(c!)
      yield* check(b!)
      assert.strictEqual(calls(), 3)
      yield* check(a!)
      assert.strictEqual(calls(), 4)

      const uncached = countingVerify()
      const never = cachedVerify(uncached.verify, { size: 0, ttl: Duration.minutes(1) })
      yield* check(a!).pipe(Effect.andThen(never(a!)), Effect.andThen(never(a!)))
      assert.strictEqual(uncached.calls(), 2)
      assert.strictEqual(never.size(), 0)
    }))
})
