/**
 * A string cache with TTLs (Redis when configured, else a byte-bounded in-memory store), and
 * generations over it that fail closed: an invalidation that did not land means no cached reads.
 */
import { Config, Context, Duration, Effect, Layer, Option, Schedule, Schema, Tracer } from "effect"
import * as Crypto from "node:crypto"
import { BoundedMap, entryOverheadBytes, stringBytes } from "./BoundedMap.ts"
import * as Shared from "./internal/supervisor/Shared.ts"
import { Redis, throttledWarning } from "./Redis.ts"
import { bytes, duration, int } from "./Settings.ts"

/** Response caching (Redis when configured, else a bounded in-memory store). */
export const CacheConfig = Config.all({
  /** How long an entry lives unless its writer says otherwise; 0 turns caching off. */
  ttl: duration("CACHE_TTL", { default: "30 seconds", max: "1 day" }),
  /** The in-memory store's bound in bytes (keys and values as held); least recently used go first. */
  maxBytes: bytes("CACHE_MAX_BYTES", { default: 32 * 1024 * 1024, min: 1024, max: 64 * 1024 ** 3 }),
  /** A second bound on the in-memory store, by count: many tiny entries cost more than their bytes. */
  maxEntries: int("CACHE_MAX_ENTRIES", { min: 1, max: 10_000_000, default: 10_000 })
})

export class CacheError extends Schema.TaggedError<CacheError>()("CacheError", {
  /** Unavailable: the store did not answer. Rejected: it answered no (read-only, out of memory, too large). */
  reason: Schema.Literals(["Unavailable", "Rejected"]),
  message: Schema.String,
  cause: Schema.optional(Schema.Defect())
}) {}

export interface Store {
  /** The value, or none on a miss; a store that cannot answer is a miss (logged). */
  readonly get: (key: string) => Effect.Effect<Option.Option<string>>
  /** Stores the value for `ttl`; a store that cannot is skipped (logged). */
  readonly set: (key: string, value: string, ttl: Duration.Duration) => Effect.Effect<void>
  readonly delete: (key: string) => Effect.Effect<void>
  /**
   * Several keys in one round trip. Unlike `get`, a store that cannot answer fails: a caller
   * that must tell "not there" from "unknown" (a generation) can.
   */
  readonly lookup: (keys: ReadonlyArray<string>) => Effect.Effect<ReadonlyArray<Option.Option<string>>, CacheError>
  /**
   * Stores the value, or fails saying why not. Without `ttl` the entry is pinned: it lives until
   * replaced, the memory store never evicts it for space, and in Redis it has no expiry (so the
   * `volatile-*` eviction policies never pick it).
   */
  readonly put: (key: string, value: string, ttl?: Duration.Duration) => Effect.Effect<void, CacheError>
}

interface Entry {
  readonly value: string
  readonly expiresAt: number
}

/**
 * At most `maxBytes` (and `maxEntries`) of live entries: expired ones are dropped when read and
 * by a sweep; when full, the least recently used go first, pinned ones never.
 */
export const makeMemoryStore = Effect.fnUntraced(function*(options: {
  readonly maxBytes: number
  readonly maxEntries?: number | undefined
}) {
  const entries = new BoundedMap<Entry>({
    maxBytes: options.maxBytes,
    maxEntries: options.maxEntries,
    weigh: (key, entry) => stringBytes(key) + stringBytes(entry.value) + entryOverheadBytes
  })
  const sweep = Effect.clockWith((clock) =>
    Effect.sync(() => {
      const now = clock.currentTimeMillisUnsafe()
      entries.deleteWhere((entry) => entry.expiresAt <= now)
    })
  )
  yield* Effect.forkScoped(Effect.repeat(sweep, Schedule.spaced("10 seconds")))
  const read = (key: string, now: number): Option.Option<string> => {
    const entry = entries.get(key)
    if (entry === undefined) return Option.none()
    if (entry.expiresAt <= now) {
      entries.delete(key)
      return Option.none()
    }
    return Option.some(entry.value)
  }
  const write = (key: string, value: string, now: number, ttl: Duration.Duration | undefined): boolean =>
    ttl === undefined
      ? entries.set(key, { value, expiresAt: Number.POSITIVE_INFINITY }, { pin: true })
      : entries.set(key, { value, expiresAt: now + Duration.toMillis(ttl) })
  const tooLarge = (key: string) =>
    new CacheError({ reason: "Rejected", message: `${key}: larger than CACHE_MAX_BYTES (${options.maxBytes})` })

  const store = {
    get: (key: string) => Effect.clockWith((clock) => Effect.sync(() => read(key, clock.currentTimeMillisUnsafe()))),
    set: (key: string, value: string, ttl: Duration.Duration) =>
      Effect.clockWith((clock) => Effect.sync(() => void write(key, value, clock.currentTimeMillisUnsafe(), ttl))),
    delete: (key: string) => Effect.sync(() => void entries.delete(key)),
    lookup: (keys: ReadonlyArray<string>) =>
      Effect.clockWith((clock) =>
        Effect.sync(() => {
          const now = clock.currentTimeMillisUnsafe()
          return keys.map((key) => read(key, now))
        })
      ),
    put: (key: string, value: string, ttl?: Duration.Duration) =>
      Effect.clockWith((clock) =>
        write(key, value, clock.currentTimeMillisUnsafe(), ttl) ? Effect.void : Effect.fail(tooLarge(key))
      ),
    size: () => entries.size,
    bytes: () => entries.bytes
  } satisfies Store & Record<string, unknown>
  return store
})

