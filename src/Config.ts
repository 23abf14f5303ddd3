/**
 * Every setting in one place: the environment variable, its default, its validation.
 * A bad value stops startup with a ConfigError that names the variable.
 */
import { Config, Duration, Effect, Option, Schema, SchemaIssue, SchemaTransformation } from "effect"

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

const duration = (name: string, fallback: Duration.Input) =>
  Config.schema(DurationString, name).pipe(Config.withDefault(Duration.fromInputUnsafe(fallback)))

const bytes = (name: string, fallback: number) =>
  Config.ByteSize(name).pipe(
    Config.map(Number),
    Config.withDefault(fallback)
  )

/** Like Config.Port, but 0 picks a free port (the `listening` log line names it). */
const port = (name: string) => Config.schema(Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 65535 })), name)

const optionalInt = (name: string) => Config.option(Config.Int(name))

/** How the process starts, drains and stops. */
export const lifecycle = Config.all({
  /** Serve normally after the signal (readiness already 503) so load balancers notice. */
  drainDelay: duration("DRAIN_DELAY", 0),
  /** The whole shutdown budget, signal to exit. */
  shutdownTimeout: duration("SHUTDOWN_TIMEOUT", "25 seconds"),
  /** An idle keep-alive socket is closed only after this long with no request on it. */
  quietWindow: duration("DRAIN_QUIET_WINDOW", 300),
  /** Default bound on each resource's release. */
  releaseTimeout: duration("RELEASE_TIMEOUT", "5 seconds")
})
export type LifecycleSettings = Config.Success<typeof lifecycle>

/** Where the HTTP servers listen, and the limits on what clients may send. */
export const http = Config.all({
  port: port("PORT").pipe(Config.withDefault(3000)),
  host: Config.option(Config.NonEmptyString("HOST")),
  /** A listening socket inherited from the parent process (e.g. during an upgrade). */
  listenFd: optionalInt("LISTEN_FD"),
  /** systemd socket activation: fds from 3, only when LISTEN_PID is this process. */
  systemdFds: optionalInt("LISTEN_FDS"),
  systemdPid: optionalInt("LISTEN_PID"),
  adminPort: Config.option(port("ADMIN_PORT")),
  adminHost: Config.option(Config.NonEmptyString("ADMIN_HOST")),
  headersTimeout: duration("HEADERS_TIMEOUT", "10 seconds"),
  requestTimeout: duration("REQUEST_TIMEOUT", "30 seconds"),
  keepAliveTimeout: duration("KEEP_ALIVE_TIMEOUT", "5 seconds"),
  maxBodySize: bytes("MAX_BODY_SIZE", 1024 * 1024),
  maxHeaderSize: bytes("MAX_HEADER_SIZE", 16 * 1024),
  debugRoutes: Config.Boolean("DEBUG_ROUTES").pipe(Config.withDefault(false))
})
export type HttpSettings = Config.Success<typeof http>

/** Health probes. */
export const health = Config.all({
  /** Default timeout of one check; a Layer may give its check its own. */
  checkTimeout: duration("HEALTH_CHECK_TIMEOUT", "2 seconds")
})

/** The Postgres pool. */
export const postgres = Config.all({
  /** Unset: the embedded server below. */
  url: Config.option(Config.Redacted("DATABASE_URL")),
  poolSize: Config.Int("DB_POOL_SIZE").pipe(Config.withDefault(10)),
  connectTimeout: duration("DB_CONNECT_TIMEOUT", "10 seconds"),
  statementTimeout: duration("DB_STATEMENT_TIMEOUT", "30 seconds"),
  acquireTimeout: duration("DB_ACQUIRE_TIMEOUT", "5 seconds"),
  checkTimeout: duration("DB_HEALTH_TIMEOUT", "1 second"),
  applicationName: Config.String("DB_APPLICATION_NAME").pipe(Config.withDefault("scoped-server"))
})

