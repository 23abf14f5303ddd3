/**
 * The items list cache over HTTP against a real private redis-server that misbehaves: one that
 * rejects writes never serves a stale page, a hung one costs one timeout per outage, not per request.
 */
import { assert, describe, layer } from "@effect/vitest"
import { Context, Duration, Effect, Layer } from "effect"
import { execFileSync } from "node:child_process"
import * as Testing from "../../../src/kit/testing.ts"
import { App, appLayer } from "../../support/app.ts"
import { privateRedis } from "../../support/redis.ts"

class Server extends Context.Service<Server, Effect.Success<typeof privateRedis>>()("test/RedisServer") {
  static readonly layer = Layer.effect(Server, privateRedis)
}

const cli = (server: Server["Service"], ...args: ReadonlyArray<string>) =>
  Effect.sync(() => execFileSync("redis-cli", ["-p", String(server.port), ...args], { encoding: "utf8" }).trim())

/** The app on its own fresh database, with Redis at `server`, for the length of `f`. */
const withApp = <A>(
  env: Record<string, string>,
  f: (app: App["Service"], token: string) => Effect.Effect<A, unknown>
) =>
  Effect.scoped(Effect.gen(function*() {
    const app = Context.get(yield* Layer.build(appLayer({ CACHE_TTL: "1 minute", RATE_LIMIT: "10000", ...env })), App)
    const token = yield* Effect.promise(() => Testing.mint({ subject: "cache-tester" }))
    return yield* f(app, token)
  }))

const names = (app: App["Service"], token: string) =>
  Effect.promise(async () => {
    const response = await app.fetch("/api/v1/items", { token })
    const body = await response.json() as { items: Array<{ name: string }> }
    return { status: response.status, names: body.items.map((item) => item.name) }
  })

const create = (app: App["Service"], token: string, name: string) =>
  Effect.promise(() =>
    app.fetch("/api/v1/items", {
      method: "POST",
      token,
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ name })
    }).then((response) => response.status)
  )

const timed = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.map(Effect.timed(effect), ([duration, value]) => [Duration.toMillis(duration), value] as const)

describe("items list cache with a misbehaving Redis", () => {
  layer(Server.layer, { excludeTestServices: true, timeout: "120 seconds" })((it) => {
    it.effect("Redis rejects writes (OOM): after a write the next list is fresh, and the cache resumes once writes land", () =>
      Effect.gen(function*() {
        const server = yield* Server
        yield* withApp({ REDIS_URL: server.url }, (app, token) =>
          Effect.gen(function*() {
            assert.strictEqual(yield* create(app, token, "first"), 201)
            assert.deepStrictEqual((yield* names(app, token)).names, ["first"])
            // Cached: a row written behind the API's back is not seen.
            yield* Testing.sql(app.env.DATABASE_URL!, "INSERT INTO items (name) VALUES ('sneaked')")
            assert.deepStrictEqual((yield* names(app, token)).names, ["first"])

            yield* cli(server, "CONFIG", "SET", "maxmemory-policy", "noeviction")
            yield* cli(server, "CONFIG", "SET", "maxmemory", "1")
            // The write commits; the generation bump is refused.
            assert.strictEqual(yield* create(app, token, "second"), 201)
            assert.deepStrictEqual((yield* names(app, token)).names, ["first", "sneaked", "second"])
            assert.deepStrictEqual((yield* names(app, token)).names, ["first", "sneaked", "second"])

            yield* cli(server, "CONFIG", "SET", "maxmemory", "0")
            assert.deepStrictEqual((yield* names(app, token)).names, ["first", "sneaked", "second"])
            // The generation landed: pages are cached again.
            yield* Testing.sql(app.env.DATABASE_URL!, "INSERT INTO items (name) VALUES ('sneaked again')")
            assert.deepStrictEqual((yield* names(app, token)).names, ["first", "sneaked", "second"])
          }).pipe(Effect.ensuring(Effect.ignore(cli(server, "CONFIG", "SET", "maxmemory", "0")))))
      }))

    it.effect("Redis hung (SIGSTOP): the first list pays one command timeout, the rest none; SIGCONT: the cache is used again", () =>
      Effect.gen(function*() {
        const server = yield* Server
        const env = { REDIS_URL: server.url, REDIS_COMMAND_TIMEOUT: "500ms", REDIS_BREAKER_COOLDOWN: "300ms" }
        yield* withApp(env, (app, token) =>
          Effect.gen(function*() {
            assert.strictEqual(yield* create(app, token, "kept"), 201)
            yield* names(app, token)
            yield* server.signal("SIGSTOP")
            const [firstMs, first] = yield* timed(names(app, token))
            const rest = yield* Effect.forEach(Array.from({ length: 10 }), () => timed(names(app, token)))
            yield* server.signal("SIGCONT")
            console.log(
              `hung redis: first list ${firstMs.toFixed(0)} ms, then ${rest.map(([ms]) => ms.toFixed(0)).join(", ")} ms`
            )
            assert.strictEqual(first.status, 200)
            assert.deepStrictEqual(first.names, ["kept"])
            assert.isBelow(firstMs, 900)
            assert.isBelow(Math.max(...rest.map(([ms]) => ms)), 150)
            assert.isTrue(rest.every(([, answer]) => answer.status === 200))

            // Recovered: after the cool-down a probe closes the breaker and pages are cached again.
            yield* Effect.sleep("800 millis")
            yield* names(app, token)
            yield* Testing.sql(app.env.DATABASE_URL!, "INSERT INTO items (name) VALUES ('behind the cache')")
            assert.deepStrictEqual((yield* names(app, token)).names, ["kept"])
          }).pipe(Effect.ensuring(server.signal("SIGCONT"))))
      }))

    it.effect("Redis killed: /readyz stays 200 with redis degraded in its body, /health says degraded", () =>
      Effect.gen(function*() {
        const server = yield* Server
        const env = { REDIS_URL: server.url, REDIS_HEALTH_TIMEOUT: "300ms", REDIS_COMMAND_TIMEOUT: "300ms" }
        yield* withApp(env, (app, token) =>
          Effect.gen(function*() {
            yield* server.kill
            const probe = (path: string) =>
              Effect.promise(async () => {
                const response = await app.fetch(path)
                return { status: response.status, body: await response.json() as any }
              })
            const ready = yield* probe("/readyz")
            assert.strictEqual(ready.status, 200)
            assert.strictEqual(ready.body.status, "degraded")
            assert.strictEqual(ready.body.checks.redis.status, "degraded")
            assert.strictEqual(ready.body.checks.database.status, "ok")
            const health = yield* probe("/health")
            assert.strictEqual(health.status, 200)
            assert.strictEqual(health.body.status, "degraded")
            // And the API serves, from the database.
            assert.strictEqual((yield* names(app, token)).status, 200)
          }).pipe(Effect.ensuring(server.restart)))
      }))
  })
})