/**
 * The memory store of a supervisor's worker: values cached with a TTL stay in this worker (each
 * worker fills its own, and one that starts, starts empty), but a pinned `put` and a `delete` reach
 * every live worker before they return, so a generation moved on by one worker has moved on in all
 * of them when the write that moved it answers.
 */
export const makeWorkerStore = (
  local: Effect.Success<ReturnType<typeof makeMemoryStore>>,
  shared: Shared.Shared,
  maxBytes: number
): Store => {
  // Whatever the key held here is superseded by what every worker now holds (or by nothing).
  shared.onApply((key) => void local.delete(key).pipe(Effect.runSync))
  const unavailable = (error: Shared.SharedError) =>
    new CacheError({ reason: "Unavailable", message: error.message, cause: error })
  const warn = throttledWarning("cache: a removal did not reach every worker")
  const pinned = (keys: ReadonlyArray<string>) =>
    Effect.map(local.lookup(keys), (values) =>
      values.map((value, index) => {
        const shared_ = shared.get(keys[index]!)
        return shared_ === undefined ? value : Option.some(shared_)
      }))
  return {
    get: (key) => Effect.map(pinned([key]), (values) => values[0]!),
    set: local.set,
    lookup: pinned,
    put: (key, value, ttl) => {
      if (ttl !== undefined) return local.put(key, value, ttl)
      if (stringBytes(key) + stringBytes(value) + entryOverheadBytes > maxBytes) {
        return Effect.fail(
          new CacheError({ reason: "Rejected", message: `${key}: larger than CACHE_MAX_BYTES (${maxBytes})` })
        )
      }
      return Effect.mapError(shared.write(key, value), unavailable)
    },
    delete: (key) => Effect.andThen(local.delete(key), Effect.catch(shared.write(key, null), warn))
  }
}

export class Cache extends Context.Service<Cache, Store>()("scoped-server/Cache") {
  static readonly layer: Layer.Layer<Cache, Config.ConfigError | Shared.SharedError, Redis> = Layer.effect(
    Cache,
    Effect.gen(function*() {
      const { maxBytes, maxEntries } = yield* CacheConfig
      const { connection } = yield* Redis
      const joinWorkers = Shared.forProcess()
      if (Option.isNone(connection) && joinWorkers !== undefined) {
        return makeWorkerStore(yield* makeMemoryStore({ maxBytes, maxEntries }), yield* joinWorkers, maxBytes)
      }
      if (Option.isNone(connection)) return yield* makeMemoryStore({ maxBytes, maxEntries })
      const { keyPrefix, send } = connection.value
      const warn = throttledWarning("cache bypassed: redis is not answering")
      const fullKey = (key: string) => `${keyPrefix}cache:${key}`
      const toCacheError = (error: { readonly reason: string; readonly message: string }) =>
        new CacheError({
          // Redis answered "no" (OOM, READONLY, NOPERM): up, but not storing.
          reason: error.reason === "CommandFailed" ? "Rejected" : "Unavailable",
          message: error.message,
          cause: error
        })
      const lookup = (keys: ReadonlyArray<string>) =>
        send<ReadonlyArray<string | null>>("MGET", ...keys.map(fullKey)).pipe(
          Effect.map((values) => keys.map((_, index) => Option.fromNullishOr(values[index]))),
          Effect.mapError(toCacheError)
        )
      const put = (key: string, value: string, ttl?: Duration.Duration) =>
        (ttl === undefined
          ? send("SET", fullKey(key), value)
          : send("SET", fullKey(key), value, "PX", String(Math.max(1, Duration.toMillis(ttl))))).pipe(
            Effect.asVoid,
            Effect.mapError(toCacheError)
          )
      const store: Store = {
        get: (key) =>
          lookup([key]).pipe(
            Effect.map((values) => values[0] ?? Option.none()),
            Effect.catch((error) => Effect.as(warn(error), Option.none()))
          ),
        set: (key, value, ttl) => put(key, value, ttl).pipe(Effect.catch(warn)),
        delete: (key) => send("DEL", fullKey(key)).pipe(Effect.asVoid, Effect.catch(warn)),
        lookup,
        put
      }
      return store
    })
  )
}

