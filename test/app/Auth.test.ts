/**
 * The verified-token cache on TestClock; each bad claim over HTTP with its error_description; the
 * per-address limit refusing forged-token floods before any signature check; X-Forwarded-For trust.
 */
import { assert, describe, it, layer } from "@effect/vitest"
import { Duration, Effect, Layer } from "effect"
import { TestClock } from "effect/testing"
import * as Jose from "jose"
import { Main } from "../../src/app/App.ts"
import { Authenticator, cachedVerify, type Verify } from "../../src/app/Auth.ts"
import * as Testing from "../../src/kit/testing.ts"

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
  const verify: Verify = async (token, nowMillis) => {
    calls++
    return (await Jose.jwtVerify(token, secret, { algorithms: ["HS256"], currentDate: new Date(nowMillis) })).payload
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
      const forged = yield* mint(
        "mallory",
        start + 60_000,
        new TextEncoder().encode("some-other-secret-0123456789abcdef0123")
      )
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

describe("cachedVerify with a verifier that answers with a promise (JWKS_URL)", () => {
  // A rejection must be handled in the step that makes the promise: the fiber may yield to the
  // scheduler (every 2048 operations) before it awaits it, and a rejection left unhandled until
  // then reaches process.on("unhandledRejection"), which the lifecycle treats as a crash.
  it.live("a rejected check is never an unhandled rejection, wherever the fiber yields", () =>
    Effect.gen(function*() {
      const unhandled: Array<unknown> = []
      const onUnhandled = (reason: unknown) => void unhandled.push(reason)
      process.on("unhandledRejection", onUnhandled)
      const check = cachedVerify(() => Promise.reject(new Error("no such key")), {
        size: 10,
        ttl: Duration.minutes(1)
      })
      // Each run does `pad` operations first, so the scheduler's yield falls on every step of the check.
      for (let pad = 2_030; pad < 2_070; pad++) {
        const failed = yield* Effect.promise(() =>
          Effect.runPromise(
            Effect.forEach(Array.from({ length: pad }), () => Effect.void, { discard: true }).pipe(
              Effect.andThen(Effect.flip(check("a.b.c")))
            )
          )
        )
        assert.strictEqual((failed as Error).message, "no such key")
      }
      // Node reports an unhandled rejection after the microtasks of the turn that made it.
      yield* Effect.promise(() => new Promise((resolve) => setImmediate(resolve)))
      process.off("unhandledRejection", onUnhandled)
      assert.deepStrictEqual(unhandled, [])
    }))
})

const nowSeconds = () => Math.floor(Date.now() / 1000)
const signClaims = (claims: Record<string, unknown>, secretText: string = Testing.jwtSecret) =>
  new Jose.SignJWT(claims as Jose.JWTPayload).setProtectedHeader({ alg: "HS256" }).sign(
    new TextEncoder().encode(secretText)
  )

/** The app with the Authenticator the API uses visible, to count signature checks. */
const appWithAuthenticator = (env: Record<string, string>) =>
  Layer.unwrap(
    Effect.map(Testing.freshDatabase, (databaseUrl) =>
      Testing.layer(Layer.merge(Main, Authenticator.layer), {
        JWT_SECRET: Testing.jwtSecret,
        DATABASE_URL: databaseUrl,
        ...env
      }))
  )

const get = (token: string | undefined, headers: Record<string, string> = {}) =>
  Effect.gen(function*() {
    const server = yield* Testing.TestServer
    return yield* Effect.promise(() => server.fetch("/api/v1/items", { token, headers }))
  })

const description = (response: Response) =>
  /error_description="([^"]*)"/.exec(response.headers.get("www-authenticate") ?? "")?.[1]

describe("JWT claims over HTTP", () => {
  layer(appWithAuthenticator({}), { excludeTestServices: true, timeout: "60 seconds" })((it) => {
    it.effect("each bad claim is 401 with its own error_description; within JWT_CLOCK_TOLERANCE (30s) it passes", () =>
      Effect.gen(function*() {
        const now = nowSeconds()
        const cases: ReadonlyArray<readonly [string, Record<string, unknown>, string | undefined]> = [
          ["no exp", { sub: "a", iat: now }, "the token has no exp claim"],
          ["no sub", { exp: now + 600 }, "the token has no sub claim"],
          ["numeric sub", { sub: 42, exp: now + 600 }, "the token's sub claim must be a non-empty string"],
          ["empty sub", { sub: "", exp: now + 600 }, "the token's sub claim must be a non-empty string"],
          ["iat 2 min ahead", { sub: "a", exp: now + 600, iat: now + 120 }, "the token's iat claim is in the future"],
          ["iat not a number", { sub: "a", exp: now + 600, iat: "yesterday" }, "the token's iat claim is not a number"],
          ["nbf 2 min ahead", { sub: "a", exp: now + 600, nbf: now + 120 }, "the token is not valid yet (nbf)"],
          ["expired 2 min ago", { sub: "a", exp: now - 120 }, "the token has expired"],
          ["iat 10 s ahead", { sub: "a", exp: now + 600, iat: now + 10 }, undefined],
          ["nbf 10 s ahead", { sub: "a", exp: now + 600, nbf: now + 10 }, undefined],
          ["expired 10 s ago", { sub: "a", exp: now - 10 }, undefined]
        ]
        for (const [name, claims, expected] of cases) {
          const response = yield* get(yield* Effect.promise(() => signClaims(claims)))
          if (expected === undefined) {
            assert.strictEqual(response.status, 200, name)
          } else {
            assert.strictEqual(response.status, 401, name)
            assert.strictEqual(description(response), expected, name)
            const body = yield* Effect.promise(() => response.json() as Promise<any>)
            assert.strictEqual(body.detail ?? body.message, expected, name)
          }
        }
        const forged = yield* get(
          yield* Effect.promise(() => signClaims({ sub: "a", exp: now + 600 }, "another-secret-another-secret-0123"))
        )
        assert.strictEqual(description(forged), "the token's signature is not valid")
        const none = `${Buffer.from(JSON.stringify({ alg: "none" })).toString("base64url")}.${
          Buffer.from(JSON.stringify({ sub: "a", exp: now + 600 })).toString("base64url")
        }.`
        assert.strictEqual(description(yield* get(none)), "the token's algorithm is not accepted")
        assert.strictEqual(description(yield* get("not.a.jwt")), "the token is malformed")
        const missing = yield* get(undefined)
        assert.strictEqual(missing.status, 401)
        assert.strictEqual(missing.headers.get("www-authenticate"), `Bearer realm="api"`)
      }))
  })
})

