/**
 * The kinds of value settings take (durations, sizes, integers, booleans, enums), as operators
 * write them, range-checked; a bad value or a conflict stops startup with one line naming it.
 */
import { Config, Duration, Effect, Layer, Option, Result, Schema, SchemaIssue } from "effect"

export type ConfigError = Config.ConfigError

// ---------------------------------------------------------------------------------------------
// errors: one line, the variable first
// ---------------------------------------------------------------------------------------------

const issueError = (issue: SchemaIssue.Issue) => new Config.ConfigError(new Schema.SchemaError(issue))

/** `NAME: message` — a value that was read and refused. */
export const refuse = (name: string, message: string): ConfigError =>
  issueError(new SchemaIssue.Pointer([name], new SchemaIssue.InvalidValue({ message })))

/** Settings that cannot hold together; the message names every variable involved. */
export const conflict = (message: string): ConfigError => issueError(new SchemaIssue.InvalidValue({ message }))

/** Fails the whole block when `validate` names a conflict among its values. */
export const check = <A>(validate: (settings: A) => string | undefined) => (self: Config.Config<A>): Config.Config<A> =>
  Config.mapEffect(self, (settings) => {
    const problem = validate(settings)
    return problem === undefined ? Effect.succeed(settings) : Effect.fail(conflict(problem))
  })

/** A raw string setting parsed by `parse` (an error message on refusal); absent stays absent. */
export const parsed = <A>(name: string, parse: (raw: string) => Result.Result<A, string>): Config.Config<A> =>
  Config.String(name).pipe(Config.mapEffect((raw) =>
    Result.match(parse(raw), {
      onSuccess: Effect.succeed,
      onFailure: (message) => Effect.fail(refuse(name, message))
    })
  ))

const quote = (raw: string) => JSON.stringify(raw)

// ---------------------------------------------------------------------------------------------
// durations
// ---------------------------------------------------------------------------------------------

const unitMillis: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }
const composition = /^(?:\d+(?:\.\d+)?\s*(?:ms|s|m|h|d)\s*)+$/
const part = /(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)/g
const bareNumber = /^\d+(?:\.\d+)?$/

/**
 * `500ms`, `5s`, `1m30s`, `1h 5m`, `2.5s`, `1d` (units in any case), a bare number of
 * milliseconds (`1500`), or Effect's own `10 seconds`. Whole milliseconds: every consumer is a
 * timer, and `2.3s` must not come out as 2299.9999.
 */
export const parseDuration = (input: string): Option.Option<Duration.Duration> => {
  const text = input.trim().toLowerCase()
  if (bareNumber.test(text)) return Option.some(Duration.millis(Math.round(Number(text))))
  if (composition.test(text)) {
    let millis = 0
    for (const [, amount, unit] of text.matchAll(part)) millis += Number(amount) * unitMillis[unit!]!
    return Number.isFinite(millis) ? Option.some(Duration.millis(Math.round(millis))) : Option.none()
  }
  if (text.length === 0) return Option.none()
  return Duration.fromInput(text as Duration.Input).pipe(
    Option.filter((duration) => Duration.isFinite(duration) && Duration.toMillis(duration) >= 0)
  )
}

/** `90000` → `1m30s`: the form the messages print, which `parseDuration` reads back. */
export const formatDuration = (duration: Duration.Duration): string => {
  let millis = Math.round(Duration.toMillis(duration))
  if (millis === 0) return "0s"
  let text = ""
  for (const unit of ["d", "h", "m", "s", "ms"] as const) {
    const size = unitMillis[unit]!
    if (millis >= size) {
      text += `${Math.floor(millis / size)}${unit}`
      millis %= size
    }
  }
  return text
}

export interface DurationOptions {
  readonly min?: Duration.Input
  readonly max?: Duration.Input
  /**
   * The setting is measured in seconds, so a bare number from 1 to 999 is refused as almost
   * certainly meant in seconds. Unset: true when the default is at least 1 s.
   */
  readonly seconds?: boolean
}

