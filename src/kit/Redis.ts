/**
 * The Redis client as a scoped Layer (NodeRedis) when REDIS_URL is set: proven at startup,
 * health-checked, every command bounded and behind a breaker. Unset, stores use memory.
 */
import { Clock, Config, Context, Duration, Effect, Layer, Option, Redacted, Result, Schema, Tracer } from "effect"
import * as HttpServerRespondable from "effect/http/HttpServerRespondable"
import * as EffectRedis from "effect/persistence/Redis"
import { Health } from "./Health.ts"
import * as Breaker from "./internal/Breaker.ts"
import { observe } from "./internal/metrics/Registry.ts"
import * as Lifecycle from "./Lifecycle.ts"
import { describeError } from "./Log.ts"
import { errorResponse } from "./Problem.ts"
import { duration, parseBoolean, parsed, refuse } from "./Settings.ts"

/**
 * Why `url` cannot be a Redis URL, or undefined. The message never quotes the value: whatever was
 * written may hold a password, even where it does not parse (`pass:word@host` parses as a scheme).
 */
const redisUrlProblem = (url: string): string | undefined => {
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    return "is not a URL; write redis://[user:password@]host[:port][/db] (or rediss:// for TLS)"
  }
  if (parsed.protocol !== "redis:" && parsed.protocol !== "rediss:") {
    return "is not a redis:// or rediss:// URL; write redis://[user:password@]host[:port][/db] (or rediss:// for TLS)"
  }
  if (parsed.hostname === "") return "names no host; write redis://[user:password@]host[:port][/db]"
  return undefined
}

