/**
 * Each module's settings: the documented defaults, a range on every number, and the conflicts
 * each block refuses with one line naming both variables.
 */
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Duration, Effect, Option } from "effect"
import { CacheConfig } from "../../src/kit/Cache.ts"
import { CorsConfig } from "../../src/kit/Cors.ts"
import { EmbeddedPostgresConfig } from "../../src/kit/EmbeddedPostgres.ts"
import { HealthConfig } from "../../src/kit/Health.ts"
import { HttpServerConfig } from "../../src/kit/HttpServer.ts"
import { SupervisorConfig } from "../../src/kit/internal/supervisor/Supervisor.ts"
import { LifecycleConfig } from "../../src/kit/Lifecycle.ts"
import { describeCause } from "../../src/kit/Log.ts"
import { LogConfig } from "../../src/kit/Log.ts"
import { PostgresConfig } from "../../src/kit/Postgres.ts"
import { RateLimitConfig } from "../../src/kit/RateLimit.ts"
import { RedisConfig } from "../../src/kit/Redis.ts"
import * as Settings from "../../src/kit/Settings.ts"

const load = <A>(
  config: { parse: (provider: ConfigProvider.ConfigProvider) => Effect.Effect<A, Settings.ConfigError> },
  env: Record<string, string>
) => config.parse(ConfigProvider.fromEnv({ env }))

