/**
 * Diagnostic routes, mounted only with DEBUG_ROUTES=true: lifecycle tests need handlers whose
 * duration, transaction or failure they choose. Production never has them.
 */
import { Config, Effect, Layer, Schema } from "effect"
import { HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import * as EffectHttpServer from "effect/http/HttpServer"
import * as NetAddress from "effect/net/NetAddress"
import { HttpServer, Log, Postgres, Problem, Settings } from "../kit/index.ts"

export const DebugConfig = Config.all({
  routes: Settings.boolean("DEBUG_ROUTES", { default: false }),
  /** Mounts them on a server other hosts can reach too: they sleep, write and crash on request. */
  unsafe: Settings.boolean("DEBUG_ROUTES_UNSAFE", { default: false })
})

/** Only this machine can connect: a loopback address or a unix socket. */
const isLocalOnly = (address: NetAddress.SocketAddress) =>
  address._tag === "UnixPathAddress" || NetAddress.isLoopback(address.address)

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

const CrashParams = Schema.Struct({ kind: Schema.Literals(["exception", "rejection"]) })

/**
 * A crash outside any fiber, as a bug in a callback or a forgotten promise makes one: the
 * lifecycle must log it, drain and release, not die with the database left running.
 */
const crash = Effect.gen(function*() {
  const { kind } = yield* HttpRouter.schemaParams(CrashParams)
  yield* Effect.sync(() => {
    if (kind === "exception") {
      setTimeout(() => {
        throw new Error("deliberate uncaught exception")
      }, 0)
    } else {
      void Promise.reject(new Error("deliberate unhandled rejection"))
    }
  })
  return HttpServerResponse.jsonUnsafe({ crashing: kind }, { status: 202 })
}).pipe(Effect.catchTag("SchemaError", badRequest))

// Reads the whole body, so the body-size limit applies.
const echo = Effect.gen(function*() {
  const request = yield* HttpServerRequest.HttpServerRequest
  const body = yield* request.arrayBuffer
  return HttpServerResponse.jsonUnsafe({ bytes: body.byteLength })
})

export const routes = Layer.unwrap(
  Effect.gen(function*() {
    const { routes, unsafe } = yield* DebugConfig
    if (!routes) return Layer.empty
    // The address the server really bound (HOST, LISTEN_FD or systemd's socket), not what HOST says.
    const { address } = yield* HttpServer
    const where = EffectHttpServer.formatAddress(address)
    if (!unsafe && !isLocalOnly(address)) {
      return yield* Effect.fail(Settings.conflict(
        `DEBUG_ROUTES=true is refused on ${where}, which other hosts can reach: listen on loopback (HOST=127.0.0.1) or also set DEBUG_ROUTES_UNSAFE=true`
      ))
    }
    yield* Effect.logWarning(
      "DEBUG_ROUTES=true: /debug/sleep, /debug/echo, /debug/transaction and /debug/defect are mounted; never run this in production"
    )
      .pipe(Effect.annotateLogs({ address: where, unsafe }))
    return HttpRouter.addAll([
      HttpRouter.route("GET", "/debug/sleep", sleep),
      HttpRouter.route("POST", "/debug/echo", echo),
      HttpRouter.route("POST", "/debug/transaction", transaction),
      // A bug on purpose: the recoverer's answer is what tests look at.
      HttpRouter.route("GET", "/debug/crash", crash),
      HttpRouter.route("GET", "/debug/defect", Effect.die(new Error("deliberate defect for the recoverer")))
    ])
  })
)
