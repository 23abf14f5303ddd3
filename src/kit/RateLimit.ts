/**
 * Per-client rate limiting on Effect's RateLimiter: Redis-backed when configured, else a bounded
 * in-memory store (the library's memory store never evicts). A store failure follows
 * RATE_LIMIT_ON_STORE_ERROR: open lets the request through, closed refuses it.
 */
import { Config, Context, Duration, Effect, Layer, Option, Schedule } from "effect"
import * as RateLimiter from "effect/persistence/RateLimiter"
import * as EffectRedis from "effect/persistence/Redis"
import { Redis, RedisConfig, throttledWarning } from "./Redis.ts"
import { duration, int, literal } from "./Settings.ts"

/** Rate limiting per client (Redis when configured, else a bounded in-memory store). */
export const RateLimitConfig = Config.all({
  limit: int("RATE_LIMIT", { min: 1, max: 1_000_000_000, default: 100 }),
  window: duration("RATE_LIMIT_WINDOW", "1 minute", { min: "100 millis", max: "1 day" }),
  /** When the store cannot answer: `open` lets the request through, `closed` refuses it (503). */
  onStoreError: literal("RATE_LIMIT_ON_STORE_ERROR", ["open", "closed"], { default: "open" }),
  maxKeys: int("RATE_LIMIT_MAX_KEYS", { min: 1, max: 10_000_000, default: 100_000 })
})

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
  static readonly layer: Layer.Layer<RateLimit, Config.ConfigError, Redis> = Layer.effect(
    RateLimit,
    Effect.gen(function*() {
      const settings = yield* RateLimitConfig
      const { connection } = yield* Redis
      const store = Option.isSome(connection)
        ? yield* RateLimiter.makeStoreRedis({ prefix: `${connection.value.keyPrefix}ratelimit:` }).pipe(
          Effect.provideService(EffectRedis.Redis, connection.value.redis)
        )
        : yield* makeMemoryStore(settings.maxKeys)
      // The library's Redis store sends without a bound; a hung server must not hold the request.
      const { commandTimeout } = yield* RedisConfig
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