export interface Generations {
  /**
   * The value filed under `key` in the current generation, or `compute`'s (then filed for
   * `ttl`). The cache is skipped (computed, not filed) whenever the current generation is not
   * known for certain: the store failed to answer, or an invalidation has not yet landed.
   */
  readonly through: <A, E, R>(key: string, compute: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  /**
   * Starts a new generation: nothing filed before it is served after it. If the store will not
   * take it, reads skip the cache (here) until a later attempt does.
   */
  readonly invalidate: Effect.Effect<void>
  /** Whether an invalidation is still waiting to land (reads skip the cache meanwhile). */
  readonly pending: () => boolean
  readonly name: string
  /**
   * Reads so far: served from the cache, computed and filed, computed without the cache (the
   * store did not answer or an invalidation had not landed).
   */
  readonly counts: Readonly<Record<"hit" | "miss" | "bypass", number>>
}

/**
 * Generations named `name` over `store`. The generation id and a filed value travel in one
 * lookup (`[generation, entry]`), and each entry carries the generation it was filed under, so a
 * cached read costs one round trip. The generation key is pinned (never evicted for space); an
 * id lost anyway (flushed, evicted by an `allkeys-*` policy) starts a new generation, which is safe.
 */
export const makeGenerations = (store: Store, name: string, ttl: Duration.Duration): Generations => {
  const generationKey = `${name}:generation`
  const entryKey = (key: string) => `${name}:entry:${key}`
  const warnRead = throttledWarning(`cache skipped for ${name}: the store did not answer`)
  const warnInvalidate = throttledWarning(`cache skipped for ${name} until an invalidation lands`)
  // Invalidations asked for, and the highest of them known to have landed: while they differ,
  // this process may not know the current generation, so it reads through to the source.
  let requested = 0
  let landed = 0
  const counts = { hit: 0, miss: 0, bypass: 0 }

  const startGeneration = (upTo: number) =>
    Effect.suspend(() => {
      const id = Crypto.randomUUID()
      return store.put(generationKey, id).pipe(
        Effect.tap(() =>
          Effect.sync(() => {
            landed = Math.max(landed, upTo)
          })
        ),
        Effect.as(id)
      )
    })

  const invalidate = Effect.suspend(() => {
    const ticket = ++requested
    return startGeneration(ticket).pipe(
      Effect.asVoid,
      Effect.catch((error) => warnInvalidate(error))
    )
  })

  const encode = (generation: string, value: unknown) => `${generation}\n${JSON.stringify(value)}`
  const decode = (generation: string, stored: string): Option.Option<unknown> => {
    const newline = stored.indexOf("\n")
    if (newline < 0 || stored.slice(0, newline) !== generation) return Option.none()
    try {
      return Option.some(JSON.parse(stored.slice(newline + 1)))
    } catch {
      return Option.none()
    }
  }

  const fill = <A, E, R>(generation: string, key: string, compute: Effect.Effect<A, E, R>) =>
    Effect.suspend(() => {
      counts.miss++
      return Effect.andThen(
        annotateResult("miss"),
        Effect.tap(compute, (value) => store.set(entryKey(key), encode(generation, value), ttl))
      )
    })
  const bypass = <A, E, R>(warning: Effect.Effect<void>, compute: Effect.Effect<A, E, R>) =>
    Effect.andThen(warning, Effect.suspend(() => (counts.bypass++, Effect.andThen(annotateResult("bypass"), compute))))

  const spanName = `cache ${name}`
  // On the read's span when traced; without a span, a lookup that finds nothing to annotate.
  const annotateResult = (result: "hit" | "miss" | "bypass") => Effect.annotateCurrentSpan("cache.result", result)
  // A span per read when an exporter is installed (the result on it); otherwise no span at all.
  const through = <A, E, R>(key: string, compute: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.withFiber((fiber) => {
      if (fiber.getRef(Tracer.Tracer) === Tracer.nativeTracer) return read(key, compute)
      return Effect.withSpan(read(key, compute), spanName, { attributes: { "cache.name": name } })
    })

  const read = <A, E, R>(key: string, compute: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.suspend(() => {
      if (landed < requested) {
        // An invalidation failed to land: try again now; until one does, the source answers.
        return startGeneration(requested).pipe(
          Effect.matchEffect({
            onFailure: (error) => bypass(warnInvalidate(error), compute),
            onSuccess: (generation) => fill(generation, key, compute)
          })
        )
      }
      return store.lookup([generationKey, entryKey(key)]).pipe(
        Effect.matchEffect({
          // Never a new generation on a failed read: that would empty the cache on a blip.
          onFailure: (error) => bypass(warnRead(error), compute),
          onSuccess: ([generation, stored]) => {
            if (generation === undefined || Option.isNone(generation)) {
              return startGeneration(landed).pipe(
                Effect.matchEffect({
                  onFailure: (error) => bypass(warnRead(error), compute),
                  onSuccess: (fresh) => fill(fresh, key, compute)
                })
              )
            }
            const hit = stored === undefined || Option.isNone(stored)
              ? Option.none()
              : decode(generation.value, stored.value)
            if (Option.isNone(hit)) return fill(generation.value, key, compute)
            counts.hit++
            return Effect.as(annotateResult("hit"), hit.value as A)
          }
        })
      )
    })

  return { through, invalidate, pending: () => landed < requested, name, counts }
}
