/**
 * Per-client rate limiting, two limits (per client address, per authenticated subject) over one
 * store: Redis when configured (Effect's RateLimiter), else a bounded in-memory store.
 */
import { Clock, Config, Context, Duration, Effect, Layer, Option, Schedule } from "effect"
import * as RateLimiter from "effect/persistence/RateLimiter"
import * as EffectRedis from "effect/persistence/Redis"
import { observe } from "./internal/metrics/Registry.ts"
import * as RateCounter from "./internal/RateCounter.ts"
import * as Shared from "./internal/supervisor/Shared.ts"
import { Redis, RedisConfig, throttledWarning } from "./Redis.ts"
import { duration, int, literal } from "./Settings.ts"

/** Rate limiting per client (Redis when configured, else a bounded in-memory store). */
export const RateLimitConfig = Config.all({
  /** Requests per window for one authenticated subject (the token's `sub`). */
  limit: int("RATE_LIMIT", { min: 1, max: 1_000_000_000, default: 100 }),
  /**
   * Requests per window from one client address, counted before authentication, so floods of
   * bad or forged tokens are refused before any signature check. Unset: 10 × RATE_LIMIT, since
   * several users may share an address (NAT, an office).
   */
  perAddress: Config.option(int("RATE_LIMIT_PER_ADDRESS", { min: 1, max: 1_000_000_000 })),
  window: duration("RATE_LIMIT_WINDOW", { default: "1 minute", min: "100 millis", max: "1 day" }),
  /** When the store cannot answer: `open` lets the request through, `closed` refuses it (503). */
  onStoreError: literal("RATE_LIMIT_ON_STORE_ERROR", ["open", "closed"], { default: "open" }),
  maxKeys: int("RATE_LIMIT_MAX_KEYS", { min: 1, max: 10_000_000, default: 100_000 })
})

export type Decision =
  | {
    readonly _tag: "Allowed"
    readonly limit: number
    readonly remaining: number
    readonly resetAfterMs: number
    /** The store could not answer and the policy is `open`: `remaining` and `resetAfterMs` are not known. */
    readonly unknown?: true
  }
  | { readonly _tag: "Exceeded"; readonly limit: number; readonly retryAfterMs: number }
  /** The store could not answer and the policy is `closed`. */
  | { readonly _tag: "StoreUnavailable"; readonly limit: number; readonly retryAfterMs: number }

/**
 * The counters in memory, at most `maxKeys`: expired ones are swept, and when full the oldest
 * key is evicted (that client's count restarts).
 *
 * The algorithm is the one Effect's Redis store runs (its "fixed-window" script), so both backends
 * answer alike: a counter per key, created by the key's first request with an expiry of now;
 * every counted request adds `window / limit` to that expiry; a request that would take the
 * count past `limit` is refused until the expiry passes, and then the counter starts over at 0.
 * So a client that keeps to `limit` per `window` is never refused, a burst of `limit` is refused
 * until `window` after the burst began, and at worst 2 × `limit` fit in one `window` (as with a
 * fixed window). `take` is one synchronous step: the request path pays no Effect per request.
 */
export const makeMemoryStore = Effect.fnUntraced(function*(maxKeys: number) {
  const clock = yield* Clock.Clock
  const counters = RateCounter.makeCounters(maxKeys)
  const sweep = Effect.sync(() => counters.sweep(clock.currentTimeMillisUnsafe()))
  yield* Effect.forkScoped(Effect.repeat(sweep, Schedule.spaced("10 seconds")))

  const take = (key: string, limit: number, windowMs: number): Decision => {
    const now = clock.currentTimeMillisUnsafe()
    const counter = counters.at(key, now)
    if (!RateCounter.fits(counter, limit)) return { _tag: "Exceeded", limit, retryAfterMs: counter.expiresAt - now }
    RateCounter.add(counter, 1, limit, windowMs)
    return { _tag: "Allowed", limit, remaining: limit - counter.count, resetAfterMs: counter.expiresAt - now }
  }
  return { take, size: counters.size }
})

/** One limit: how many requests per window, and how to count one. */
export interface Limit {
  readonly limit: number
  readonly window: Duration.Duration
  /** `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers-07): `100;w=60`. */
  readonly policy: string
  /** Counts one request for `key` and says whether it may proceed. Never fails. */
  readonly consume: (key: string) => Effect.Effect<Decision>
}

export class RateLimit extends Context.Service<
  RateLimit,
  Limit & {
    /** The per-address limit (RATE_LIMIT_PER_ADDRESS), counted in its own key space. */
    readonly perAddress: Limit
  }
