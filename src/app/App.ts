/**
 * The reference service's graph: Routes ← HttpServer ← (Cache, RateLimit ← Redis, the expiry job) ← Postgres
 * ← Health. Built bottom-up, released top-down: server drained, job and Redis, pool, embedded Postgres.
 */
import { Layer } from "effect"
import { HttpRouter } from "effect/http"
import { HttpApiBuilder } from "effect/http-api"
import {
  Cache,
  CacheConfig,
  ClientAddress,
  Cors,
  EmbeddedPostgresConfig,
  Health,
  HealthConfig,
  HttpServer,
  HttpServerConfig,
  Metrics,
  Postgres,
  PostgresConfig,
  RateLimit,
  RateLimitConfig,
  Recoverer,
  Redis,
  RedisConfig,
  Settings,
  Tracing,
  Validation
} from "../kit/index.ts"
import { Api } from "./Api.ts"
import { AuthConfig, Authentication } from "./Auth.ts"
import * as Debug from "./Debug.ts"
import { DebugConfig } from "./Debug.ts"
import * as Docs from "./Docs.ts"
import { ItemEvents } from "./items/Events.ts"
import { ItemsHttp } from "./items/Http.ts"
import * as Live from "./Live.ts"
import { migrations } from "./migrations.ts"
import { AddressRateLimited, RateLimited } from "./RateLimited.ts"
import { ReservationsConfig } from "./reservations/Config.ts"
import { ExpiryJob } from "./reservations/Expiry.ts"
import { ReservationsHttp } from "./reservations/Http.ts"

export const ApiRoutes = HttpApiBuilder.layer(Api, { openapiPath: "/openapi.json" }).pipe(
  Layer.provide([ItemsHttp, ReservationsHttp]),
  Layer.provide([Authentication.layer, AddressRateLimited.layer, RateLimited.layer, Validation.layer])
)

export const Routes = Layer.mergeAll(
  Health.routes,
  ApiRoutes,
  Docs.routes,
  Debug.routes,
  Live.routes,
  Recoverer.layer(Api),
  Metrics.routes,
  Cors.layerConfig({
    exposedHeaders: [
      "link",
      "location",
      "ratelimit-limit",
      "ratelimit-remaining",
      "ratelimit-reset",
      "ratelimit-policy"
    ]
  })
).pipe(Layer.provide(ItemEvents.layer))

// Each step is built after the one it is provided with, so it is released before it. Members of
// one mergeAll are built and released concurrently: the job stops while the cache and limits do,
// all before Redis and PostgreSQL close.
export const Resources = Layer.mergeAll(Cache.layer, RateLimit.layer, ExpiryJob).pipe(
  Layer.provideMerge(Redis.layer),
  Layer.provideMerge(Postgres.layerConfig({ migrations }))
)

/** Everything, with the server's addresses (HttpServer) left visible for tests. */
export const Main = HttpRouter.serve(Routes, { disableLogger: true, disableListenLog: true }).pipe(
  Layer.provideMerge(HttpServer.layerConfig({ documentPaths: Docs.documentPaths })),
  Layer.provide(Resources),
  Layer.provideMerge(Health.layer),
  // Built first, released last: the exporters flush what the drain produced.
  Layer.provide(Tracing.layerConfig),
  // Before anything starts: a mistyped setting must not cost an initdb (or a connection) first.
  Layer.provide(Settings.validate(
    Tracing.TracingConfig,
    HealthConfig,
    EmbeddedPostgresConfig,
    PostgresConfig,
    RedisConfig,
    CacheConfig,
    RateLimitConfig,
    HttpServerConfig,
    ClientAddress.ClientAddressConfig,
    Cors.CorsConfig,
    AuthConfig,
    DebugConfig,
    ReservationsConfig
  ))
)
