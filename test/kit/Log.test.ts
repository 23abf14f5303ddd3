/**
 * Log formats: LOG_FORMAT read in any case and refused when unknown, the terminal/pipe decision,
 * and both loggers writing the request id; the pretty one on one line, without a stack trace.
 */
import { assert, describe, it } from "@effect/vitest"
import { Cause, ConfigProvider, Console, Effect, Logger, Option } from "effect"
import { HttpServerRequest } from "effect/http"
import * as Http from "node:http"
import * as Net from "node:net"
import * as Log from "../../src/kit/Log.ts"
import * as RequestId from "../../src/kit/RequestId.ts"

const load = (env: Record<string, string>) => Log.LogConfig.parse(ConfigProvider.fromEnv({ env }))

/** Runs `effect` with `logger` as the only logger, returning what it wrote to the console. */
const capture = <A, E>(logger: Logger.Logger<unknown, void>, effect: Effect.Effect<A, E>) =>
  Effect.gen(function*() {
    const written: Array<string> = []
    const console: Console.Console = {
      ...globalThis.console,
      log: (...args: ReadonlyArray<unknown>) => written.push(args.join(" "))
    }
    yield* effect.pipe(Effect.provide(Logger.layer([logger])), Effect.provideService(Console.Console, console))
    return written
  })

/** A request being served, as the server's handler sees it: its id already assigned. */
const servedRequest = (id: string) => {
  const incoming = new Http.IncomingMessage(new Net.Socket())
  incoming.rawHeaders = ["X-Request-Id", id]
  RequestId.assign(incoming)
  return { source: incoming } as unknown as HttpServerRequest.HttpServerRequest
}

const logged = Effect.logWarning("slow query").pipe(
  Effect.annotateLogs({ table: "items", sql: "SELECT 1 = 1", rows: 3 }),
  Effect.provideService(HttpServerRequest.HttpServerRequest, servedRequest("req-42"))
)

describe("Log", () => {
  it.effect("reads LOG_FORMAT in any case and with spaces, leaves it unset when absent", () =>
    Effect.gen(function*() {
      assert.deepStrictEqual((yield* load({ LOG_FORMAT: "PRETTY" })).format, Option.some("pretty"))
      assert.deepStrictEqual((yield* load({ LOG_FORMAT: " Json " })).format, Option.some("json"))
      assert.deepStrictEqual((yield* load({})).format, Option.none())
    }))

  it.effect("refuses an unknown LOG_FORMAT with an error naming the variable", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(load({ LOG_FORMAT: "xml" }))
      const line = Log.describeCause(Cause.fail(error))
      assert.include(line, "LOG_FORMAT")
      assert.include(line, "pretty")
    }))

  it("writes pretty on a terminal and JSON anywhere else, unless LOG_FORMAT says", () => {
    assert.strictEqual(Log.formatFor(Option.none(), { isTTY: true }), "pretty")
    assert.strictEqual(Log.formatFor(Option.none(), { isTTY: false }), "json")
    assert.strictEqual(Log.formatFor(Option.none(), {}), "json")
    assert.strictEqual(Log.formatFor(Option.some("json"), { isTTY: true }), "json")
    assert.strictEqual(Log.formatFor(Option.some("pretty"), { isTTY: false }), "pretty")
  })

  it.effect("JSON: one object per line with the annotations and the request id", () =>
    Effect.gen(function*() {
      const written = yield* capture(Log.jsonLogger, logged)
      assert.strictEqual(written.length, 1)
      const line = JSON.parse(written[0]!)
      assert.strictEqual(line.message, "slow query")
      assert.strictEqual(line.level, "WARN")
      assert.deepStrictEqual(line.annotations, { table: "items", sql: "SELECT 1 = 1", rows: 3, requestId: "req-42" })
    }))

  it.effect("pretty: time, level, message, then key=value pairs with the request id, quoted only when needed", () =>
    Effect.gen(function*() {
      const written = yield* capture(Log.prettyLogger({ colors: false }), logged)
      assert.strictEqual(written.length, 1)
      assert.match(
        written[0]!,
        /^\d\d:\d\d:\d\d\.\d{3} WARN {2}slow query table=items sql="SELECT 1 = 1" rows=3 requestId=req-42$/
      )
    }))

  it.effect("pretty: a failure is its one-line description, never a stack trace", () =>
    Effect.gen(function*() {
      const written = yield* capture(
        Log.prettyLogger({ colors: false }),
        Effect.logError("store failed", Cause.fail(new Error("connection refused\n    at Socket.connect")))
      )
      assert.strictEqual(written.length, 1)
      assert.match(written[0]!, /ERROR store failed cause="connection refused at Socket.connect"$/)
      assert.notInclude(written[0]!, "\n")
    }))

  it.effect("pretty: colours only when asked, and the text is the same without them", () =>
    Effect.gen(function*() {
      const [coloured] = yield* capture(Log.prettyLogger({ colors: true }), logged)
      const [plain] = yield* capture(Log.prettyLogger({ colors: false }), logged)
      assert.include(coloured!, "\x1b[")
      assert.notInclude(plain!, "\x1b[")
      // eslint-disable-next-line no-control-regex
      assert.strictEqual(coloured!.replace(/\x1b\[\d+m/g, ""), plain)
    }))
})