const durationParser = (options: DurationOptions & { readonly seconds: boolean }) => {
  const min = options.min === undefined ? undefined : Duration.fromInputUnsafe(options.min)
  const max = options.max === undefined ? undefined : Duration.fromInputUnsafe(options.max)
  return (raw: string): Result.Result<Duration.Duration, string> => {
    const text = raw.trim()
    if (options.seconds && bareNumber.test(text) && Number(text) > 0 && Number(text) < 1000) {
      return Result.fail(`${quote(raw)} has no unit and a bare number means milliseconds; did you mean ${text}s?`)
    }
    const parsed = parseDuration(text)
    if (Option.isNone(parsed)) {
      return Result.fail(`${quote(raw)} is not a duration; write it as 500ms, 30s, 1m30s or 1h`)
    }
    const value = parsed.value
    if (
      (min !== undefined && Duration.isLessThan(value, min)) ||
      (max !== undefined && Duration.isGreaterThan(value, max))
    ) {
      return Result.fail(`${formatDuration(value)} is out of range; expected ${range(min, max, formatDuration)}`)
    }
    return Result.succeed(value)
  }
}

const range = <A>(min: A | undefined, max: A | undefined, format: (value: A) => string) =>
  min !== undefined && max !== undefined
    ? `from ${format(min)} to ${format(max)}`
    : min !== undefined
    ? `at least ${format(min)}`
    : `at most ${format(max!)}`

/** A duration setting with its default, optionally bounded (see `DurationOptions`). */
export const duration = (
  name: string,
  options: DurationOptions & { readonly default: Duration.Input }
): Config.Config<Duration.Duration> => {
  const defaultValue = Duration.fromInputUnsafe(options.default)
  return parsed(
    name,
    durationParser({ ...options, seconds: options.seconds ?? Duration.toMillis(defaultValue) >= 1_000 })
  )
    .pipe(Config.withDefault(defaultValue))
}

/** A duration setting with no default (None when unset); `seconds` defaults to true. */
export const optionalDuration = (name: string, options: DurationOptions = {}) =>
  Config.option(parsed(name, durationParser({ ...options, seconds: options.seconds ?? true })))

// ---------------------------------------------------------------------------------------------
// sizes
// ---------------------------------------------------------------------------------------------

/**
 * Bytes per unit, any case. IEC units and the bare letters are binary (`1M` = `1MiB` = 2^20, as
 * nginx, the JVM and Docker read them); SI units are decimal (`1MB` = 10^6, as Effect read them).
 */
export const byteUnits: Readonly<Record<string, number>> = {
  b: 1,
  k: 1024,
  kib: 1024,
  kb: 1000,
  m: 1024 ** 2,
  mib: 1024 ** 2,
  mb: 1000 ** 2,
  g: 1024 ** 3,
  gib: 1024 ** 3,
  gb: 1000 ** 3
}
const size = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/

/** `1024`, `512b`, `64k`, `64KiB`, `1M`, `1mb`, `1.5MiB`: whole bytes (a fraction of a unit rounds down). */
export const parseBytes = (input: string): Option.Option<number> => {
  const match = size.exec(input.trim().toLowerCase())
  if (match === null) return Option.none()
  const [, amount, unit] = match
  if (unit === "") return Number.isInteger(Number(amount)) ? Option.some(Number(amount)) : Option.none()
  const factor = byteUnits[unit!]
  if (factor === undefined) return Option.none()
  const bytes = Math.floor(Number(amount) * factor)
  return Number.isSafeInteger(bytes) ? Option.some(bytes) : Option.none()
}

/** `1048576` → `1MiB`, or bytes when it is no whole number of KiB. */
export const formatBytes = (bytes: number): string => {
  for (const [unit, factor] of [["GiB", 1024 ** 3], ["MiB", 1024 ** 2], ["KiB", 1024]] as const) {
    if (bytes >= factor && bytes % factor === 0) return `${bytes / factor}${unit}`
  }
  return `${bytes}`
}

/** A size in bytes (`512KiB`, `1MiB`, `1mb`, `1M`, `1024`) with its default, optionally bounded. */
export const bytes = (
  name: string,
  options: { readonly min?: number; readonly max?: number; readonly default: number }
): Config.Config<number> =>
  parsed(name, (raw) => {
    const value = parseBytes(raw)
    if (Option.isNone(value)) return Result.fail(`${quote(raw)} is not a size; write it as 1024, 64KiB, 1MiB or 1mb`)
    if (
      (options.min !== undefined && value.value < options.min) ||
      (options.max !== undefined && value.value > options.max)
    ) {
      return Result.fail(
        `${formatBytes(value.value)} is out of range; expected ${range(options.min, options.max, formatBytes)}`
      )
    }
    return Result.succeed(value.value)
  }).pipe(Config.withDefault(options.default))

// ---------------------------------------------------------------------------------------------
// integers, ports
// ---------------------------------------------------------------------------------------------

const integer = /^[+-]?\d+$/

