// Peer: Effect's own default server (NodeHttpServer.layer + HttpRouter, no middleware, no logger),
// answering the same JSON as scoped-server's /livez: the floor of Effect's request path here.
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Effect, Layer } from "effect"
import { HttpRouter, HttpServerResponse } from "effect/http"
import * as Http from "node:http"

const body = HttpServerResponse.jsonUnsafe({ status: "ok" })
const Routes = HttpRouter.add("GET", "/livez", Effect.succeed(body))
const Main = HttpRouter.serve(Routes, { disableLogger: true, disableListenLog: true }).pipe(
  Layer.provide(
    NodeHttpServer.layer(Http.createServer, { port: Number(process.env.PORT), host: process.env.HOST ?? "127.0.0.1" })
  )
)
NodeRuntime.runMain(Layer.launch(Main))
