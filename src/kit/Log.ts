/**
 * Log output: one JSON line per entry for machines, one short line for a person at a terminal
 * (the request id in both), and the describers that turn errors and causes into one line.
 */
import { Cause, Config, Console, Context, Effect, Layer, Logger, LogLevel, Option, References, Tracer } from "effect"
import * as Formatter from "effect/Formatter"
import { HttpServerRequest } from "effect/http"
import * as ConfigError from "./internal/ConfigError.ts"
import * as RequestId from "./RequestId.ts"
import * as Settings from "./Settings.ts"

/** How lines are written: `json` for collectors, `pretty` for a person reading a terminal. */
export type Format = "json" | "pretty"

/**
 * `LOG_LEVEL`: the least severe level written, in any case; `warning` is `Warn`, as syslog spells
 * it. `LOG_FORMAT`: `json` or `pretty`, in any case; unset or `auto`, the format follows stdout (`formatFor`).
 */
export const LogConfig = Config.all({
  level: Settings.literal("LOG_LEVEL", LogLevel.values, { default: "Info", aliases: { warning: "Warn" } }),
  format: Settings.literal("LOG_FORMAT", ["auto", "json", "pretty"] as const, { default: "auto" }).pipe(
    Config.map((format): Option.Option<Format> => format === "auto" ? Option.none() : Option.some(format))
  )
})

/**
 * A terminal gets the pretty format and anything else JSON: stdout redirected to a file, a pipe
 * or a collector must stay machine-readable without anyone remembering to set LOG_FORMAT.
 */
export const formatFor = (configured: Option.Option<Format>, stdout: { readonly isTTY?: boolean }): Format =>
  Option.getOrElse(configured, () => (stdout.isTTY === true ? "pretty" : "json"))

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
    return `invalid configuration: ${ConfigError.describe(error)}`
  }
  return describeError(error)
}

/**
 * A cause's first failure with the errors that caused it (`error.cause`, as `new Error(message, {
 * cause })` chains them), one line: `outer; caused by: inner; caused by: root`.
 */
export const describeCauseChain = (cause: Cause.Cause<unknown>): string => {
  const error = Cause.squash(cause)
  const parts = [describeCause(cause)]
  const seen = new Set<unknown>([error])
  let next = typeof error === "object" && error !== null && !(error instanceof Config.ConfigError)
    ? (error as { cause?: unknown }).cause
    : undefined
  while (next !== undefined && !seen.has(next) && parts.length < 8) {
    seen.add(next)
    const text = describeError(next)
    if (!parts.some((part) => part.includes(text))) parts.push(text)
    next = typeof next === "object" && next !== null ? (next as { cause?: unknown }).cause : undefined
  }
  return parts.join("; caused by: ")
}

/**
 * The structured entry with the request's `requestId` added when logged while handling one (read
 * from the request when the line is written, so requests pay nothing for it otherwise) and, with
 * tracing on, the `traceId` and `spanId` it was written under.
 */
const structured = (options: Logger.Options<unknown>) => {
  const line = Logger.formatStructured.log(options)
  const request = Context.getOrUndefined(options.fiber.context, HttpServerRequest.HttpServerRequest)
  const requestId = request === undefined ? undefined : RequestId.of(request)
  const withRequestId = requestId === undefined || "requestId" in line.annotations
    ? line
    : { ...line, annotations: { ...line.annotations, requestId } }
  // With an exporter, the span the line was written in; Effect's own no-op spans are nobody's trace.
  const span = Context.getOrUndefined(options.fiber.context, Tracer.ParentSpan)
  return span === undefined || options.fiber.getRef(Tracer.Tracer) === Tracer.nativeTracer
    ? withRequestId
    : { ...withRequestId, annotations: { ...withRequestId.annotations, traceId: span.traceId, spanId: span.spanId } }
}

/** JSON lines on stdout. */
export const jsonLogger: Logger.Logger<unknown, void> = Logger.make((options) => {
  const { cause, ...line } = structured(options)
  options.fiber.getRef(Console.Console).log(Formatter.formatJson(cause === undefined ? line : { ...line, cause }))
})

const ansi = {
  dim: "\x1b[2m",
  bold: "\x1b[1m",
  red: "\x1b[31m",
  yellow: "\x1b[33m",
  blue: "\x1b[34m",
  magenta: "\x1b[35m",
  reset: "\x1b[0m"
}
const levelColors: Record<string, string> = {
  FATAL: ansi.magenta,
  ERROR: ansi.red,
  WARN: ansi.yellow,
  INFO: ansi.blue,
  DEBUG: ansi.dim,
  TRACE: ansi.dim
}

// A value a person can read and a shell can paste back: bare when it has no spaces, quotes or
// `=`, JSON otherwise, so `key=value` pairs never run into each other.
const pairValue = (value: unknown): string => {
  if (typeof value === "string") return /^[^\s"=]+$/.test(value) ? value : JSON.stringify(value)
  return typeof value === "object" && value !== null ? JSON.stringify(value) : String(value)
}

const localTime = (timestamp: string): string => {
  const date = new Date(timestamp)
  const pad = (n: number, width = 2) => String(n).padStart(width, "0")
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`
}

/**
 * One line per entry for a terminal: local time, level, message, then `key=value` annotations
 * and span timings. A cause is its one-line description: the JSON format keeps the full one.
 */
export const prettyLogger = (options: { readonly colors: boolean }): Logger.Logger<unknown, void> =>
  Logger.make((entry) => {
    const line = structured(entry)
    const paint = (code: string, text: string) => (options.colors ? `${code}${text}${ansi.reset}` : text)
    const message = typeof line.message === "string" ? line.message : JSON.stringify(line.message)
    const pairs = Object.entries(line.annotations).map(([key, value]) => `${key}=${pairValue(value)}`)
    for (const [label, millis] of Object.entries(line.spans)) pairs.push(`${label}=${millis}ms`)
    if (entry.cause.reasons.length > 0) pairs.push(`cause=${pairValue(describeCause(entry.cause))}`)
    const text = `${paint(ansi.dim, localTime(line.timestamp))} ${
      paint(levelColors[line.level] ?? "", line.level.padEnd(5))
    } ${paint(ansi.bold, message)}${pairs.length === 0 ? "" : " " + paint(ansi.dim, pairs.join(" "))}`
    entry.fiber.getRef(Console.Console).log(text)
  })

/** The logger at `LOG_LEVEL`, in `LOG_FORMAT` or the one stdout calls for. */
export const layerConfig: Layer.Layer<never, Config.ConfigError> = Layer.unwrap(
  Effect.gen(function*() {
    const { format, level } = yield* LogConfig
    const logger = formatFor(format, process.stdout) === "pretty"
      // hasColors honours NO_COLOR, FORCE_COLOR and TERM=dumb.
      ? prettyLogger({ colors: process.stdout.isTTY === true && process.stdout.hasColors() })
      : jsonLogger
    return Layer.mergeAll(
      Logger.layer([logger]),
      Layer.succeed(References.MinimumLogLevel, level)
    )
  })
)

/** Written with console.log when even the logger could not be set up: the same JSON shape. */
export const startupFailedLine = (error: string): string =>
  JSON.stringify({
    message: "startup failed",
    level: "ERROR",
    timestamp: new Date().toISOString(),
    annotations: { error }
  })
