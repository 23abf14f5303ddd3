/**
 * The shared parsers: every form operators write is accepted, every refusal names the variable
 * in one line, and properties over generated durations, sizes and enum spellings hold.
 */
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Duration, Effect, Exit, LogLevel, Option, Schema } from "effect"
import { describeCause } from "../../src/kit/Log.ts"
import * as Settings from "../../src/kit/Settings.ts"

const load = <A>(
  config: { parse: (provider: ConfigProvider.ConfigProvider) => Effect.Effect<A, Settings.ConfigError> },
  env: Record<string, string>
) => config.parse(ConfigProvider.fromEnv({ env }))

/** The one line an operator sees, or the value. */
const read = <A>(
  config: { parse: (provider: ConfigProvider.ConfigProvider) => Effect.Effect<A, Settings.ConfigError> },
  env: Record<string, string>
) =>
  Effect.map(
    Effect.exit(load(config, env)),
    (exit) => Exit.isSuccess(exit) ? { value: exit.value } : { error: describeCause(exit.cause) }
  )

const refusal = Effect.fnUntraced(function*<A>(
  config: { parse: (provider: ConfigProvider.ConfigProvider) => Effect.Effect<A, Settings.ConfigError> },
  env: Record<string, string>
) {
  const result = yield* read(config, env)
  assert.isTrue("error" in result, `${JSON.stringify(env)} was accepted`)
  const line = (result as { error: string }).error
  assert.notInclude(line, "\n")
  assert.notInclude(line, "    at ")
  return line
})

const millis = (input: string) => Option.map(Settings.parseDuration(input), Duration.toMillis)

describe("durations", () => {
  it("accepts compositions, fractions and units in any case", () => {
    const cases: Array<[string, number]> = [
      ["500ms", 500],
      ["5S", 5_000],
      ["5s", 5_000],
      ["1m30s", 90_000],
      ["1M30S", 90_000],
      ["1h", 3_600_000],
      ["1h 5m", 3_900_000],
      ["2.5s", 2_500],
      ["2.3s", 2_300],
      ["1d", 86_400_000],
      ["1500", 1_500],
      ["0", 0],
      [" 30s ", 30_000],
      ["10 seconds", 10_000],
      ["1MS", 1],
      ["1h1m1s1ms", 3_661_001]
    ]
    for (const [input, expected] of cases) assert.deepStrictEqual(millis(input), Option.some(expected), input)
  })

  it("refuses what is not a duration", () => {
    for (const input of ["soon", "-1s", "1 fortnight", "", "Infinity", "1.s", "s", "1x", "1m-5s", "5 s s"]) {
      assert.isTrue(Option.isNone(Settings.parseDuration(input)), input)
    }
  })

  it.effect("refuses a bare number below 1000 for a setting measured in seconds, suggesting the unit", () =>
    Effect.gen(function*() {
      const timeout = Settings.duration("SHUTDOWN_TIMEOUT", { default: "25 seconds" })
      assert.strictEqual(
        yield* refusal(timeout, { SHUTDOWN_TIMEOUT: "30" }),
        `invalid configuration: SHUTDOWN_TIMEOUT: "30" has no unit and a bare number means milliseconds; did you mean 30s?`
      )
      assert.match(yield* refusal(timeout, { SHUTDOWN_TIMEOUT: "2.5" }), /did you mean 2\.5s\?/)
      // Seconds-scale by declaration though its default is 0.
      assert.match(
        yield* refusal(Settings.duration("DRAIN_DELAY", { default: 0, seconds: true }), { DRAIN_DELAY: "5" }),
        /^invalid configuration: DRAIN_DELAY: .*did you mean 5s\?$/
      )
      // 0 and 1000 or more are unambiguous milliseconds.
      assert.deepStrictEqual(yield* read(timeout, { SHUTDOWN_TIMEOUT: "30000" }), { value: Duration.millis(30_000) })
      assert.deepStrictEqual(yield* read(timeout, { SHUTDOWN_TIMEOUT: "0" }), { value: Duration.millis(0) })
      // A millisecond-scale setting (default below 1 s) takes bare milliseconds.
      assert.deepStrictEqual(
        yield* read(Settings.duration("DRAIN_QUIET_WINDOW", { default: 300 }), { DRAIN_QUIET_WINDOW: "250" }),
        {
          value: Duration.millis(250)
        }
      )
    }))

  it.effect("range-checks, naming the variable and the bounds", () =>
    Effect.gen(function*() {
      const config = Settings.duration("HEADERS_TIMEOUT", {
        default: "10 seconds",
        min: "100 millis",
        max: "10 minutes"
      })
      assert.strictEqual(
        yield* refusal(config, { HEADERS_TIMEOUT: "0s" }),
        "invalid configuration: HEADERS_TIMEOUT: 0s is out of range; expected from 100ms to 10m"
      )
      assert.match(
        yield* refusal(config, { HEADERS_TIMEOUT: "1h" }),
        /^invalid configuration: HEADERS_TIMEOUT: 1h is out of range/
      )
      assert.match(
        yield* refusal(config, { HEADERS_TIMEOUT: "later" }),
        /^invalid configuration: HEADERS_TIMEOUT: "later" is not a duration/
      )
      assert.deepStrictEqual(yield* read(config, {}), { value: Duration.seconds(10) })
    }))

  const amount = Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 99 }))

  it.prop("any composition of h, m, s and ms parses to its milliseconds", {
    h: amount,
    m: amount,
    s: amount,
    ms: amount,
    upper: Schema.Boolean,
    spaced: Schema.Boolean
  }, ({ h, m, ms, s, spaced, upper }) => {
    const text = [`${h}h`, `${m}m`, `${s}s`, `${ms}ms`].join(spaced ? " " : "")
    const input = upper ? text.toUpperCase() : text
    assert.deepStrictEqual(millis(input), Option.some(((h * 60 + m) * 60 + s) * 1000 + ms), input)
  })

  it.prop("formatDuration prints what parseDuration reads back", [
    Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 10 * 86_400_000 }))
  ], ([value]) => {
    assert.deepStrictEqual(millis(Settings.formatDuration(Duration.millis(value))), Option.some(value))
  })
})

