/**
 * The composition root: Main = Routes ← HttpServer ← (Cache, RateLimit ← Redis) ← Postgres ← Health,
 * run by the lifecycle. Built bottom-up, released top-down: server, Redis, pool, embedded Postgres.
 */
import { Layer } from "effect"
import { HttpRouter } from "effect/http"
import { Cache } from "./Cache.ts"
import * as Debug from "./Debug.ts"
import { Health } from "./Health.ts"
import { HttpServer } from "./HttpServer.ts"
import * as Lifecycle from "./Lifecycle.ts"
import { Postgres } from "./Postgres.ts"
import { RateLimit } from "./RateLimit.ts"
import { Redis } from "./Redis.ts"

const Routes = Layer.mergeAll(Health.routes, Debug.routes)

// Each step is built after the one it is provided with, so it is released before it.
const Resources = Layer.mergeAll(Cache.layer, RateLimit.layer).pipe(
  Layer.provideMerge(Redis.layer),
  Layer.provideMerge(Postgres.layer)
)

const Main = HttpRouter.serve(Routes, { disableLogger: true, disableListenLog: true }).pipe(
  Layer.provide(HttpServer.layer),
  Layer.provide(Resources),
  Layer.provideMerge(Health.layer)
)

Lifecycle.run(Main)
