/**
 * Settings: durations in the forms operators write, defaults, and errors that name the variable.
 */
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Duration, Effect, Option } from "effect"
import * as Settings from "../../src/kit/Settings.ts"
import { describeCause } from "../../src/kit/Log.ts"
import { LifecycleConfig } from "../../src/kit/Lifecycle.ts"
import { CacheConfig } from "../../src/kit/Cache.ts"
import { HttpServerConfig } from "../../src/kit/HttpServer.ts"

const load = <A>(config: { parse: (provider: ConfigProvider.ConfigProvider) => Effect.Effect<A, Settings.ConfigError> }, env: Record<string, string>) =>
  config.parse(ConfigProvider.fromEnv({ env }))

describe("Config", () => {
  it("parses 500ms, 1s, 2m, 1h, plain milliseconds and Effect's own form", () => {
    const cases: Array<[string, number]> = [["500ms", 500], ["1s", 1000], ["2m", 120_000], ["1h", 3_600_000], ["1500", 1500], ["0", 0], ["1.5s", 1500], ["10 seconds", 10_000]]
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
        [lifecycle.drainDelay, lifecycle.shutdownTimeout, lifecycle.quietWindow, lifecycle.releaseTimeout].map(Duration.toMillis),
        [0, 25_000, 300, 5_000]
      )
      const http = yield* load(HttpServerConfig, {})
      assert.strictEqual(http.port, 3000)
      assert.strictEqual(http.maxBodySize, 1024 * 1024)
      assert.deepStrictEqual([http.headersTimeout, http.requestTimeout, http.keepAliveTimeout].map(Duration.toMillis), [10_000, 30_000, 5_000])
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
})
