/**
 * Where the servers listen: systemd's sockets only when addressed to this process,
 * then an inherited fd, then ports; the admin server beside the main one.
 */
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Effect, Option } from "effect"
import { HttpServerConfig } from "../../src/kit/HttpServer.ts"
import { listeners } from "../../src/kit/http/Listener.ts"

const settings = (env: Record<string, string>) => HttpServerConfig.parse(ConfigProvider.fromEnv({ env }))

describe("listeners", () => {
  it.effect("uses PORT and HOST by default, and ADMIN_PORT for the admin server", () =>
    Effect.gen(function*() {
      const result = listeners(yield* settings({ PORT: "8080", HOST: "127.0.0.1", ADMIN_PORT: "9090" }), 42)
      assert.deepStrictEqual(result.main, { _tag: "Port", port: 8080, host: "127.0.0.1" })
      assert.deepStrictEqual(result.admin, Option.some({ _tag: "Port", port: 9090, host: "127.0.0.1" }))
    }))

  it.effect("uses LISTEN_FD over the default port", () =>
    Effect.gen(function*() {
      const result = listeners(yield* settings({ LISTEN_FD: "5" }), 42)
      assert.deepStrictEqual(result.main, { _tag: "Fd", fd: 5, source: "LISTEN_FD" })
      assert.isTrue(Option.isNone(result.admin))
    }))

  it.effect("uses systemd's fds 3 and 4 only when LISTEN_PID is this process", () =>
    Effect.gen(function*() {
      const mine = listeners(yield* settings({ LISTEN_FDS: "2", LISTEN_PID: "42", LISTEN_FD: "9" }), 42)
      assert.deepStrictEqual(mine.main, { _tag: "Fd", fd: 3, source: "LISTEN_FDS" })
      assert.deepStrictEqual(mine.admin, Option.some({ _tag: "Fd", fd: 4, source: "LISTEN_FDS" }))
      const theirs = listeners(yield* settings({ LISTEN_FDS: "2", LISTEN_PID: "41" }), 42)
      assert.deepStrictEqual(theirs.main, { _tag: "Port", port: 3000, host: undefined })
    }))
})
