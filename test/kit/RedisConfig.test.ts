/**
 * REDIS_URL as an operator writes it: a URL that is not Redis's is refused with one line naming
 * the variable, never quoting the value (it may hold a password).
 */
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Effect, Exit, Option, Redacted } from "effect"
import { describeCause } from "../../src/kit/Log.ts"
import { RedisConfig } from "../../src/kit/Redis.ts"

const load = (env: Record<string, string>) => RedisConfig.parse(ConfigProvider.fromEnv({ env }))

describe("RedisConfig", () => {
  it.effect("a REDIS_URL that is not a redis:// or rediss:// URL is refused in one line naming REDIS_URL, without its password", () =>
    Effect.gen(function*() {
      for (
        const url of [
          "notaurl",
          "http://:hunter2@cache:6379",
          "hunter2:secret@cache",
          "localhost:6379",
          "redis://",
          "redis:///0"
        ]
      ) {
        const exit = yield* Effect.exit(load({ REDIS_URL: url }))
        assert.isTrue(Exit.isFailure(exit), `${url} was accepted`)
        const line = Exit.isFailure(exit) ? describeCause(exit.cause) : ""
        assert.match(line, /^invalid configuration: REDIS_URL: /, url)
        assert.notInclude(line, "\n")
        assert.notInclude(line, "hunter2", url)
        if (!url.startsWith("redis")) assert.notInclude(line, url, url)
      }
    }))

  it.effect("redis:// and rediss:// URLs, with credentials and a database, are accepted; unset means memory", () =>
    Effect.gen(function*() {
      for (
        const url of [
          "redis://127.0.0.1:6379",
          "rediss://user:pw@cache.internal:6380/2",
          "redis://cache",
          "REDIS://cache"
        ]
      ) {
        const settings = yield* load({ REDIS_URL: url })
        assert.strictEqual(Option.map(settings.url, Redacted.value).pipe(Option.getOrUndefined), url)
      }
      assert.isTrue(Option.isNone((yield* load({})).url))
    }))
})
