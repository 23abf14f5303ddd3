/**
 * Per-client rate limiting on Effect's RateLimiter: Redis-backed when configured, else a bounded
 * in-memory store (the library's memory store never evicts). A store failure follows
 * RATE_LIMIT_ON_STORE_ERROR: open lets the request through, closed refuses it.
 */
import { Context, Duration, Effect, Layer, Option, Schedule } from "effect"
import * as RateLimiter from "effect/persistence/RateLimiter"
import * as EffectRedis from "effect/persistence/Redis"
import { HttpServerRequest, HttpServerResponse } from "effect/http"
import { HttpApiMiddleware } from "effect/http-api"
import * as Settings from "./Config.ts"
import { CurrentUser } from "./Auth.ts"
import { errorResponse } from "./HttpServer.ts"
import { Redis, throttledWarning } from "./Redis.ts"

export type Decision =
  | { readonly _tag: "Allowed"; readonly limit: number; readonly remaining: number; readonly resetAfterMs: number }
  | { readonly _tag: "Exceeded"; readonly limit: number; readonly retryAfterMs: number }
  /** The store could not answer and the policy is `closed`. */
  | { readonly _tag: "StoreUnavailable"; readonly limit: number; readonly retryAfterMs: number }

/**
 * Fixed windows and token buckets in memory, at most `maxKeys` of each: expired windows and
 * full buckets are swept, and when full the oldest key is evicted (that client's count restarts).
 */
export const makeMemoryStore = Effect.fnUntraced(function*(maxKeys: number) {
  const windows = new Map<string, { count: number; expiresAt: number }>()
  const buckets = new Map<string, { tokens: number; lastRefill: number; limit: number; refillMillis: number }>()
  const bound = <V>(map: Map<string, V>) => {
    while (map.size > maxKeys) map.delete(map.keys().next().value!)
  }
  const sweep = Effect.clockWith((clock) =>
    Effect.sync(() => {
      const now = clock.currentTimeMillisUnsafe()
      for (const [key, window] of windows) if (window.expiresAt <= now) windows.delete(key)
      for (const [key, bucket] of buckets) {
        if (bucket.tokens + (now - bucket.lastRefill) / bucket.refillMillis >= bucket.limit) buckets.delete(key)
      }
    })
  )
  yield* Effect.forkScoped(Effect.repeat(sweep, Schedule.spaced("10 seconds")))
  // The adaptive operations are kept as the library has them (they drop expired state on access).
  const adaptive = yield* RateLimiter.RateLimiterStore.pipe(Effect.provide(RateLimiter.layerStoreMemory))

  const store = RateLimiter.RateLimiterStore.of({
    fixedWindow: (options) =>
      Effect.clockWith((clock) =>
        Effect.sync(() => {
          const now = clock.currentTimeMillisUnsafe()
          let window = windows.get(options.key)
          if (window === undefined || window.expiresAt <= now) {
            window = { count: 0, expiresAt: now }
            windows.delete(options.key)
            windows.set(options.key, window)
            bound(windows)
          }
          if (options.limit && window.count + options.tokens > options.limit) {
            return [window.count + options.tokens, window.expiresAt - now] as const
          }
          window.count += options.tokens
          window.expiresAt += Duration.toMillis(options.refillRate) * options.tokens
          return [window.count, window.expiresAt - now] as const
        })
      ),
    tokenBucket: (options) =>
      Effect.clockWith((clock) =>
        Effect.sync(() => {
          const refillMillis = Duration.toMillis(options.refillRate)
          const now = clock.currentTimeMillisUnsafe()
          let bucket = buckets.get(options.key)
          if (bucket === undefined) {
            bucket = { tokens: options.limit, lastRefill: now, limit: options.limit, refillMillis }
            buckets.set(options.key, bucket)
            bound(buckets)
          }
          const tokensToAdd = Math.floor((now - bucket.lastRefill) / refillMillis)
          if (tokensToAdd > 0) {
            bucket.tokens = Math.min(options.limit, bucket.tokens + tokensToAdd)
            bucket.lastRefill += tokensToAdd * refillMillis
          }
          if (bucket.tokens >= options.limit) bucket.lastRefill = now
          const next = bucket.tokens - options.tokens
          if (options.allowOverflow || next >= 0) bucket.tokens = next
          return [next, Math.max(0, now - bucket.lastRefill)] as const
        })
      ),
    adaptiveConsume: adaptive.adaptiveConsume,
    adaptiveFeedback: adaptive.adaptiveFeedback
  })
  return Object.assign(store, { size: () => windows.size + buckets.size })
})

