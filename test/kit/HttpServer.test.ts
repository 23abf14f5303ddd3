/**
 * Where the servers listen: systemd's sockets only when addressed to this process,
 * then an inherited fd, then ports; the admin server beside the main one.
 */
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Deferred, Effect, Fiber, Layer, Option } from "effect"
import { HttpServerResponse } from "effect/http"
import * as EffectHttpServer from "effect/http/HttpServer"
import * as Http from "node:http"
import { Health } from "../../src/kit/Health.ts"
import { HttpServer, HttpServerConfig } from "../../src/kit/HttpServer.ts"
import { listeners } from "../../src/kit/internal/http/Listener.ts"
import { makeHarness } from "../../src/kit/testing.ts"

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

describe("a server on an inherited socket", () => {
  it.live("parks a request accepted before its routes are installed, and answers it once they are (no 503)", () =>
    Effect.gen(function*() {
      // Bound, not listening: the server's listen(2) on the fd is what opens it, as a supervisor's or
      // systemd's socket is opened. The server owns the fd from then on (it closes it).
      const binding = (process as unknown as { binding: (name: string) => any }).binding("tcp_wrap")
      const socket = new binding.TCP(binding.constants.SERVER)
      assert.strictEqual(socket.bind("127.0.0.1", 0), 0)
      const address: { port?: number } = {}
      socket.getsockname(address)
      const harness = yield* makeHarness
      const routesInstalled = yield* Deferred.make<void>()
      const routes = Layer.unwrap(
        Effect.as(
          Deferred.await(routesInstalled),
          EffectHttpServer.serve(Effect.succeed(HttpServerResponse.text("routed")))
        )
      )
      const main = routes.pipe(Layer.provideMerge(HttpServer.layerConfig()), Layer.provide(Health.layer))
      const fiber = yield* Effect.forkChild(harness.run(main, { LISTEN_FD: String(socket.fd), SHUTDOWN_TIMEOUT: "5s" }))
      while (!harness.logs.some((entry) => entry.message === "listening")) yield* Effect.sleep("10 millis")

      const answer = Effect.callback<{ status: number; body: string; at: number }>((resume) => {
        Http.get({ host: "127.0.0.1", port: address.port!, path: "/", agent: false }, (res) => {
          let body = ""
          res.on("data", (chunk) => (body += chunk))
          res.on("end", () => resume(Effect.succeed({ status: res.statusCode!, body, at: Date.now() })))
        }).on("error", (error) => resume(Effect.die(error)))
      })
      const request = yield* Effect.forkChild(answer)
      yield* Effect.sleep("300 millis")
      assert.isUndefined(request.pollUnsafe(), "no answer before the routes are installed")
      const installedAt = Date.now()
      yield* Deferred.succeed(routesInstalled, undefined)
      const response = yield* Fiber.join(request)
      assert.deepStrictEqual({ status: response.status, body: response.body }, { status: 200, body: "routed" })
      assert.isAtLeast(response.at, installedAt)
      yield* harness.send("SIGTERM")
      assert.strictEqual(yield* Fiber.join(fiber), 0)
    }))
})
