/**
 * The README's extension example, kept honest: a resource as one Layer (acquire, bounded
 * release, health check), a route group as one Layer, and a test of both over real HTTP.
 */
import { assert, describe, layer } from "@effect/vitest"
import { ConfigProvider, Context, Effect, Layer, Schema } from "effect"
import { HttpRouter, HttpServerResponse } from "effect/http"
import { Health } from "../src/Health.ts"
import { HttpServer } from "../src/HttpServer.ts"
import * as Lifecycle from "../src/Lifecycle.ts"

// --- the user's resource: one Layer that acquires, releases (bounded) and registers its check
class Greeter extends Context.Service<Greeter, {
  readonly greet: (name: string) => Effect.Effect<string>
}>()("example/Greeter") {
  static readonly layer = Layer.effect(
    Greeter,
    Effect.gen(function*() {
      const health = yield* Health
      const connection = yield* Lifecycle.acquireRelease(
        "greeter",
        Effect.sync(() => ({ open: true })),
        (connection) => Effect.sync(() => void (connection.open = false)),
        { releaseTimeout: "2 seconds" }
      )
      yield* health.register(
        "greeter",
        Effect.suspend(() => connection.open ? Effect.void : Effect.fail(new Error("closed"))),
        { timeout: "500 millis" }
      )
      return { greet: (name) => Effect.succeed(`hello, ${name}`) }
    })
  )
}

// --- the user's route group: one Layer of routes
const GreeterRoutes = HttpRouter.add(
  "GET",
  "/hello/:name",
  Effect.gen(function*() {
    const { name } = yield* HttpRouter.schemaPathParams(Schema.Struct({ name: Schema.String }))
    const greeter = yield* Greeter
    return HttpServerResponse.jsonUnsafe({ message: yield* greeter.greet(name) })
  })
)

// --- the user's test: the real server on a free port, with Lifecycle.layerTest instead of signals
const TestMain = HttpRouter.serve(Layer.mergeAll(Health.routes, GreeterRoutes), { disableLogger: true }).pipe(
  Layer.provideMerge(HttpServer.layer),
  Layer.provide(Greeter.layer),
  Layer.provideMerge(Health.layer),
  Layer.provide(Lifecycle.Lifecycle.layerTest),
  Layer.provide(ConfigProvider.layer(ConfigProvider.fromUnknown({ PORT: "0", HOST: "127.0.0.1" })))
)

const get = (path: string) =>
  Effect.gen(function*() {
    const { address } = yield* HttpServer
    const port = (address as { readonly port: number }).port
    const response = yield* Effect.promise(() => fetch(`http://127.0.0.1:${port}${path}`))
    return { status: response.status, body: yield* Effect.promise(() => response.json() as Promise<any>) }
  })

describe("extending the kit", () => {
  layer(TestMain, { excludeTestServices: true })((it) => {
    it.effect("serves the route group with the resource behind it", () =>
      Effect.gen(function*() {
        const response = yield* get("/hello/ada")
        assert.deepStrictEqual(response, { status: 200, body: { message: "hello, ada" } })
      }))

    it.effect("reports the resource's health check in /readyz", () =>
      Effect.gen(function*() {
        const response = yield* get("/readyz")
        assert.strictEqual(response.status, 200)
        assert.strictEqual(response.body.checks.greeter.status, "ok")
      }))
  })
})