>()("scoped-server/RateLimit") {
  static readonly layer: Layer.Layer<RateLimit, Config.ConfigError | Shared.SharedError, Redis> = Layer.effect(
    RateLimit,
    Effect.gen(function*() {
      const settings = yield* RateLimitConfig
      const { connection } = yield* Redis
      const windowMs = Duration.toMillis(settings.window)
      const perAddress = Option.getOrElse(settings.perAddress, () => settings.limit * 10)
      const warn = throttledWarning(`rate limit store unavailable; failing ${settings.onStoreError}`)
      const policy = (limit: number) => `${limit};w=${Math.max(1, Math.round(windowMs / 1000))}`

      let makeConsume: (limit: number, prefix: string) => (key: string) => Effect.Effect<Decision>
      const joinWorkers = Shared.forProcess()
      if (Option.isNone(connection) && joinWorkers !== undefined) {
        // A supervisor's worker: the supervisor counts for every worker (supervisor/Shared.ts says how).
        const shared = yield* joinWorkers
        const clock = yield* Clock.Clock
        const limiter = Shared.makeLimiter(shared, {
          now: () => clock.currentTimeMillisUnsafe(),
          maxKeys: settings.maxKeys,
          onError: throttledWarning("rate limits counted by this worker alone: the supervisor did not answer")
        })
        yield* Effect.forkScoped(Effect.repeat(Effect.sync(limiter.sweep), Schedule.spaced("10 seconds")))
        yield* Effect.addFinalizer(() => Effect.sync(limiter.flush))
        makeConsume = (limit, prefix) => (key) =>
          Effect.suspend(() => {
            const decision = limiter.local(prefix + key, limit, windowMs)
            return decision === undefined ? limiter.remote(prefix + key, limit, windowMs) : Effect.succeed(decision)
          })
      } else if (Option.isNone(connection)) {
        const store = yield* makeMemoryStore(settings.maxKeys)
        makeConsume = (limit, prefix) => (key) => Effect.sync(() => store.take(prefix + key, limit, windowMs))
      } else {
        const redisStore = yield* RateLimiter.makeStoreRedis({ prefix: `${connection.value.keyPrefix}ratelimit:` })
          .pipe(
            Effect.provideService(EffectRedis.Redis, connection.value.redis)
          )
        const limiter = yield* RateLimiter.make.pipe(Effect.provideService(RateLimiter.RateLimiterStore, redisStore))
        // The library's Redis store sends without a bound; a hung server must not hold the request.
        const { commandTimeout } = yield* RedisConfig
        const storeTimeout = new RateLimiter.RateLimiterError({
          reason: new RateLimiter.RateLimitStoreError({
            message: `no answer within ${Duration.toMillis(commandTimeout)}ms`
          })
        })
        makeConsume = (limit, prefix) => (key) =>
          limiter.consume({ key: prefix + key, limit, window: settings.window, algorithm: "fixed-window" }).pipe(
            Effect.timeoutOrElse({ duration: commandTimeout, orElse: () => Effect.fail(storeTimeout) }),
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
                  limit,
                  retryAfterMs: Duration.toMillis(reason.retryAfter)
                })
              }
              return Effect.as(
                warn(reason),
                settings.onStoreError === "open"
                  ? { _tag: "Allowed", limit, remaining: limit, resetAfterMs: windowMs, unknown: true } as const
                  : { _tag: "StoreUnavailable", limit, retryAfterMs: 1_000 } as const
              )
            })
          )
      }
      const limitOf = (limit: number, prefix: string, name: "subject" | "address") =>
        Effect.gen(function*() {
          // Counted per decision with plain increments; Prometheus reads them on a scrape.
          const counts = { allowed: 0, exceeded: 0, store_unavailable: 0 }
          const tally = (decision: Decision) => {
            if (decision._tag === "Exceeded") counts.exceeded++
            else if (decision._tag === "StoreUnavailable" || decision.unknown === true) counts.store_unavailable++
            else counts.allowed++
            return decision
          }
          for (const result of ["allowed", "exceeded", "store_unavailable"] as const) {
            yield* observe(
              "scoped_server_rate_limit_decisions_total",
              "Rate-limit decisions per limit: allowed, exceeded (429), store_unavailable (let through or 503 per RATE_LIMIT_ON_STORE_ERROR).",
              () => counts[result],
              { counter: true, attributes: { limit: name, decision: result } }
            )
          }
          const consume = makeConsume(limit, prefix)
          return {
            limit,
            window: settings.window,
            policy: policy(limit),
            consume: (key: string) => Effect.map(consume(key), tally)
          } satisfies Limit
        })
      // Subjects keep the unprefixed key space they always had in Redis; addresses get their own.
      return {
        ...(yield* limitOf(settings.limit, "", "subject")),
        perAddress: yield* limitOf(perAddress, "addr:", "address")
      }
    })
  )
}
