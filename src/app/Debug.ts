/**
 * Diagnostic routes, mounted only with DEBUG_ROUTES=true: lifecycle tests need handlers whose
 * duration, transaction or failure they choose. Production never has them.
 */
import { Config, Effect, Layer, Schema } from "effect"
import { HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import { Log, Postgres, Problem } from "../kit/index.ts"

export const DebugConfig = Config.all({
  routes: Config.Boolean("DEBUG_ROUTES").pipe(Config.withDefault(false))
})

const SleepParams = Schema.Struct({
  ms: Schema.NumberFromString.check(Schema.isInt(), Schema.isBetween({ minimum: 0, maximum: 600_000 }))
})

const badRequest = (error: Schema.SchemaError) => Effect.succeed(Problem.errorResponse(400, Log.describeError(error)))

const sleep = Effect.gen(function*() {
  const { ms } = yield* HttpRouter.schemaParams(SleepParams)
  yield* Effect.sleep(ms)
  return HttpServerResponse.jsonUnsafe({ sleptMs: ms })
}).pipe(Effect.catchTag("SchemaError", badRequest))

const TransactionParams = Schema.Struct({
  marker: Schema.String.check(Schema.isMinLength(1), Schema.isMaxLength(100)),
  ms: SleepParams.fields.ms
})

/**
 * Writes two items named `marker` in one transaction with `ms` between them, so a test can stop
 * the server mid-transaction and check it committed or rolled back whole.
 */
const transaction = Effect.gen(function*() {
  const { marker, ms } = yield* HttpRouter.schemaParams(TransactionParams)
  const { sql, use } = yield* Postgres
  yield* use(sql.withTransaction(Effect.gen(function*() {
    yield* sql`INSERT INTO items (name) VALUES (${marker})`
    yield* sql`SELECT pg_sleep(${ms / 1000})`
    yield* sql`INSERT INTO items (name) VALUES (${marker})`
  })))
  return HttpServerResponse.jsonUnsafe({ committed: 2 })
}).pipe(Effect.catchTag("SchemaError", badRequest))

// Reads the whole body, so the body-size limit applies.
const echo = Effect.gen(function*() {
  const request = yield* HttpServerRequest.HttpServerRequest
  const body = yield* request.arrayBuffer
  return HttpServerResponse.jsonUnsafe({ bytes: body.byteLength })
})

export const routes = Layer.unwrap(
  Effect.gen(function*() {
    const { routes } = yield* DebugConfig
    return routes
      ? HttpRouter.addAll([
        HttpRouter.route("GET", "/debug/sleep", sleep),
        HttpRouter.route("POST", "/debug/echo", echo),
        HttpRouter.route("POST", "/debug/transaction", transaction),
        // A bug on purpose: the recoverer's answer is what tests look at.
        HttpRouter.route("GET", "/debug/defect", Effect.die(new Error("deliberate defect for the recoverer")))
      ])
      : Layer.empty
  })
)
