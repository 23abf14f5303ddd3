/**
 * The composition root: Main = Routes ← HttpServer ← Health, run by the lifecycle.
 * Nothing here but wiring; every piece lives in its own module.
 */
import { Layer } from "effect"
import { HttpRouter } from "effect/http"
import * as Debug from "./Debug.ts"
import { Health } from "./Health.ts"
import { HttpServer } from "./HttpServer.ts"
import * as Lifecycle from "./Lifecycle.ts"

const Routes = Layer.mergeAll(Health.routes, Debug.routes)

const Main = HttpRouter.serve(Routes, { disableLogger: true, disableListenLog: true }).pipe(
  Layer.provide(HttpServer.layer),
  Layer.provideMerge(Health.layer)
)

Lifecycle.run(Main)
