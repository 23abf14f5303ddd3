/**
 * Diagnostic routes, mounted only with DEBUG_ROUTES=true: lifecycle tests need a handler
 * whose duration they choose. Production never has them.
 */
import { Effect, Layer, Schema } from "effect"
import { HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import * as Settings from "./Config.ts"

const SleepParams = Schema.Struct({
  ms: Schema.NumberFromString.check(Schema.isInt(), Schema.isBetween({ minimum: 0, maximum: 600_000 }))
})

const sleep = Effect.gen(function*() {
  const { ms } = yield* HttpRouter.schemaParams(SleepParams)
  yield* Effect.sleep(ms)
  return HttpServerResponse.jsonUnsafe({ sleptMs: ms })
}).pipe(
  Effect.catchTag("SchemaError", (error) =>
    Effect.succeed(HttpServerResponse.jsonUnsafe({ error: "Bad Request", status: 400, message: `ms: ${error.message.replace(/\s*\n\s*/g, " ")}` }, { status: 400 })))
)

// Reads the whole body, so the body-size limit applies.
const echo = Effect.gen(function*() {
  const request = yield* HttpServerRequest.HttpServerRequest
  const body = yield* request.arrayBuffer
  return HttpServerResponse.jsonUnsafe({ bytes: body.byteLength })
})

export const routes = Layer.unwrap(
  Effect.gen(function*() {
    const { debugRoutes } = yield* Settings.http
    return debugRoutes
      ? HttpRouter.addAll([
        HttpRouter.route("GET", "/debug/sleep", sleep),
        HttpRouter.route("POST", "/debug/echo", echo)
      ])
      : Layer.empty
  })
)