const intParser =
  (options: { readonly min?: number; readonly max?: number }) => (raw: string): Result.Result<number, string> => {
    const text = raw.trim().replace(/_/g, "")
    const value = Number(text)
    if (!integer.test(text) || !Number.isSafeInteger(value)) return Result.fail(`${quote(raw)} is not a whole number`)
    if ((options.min !== undefined && value < options.min) || (options.max !== undefined && value > options.max)) {
      return Result.fail(`${value} is out of range; expected ${range(options.min, options.max, String)}`)
    }
    return Result.succeed(value)
  }

/** A range-checked integer (`10000` or `10_000`); with `default`, that when unset. */
export function int(
  name: string,
  options: { readonly min?: number; readonly max?: number; readonly default: number }
): Config.Config<number>
export function int(name: string, options?: { readonly min?: number; readonly max?: number }): Config.Config<number>
export function int(
  name: string,
  options: { readonly min?: number; readonly max?: number; readonly default?: number } = {}
) {
  const config = parsed(name, intParser(options))
  return options.default === undefined ? config : config.pipe(Config.withDefault(options.default))
}

/** Like Config.Port, but 0 picks a free port (the `listening` log line names it). */
export const port = (name: string) => int(name, { min: 0, max: 65535 })

export const optionalInt = (name: string, options: { readonly min?: number; readonly max?: number } = {}) =>
  Config.option(int(name, options))

// ---------------------------------------------------------------------------------------------
// booleans, enums, lists
// ---------------------------------------------------------------------------------------------

const truthy = new Set(["true", "yes", "on", "1", "y"])
const falsy = new Set(["false", "no", "off", "0", "n"])

export const parseBoolean = (input: string): Option.Option<boolean> => {
  const text = input.trim().toLowerCase()
  return truthy.has(text) ? Option.some(true) : falsy.has(text) ? Option.some(false) : Option.none()
}

/** `true/false`, `yes/no`, `on/off`, `1/0`, in any case. */
export const boolean = (name: string, options: { readonly default: boolean }): Config.Config<boolean> =>
  parsed(name, (raw) =>
    Option.match(parseBoolean(raw), {
      onNone: () => Result.fail(`${quote(raw)} is not a boolean; write true or false (yes/no, on/off, 1/0)`),
      onSome: Result.succeed
    })).pipe(Config.withDefault(options.default))

/**
 * One of `values`, in any case (`closed`, `Closed`, `CLOSED`), returned as spelled in `values`;
 * `aliases` maps other accepted words (lower case) to a value.
 */
export const literal = <const L extends string>(
  name: string,
  values: ReadonlyArray<L>,
  options: { readonly default: NoInfer<L>; readonly aliases?: Readonly<Record<string, NoInfer<L>>> }
): Config.Config<L> => {
  const byLower = new Map<string, L>(values.map((value) => [value.toLowerCase(), value]))
  for (const [alias, value] of Object.entries(options.aliases ?? {})) byLower.set(alias.toLowerCase(), value)
  return parsed(name, (raw) => {
    const value = byLower.get(raw.trim().toLowerCase())
    return value === undefined
      ? Result.fail(`${quote(raw)} is not one of ${values.join(", ")}`)
      : Result.succeed(value)
  }).pipe(Config.withDefault(options.default))
}

/** A comma-separated list, blanks dropped. */
export const list = (name: string) =>
  Config.String(name).pipe(
    Config.withDefault(""),
    Config.map((value) => value.split(",").map((item) => item.trim()).filter((item) => item.length > 0))
  )

/** Whether `host` (a HOST value or a URL's hostname) names this machine only. */
export const isLoopbackHost = (host: string): boolean => {
  const bare = host.toLowerCase().replace(/^\[(.*)\]$/, "$1")
  return bare === "localhost" || bare.endsWith(".localhost") || bare === "::1" || /^127(?:\.\d{1,3}){3}$/.test(bare)
}

// ---------------------------------------------------------------------------------------------
// startup
// ---------------------------------------------------------------------------------------------

/**
 * Reads every block in `configs` and provides nothing. Provided beneath everything else in the
 * app's graph (the last `Layer.provide` of `Main`), it is built first: a mistyped setting, the
 * kit's or the app's, stops startup with its one line before any resource (the database, a
 * connection, a child process) has started. Each block is read again, from the same source, by
 * the Layer that uses it.
 */
export const validate = (...configs: ReadonlyArray<Config.Config<unknown>>): Layer.Layer<never, ConfigError> =>
  Layer.effectDiscard(Effect.all(configs, { discard: true }))
