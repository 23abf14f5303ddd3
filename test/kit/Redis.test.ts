/**
 * Redis against a real private redis-server: proven at startup, health that follows a killed or
 * hung server, commands bounded, and the cache and rate limiter degrading as configured.
 */
import { assert, describe, it, layer } from "@effect/vitest"
import { ConfigProvider, Context, Duration, Effect, Exit, Layer, Option } from "effect"
import { Cache } from "../../src/kit/Cache.ts"
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
  f: (services: { cache: Cache["Service"]; rateLimit: RateLimit["Service"]; health: Health["Service"]; redis: Redis["Service"] }) => Effect.Effect<A, unknown>
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
            const decisions = yield* Effect.forEach([1, 2, 3], () => rateLimit.consume("client-a"))
            assert.deepStrictEqual(decisions.map((d) => d._tag), ["Allowed", "Allowed", "Exceeded"])
          }))
      }))

    it.effect("a killed server: health fails within its timeout, the cache is bypassed, the limiter fails open; back when it is", () =>
      Effect.gen(function*() {
        const server = yield* Server
        const env = { REDIS_URL: server.url, REDIS_HEALTH_TIMEOUT: "300ms", REDIS_COMMAND_TIMEOUT: "300ms" }
        yield* withStack(env, ({ cache, health, rateLimit }) =>
          Effect.gen(function*() {
            yield* cache.set("k", "v", Duration.seconds(10))
            yield* server.kill
            const [reportMs, report] = yield* timed(health.report)
            assert.strictEqual(report.checks.redis?.status, "failed")
            assert.isBelow(reportMs, 600)
            const [getMs, miss] = yield* timed(cache.get("k"))
            assert.deepStrictEqual(miss, Option.none())
            assert.isBelow(getMs, 600)
            yield* cache.set("k", "w", Duration.seconds(10))
            assert.strictEqual((yield* rateLimit.consume("client-b"))._tag, "Allowed")
            yield* server.restart
            const healthy = yield* health.report.pipe(
              Effect.delay("100 millis"),
              Effect.repeat({ until: (r) => r.healthy, times: 40 })
            )
            assert.strictEqual(healthy.checks.redis?.status, "ok")
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
            assert.strictEqual(report.checks.redis?.error, "timed out after 300ms")
            assert.isBelow(reportMs, 700)
            assert.deepStrictEqual(miss, Option.none())
            assert.isBelow(getMs, 800)
            assert.strictEqual(decision._tag, "Allowed")
            assert.isBelow(limitMs, 800)
            const healthy = yield* health.report.pipe(Effect.repeat({ until: (r) => r.healthy, times: 20 }))
            assert.strictEqual(healthy.checks.redis?.status, "ok")
          }).pipe(Effect.ensuring(server.signal("SIGCONT"))))
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
      const exit = yield* Effect.exit(withStack({ REDIS_URL: "redis://:hunter2@127.0.0.1:1", REDIS_CONNECT_TIMEOUT: "1s" }, () => Effect.void))
      assert.isTrue(Exit.isFailure(exit))
      const message = Exit.isFailure(exit) ? Log.describeCause(exit.cause) : ""
      assert.match(message, /^cannot reach redis at 127\.0\.0\.1:1/)
      assert.notInclude(message, "hunter2")
      assert.isBelow(Date.now() - started, 1_500)
    }))
})
