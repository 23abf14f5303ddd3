/**
 * docs/extending.md's examples, kept honest: a resource as one Layer (acquire, bounded release,
 * health check), an outbound HTTP dependency with its own non-critical check, a route group as
 * one Layer, and a test of all of them over real HTTP.
 */
import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import { assert, describe, layer } from "@effect/vitest"
import { Config, Context, Effect, Layer, Schema } from "effect"
import { HttpClient, HttpClientResponse, HttpRouter, HttpServerResponse } from "effect/http"
import * as NodeHttp from "node:http"
import type { AddressInfo } from "node:net"
import { acquireRelease, Health, HttpServer, Settings } from "../../src/kit/index.ts"
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

// --- an outbound HTTP dependency: Effect's HttpClient over undici, its base URL a setting,
// bounded calls, and a health check that degrades (critical: false) instead of failing readiness
const QuotesConfig = Config.all({
  url: Config.URL("QUOTES_URL"),
  timeout: Settings.duration("QUOTES_TIMEOUT", { default: "2 seconds", max: "1 minute" })
})

class Quotes extends Context.Service<Quotes, {
  readonly today: Effect.Effect<string, unknown>
}>()("example/Quotes") {
  static readonly layer = Layer.effect(
    Quotes,
    Effect.gen(function*() {
      const { timeout, url } = yield* QuotesConfig
      const client = (yield* HttpClient.HttpClient).pipe(HttpClient.filterStatusOk)
      const health = yield* Health
      yield* health.register("quotes", client.get(new URL("/healthz", url)).pipe(Effect.timeout(timeout)), {
        timeout: "1 second",
        critical: false
      })
      return {
        today: client.get(new URL("/today", url)).pipe(
          Effect.flatMap(HttpClientResponse.schemaBodyJson(Schema.Struct({ quote: Schema.String }))),
          Effect.map(({ quote }) => quote),
          Effect.timeout(timeout)
        )
      }
    })
  ).pipe(Layer.provide(NodeHttpClient.layerUndici))
}

// --- the user's route group: one Layer of routes
const GreeterRoutes = Layer.mergeAll(
  HttpRouter.add(
    "GET",
    "/hello/:name",
    Effect.gen(function*() {
      const { name } = yield* HttpRouter.schemaPathParams(Schema.Struct({ name: Schema.String }))
      const greeter = yield* Greeter
      return HttpServerResponse.jsonUnsafe({ message: yield* greeter.greet(name) })
    })
  ),
  HttpRouter.add(
    "GET",
    "/quote",
    Effect.gen(function*() {
      const quotes = yield* Quotes
      return yield* quotes.today.pipe(
        Effect.map((quote) => HttpServerResponse.jsonUnsafe({ quote })),
        Effect.orElseSucceed(() => HttpServerResponse.jsonUnsafe({ quote: null }, { status: 503 }))
      )
    })
  )
)

// --- the user's graph, as their App.ts would compose it
const Main = HttpRouter.serve(Layer.mergeAll(Health.routes, GreeterRoutes), { disableLogger: true }).pipe(
  Layer.provideMerge(HttpServer.layerConfig()),
  Layer.provide(Layer.mergeAll(Greeter.layer, Quotes.layer)),
  Layer.provideMerge(Health.layer),
  Layer.provide(Settings.validate(QuotesConfig))
)

// --- the upstream the test stands up: a real HTTP server on a free port
let upstreamHealthy = true
const upstream = NodeHttp.createServer((request, response) => {
  if (request.url === "/healthz") response.writeHead(upstreamHealthy ? 200 : 500).end()
  else response.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ quote: "ship it" }))
})
await new Promise<void>((resolve) => upstream.listen(0, "127.0.0.1", resolve))
const upstreamUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`

// --- the user's test: the real server on a free port, released as a signal would release it
const TestMain = Testing.layer(Main, { QUOTES_URL: upstreamUrl })

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

    it.effect("calls the outbound dependency through undici, and a failing one degrades readiness without failing it", () =>
      Effect.gen(function*() {
        assert.deepStrictEqual(yield* get("/quote"), { status: 200, body: { quote: "ship it" } })
        assert.strictEqual((yield* get("/readyz")).body.checks.quotes.status, "ok")
        upstreamHealthy = false
        const degraded = yield* get("/readyz")
        upstreamHealthy = true
        assert.strictEqual(degraded.status, 200)
        assert.notStrictEqual(degraded.body.checks.quotes.status, "ok")
      }))
  })
})