describe("rate limiting before authentication", () => {
  layer(appWithAuthenticator({ RATE_LIMIT_PER_ADDRESS: "5", RATE_LIMIT: "3" }), {
    excludeTestServices: true,
    timeout: "60 seconds"
  })(
    (it) => {
      it.effect("a flood of forged tokens from one address is refused 429 before any signature check", () =>
        Effect.gen(function*() {
          const { verifications } = yield* Authenticator
          const before = verifications()
          const statuses: Array<number> = []
          for (let i = 0; i < 30; i++) {
            const forged = yield* Effect.promise(() =>
              signClaims({ sub: `m${i}`, exp: nowSeconds() + 600 }, `forged-secret-${i}-0123456789abcdef`)
            )
            // The client's own X-Forwarded-For is not believed from an untrusted peer.
            const response = yield* get(forged, { "x-forwarded-for": `198.51.100.${i}` })
            statuses.push(response.status)
            if (response.status === 429) {
              assert.strictEqual(response.headers.get("ratelimit-policy"), "5;w=60")
              assert.strictEqual(response.headers.get("ratelimit-remaining"), "0")
              assert.match(response.headers.get("retry-after") ?? "", /^[1-9]\d*$/)
            }
          }
          assert.deepStrictEqual(statuses, [...Array(5).fill(401), ...Array(25).fill(429)])
          assert.strictEqual(verifications() - before, 5)
        }))
    }
  )

  layer(appWithAuthenticator({ RATE_LIMIT_PER_ADDRESS: "4", RATE_LIMIT: "2" }), {
    excludeTestServices: true,
    timeout: "60 seconds"
  })(
    (it) => {
      it.effect("an authenticated caller sees both policies and the tighter limit's figures; its subject limit applies", () =>
        Effect.gen(function*() {
          const token = yield* Effect.promise(() => Testing.mint({ subject: "carol" }))
          const first = yield* get(token)
          assert.strictEqual(first.status, 200)
          assert.strictEqual(first.headers.get("ratelimit-policy"), "2;w=60, 4;w=60")
          assert.strictEqual(first.headers.get("ratelimit-limit"), "2")
          assert.strictEqual(first.headers.get("ratelimit-remaining"), "1")
          assert.strictEqual(first.headers.get("ratelimit-reset"), "30")
          assert.strictEqual((yield* get(token)).status, 200)
          const third = yield* get(token)
          assert.strictEqual(third.status, 429)
          assert.strictEqual(third.headers.get("ratelimit-policy"), "2;w=60, 4;w=60")
          assert.strictEqual(third.headers.get("ratelimit-limit"), "2")
          assert.strictEqual(third.headers.get("ratelimit-remaining"), "0")
        }))
    }
  )

  layer(
    appWithAuthenticator({ RATE_LIMIT_PER_ADDRESS: "2", TRUSTED_PROXIES: "10.0.0.0/8, 127.0.0.0/8, fd00::/8" }),
    { excludeTestServices: true, timeout: "60 seconds" }
  )((it) => {
    it.effect("X-Forwarded-For from a trusted CIDR is believed: each forwarded client has its own count", () =>
      Effect.gen(function*() {
        const token = yield* Effect.promise(() => Testing.mint())
        const from = (client: string) => get(token, { "x-forwarded-for": client }).pipe(Effect.map((r) => r.status))
        assert.deepStrictEqual([yield* from("203.0.113.1"), yield* from("203.0.113.1"), yield* from("203.0.113.1")], [
          200,
          200,
          429
        ])
        assert.deepStrictEqual([yield* from("203.0.113.2"), yield* from("203.0.113.2")], [200, 200])
        // A spoofed left-most hop does not buy a new count: the right-most untrusted hop is the client.
        assert.strictEqual(yield* from("6.6.6.6, 203.0.113.2"), 429)
        // One IPv6 /64 is one client.
        assert.deepStrictEqual([
          yield* from("2001:db8:1:2::a"),
          yield* from("2001:db8:1:2::b"),
          yield* from("2001:db8:1:2::c")
        ], [200, 200, 429])
      }))
  })
})
