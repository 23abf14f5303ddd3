/**
 * The application graph: Routes ← HttpServer ← (Cache, RateLimit ← Redis) ← Postgres ← Health.
 * Built bottom-up, released top-down: server drained, Redis, pool, embedded Postgres.
 */
import { Effect, Layer, Scope } from "effect"
import { HttpRouter } from "effect/http"
import { HttpApiBuilder, HttpApiScalar } from "effect/http-api"
import { Authentication } from "./Auth.ts"
import { Cache } from "./Cache.ts"
import * as Debug from "./Debug.ts"
import { Health } from "./Health.ts"
import { HttpServer } from "./HttpServer.ts"
import { Api } from "./items/Api.ts"
import { ItemsHttp } from "./items/Http.ts"
import * as Middleware from "./Middleware.ts"
import { Postgres } from "./Postgres.ts"
import { RateLimit, RateLimited } from "./RateLimit.ts"
import { Redis } from "./Redis.ts"
import { Validation } from "./Validation.ts"

export const ApiRoutes = HttpApiBuilder.layer(Api, { openapiPath: "/openapi.json" }).pipe(
  Layer.provide(ItemsHttp),
  Layer.provide([Authentication.layer, RateLimited.layer, Validation.layer])
)

/**
 * `/docs`: Scalar, served from this process (no CDN, no web fonts, nothing fetched elsewhere).
 * Its 3 MB script is loaded on the first visit, not at startup.
 */
export const Docs = Layer.effectDiscard(Effect.gen(function*() {
  const scope = yield* Effect.scope
  const page = yield* Effect.cached(
    HttpRouter.toHttpEffect(
      HttpApiScalar.layer(Api, { path: "/docs", scalar: { withDefaultFonts: false, defaultOpenAllTags: true, favicon: "data:," } })
    ).pipe(Scope.provide(scope))
  )
  const router = yield* HttpRouter.HttpRouter
  yield* router.add("GET", "/docs", Effect.flatten(page))
}))

export const Routes = Layer.mergeAll(
  Health.routes,
  ApiRoutes,
  Docs,
  Debug.routes,
  Middleware.recoverer(Api),
  Middleware.cors
)

// Each step is built after the one it is provided with, so it is released before it.
export const Resources = Layer.mergeAll(Cache.layer, RateLimit.layer).pipe(
  Layer.provideMerge(Redis.layer),
  Layer.provideMerge(Postgres.layer)
)

/** Everything, with the server's addresses (HttpServer) left visible for tests. */
export const Main = HttpRouter.serve(Routes, { disableLogger: true, disableListenLog: true }).pipe(
  Layer.provideMerge(HttpServer.layer),
  Layer.provide(Resources),
  Layer.provideMerge(Health.layer)
)
