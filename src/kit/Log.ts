/**
 * Log output: one JSON line per entry (the request id added from the fiber), and the describers
 * that turn errors and causes into one readable line without a stack trace.
 */
import { Cause, Config, Console, Context, Effect, Layer, Logger, LogLevel, References, Tracer } from "effect"
import * as Formatter from "effect/Formatter"
import { HttpServerRequest } from "effect/http"
import * as RequestId from "./http/RequestId.ts"
import * as Settings from "./Settings.ts"

/** `LOG_LEVEL`: the least severe level written, in any case; `warning` is `Warn`, as syslog spells it. */
export const LogConfig = Config.all({
  level: Settings.literal("LOG_LEVEL", LogLevel.values, { default: "Info", aliases: { warning: "Warn" } })
})

/** An error's message, or its cause's when it has none (library errors often wrap). */
export const describeError = (error: unknown): string => {
  if (typeof error === "object" && error !== null) {
    const message = (error as { message?: unknown }).message
    if (typeof message === "string" && message.length > 0) return message.replace(/\s*\n\s*/g, " ")
    const cause = (error as { cause?: unknown }).cause
    if (cause !== undefined && cause !== error) return describeError(cause)
  }
  return String(error).replace(/\s*\n\s*/g, " ")
}

/** One line for a log: a cause's first failure, without a stack trace. */
export const describeCause = (cause: Cause.Cause<unknown>): string => {
  const error = Cause.squash(cause)
  if (error instanceof Config.ConfigError) {
    return `invalid configuration: ${Settings.describe(error)}`
  }
  return describeError(error)
}

/**
 * JSON lines on stdout. A line logged while handling a request carries its `requestId`, read
 * from the request when the line is written, so requests pay nothing for it otherwise; with
 * tracing on, also the `traceId` and `spanId` it was written under.
 */
export const jsonLogger: Logger.Logger<unknown, void> = Logger.make((options) => {
  const { cause, ...line } = Logger.formatStructured.log(options)
  const request = Context.getOrUndefined(options.fiber.context, HttpServerRequest.HttpServerRequest)
  const requestId = request === undefined ? undefined : RequestId.of(request)
  const withRequestId = requestId === undefined || "requestId" in line.annotations
    ? line
    : { ...line, annotations: { ...line.annotations, requestId } }
  // With an exporter, the span the line was written in; Effect's own no-op spans are nobody's trace.
  const span = Context.getOrUndefined(options.fiber.context, Tracer.ParentSpan)
  const annotated = span === undefined || options.fiber.getRef(Tracer.Tracer) === Tracer.nativeTracer
    ? withRequestId
    : { ...withRequestId, annotations: { ...withRequestId.annotations, traceId: span.traceId, spanId: span.spanId } }
  options.fiber.getRef(Console.Console).log(Formatter.formatJson(cause === undefined ? annotated : { ...annotated, cause }))
})

/** The logger at `LOG_LEVEL`. */
export const layerConfig: Layer.Layer<never, Config.ConfigError> = Layer.unwrap(
  Effect.gen(function*() {
    const { level } = yield* LogConfig
    return Layer.mergeAll(
      Logger.layer([jsonLogger]),
      Layer.succeed(References.MinimumLogLevel, level)
    )
  })
)

/** Written with console.log when even the logger could not be set up: the same JSON shape. */
export const startupFailedLine = (error: string): string =>
  JSON.stringify({ message: "startup failed", level: "ERROR", timestamp: new Date().toISOString(), annotations: { error } })