describe("sizes", () => {
  it("accepts bytes, binary letters and IEC units, and decimal SI units, in any case", () => {
    const cases: Array<[string, number]> = [
      ["1024", 1024],
      ["0", 0],
      ["512b", 512],
      ["1k", 1024],
      ["1K", 1024],
      ["1KiB", 1024],
      ["1kb", 1000],
      ["1KB", 1000],
      ["1M", 1024 ** 2],
      ["1m", 1024 ** 2],
      ["1MiB", 1024 ** 2],
      ["1mib", 1024 ** 2],
      ["1mb", 1_000_000],
      ["1MB", 1_000_000],
      ["1G", 1024 ** 3],
      ["2GB", 2_000_000_000],
      ["1.5MiB", 1_572_864],
      ["64 KiB", 65_536],
      [" 2MiB ", 2 * 1024 ** 2]
    ]
    for (const [input, expected] of cases) {
      assert.deepStrictEqual(Settings.parseBytes(input), Option.some(expected), input)
    }
    for (const input of ["big", "", "-1", "1.5", "1 fortnight", "1TiB1", "1e3", "KiB"]) {
      assert.isTrue(Option.isNone(Settings.parseBytes(input)), input)
    }
  })

  it.effect("range-checks, naming the variable", () =>
    Effect.gen(function*() {
      const config = Settings.bytes("MAX_HEADER_SIZE", { default: 16 * 1024, min: 1024, max: 1024 * 1024 })
      assert.strictEqual(
        yield* refusal(config, { MAX_HEADER_SIZE: "100" }),
        "invalid configuration: MAX_HEADER_SIZE: 100 is out of range; expected from 1KiB to 1MiB"
      )
      assert.match(
        yield* refusal(config, { MAX_HEADER_SIZE: "big" }),
        /^invalid configuration: MAX_HEADER_SIZE: "big" is not a size/
      )
      assert.deepStrictEqual(yield* read(config, { MAX_HEADER_SIZE: "32k" }), { value: 32 * 1024 })
    }))

  it.prop("any whole number with any unit, in any case, is that many units", {
    n: Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 1_000_000 })),
    unit: Schema.Literals(Object.keys(Settings.byteUnits)),
    caps: Schema.Array(Schema.Boolean)
  }, ({ caps, n, unit }) => {
    const spelled = [...unit].map((char, index) => caps[index] ? char.toUpperCase() : char).join("")
    assert.deepStrictEqual(
      Settings.parseBytes(`${n}${spelled}`),
      Option.some(n * Settings.byteUnits[unit]!),
      `${n}${spelled}`
    )
  })
})

