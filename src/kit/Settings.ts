/**
 * The kinds of value settings take (durations, sizes, ports), shared by every module's `XConfig`.
 * A bad value stops startup with a ConfigError that names the variable.
 */
import { Config, Duration, Effect, Option, Schema, SchemaIssue, SchemaTransformation } from "effect"

export type ConfigError = Config.ConfigError

const unitMillis: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 }

/** `500ms`, `1s`, `2m`, `1h`, plain milliseconds (`1500`), or Effect's `"10 seconds"`. */
export const parseDuration = (input: string): Option.Option<Duration.Duration> => {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(input)
  if (match !== null) {
    return Option.some(Duration.millis(Number(match[1]) * unitMillis[match[2] ?? "ms"]!))
  }
  return Duration.fromInput(input as Duration.Input).pipe(Option.filter(Duration.isFinite))
}

const DurationString = Schema.String.pipe(
  Schema.decodeTo(
    Schema.Duration,
    SchemaTransformation.transformEffect<Duration.Duration, string>({
      decode: (input, options) =>
        Option.match(parseDuration(input), {
          onNone: () =>
            Effect.fail(
              new SchemaIssue.InvalidValue({ expected: "a duration such as 500ms, 1s, 2m or plain milliseconds" }, input, options)
            ),
          onSome: Effect.succeed
        }),
      encode: (duration) => Effect.succeed(`${Duration.toMillis(duration)}ms`)
    })
  )
)

/** A duration setting with its default. */
export const duration = (name: string, fallback: Duration.Input) =>
  Config.schema(DurationString, name).pipe(Config.withDefault(Duration.fromInputUnsafe(fallback)))

/** A size in bytes (`512KiB`, `1MiB`, `1024`) with its default. */
export const bytes = (name: string, fallback: number) =>
  Config.ByteSize(name).pipe(
    Config.map(Number),
    Config.withDefault(fallback)
  )

/** Like Config.Port, but 0 picks a free port (the `listening` log line names it). */
export const port = (name: string) => Config.schema(Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 65535 })), name)

export const optionalInt = (name: string) => Config.option(Config.Int(name))

/** A comma-separated list, blanks dropped. */
export const list = (name: string) =>
  Config.String(name).pipe(
    Config.withDefault(""),
    Config.map((value) => value.split(",").map((item) => item.trim()).filter((item) => item.length > 0))
  )
