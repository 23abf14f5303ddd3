/**
 * Redis against a real private redis-server: proven at startup, health that follows a killed or
 * hung server, commands bounded and behind a breaker, and the cache failing closed.
 */
import { assert, describe, it, layer } from "@effect/vitest"
import { ConfigProvider, Context, Duration, Effect, Exit, Layer, Option } from "effect"
import { execFileSync } from "node:child_process"
import { Cache, makeGenerations } from "../../src/kit/Cache.ts"
import { Health } from "../../src/kit/Health.ts"
import * as Lifecycle from "../../src/kit/Lifecycle.ts"
import * as Log from "../../src/kit/Log.ts"
import { RateLimit } from "../../src/kit/RateLimit.ts"
import { Redis } from "../../src/kit/Redis.ts"
import { privateRedis } from "../support/redis.ts"

class Server extends Context.Service<Server, Effect.Success<typeof privateRedis>>()("test/RedisServer") {
  static readonly layer = Layer.effect(Server, privateRedis)
}

const stack = (env: Record<string, string>) =>
  Layer.mergeAll(Cache.layer, RateLimit.layer).pipe(
    Layer.provideMerge(Redis.layer),
    Layer.provideMerge(Health.layer),
    Layer.provide(Lifecycle.Lifecycle.layerTest),
    Layer.provide(ConfigProvider.layer(ConfigProvider.fromUnknown(env)))
  )

const withStack = <A>(
  env: Record<string, string>,
  f: (
    services: {
      cache: Cache["Service"]
      rateLimit: RateLimit["Service"]
      health: Health["Service"]
      redis: Redis["Service"]
    }
  ) => Effect.Effect<A, unknown>
) =>
  Effect.scoped(Effect.gen(function*() {
    const context = yield* Layer.build(stack(env))
    return yield* f({
      cache: Context.get(context, Cache),
      rateLimit: Context.get(context, RateLimit),
      health: Context.get(context, Health),
      redis: Context.get(context, Redis)
    })
  }))

/** A command from outside the server under test (redis-cli), e.g. to make it refuse writes. */
const cli = (server: Server["Service"], ...args: ReadonlyArray<string>) =>
  Effect.sync(() => execFileSync("redis-cli", ["-p", String(server.port), ...args], { encoding: "utf8" }).trim())

/** Waits until the breaker lets commands through again (a probe found the server answering). */
const untilClosed = (redis: Redis["Service"]) =>
  Effect.sync(() => Option.getOrThrow(redis.connection).breaker()).pipe(
    Effect.delay("50 millis"),
    Effect.repeat({ until: (state) => state === "closed", times: 100 })
  )

const timed = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.map(Effect.timed(effect), ([duration, value]) => [Duration.toMillis(duration), value] as const)