describe("Config", () => {
  it("parses 500ms, 1s, 2m, 1h, plain milliseconds and Effect's own form", () => {
    const cases: Array<[string, number]> = [
      ["500ms", 500],
      ["1s", 1000],
      ["2m", 120_000],
      ["1h", 3_600_000],
      ["1500", 1500],
      ["0", 0],
      ["1.5s", 1500],
      ["10 seconds", 10_000]
    ]
    for (const [input, millis] of cases) {
      assert.deepStrictEqual(Option.map(Settings.parseDuration(input), Duration.toMillis), Option.some(millis), input)
    }
    for (const input of ["soon", "-1s", "1 fortnight", "", "Infinity"]) {
      assert.isTrue(Option.isNone(Settings.parseDuration(input)), input)
    }
  })

  it.effect("uses the documented defaults", () =>
    Effect.gen(function*() {
      const lifecycle = yield* load(LifecycleConfig, {})
      assert.deepStrictEqual(
        [lifecycle.drainDelay, lifecycle.shutdownTimeout, lifecycle.quietWindow, lifecycle.releaseTimeout].map(
          Duration.toMillis
        ),
        [0, 25_000, 300, 5_000]
      )
      const http = yield* load(HttpServerConfig, {})
      assert.strictEqual(http.port, 3000)
      assert.strictEqual(http.maxBodySize, 1024 * 1024)
      assert.deepStrictEqual([http.headersTimeout, http.requestTimeout, http.keepAliveTimeout].map(Duration.toMillis), [
        10_000,
        20_000,
        5_000
      ])
    }))

  it.effect("reads byte sizes and durations from the environment", () =>
    Effect.gen(function*() {
      const http = yield* load(HttpServerConfig, { MAX_BODY_SIZE: "2MiB", KEEP_ALIVE_TIMEOUT: "65s", PORT: "0" })
      assert.strictEqual(http.maxBodySize, 2 * 1024 * 1024)
      assert.strictEqual(Duration.toMillis(http.keepAliveTimeout), 65_000)
      assert.strictEqual(http.port, 0)
    }))

  it.effect("a bad value fails with an error that names the variable", () =>
    Effect.gen(function*() {
      const cases = [
        [Effect.exit(load(HttpServerConfig, { PORT: "70000" })), "PORT"],
        [Effect.exit(load(LifecycleConfig, { DRAIN_DELAY: "later" })), "DRAIN_DELAY"],
        [Effect.exit(load(HttpServerConfig, { MAX_BODY_SIZE: "big" })), "MAX_BODY_SIZE"],
        [Effect.exit(load(CacheConfig, { CACHE_MAX_ENTRIES: "many" })), "CACHE_MAX_ENTRIES"]
      ] as const
      for (const [loading, name] of cases) {
        const exit = yield* loading
        assert.isTrue(exit._tag === "Failure", name)
        if (exit._tag === "Failure") {
          const line = describeCause(exit.cause)
          assert.match(line, new RegExp(`^invalid configuration: .*${name}`))
          assert.notInclude(line, "\n")
        }
      }
    }))

  const refused = Effect.fnUntraced(function*<A>(
    config: { parse: (provider: ConfigProvider.ConfigProvider) => Effect.Effect<A, Settings.ConfigError> },
    env: Record<string, string>
  ) {
    const exit = yield* Effect.exit(load(config, env))
    assert.isTrue(exit._tag === "Failure", `${JSON.stringify(env)} was accepted`)
    const line = exit._tag === "Failure" ? describeCause(exit.cause) : ""
    assert.match(line, /^invalid configuration: /)
    assert.notInclude(line, "\n")
    return line
  })

  it.effect("every number is range-checked: the values that hung or misbehaved are refused", () =>
    Effect.gen(function*() {
      const cases = [
        [RateLimitConfig, { RATE_LIMIT_MAX_KEYS: "-1" }],
        [RateLimitConfig, { RATE_LIMIT_MAX_KEYS: "0" }],
        [RateLimitConfig, { RATE_LIMIT: "0" }],
        [RateLimitConfig, { RATE_LIMIT_WINDOW: "0s" }],
        [PostgresConfig, { DB_POOL_SIZE: "0" }],
        [PostgresConfig, { DB_POOL_SIZE: "100000" }],
        [PostgresConfig, { DB_STATEMENT_TIMEOUT: "0ms" }],
        [HttpServerConfig, { HEADERS_TIMEOUT: "0ms" }],
        [HttpServerConfig, { REQUEST_TIMEOUT: "0ms" }],
        [HttpServerConfig, { KEEP_ALIVE_TIMEOUT: "0s" }],
        [HttpServerConfig, { MAX_BODY_SIZE: "0" }],
        [HttpServerConfig, { MAX_HEADER_SIZE: "10" }],
        [HttpServerConfig, { LISTEN_FD: "-3", PORT: "0" }],
        [LifecycleConfig, { SHUTDOWN_TIMEOUT: "0s" }],
        [CacheConfig, { CACHE_MAX_ENTRIES: "0" }],
        [HealthConfig, { HEALTH_CHECK_TIMEOUT: "0s" }],
        [RedisConfig, { REDIS_COMMAND_TIMEOUT: "0ms" }],
        [EmbeddedPostgresConfig, { EMBEDDED_POSTGRES_START_TIMEOUT: "10ms" }]
      ] as const
      for (const [config, env] of cases) {
        const name = Object.keys(env)[0]!
        assert.match(
          yield* refused(config as typeof HttpServerConfig, env),
          new RegExp(`^invalid configuration: ${name}: .* out of range`),
          name
        )
      }
    }))

  it.effect("a bare number for a seconds-scale duration is refused with the unit suggested", () =>
    Effect.gen(function*() {
      for (
        const [config, name, value] of [
          [LifecycleConfig, "SHUTDOWN_TIMEOUT", "30"],
          [LifecycleConfig, "DRAIN_DELAY", "5"],
          [RateLimitConfig, "RATE_LIMIT_WINDOW", "60"],
          [HttpServerConfig, "KEEP_ALIVE_TIMEOUT", "65"]
        ] as const
      ) {
        assert.match(
          yield* refused(config as typeof HttpServerConfig, { [name]: value }),
          new RegExp(`^invalid configuration: ${name}: .*did you mean ${value}s\\?$`)
        )
      }
    }))

  it.effect("the lifecycle refuses a drain delay or a release bound that cannot fit the shutdown budget", () =>
    Effect.gen(function*() {
      assert.strictEqual(
        yield* refused(LifecycleConfig, { DRAIN_DELAY: "30s" }),
        "invalid configuration: DRAIN_DELAY (30s) must be shorter than SHUTDOWN_TIMEOUT (25s): the delay is spent inside the shutdown budget"
      )
      assert.match(
        yield* refused(LifecycleConfig, { DRAIN_DELAY: "10s", SHUTDOWN_TIMEOUT: "10s" }),
        /DRAIN_DELAY .* SHUTDOWN_TIMEOUT/
      )
      assert.strictEqual(
        yield* refused(LifecycleConfig, { RELEASE_TIMEOUT: "30s" }),
        "invalid configuration: RELEASE_TIMEOUT (30s) must not exceed SHUTDOWN_TIMEOUT (25s)"
      )
      assert.strictEqual(
        yield* refused(LifecycleConfig, { RELEASE_TIMEOUT: "5s", SHUTDOWN_TIMEOUT: "6s", DRAIN_DELAY: "3s" }),
        "invalid configuration: RELEASE_TIMEOUT (5s) does not fit in SHUTDOWN_TIMEOUT (6s) after DRAIN_DELAY (3s)"
      )
      // An unset RELEASE_TIMEOUT shrinks to what the budget leaves rather than conflict.
      const short = yield* load(LifecycleConfig, { SHUTDOWN_TIMEOUT: "1s" })
      assert.strictEqual(Duration.toMillis(short.releaseTimeout), 1_000)
      const delayed = yield* load(LifecycleConfig, { SHUTDOWN_TIMEOUT: "6s", DRAIN_DELAY: "3s" })
      assert.strictEqual(Duration.toMillis(delayed.releaseTimeout), 3_000)
      const fits = yield* load(LifecycleConfig, { SHUTDOWN_TIMEOUT: "30s", DRAIN_DELAY: "10s", RELEASE_TIMEOUT: "20s" })
      assert.strictEqual(Duration.toMillis(fits.releaseTimeout), 20_000)
    }))

  it.effect("the HTTP server refuses LISTEN_FD beside an explicit PORT, and headers outlasting the request", () =>
    Effect.gen(function*() {
      assert.match(
        yield* refused(HttpServerConfig, { LISTEN_FD: "3", PORT: "8080" }),
        /^invalid configuration: LISTEN_FD and PORT are both set/
      )
      assert.match(yield* refused(HttpServerConfig, { LISTEN_FD: "3", PORT: "0" }), /LISTEN_FD and PORT/)
      assert.strictEqual((yield* load(HttpServerConfig, { LISTEN_FD: "3" })).port, 3000)
      assert.strictEqual(
        yield* refused(HttpServerConfig, { HEADERS_TIMEOUT: "40s", REQUEST_TIMEOUT: "30s" }),
        "invalid configuration: HEADERS_TIMEOUT must not exceed REQUEST_TIMEOUT (40s > 30s)"
      )
      // A short REQUEST_TIMEOUT under the default HEADERS_TIMEOUT (10s) is a conflict too: both are named.
      assert.match(yield* refused(HttpServerConfig, { REQUEST_TIMEOUT: "5s" }), /HEADERS_TIMEOUT .*REQUEST_TIMEOUT/)
    }))

  it.effect("CORS origins must be origins: no path, no credentials, http(s), * alone", () =>
    Effect.gen(function*() {
      assert.strictEqual(
        yield* refused(CorsConfig, { CORS_ORIGINS: "https://a.example/x" }),
        `invalid configuration: CORS_ORIGINS: "https://a.example/x" has a path; an origin is scheme://host[:port], e.g. https://a.example`
      )
      for (
        const origins of [
          "https://a.example/",
          "a.example",
          "ftp://a.example",
          "https://u:p@a.example",
          "https://a.example?x=1",
          "*,https://a.example"
        ]
      ) {
        assert.match(
          yield* refused(CorsConfig, { CORS_ORIGINS: origins }),
          /^invalid configuration: CORS_ORIGINS: /,
          origins
        )
      }
      const { origins } = yield* load(CorsConfig, { CORS_ORIGINS: "https://App.Example:443, http://localhost:5173" })
      assert.deepStrictEqual(origins, ["https://app.example", "http://localhost:5173"])
      assert.deepStrictEqual((yield* load(CorsConfig, { CORS_ORIGINS: "*" })).origins, ["*"])
    }))

  it.effect("LOG_LEVEL in any case, and warning for Warn", () =>
    Effect.gen(function*() {
      for (
        const [input, level] of [["warn", "Warn"], ["WARN", "Warn"], ["warning", "Warn"], ["WARNING", "Warn"], [
          "debug",
          "Debug"
        ], ["none", "None"]] as const
      ) {
        assert.strictEqual((yield* load(LogConfig, { LOG_LEVEL: input })).level, level, input)
      }
      assert.match(
        yield* refused(LogConfig, { LOG_LEVEL: "loud" }),
        /^invalid configuration: LOG_LEVEL: "loud" is not one of All, Fatal, Error, Warn, Info, Debug, Trace, None$/
      )
    }))

  it.effect("RATE_LIMIT_ON_STORE_ERROR and ACCESS_LOG in any case", () =>
    Effect.gen(function*() {
      assert.strictEqual((yield* load(RateLimitConfig, { RATE_LIMIT_ON_STORE_ERROR: "Closed" })).onStoreError, "closed")
      assert.strictEqual((yield* load(HttpServerConfig, { ACCESS_LOG: "OFF" })).accessLog, false)
      assert.strictEqual((yield* load(HttpServerConfig, { MAX_BODY_SIZE: "1mb" })).maxBodySize, 1_000_000)
      assert.strictEqual((yield* load(HttpServerConfig, { MAX_BODY_SIZE: "1M" })).maxBodySize, 1024 * 1024)
      assert.strictEqual(
        Duration.toMillis((yield* load(LifecycleConfig, { SHUTDOWN_TIMEOUT: "1m30s" })).shutdownTimeout),
        90_000
      )
    }))

  it.effect("the supervisor: UPGRADE_STRATEGY in any case; RESTART_LIMIT, RESTART_WINDOW, UPGRADE_TIMEOUT range-checked", () =>
    Effect.gen(function*() {
      const defaults = yield* load(SupervisorConfig, { WORKERS: "2" })
      assert.strictEqual(defaults.upgradeStrategy, "all-at-once")
      assert.strictEqual(defaults.restartLimit, 5)
      for (const input of ["ONE-AT-A-TIME", "One-At-A-Time", " one-at-a-time "]) {
        assert.strictEqual(
          (yield* load(SupervisorConfig, { WORKERS: "2", UPGRADE_STRATEGY: input })).upgradeStrategy,
          "one-at-a-time",
          input
        )
      }
      assert.strictEqual((yield* load(SupervisorConfig, { WORKERS: "2", RESTART_LIMIT: "1_000" })).restartLimit, 1000)
      assert.match(
        yield* refused(SupervisorConfig, { WORKERS: "2", UPGRADE_STRATEGY: "rolling" }),
        /^invalid configuration: UPGRADE_STRATEGY: "rolling" is not one of all-at-once, one-at-a-time$/
      )
      for (const value of ["0", "-1", "1001"]) {
        assert.match(
          yield* refused(SupervisorConfig, { WORKERS: "2", RESTART_LIMIT: value }),
          /^invalid configuration: RESTART_LIMIT: .* out of range/,
          value
        )
      }
      for (const value of ["abc", "1.5"]) {
        assert.match(
          yield* refused(SupervisorConfig, { WORKERS: "2", RESTART_LIMIT: value }),
          /^invalid configuration: RESTART_LIMIT: /,
          value
        )
      }
      assert.match(
        yield* refused(SupervisorConfig, { WORKERS: "2", RESTART_WINDOW: "0s" }),
        /^invalid configuration: RESTART_WINDOW: .* out of range/
      )
      assert.match(
        yield* refused(SupervisorConfig, { WORKERS: "2", UPGRADE_TIMEOUT: "0s" }),
        /^invalid configuration: UPGRADE_TIMEOUT: .* out of range/
      )
    }))
})