export class RateLimit extends Context.Service<RateLimit, {
  /** Counts one request for `key` and says whether it may proceed. Never fails. */
  readonly consume: (key: string) => Effect.Effect<Decision>
}>()("scoped-server/RateLimit") {
  static readonly layer: Layer.Layer<RateLimit, Settings.ConfigError, Redis> = Layer.effect(
    RateLimit,
    Effect.gen(function*() {
      const settings = yield* Settings.rateLimit
      const { connection } = yield* Redis
      const store = Option.isSome(connection)
        ? yield* RateLimiter.makeStoreRedis({ prefix: `${connection.value.keyPrefix}ratelimit:` }).pipe(
          Effect.provideService(EffectRedis.Redis, connection.value.redis)
        )
        : yield* makeMemoryStore(settings.maxKeys)
      // The library's Redis store sends without a bound; a hung server must not hold the request.
      const { commandTimeout } = yield* Settings.redis
      const storeTimeout = new RateLimiter.RateLimiterError({
        reason: new RateLimiter.RateLimitStoreError({ message: `no answer within ${Duration.toMillis(commandTimeout)}ms` })
      })
      const limiter = yield* RateLimiter.make.pipe(Effect.provideService(RateLimiter.RateLimiterStore, store))
      const windowMs = Duration.toMillis(settings.window)
      const warn = throttledWarning(`rate limit store unavailable; failing ${settings.onStoreError}`)

      // The memory store answers synchronously; only a remote one needs a bound.
      const bounded = Option.isSome(connection)
        ? Effect.timeoutOrElse({ duration: commandTimeout, orElse: () => Effect.fail(storeTimeout) })
        : <A, E, R>(effect: Effect.Effect<A, E, R>) => effect
      const consume = (key: string): Effect.Effect<Decision> =>
        limiter.consume({ key, limit: settings.limit, window: settings.window, algorithm: "fixed-window" }).pipe(
          bounded,
          Effect.map((result): Decision => ({
            _tag: "Allowed",
            limit: result.limit,
            remaining: Math.max(0, result.remaining),
            resetAfterMs: Duration.toMillis(result.resetAfter)
          })),
          Effect.catch((error) => {
            const reason = error.reason
            if (reason._tag === "RateLimitExceeded") {
              return Effect.succeed<Decision>({
                _tag: "Exceeded",
                limit: settings.limit,
                retryAfterMs: Duration.toMillis(reason.retryAfter)
              })
            }
            return Effect.as(
              warn(reason),
              settings.onStoreError === "open"
                ? { _tag: "Allowed", limit: settings.limit, remaining: settings.limit, resetAfterMs: windowMs } as const
                : { _tag: "StoreUnavailable", limit: settings.limit, retryAfterMs: 1_000 } as const
            )
          })
        )
      return { consume }
    })
  )
}

/** `::ffff:10.0.0.1` is 10.0.0.1. */
const normalizeAddress = (address: string) => address.startsWith("::ffff:") ? address.slice(7) : address

/** TRUSTED_PROXIES as a set, built once, in the form clientAddress compares. */
export const trustedSet = (proxies: ReadonlyArray<string>): ReadonlySet<string> => new Set(proxies.map(normalizeAddress))

/**
 * The client's address: the peer, unless the peer is a trusted proxy, then the right-most
 * X-Forwarded-For entry that is not a trusted proxy (entries further left are the client's word).
 */
export const clientAddress = (
  peer: string | undefined,
  forwardedFor: string | undefined,
  trusted: ReadonlySet<string>
): string => {
  let address = peer === undefined ? "unknown" : normalizeAddress(peer)
  if (!trusted.has(address) || forwardedFor === undefined) return address
  const hops = forwardedFor.split(",").map((hop) => normalizeAddress(hop.trim())).filter((hop) => hop.length > 0)
  for (let i = hops.length - 1; i >= 0; i--) {
    address = hops[i]!
    if (!trusted.has(address)) break
  }
  return address
}

const limitHeaders = (decision: Decision & { readonly _tag: "Allowed" }) => ({
  "ratelimit-limit": String(decision.limit),
  "ratelimit-remaining": String(decision.remaining),
  "ratelimit-reset": String(Math.ceil(decision.resetAfterMs / 1000))
})

/**
 * Counts every request against its caller: the token's subject when authenticated, else the
 * client address. Over the limit: 429 with Retry-After; otherwise RateLimit-* headers.
 */
export class RateLimited extends HttpApiMiddleware.Service<RateLimited>()("scoped-server/RateLimited") {
  static readonly layer = Layer.effect(
    RateLimited,
    Effect.gen(function*() {
      const rateLimit = yield* RateLimit
      const trusted = trustedSet((yield* Settings.web).trustedProxies)
      return (httpEffect) =>
        Effect.gen(function*() {
          const user = yield* Effect.serviceOption(CurrentUser)
          const request = yield* HttpServerRequest.HttpServerRequest
          const key = Option.isSome(user)
            ? `sub:${user.value.subject}`
            : `ip:${clientAddress(Option.getOrUndefined(request.remoteAddress), request.headers["x-forwarded-for"], trusted)}`
          const decision = yield* rateLimit.consume(key)
          switch (decision._tag) {
            case "Exceeded": {
              const seconds = Math.max(1, Math.ceil(decision.retryAfterMs / 1000))
              return errorResponse(429, `too many requests; retry in ${seconds}s`, {
                "retry-after": String(seconds),
                "ratelimit-limit": String(decision.limit),
                "ratelimit-remaining": "0",
                "ratelimit-reset": String(seconds)
              })
            }
            case "StoreUnavailable":
              return errorResponse(503, "rate limiting is unavailable; try again", {
                "retry-after": String(Math.ceil(decision.retryAfterMs / 1000))
              })
            case "Allowed":
              return HttpServerResponse.setHeaders(yield* httpEffect, limitHeaders(decision))
          }
        })
    })
  )
}