/** Redis; unset REDIS_URL means in-memory stores. */
export const RedisConfig = Config.all({
  url: Config.option(
    Config.Redacted("REDIS_URL").pipe(Config.mapEffect((url) => {
      const problem = redisUrlProblem(Redacted.value(url))
      return problem === undefined ? Effect.succeed(url) : Effect.fail(refuse("REDIS_URL", problem))
    }))
  ),
  connectTimeout: duration("REDIS_CONNECT_TIMEOUT", { default: "5 seconds", min: "10 millis", max: "10 minutes" }),
  /** A command on a hung server fails after this instead of holding the request. */
  commandTimeout: duration("REDIS_COMMAND_TIMEOUT", { default: "1 second", min: "1 millis", max: "1 minute" }),
  checkTimeout: duration("REDIS_HEALTH_TIMEOUT", { default: "500 millis", min: "1 millis", max: "1 minute" }),
  keyPrefix: Config.String("REDIS_KEY_PREFIX").pipe(Config.withDefault("scoped-server:")),
  /**
   * After a command times out or the connection fails, no command is sent for this long; then a
   * background PING decides whether to resume (and waits this long again if it fails).
   */
  breakerCoolDown: duration("REDIS_BREAKER_COOLDOWN", { default: "2 seconds", min: "10 millis", max: "10 minutes" }),
  /**
   * Whether readiness fails while Redis is down. Unset: only when a request cannot be served
   * without it (RATE_LIMIT_ON_STORE_ERROR=closed); otherwise Redis down is `degraded`.
   */
  critical: Config.option(parsed("REDIS_CRITICAL", (raw) =>
    Option.match(parseBoolean(raw), {
      onNone: () => Result.fail(`"${raw}" is not a boolean; write true or false`),
      onSome: Result.succeed
    }))),
  rateLimitOnStoreError: Config.String("RATE_LIMIT_ON_STORE_ERROR").pipe(Config.withDefault("open"))
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
const describeUrl = (url: Redacted.Redacted): string => {
  try {
    const parsed = new URL(Redacted.value(url))
    return `${parsed.hostname}:${parsed.port || 6379}${
      parsed.pathname && parsed.pathname !== "/" ? parsed.pathname : ""
    }`
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

/** A failed command, and whether the failure means Redis is not answering (opens the breaker). */
class RedisFailure {
  constructor(readonly error: RedisError, readonly trips: boolean) {}
}

export interface Connected {
  /** Effect's Redis service over this client, for the library's Redis-backed stores. */
  readonly redis: EffectRedis.Redis["Service"]
  /**
   * One command, failing with RedisError after REDIS_COMMAND_TIMEOUT rather than waiting on a
   * hung server, and at once while the breaker is open (Redis failed recently and has not yet
   * answered a probe).
   */
  readonly send: <A = unknown>(command: string, ...args: ReadonlyArray<string>) => Effect.Effect<A, RedisError>
  readonly keyPrefix: string
  /** `closed` while commands are sent; `open` / `probing` while they fail at once. */
  readonly breaker: () => Breaker.BreakerState
}

/**
 * Redis as the breaker sees it, read on a scrape: up (commands are being sent), the breaker's
 * state and openings, and failed commands by why (an error reply or lost connection, a timeout,
 * refused at once by the open breaker).
 */
const redisMetrics = (breaker: Breaker.Breaker, failures: Readonly<Record<"error" | "timeout" | "rejected", number>>) =>
  Effect.gen(function*() {
    yield* observe(
      "scoped_server_redis_up",
      "1 while commands are sent to Redis (its breaker is closed).",
      () => breaker.state() === "closed" ? 1 : 0
    )
    for (const state of ["closed", "open", "probing"] as const) {
      yield* observe(
        "scoped_server_redis_breaker_state",
        "The Redis breaker's state (1 for the current one).",
        () => breaker.state() === state ? 1 : 0,
        { attributes: { state } }
      )
    }
    yield* observe("scoped_server_redis_breaker_openings_total", "Times the Redis breaker opened.", breaker.openings, {
      counter: true
    })
    for (const reason of ["error", "timeout", "rejected"] as const) {
      yield* observe(
        "scoped_server_redis_command_failures_total",
        "Redis commands that failed: error (a reply or lost connection), timeout, rejected (breaker open).",
        () => failures[reason],
        { counter: true, attributes: { reason } }
      )
    }
  })

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
              new RedisError({
                reason: "Unreachable",
                message: `cannot reach redis at ${target}: ${describeError(cause)}`
              })
            )
          )
        )
        const client = Context.get(context, EffectRedis.Redis)
        // Bundled, the CommonJS module's exports may sit under `default`.
        const redisModule: { readonly ErrorReply?: unknown; readonly default?: { readonly ErrorReply?: unknown } } =
          yield* Effect.promise(() => import("redis"))
        const ErrorReply = redisModule.ErrorReply ?? redisModule.default?.ErrorReply
        if (typeof ErrorReply !== "function") {
          return yield* Effect.die(new Error("redis: no ErrorReply export to classify replies with"))
        }
        // A server that answered with an error (OOM, READONLY, NOPERM) is up: that is the
        // caller's to handle, not a reason to stop calling. Anything else means it is not answering.
        const answered = (error: EffectRedis.RedisError) => error.cause instanceof ErrorReply
        const commandTimeoutMs = Duration.toMillis(settings.commandTimeout)
        // Failures are counted where they are made: plain increments, read on a scrape.
        const failures = { error: 0, timeout: 0, rejected: 0 }
        const bounded = <A>(command: string, effect: Effect.Effect<A, EffectRedis.RedisError>) =>
          effect.pipe(
            Effect.mapError((cause) => (failures.error++,
              new RedisFailure(
                new RedisError({ reason: "CommandFailed", message: `${command} failed: ${describeError(cause)}` }),
                !answered(cause)
              ))
            ),
            Effect.timeoutOrElse({
              duration: settings.commandTimeout,
              orElse: () =>
                Effect.fail(
                  (failures.timeout++,
                    new RedisFailure(
                      new RedisError({
                        reason: "Timeout",
                        message: `${command} timed out after ${commandTimeoutMs}ms`
                      }),
                      true
                    ))
                )
            })
          )
        const unguarded = <A = unknown>(command: string, ...args: ReadonlyArray<string>) =>
          Effect.mapError(bounded(command, client.send<A>(command, ...args)), (failure) => failure.error)

        const warnOpen = throttledWarning("redis is not answering; commands fail at once until a probe succeeds")
        const breaker = yield* Breaker.make({
          coolDown: settings.breakerCoolDown,
          slowAfter: settings.commandTimeout,
          probe: unguarded("PING"),
          onOpen: (reason) => warnOpen({ message: reason }),
          onClose: Effect.logInfo("redis answers again; commands resume")
        })
        const rejected = () => (failures.rejected++,
          new RedisError({
            reason: "Unreachable",
            message: `redis at ${target} failed recently; not called until a probe succeeds`
          }))
        const guarded = <A>(effect: Effect.Effect<A, RedisFailure>) =>
          breaker.guard(effect, { trips: (failure) => failure.trips, rejected }).pipe(
            Effect.mapError((error) => error instanceof RedisFailure ? error.error : error)
          )
        // A client span per command when an exporter is installed; without one, not even Effect's no-op span.
        const traced = (yield* Tracer.Tracer) === Tracer.nativeTracer
          ? <A, E>(_command: string, effect: Effect.Effect<A, E>) => effect
          : <A, E>(command: string, effect: Effect.Effect<A, E>) =>
            Effect.withSpan(effect, `redis ${command}`, {
              kind: "client",
              attributes: { "db.system.name": "redis", "db.operation.name": command }
            })
        const send = <A = unknown>(command: string, ...args: ReadonlyArray<string>) =>
          traced(command, guarded(bounded(command, client.send<A>(command, ...args))))
        // The library's stores (the rate limiter's) get the same bound and breaker; their errors
        // stay the library's type, carrying ours as the cause.
        const libraryError = (error: RedisError) => new EffectRedis.RedisError({ cause: error })
        const redis: EffectRedis.Redis["Service"] = {
          ...client,
          send: (command, ...args) => Effect.mapError(send(command, ...args), libraryError),
          eval: (script) => {
            const run = client.eval(script)
            return (...params) =>
              Effect.mapError(traced("EVALSHA", guarded(bounded("EVALSHA", run(...params)))), libraryError)
          }
        }

        yield* unguarded("PING").pipe(
          Effect.mapError((error) =>
            new RedisError({ reason: "Unreachable", message: `cannot reach redis at ${target}: ${error.message}` })
          )
        )
        // The check pings past the breaker: readiness reports what Redis does now, not what it did.
        const critical = Option.getOrElse(
          settings.critical,
          () => settings.rateLimitOnStoreError.toLowerCase() === "closed"
        )
        yield* health.register("redis", unguarded("PING"), { timeout: settings.checkTimeout, critical })
        yield* redisMetrics(breaker, failures)
        yield* Effect.logInfo("redis ready").pipe(Effect.annotateLogs({ redis: target }))
        return { connection: Option.some({ redis, send, keyPrefix: settings.keyPrefix, breaker: breaker.state }) }
      })
    )
}
