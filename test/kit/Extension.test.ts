/**
 * The README's extension example, kept honest: a resource as one Layer (acquire, bounded
 * release, health check), a route group as one Layer, and a test of both over real HTTP.
 */
import { assert, describe, layer } from "@effect/vitest"
import { Context, Effect, Layer, Schema } from "effect"
import { HttpRouter, HttpServerResponse } from "effect/http"
import { acquireRelease, Health, HttpServer } from "../../src/kit/index.ts"
import * as Testing from "../../src/kit/testing.ts"

// --- the user's resource: one Layer that acquires, releases (bounded) and registers its check
class Greeter extends Context.Service<Greeter, {
  readonly greet: (name: string) => Effect.Effect<string>
}>()("example/Greeter") {
  static readonly layer = Layer.effect(
    Greeter,
    Effect.gen(function*() {
      const health = yield* Health
      const connection = yield* acquireRelease(
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

// --- the user's graph, as their App.ts would compose it
const Main = HttpRouter.serve(Layer.mergeAll(Health.routes, GreeterRoutes), { disableLogger: true }).pipe(
  Layer.provideMerge(HttpServer.layerConfig()),
  Layer.provide(Greeter.layer),
  Layer.provideMerge(Health.layer)
)

// --- the user's test: the real server on a free port, released as a signal would release it
const TestMain = Testing.layer(Main)

const get = (path: string) =>
  Effect.gen(function*() {
    const server = yield* Testing.TestServer
    const response = yield* Effect.promise(() => server.fetch(path))
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
