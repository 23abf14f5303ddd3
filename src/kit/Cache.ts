/**
 * A string cache with TTLs: Redis when configured, else a bounded in-memory store. It never
 * fails a request: a store that cannot answer is a miss (reads) or skipped (writes), and logged.
 */
import { Config, Context, Duration, Effect, Layer, Option, Schedule } from "effect"
import { Redis, throttledWarning } from "./Redis.ts"
import { duration, int } from "./Settings.ts"

/** Response caching (Redis when configured, else a bounded in-memory store). */
export const CacheConfig = Config.all({
  /** How long an entry lives unless its writer says otherwise; 0 turns caching off. */
  ttl: duration("CACHE_TTL", "30 seconds", { max: "1 day" }),
  /** The in-memory store's bound; the least recently written entries go first. */
  maxEntries: int("CACHE_MAX_ENTRIES", { min: 1, max: 10_000_000, default: 10_000 })
})

export interface Store {
  readonly get: (key: string) => Effect.Effect<Option.Option<string>>
  readonly set: (key: string, value: string, ttl: Duration.Duration) => Effect.Effect<void>
  readonly delete: (key: string) => Effect.Effect<void>
}

interface Entry {
  readonly value: string
  readonly expiresAt: number
}

/**
 * At most `maxEntries` live entries: expired ones are dropped when read and by a sweep, and when
 * full the oldest write goes first (a Map iterates in insertion order; a write re-inserts).
 */
export const makeMemoryStore = Effect.fnUntraced(function*(maxEntries: number) {
  const entries = new Map<string, Entry>()
  const sweep = Effect.clockWith((clock) =>
    Effect.sync(() => {
      const now = clock.currentTimeMillisUnsafe()
      for (const [key, entry] of entries) if (entry.expiresAt <= now) entries.delete(key)
    })
  )
  yield* Effect.forkScoped(Effect.repeat(sweep, Schedule.spaced("10 seconds")))
  const store: Store & { readonly size: () => number } = {
    get: (key) =>
      Effect.clockWith((clock) =>
        Effect.sync(() => {
          const entry = entries.get(key)
          if (entry === undefined) return Option.none()
          if (entry.expiresAt <= clock.currentTimeMillisUnsafe()) {
            entries.delete(key)
            return Option.none()
          }
          return Option.some(entry.value)
        })
      ),
    set: (key, value, ttl) =>
      Effect.clockWith((clock) =>
        Effect.sync(() => {
          entries.delete(key)
          entries.set(key, { value, expiresAt: clock.currentTimeMillisUnsafe() + Duration.toMillis(ttl) })
          while (entries.size > maxEntries) entries.delete(entries.keys().next().value!)
        })
      ),
    delete: (key) => Effect.sync(() => void entries.delete(key)),
    size: () => entries.size
  }
  return store
})

export class Cache extends Context.Service<Cache, Store>()("scoped-server/Cache") {
  static readonly layer: Layer.Layer<Cache, Config.ConfigError, Redis> = Layer.effect(
    Cache,
    Effect.gen(function*() {
      const { maxEntries } = yield* CacheConfig
      const { connection } = yield* Redis
      if (Option.isNone(connection)) return yield* makeMemoryStore(maxEntries)
      const { keyPrefix, send } = connection.value
      const warn = throttledWarning("cache bypassed: redis is not answering")
      const store: Store = {
        get: (key) =>
          send<string | null>("GET", `${keyPrefix}cache:${key}`).pipe(
            Effect.map(Option.fromNullishOr),
            Effect.catch((error) => Effect.as(warn(error), Option.none()))
          ),
        set: (key, value, ttl) =>
          send("SET", `${keyPrefix}cache:${key}`, value, "PX", String(Math.max(1, Duration.toMillis(ttl)))).pipe(
            Effect.asVoid,
            Effect.catch(warn)
          ),
        delete: (key) => send("DEL", `${keyPrefix}cache:${key}`).pipe(Effect.asVoid, Effect.catch(warn))
      }
      return store
    })
  )
}
