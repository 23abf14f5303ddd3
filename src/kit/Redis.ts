/**
 * The Redis client as a scoped Layer (NodeRedis) when REDIS_URL is set: proven at startup,
 * health-checked, every command bounded. Unset, it is reported `disabled` and stores use memory.
 */
import { Clock, Config, Context, Duration, Effect, Layer, Option, Redacted, Schema } from "effect"
import * as EffectRedis from "effect/persistence/Redis"
import * as HttpServerRespondable from "effect/http/HttpServerRespondable"
import { Health } from "./Health.ts"
import { errorResponse } from "./http/Problem.ts"
import * as Lifecycle from "./Lifecycle.ts"
import { describeError } from "./Log.ts"
import { duration } from "./Settings.ts"

/** Redis; unset REDIS_URL means in-memory stores. */
export const RedisConfig = Config.all({
  url: Config.option(Config.Redacted("REDIS_URL")),
  connectTimeout: duration("REDIS_CONNECT_TIMEOUT", "5 seconds", { min: "10 millis", max: "10 minutes" }),
  /** A command on a hung server fails after this instead of holding the request. */
  commandTimeout: duration("REDIS_COMMAND_TIMEOUT", "1 second", { min: "1 millis", max: "1 minute" }),
  checkTimeout: duration("REDIS_HEALTH_TIMEOUT", "500 millis", { min: "1 millis", max: "1 minute" }),
  keyPrefix: Config.String("REDIS_KEY_PREFIX").pipe(Config.withDefault("scoped-server:"))
})

export class RedisError extends Schema.TaggedError<RedisError>()("RedisError", {
  reason: Schema.Literals(["Unreachable", "Timeout", "CommandFailed"]),
  message: Schema.String
}, { httpApiStatus: 503 }) {
  /** What a client is told: unavailable, try again shortly; the details stay in the server's log. */
  [HttpServerRespondable.symbol]() {
    return Effect.succeed(errorResponse(503, "a backing store is unavailable; try again", { "retry-after": "1" }))
  }
}

/** `host:port/db`, never the password. */
export const describeUrl = (url: Redacted.Redacted): string => {
  try {
    const parsed = new URL(Redacted.value(url))
    return `${parsed.hostname}:${parsed.port || 6379}${parsed.pathname && parsed.pathname !== "/" ? parsed.pathname : ""}`
  } catch {
    return "(unparseable REDIS_URL)"
  }
}

/** Logs an outage at most once per interval: one line per outage, not one per request. */
export const throttledWarning = (message: string, interval: Duration.Duration = Duration.seconds(10)) => {
  let lastAt = Number.NEGATIVE_INFINITY
  return (error: { readonly message: string }): Effect.Effect<void> =>
    Effect.flatMap(Clock.currentTimeMillis, (now) => {
      if (now - lastAt < Duration.toMillis(interval)) return Effect.void
      lastAt = now
      return Effect.logWarning(message).pipe(Effect.annotateLogs({ error: error.message }))
    })
}

export interface Connected {
  /** Effect's Redis service over this client, for the library's Redis-backed stores. */
  readonly redis: EffectRedis.Redis["Service"]
  /** One command, failing with RedisError after REDIS_COMMAND_TIMEOUT rather than waiting on a hung server. */
  readonly send: <A = unknown>(command: string, ...args: ReadonlyArray<string>) => Effect.Effect<A, RedisError>
  readonly keyPrefix: string
}

export class Redis extends Context.Service<Redis, {
  /** None when REDIS_URL is unset. */
  readonly connection: Option.Option<Connected>
}>()("scoped-server/Redis") {
  static readonly layer: Layer.Layer<Redis, RedisError | Config.ConfigError, Lifecycle.Lifecycle | Health> = Layer
    .effect(
      Redis,
      Effect.gen(function*() {
        const settings = yield* RedisConfig
        const health = yield* Health
        if (Option.isNone(settings.url)) {
          yield* health.registerDisabled("redis")
          return { connection: Option.none() }
        }
        const url = settings.url.value
        const target = describeUrl(url)
        const connectTimeoutMs = Duration.toMillis(settings.connectTimeout)

        // The client library is loaded only when Redis is configured (it is a fifth of the bundle).
        const NodeRedis = yield* Effect.promise(() => import("@effect/platform-node/NodeRedis"))
        const context = yield* Lifecycle.resource(
          "redis",
          Layer.build(NodeRedis.layer({
            url: Redacted.value(url),
            // Fail commands at once while disconnected instead of queueing them behind a reconnect.
            disableOfflineQueue: true,
            socket: { connectTimeout: connectTimeoutMs }
          })).pipe(
            Effect.timeoutOrElse({
              duration: settings.connectTimeout,
              orElse: () => Effect.fail(new Error(`no answer within ${connectTimeoutMs}ms`))
            }),
            Effect.mapError((cause) =>
              new RedisError({ reason: "Unreachable", message: `cannot reach redis at ${target}: ${describeError(cause)}` })
            )
          )
        )
        const redis = Context.get(context, EffectRedis.Redis)
        const commandTimeoutMs = Duration.toMillis(settings.commandTimeout)
        const send = <A = unknown>(command: string, ...args: ReadonlyArray<string>) =>
          redis.send<A>(command, ...args).pipe(
            Effect.mapError((cause) =>
              new RedisError({ reason: "CommandFailed", message: `${command} failed: ${describeError(cause)}` })
            ),
            Effect.timeoutOrElse({
              duration: settings.commandTimeout,
              orElse: () =>
                Effect.fail(new RedisError({ reason: "Timeout", message: `${command} timed out after ${commandTimeoutMs}ms` }))
            })
          )

        yield* send("PING").pipe(
          Effect.mapError((error) => new RedisError({ reason: "Unreachable", message: `cannot reach redis at ${target}: ${error.message}` }))
        )
        yield* health.register("redis", send("PING"), { timeout: settings.checkTimeout })
        yield* Effect.logInfo("redis ready").pipe(Effect.annotateLogs({ redis: target }))
        return { connection: Option.some({ redis, send, keyPrefix: settings.keyPrefix }) }
      })
    )
}