describe("Redis", () => {
  layer(Server.layer, { excludeTestServices: true, timeout: "60 seconds" })((it) => {
    it.effect("connects, reports healthy, and backs the cache and the rate limiter", () =>
      Effect.gen(function*() {
        const server = yield* Server
        yield* withStack({ REDIS_URL: server.url, RATE_LIMIT: "2" }, ({ cache, health, rateLimit, redis }) =>
          Effect.gen(function*() {
            assert.isTrue(Option.isSome(redis.connection))
            assert.strictEqual((yield* health.report).checks.redis?.status, "ok")
            yield* cache.set("k", "v", Duration.seconds(10))
            assert.deepStrictEqual(yield* cache.get("k"), Option.some("v"))
            // Really in Redis: another client sees it.
            const raw = yield* Option.getOrThrow(redis.connection).send<string>("GET", "scoped-server:cache:k")
            assert.strictEqual(raw, "v")
            const decisions = yield* Effect.forEach([1, 2, 3], () =>
              rateLimit.consume("client-a"))
            assert.deepStrictEqual(decisions.map((d) => d._tag), ["Allowed", "Allowed", "Exceeded"])
          }))
      }))

    it.effect("a killed server: health degrades within its timeout, the cache is bypassed, the limiter fails open; back when it is", () =>
      Effect.gen(function*() {
        const server = yield* Server
        const env = {
          REDIS_URL: server.url,
          REDIS_HEALTH_TIMEOUT: "300ms",
          REDIS_COMMAND_TIMEOUT: "300ms",
          REDIS_BREAKER_COOLDOWN: "200ms"
        }
        yield* withStack(env, ({ cache, health, rateLimit, redis }) =>
          Effect.gen(function*() {
            yield* cache.set("k", "v", Duration.seconds(10))
            yield* server.kill
            const [reportMs, report] = yield* timed(health.report)
            // The server serves without Redis (cache bypassed, limiter open): degraded, still ready.
            assert.strictEqual(report.checks.redis?.status, "degraded")
            assert.isTrue(report.healthy)
            assert.isBelow(reportMs, 600)
            const [getMs, miss] = yield* timed(cache.get("k"))
            assert.deepStrictEqual(miss, Option.none())
            assert.isBelow(getMs, 600)
            yield* cache.set("k", "w", Duration.seconds(10))
            assert.strictEqual((yield* rateLimit.consume("client-b"))._tag, "Allowed")
            yield* server.restart
            const healthy = yield* health.report.pipe(
              Effect.delay("100 millis"),
              Effect.repeat({ until: (r) => r.checks.redis?.status === "ok", times: 40 })
            )
            assert.strictEqual(healthy.checks.redis?.status, "ok")
            yield* untilClosed(redis)
            yield* cache.set("k", "x", Duration.seconds(10))
            assert.deepStrictEqual(yield* cache.get("k"), Option.some("x"))
          }))
      }))

    it.effect("with RATE_LIMIT_ON_STORE_ERROR=closed an unavailable store refuses the request", () =>
      Effect.gen(function*() {
        const server = yield* Server
        const env = { REDIS_URL: server.url, REDIS_COMMAND_TIMEOUT: "300ms", RATE_LIMIT_ON_STORE_ERROR: "closed" }
        yield* withStack(env, ({ rateLimit }) =>
          Effect.gen(function*() {
            yield* server.kill
            const decision = yield* rateLimit.consume("client-c")
            assert.strictEqual(decision._tag, "StoreUnavailable")
            yield* server.restart
          }))
      }))

    it.effect("a hung server (SIGSTOP): checks and commands give up at their timeouts; SIGCONT heals", () =>
      Effect.gen(function*() {
        const server = yield* Server
        const env = { REDIS_URL: server.url, REDIS_HEALTH_TIMEOUT: "300ms", REDIS_COMMAND_TIMEOUT: "400ms" }
        yield* withStack(env, ({ cache, health, rateLimit }) =>
          Effect.gen(function*() {
            yield* server.signal("SIGSTOP")
            const [reportMs, report] = yield* timed(health.report)
            const [getMs, miss] = yield* timed(cache.get("anything"))
            const [limitMs, decision] = yield* timed(rateLimit.consume("client-d"))
            yield* server.signal("SIGCONT")
            assert.strictEqual(report.checks.redis?.status, "degraded")
            assert.strictEqual(report.checks.redis?.error, "timed out after 300ms")
            assert.isBelow(reportMs, 700)
            assert.deepStrictEqual(miss, Option.none())
            assert.isBelow(getMs, 800)
            assert.strictEqual(decision._tag, "Allowed")
            assert.isBelow(limitMs, 800)
            const healthy = yield* health.report.pipe(
              Effect.repeat({ until: (r) => r.checks.redis?.status === "ok", times: 20 })
            )
            assert.strictEqual(healthy.checks.redis?.status, "ok")
          }).pipe(Effect.ensuring(server.signal("SIGCONT"))))
      }))

    it.effect("a hung server costs one command timeout, then nothing while the breaker is open; SIGCONT: commands resume", () =>
      Effect.gen(function*() {
        const server = yield* Server
        const env = { REDIS_URL: server.url, REDIS_COMMAND_TIMEOUT: "400ms", REDIS_BREAKER_COOLDOWN: "300ms" }
        yield* withStack(env, ({ cache, rateLimit, redis }) =>
          Effect.gen(function*() {
            yield* cache.set("k", "v", Duration.minutes(1))
            yield* server.signal("SIGSTOP")
            const [firstMs] = yield* timed(cache.get("k"))
            const later = yield* Effect.forEach(Array.from({ length: 10 }), () =>
              timed(
                Effect.all([cache.get("k"), rateLimit.consume("client-e"), cache.set("k", "w", Duration.minutes(1))])
              ))
            const state = Option.getOrThrow(redis.connection).breaker()
            yield* server.signal("SIGCONT")
            assert.isAtLeast(firstMs, 380)
            assert.isBelow(firstMs, 700)
            // While open: no command is sent, so none waits. The bound is far below one timeout
            // (400ms) and leaves room for a loaded machine; unbroken, each waited 400ms or more.
            assert.isBelow(
              Math.max(...later.map(([ms]) => ms)),
              150
            )
            assert.deepStrictEqual(later[0]![1][0], Option.none())
            assert.strictEqual(later[0]![1][1]._tag, "Allowed")
            assert.notStrictEqual(state, "closed")
            yield* untilClosed(redis)
            assert.deepStrictEqual(yield* cache.get("k"), Option.some("v"))
          }).pipe(Effect.ensuring(server.signal("SIGCONT"))))
      }))

    it.effect("a server that accepts reads but rejects writes: after an invalidation reads are fresh, never stale", () =>
      Effect.gen(function*() {
        const server = yield* Server
        yield* withStack({ REDIS_URL: server.url }, ({ cache }) =>
          Effect.gen(function*() {
            const pages = makeGenerations(cache, "rejecting", Duration.minutes(1))
            let source = "before"
            let computed = 0
            const read = pages.through("page", Effect.sync(() => (computed++, source)))
            assert.strictEqual(yield* read, "before")
            assert.strictEqual(yield* read, "before")
            assert.strictEqual(computed, 1)
            // Reads still work; every write is refused with OOM.
            yield* cli(server, "CONFIG", "SET", "maxmemory-policy", "noeviction")
            yield* cli(server, "CONFIG", "SET", "maxmemory", "1")
            source = "after"
            yield* pages.invalidate
            assert.isTrue(pages.pending())
            assert.strictEqual(yield* read, "after")
            assert.strictEqual(yield* read, "after")
            yield* cli(server, "CONFIG", "SET", "maxmemory", "0")
            // Writes accepted again: the next read lands the generation and the cache is used again.
            assert.strictEqual(yield* read, "after")
            assert.isFalse(pages.pending())
            const computedBefore = computed
            assert.strictEqual(yield* read, "after")
            assert.strictEqual(computed, computedBefore)
          }).pipe(Effect.ensuring(Effect.ignore(cli(server, "CONFIG", "SET", "maxmemory", "0")))))
      }))

    it.effect("a generation read that times out skips the cache and never starts a new generation", () =>
      Effect.gen(function*() {
        const server = yield* Server
        const env = { REDIS_URL: server.url, REDIS_COMMAND_TIMEOUT: "300ms", REDIS_BREAKER_COOLDOWN: "200ms" }
        yield* withStack(env, ({ cache, redis }) =>
          Effect.gen(function*() {
            const pages = makeGenerations(cache, "blip", Duration.minutes(1))
            let computed = 0
            const read = pages.through("page", Effect.sync(() => ++computed))
            assert.strictEqual(yield* read, 1)
            const generation = yield* cli(server, "GET", "scoped-server:cache:blip:generation")
            assert.isAbove(generation.length, 0)
            yield* server.signal("SIGSTOP")
            assert.strictEqual(yield* read, 2)
            yield* server.signal("SIGCONT")
            yield* untilClosed(redis)
            assert.strictEqual(yield* cli(server, "GET", "scoped-server:cache:blip:generation"), generation)
            // The cache was not emptied by the blip: the page from before is served.
            assert.strictEqual(yield* read, 1)
          }).pipe(Effect.ensuring(server.signal("SIGCONT"))))
      }))

    it.effect("Redis down is not-ready only when requests cannot be served without it", () =>
      Effect.gen(function*() {
        const server = yield* Server
        const base = { REDIS_URL: server.url, REDIS_HEALTH_TIMEOUT: "300ms", REDIS_COMMAND_TIMEOUT: "300ms" }
        const statusWhenKilled = (env: Record<string, string>) =>
          withStack({ ...base, ...env }, ({ health }) =>
            Effect.gen(function*() {
              yield* server.kill
              const report = yield* health.report
              yield* server.restart
              return [report.healthy, report.checks.redis?.status] as const
            }))
        assert.deepStrictEqual(yield* statusWhenKilled({}), [true, "degraded"])
        assert.deepStrictEqual(yield* statusWhenKilled({ RATE_LIMIT_ON_STORE_ERROR: "closed" }), [false, "failed"])
        assert.deepStrictEqual(yield* statusWhenKilled({ REDIS_CRITICAL: "true" }), [false, "failed"])
      }))
  })

  it.live("without REDIS_URL redis is reported disabled and the stores live in memory", () =>
    withStack({ RATE_LIMIT: "1" }, ({ cache, health, rateLimit, redis }) =>
      Effect.gen(function*() {
        assert.isTrue(Option.isNone(redis.connection))
        const report = yield* health.report
        assert.isTrue(report.healthy)
        assert.deepStrictEqual(report.checks.redis, { status: "disabled", latencyMs: 0 })
        yield* cache.set("k", "v", Duration.seconds(10))
        assert.deepStrictEqual(yield* cache.get("k"), Option.some("v"))
        assert.strictEqual((yield* rateLimit.consume("x"))._tag, "Allowed")
        assert.strictEqual((yield* rateLimit.consume("x"))._tag, "Exceeded")
      })))

  it.live("an unreachable REDIS_URL fails startup within REDIS_CONNECT_TIMEOUT, naming the host but not the password", () =>
    Effect.gen(function*() {
      const started = Date.now()
      const exit = yield* Effect.exit(
        withStack({ REDIS_URL: "redis://:hunter2@127.0.0.1:1", REDIS_CONNECT_TIMEOUT: "1s" }, () => Effect.void)
      )
      assert.isTrue(Exit.isFailure(exit))
      const message = Exit.isFailure(exit) ? Log.describeCause(exit.cause) : ""
      assert.match(message, /^cannot reach redis at 127\.0\.0\.1:1/)
      assert.notInclude(message, "hunter2")
      assert.isBelow(Date.now() - started, 1_500)
    }))
})