/** The embedded PostgreSQL started when DATABASE_URL is not set. */
export const embeddedPostgres = Config.all({
  dataDir: Config.NonEmptyString("EMBEDDED_POSTGRES_DIR").pipe(Config.withDefault(".data/postgres")),
  /** 0 picks a free port. */
  port: port("EMBEDDED_POSTGRES_PORT").pipe(Config.withDefault(0)),
  /** PostgreSQL refuses to run as root; when we are root it runs as this user. */
  user: Config.NonEmptyString("EMBEDDED_POSTGRES_USER").pipe(Config.withDefault("nobody")),
  startTimeout: duration("EMBEDDED_POSTGRES_START_TIMEOUT", "60 seconds"),
  stopTimeout: duration("EMBEDDED_POSTGRES_STOP_TIMEOUT", "3 seconds")
})

/** Bearer JWTs for the API: HS256 with a shared secret, or a JWKS URL. */
export const auth = Config.all({
  /** Unset (and no JWKS_URL): a development secret kept in `.data/jwt-secret`, which `npm run token` also reads. */
  secret: Config.option(Config.schema(Schema.Redacted(Schema.NonEmptyString), "JWT_SECRET")),
  jwksUrl: Config.option(Config.URL("JWKS_URL")),
  issuer: Config.option(Config.NonEmptyString("JWT_ISSUER")),
  audience: Config.option(Config.NonEmptyString("JWT_AUDIENCE")),
  devSecretFile: Config.NonEmptyString("JWT_DEV_SECRET_FILE").pipe(Config.withDefault(".data/jwt-secret")),
  /** Verified tokens remembered (0: verify every request); failures are never remembered. */
  cacheSize: Config.schema(Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)), "JWT_CACHE_SIZE").pipe(
    Config.withDefault(10_000)
  ),
  /** The longest a verified token is remembered: a key dropped from the JWKS stops working within it. */
  cacheTtl: duration("JWT_CACHE_TTL", "1 minute")
})

/** What every response carries and who may call from a browser. */
export const web = Config.all({
  accessLog: Config.Boolean("ACCESS_LOG").pipe(Config.withDefault(true)),
  /** Comma-separated origins allowed by CORS; empty: no cross-origin access. `*` allows any. */
  corsOrigins: Config.String("CORS_ORIGINS").pipe(
    Config.withDefault(""),
    Config.map((value) => value.split(",").map((origin) => origin.trim()).filter((origin) => origin.length > 0))
  ),
  /** Comma-separated proxy addresses whose X-Forwarded-For is believed for the client IP. */
  trustedProxies: Config.String("TRUSTED_PROXIES").pipe(
    Config.withDefault(""),
    Config.map((value) => value.split(",").map((address) => address.trim()).filter((address) => address.length > 0))
  )
})

export const logLevel = Config.LogLevel("LOG_LEVEL").pipe(Config.withDefault("Info" as const))

export type ConfigError = Config.ConfigError

/** Redis; unset REDIS_URL means in-memory stores. */
export const redis = Config.all({
  url: Config.option(Config.Redacted("REDIS_URL")),
  connectTimeout: duration("REDIS_CONNECT_TIMEOUT", "5 seconds"),
  /** A command on a hung server fails after this instead of holding the request. */
  commandTimeout: duration("REDIS_COMMAND_TIMEOUT", "1 second"),
  checkTimeout: duration("REDIS_HEALTH_TIMEOUT", "500 millis"),
  keyPrefix: Config.String("REDIS_KEY_PREFIX").pipe(Config.withDefault("scoped-server:"))
})

/** Response caching (Redis when configured, else a bounded in-memory store). */
export const cache = Config.all({
  ttl: duration("CACHE_TTL", "30 seconds"),
  /** The in-memory store's bound; the least recently written entries go first. */
  maxEntries: Config.Int("CACHE_MAX_ENTRIES").pipe(Config.withDefault(10_000))
})

/** Rate limiting per client (Redis when configured, else a bounded in-memory store). */
export const rateLimit = Config.all({
  limit: Config.Int("RATE_LIMIT").pipe(Config.withDefault(100)),
  window: duration("RATE_LIMIT_WINDOW", "1 minute"),
  /** When the store cannot answer: `open` lets the request through, `closed` refuses it (503). */
  onStoreError: Config.Literals(["open", "closed"], "RATE_LIMIT_ON_STORE_ERROR").pipe(Config.withDefault("open" as const)),
  maxKeys: Config.Int("RATE_LIMIT_MAX_KEYS").pipe(Config.withDefault(100_000))
})