describe("integers", () => {
  it.effect("range-checked, with or without a default", () =>
    Effect.gen(function*() {
      const config = Settings.int("RATE_LIMIT_MAX_KEYS", { min: 1, max: 10_000_000, default: 100_000 })
      assert.strictEqual(
        yield* refusal(config, { RATE_LIMIT_MAX_KEYS: "-1" }),
        "invalid configuration: RATE_LIMIT_MAX_KEYS: -1 is out of range; expected from 1 to 10000000"
      )
      assert.match(yield* refusal(config, { RATE_LIMIT_MAX_KEYS: "1.5" }), /"1\.5" is not a whole number/)
      assert.match(
        yield* refusal(config, { RATE_LIMIT_MAX_KEYS: "many" }),
        /^invalid configuration: RATE_LIMIT_MAX_KEYS: "many" is not a whole number$/
      )
      // Effect's environment provider reads an empty variable as unset (`X=` in an env file).
      assert.deepStrictEqual(yield* read(config, { RATE_LIMIT_MAX_KEYS: "" }), { value: 100_000 })
      assert.deepStrictEqual(yield* read(config, { RATE_LIMIT_MAX_KEYS: "10_000" }), { value: 10_000 })
      assert.deepStrictEqual(yield* read(config, {}), { value: 100_000 })
      assert.deepStrictEqual(yield* read(Settings.optionalInt("LISTEN_FD", { min: 0 }), {}), { value: Option.none() })
      assert.match(
        yield* refusal(Settings.port("PORT"), { PORT: "70000" }),
        /^invalid configuration: PORT: 70000 is out of range; expected from 0 to 65535$/
      )
    }))

  it.prop("every integer inside the bounds is accepted and every one outside refused", [
    Schema.Int.check(Schema.isBetween({ minimum: -1000, maximum: 1000 }))
  ], ([n]) => {
    const exit = Effect.runSyncExit(load(Settings.int("N", { min: -10, max: 10 }), { N: String(n) }))
    assert.strictEqual(Exit.isSuccess(exit), n >= -10 && n <= 10, String(n))
  })
})

describe("booleans and enums", () => {
  it.effect("booleans: true/false, yes/no, on/off, 1/0 in any case", () =>
    Effect.gen(function*() {
      const config = Settings.boolean("ACCESS_LOG", { default: true })
      for (const input of ["true", "TRUE", "True", "yes", "YES", "on", "On", "1", "y"]) {
        assert.deepStrictEqual(yield* read(config, { ACCESS_LOG: input }), { value: true }, input)
      }
      for (const input of ["false", "FALSE", "no", "No", "off", "OFF", "0", "n"]) {
        assert.deepStrictEqual(yield* read(config, { ACCESS_LOG: input }), { value: false }, input)
      }
      assert.match(
        yield* refusal(config, { ACCESS_LOG: "maybe" }),
        /^invalid configuration: ACCESS_LOG: "maybe" is not a boolean/
      )
    }))

  it.effect("enums in any case come back as spelled, aliases too; others are refused with the choices", () =>
    Effect.gen(function*() {
      const config = Settings.literal("RATE_LIMIT_ON_STORE_ERROR", ["open", "closed"], { default: "open" })
      assert.deepStrictEqual(yield* read(config, { RATE_LIMIT_ON_STORE_ERROR: "Closed" }), { value: "closed" })
      assert.strictEqual(
        yield* refusal(config, { RATE_LIMIT_ON_STORE_ERROR: "shut" }),
        `invalid configuration: RATE_LIMIT_ON_STORE_ERROR: "shut" is not one of open, closed`
      )
    }))

  it.prop("every case variation of every log level is accepted", {
    level: Schema.Literals(LogLevel.values),
    caps: Schema.Array(Schema.Boolean)
  }, ({ caps, level }) => {
    const spelled = [...level].map((char, index) => caps[index] ? char.toUpperCase() : char.toLowerCase()).join("")
    const config = Settings.literal("LOG_LEVEL", LogLevel.values, { default: "Info" })
    assert.deepStrictEqual(Effect.runSync(load(config, { LOG_LEVEL: spelled })), level)
  })
})

describe("loopback hosts", () => {
  it("names this machine only", () => {
    for (const host of ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST", "api.localhost"]) {
      assert.isTrue(Settings.isLoopbackHost(host), host)
    }
    for (const host of ["0.0.0.0", "::", "10.0.0.1", "example.com", "localhost.example.com", "128.0.0.1"]) {
      assert.isFalse(Settings.isLoopbackHost(host), host)
    }
  })
})
