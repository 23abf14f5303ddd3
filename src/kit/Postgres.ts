/**
 * The Postgres pool as a scoped Layer: proven at startup, migrated, health-checked, and with the
 * checkout timeout @effect/sql-pg lacks. DATABASE_URL, or the embedded server when it is unset.
 */
import * as NodeServices from "@effect/platform-node/NodeServices"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as PgConnection from "@effect/sql-pg/PgConnection"
import * as PgMigrator from "@effect/sql-pg/PgMigrator"
import {
  Cause,
  Config,
  Context,
  Deferred,
  Duration,
  Effect,
  Exit,
  Layer,
  Option,
  Queue,
  Redacted,
  Schedule,
  Schema,
  type Scope,
  Semaphore,
  Stream
} from "effect"
import * as HttpServerRespondable from "effect/http/HttpServerRespondable"
import * as Reactivity from "effect/reactivity/Reactivity"
import { SqlClient } from "effect/sql/SqlClient"
import { SqlError } from "effect/sql/SqlError"
import { EmbeddedPostgres, type EmbeddedPostgresError } from "./EmbeddedPostgres.ts"
import { Health } from "./Health.ts"
import { observe } from "./internal/metrics/Registry.ts"
import * as Lifecycle from "./Lifecycle.ts"
import { describeError } from "./Log.ts"
import { errorResponse } from "./Problem.ts"
import { duration, int } from "./Settings.ts"

/** The Postgres pool. */
export const PostgresConfig = Config.all({
  /** Unset: the embedded server (EmbeddedPostgres.ts). */
  url: Config.option(Config.Redacted("DATABASE_URL")),
  poolSize: int("DB_POOL_SIZE", { min: 1, max: 1000, default: 10 }),
  connectTimeout: duration("DB_CONNECT_TIMEOUT", { default: "10 seconds", min: "100 millis", max: "10 minutes" }),
  statementTimeout: duration("DB_STATEMENT_TIMEOUT", { default: "30 seconds", min: "10 millis", max: "1 day" }),
  acquireTimeout: duration("DB_ACQUIRE_TIMEOUT", { default: "5 seconds", min: "1 millis", max: "10 minutes" }),
  checkTimeout: duration("DB_HEALTH_TIMEOUT", { default: "1 second", min: "10 millis", max: "1 minute" }),
  applicationName: Config.String("DB_APPLICATION_NAME").pipe(Config.withDefault("scoped-server"))
})
export type PostgresSettings = Config.Success<typeof PostgresConfig>

/**
 * The schema as PgMigrator migrations, keyed `<id>_<name>` (`0001_create_items`): run at startup
 * in id order, each once. Add one by adding an entry; never edit one that has shipped.
 */
export type Migrations = Record<string, Effect.Effect<void, unknown, SqlClient>>

export interface PostgresOptions {
  readonly migrations?: Migrations
}

export class PostgresError extends Schema.TaggedError<PostgresError>()("PostgresError", {
  reason: Schema.Literals(["Unreachable", "AcquireTimeout", "MigrationFailed"]),
  message: Schema.String
}, { httpApiStatus: 503 }) {
  /** What a client is told: unavailable, try again shortly; the details stay in the server's log. */
  [HttpServerRespondable.symbol]() {
    return Effect.succeed(errorResponse(
      503,
      this.reason === "AcquireTimeout" ? "the database is busy; try again" : "the database is unavailable; try again",
      { "retry-after": "1" }
    ))
  }
}

/** `postgres://user@host:port/db`, never the password. */
export const describeUrl = (url: Redacted.Redacted): string => {
  try {
    const parsed = new URL(Redacted.value(url))
    // A `host` parameter (a socket directory, as the embedded server's URL has) wins over the authority.
    return `${parsed.username ? `${decodeURIComponent(parsed.username)}@` : ""}${
      parsed.searchParams.get("host") ?? parsed.hostname
    }:${parsed.port || 5432}${parsed.pathname}`
  } catch {
    return "(unparseable DATABASE_URL)"
  }
}

/**
 * What a LISTEN hears: a notification's payload, or that its connection was lost and listens
 * again, so whatever was sent in between was missed (a listener should resynchronise).
 */
export type Heard =
  | { readonly _tag: "Notification"; readonly payload: string }
  | { readonly _tag: "Resumed"; readonly downMs: number }

interface Service {
  readonly sql: PgClient.PgClient
  /**
   * Runs `effect` holding one of the pool's connections' worth of admission: waiting longer than
   * DB_ACQUIRE_TIMEOUT fails with PostgresError (503) instead of hanging the request.
   */
  readonly use: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E | PostgresError, R>
  /**
   * LISTEN on `channel` for the life of the scope, on a connection of its own (not one of
   * DB_POOL_SIZE's: a held pool connection would leave requests one short of their admission
   * count). Succeeds once PostgreSQL has confirmed the LISTEN; a lost connection is logged,
   * reopened with backoff, and reported in the stream as `Resumed`. Released (UNLISTEN, then
   * the connection closed) as `releasing listen <channel>`, bounded.
   */
  readonly listen: (channel: string) => Effect.Effect<Stream.Stream<Heard>, PostgresError, Scope.Scope>
}

const make = Effect.fnUntraced(function*(url: Redacted.Redacted, settings: PostgresSettings, options: PostgresOptions) {
  const target = describeUrl(url)
  const migrations = options.migrations ?? {}
  const latestMigration = Math.max(0, ...Object.keys(migrations).map((key) => Number.parseInt(key, 10)))

  const [sql, checkSql] = yield* Lifecycle.resource(
    "postgres",
    Effect.all([
      PgClient.make({
        url,
        maxConnections: settings.poolSize,
        connectTimeout: settings.connectTimeout,
        applicationName: settings.applicationName,
        startupParameters: { statement_timeout: String(Duration.toMillis(settings.statementTimeout)) }
      }),
      // The health check's own connection, outside the pool: a pool saturated by slow requests
      // is busy, not down, and a probe queued behind them would take every replica out of the
      // load balancer at once. One connection per replica; it reconnects when next used after a
      // loss and idles out after a few minutes without probes.
      PgClient.make({
        url,
        maxConnections: 1,
        idleTimeout: "5 minutes",
        connectTimeout: settings.checkTimeout,
        applicationName: settings.applicationName,
        startupParameters: { statement_timeout: String(Duration.toMillis(settings.checkTimeout)) }
      })
    ]).pipe(
      Effect.provide(Reactivity.layer),
      Effect.mapError((cause) =>
        new PostgresError({
          reason: "Unreachable",
          message: `cannot open a pool to ${target}: ${describeError(cause)}`
        })
      )
    )
  )

  // PgClient connects lazily: prove the database answers before we call ourselves ready. A
  // server still starting or not yet listening is retried; one that refused us for a reason
  // that will not change by waiting (credentials, database name, TLS) stops startup at once.
  let lastError: unknown
  yield* sql`SELECT 1`.pipe(
    Effect.tapError((error) =>
      Effect.sync(() => {
        lastError = error
      })
    ),
    Effect.retry({ schedule: Schedule.spaced("250 millis"), while: (error) => !isPermanent(error) }),
    Effect.timeoutOrElse({
      duration: settings.connectTimeout,
      orElse: () =>
        Effect.fail(
          new Error(
            `no answer within ${Duration.toMillis(settings.connectTimeout)}ms${
              lastError === undefined ? "" : `; last error: ${describeSqlError(lastError)}`
            }`
          )
        )
    }),
    Effect.mapError((cause) =>
      new PostgresError({
        reason: "Unreachable",
        message: `cannot reach postgres at ${target}: ${describeSqlError(cause)}`
      })
    )
  )

  // Every start but the first finds the schema current: one read, no transaction, no lock.
  const applied = yield* sql<
    { readonly id: number }
  >`SELECT COALESCE(max(migration_id), 0)::int AS id FROM effect_sql_migrations`.pipe(
    Effect.map(([row]) => row?.id ?? 0),
    Effect.orElseSucceed(() => 0)
  )
  // Replicas starting together queue on one advisory lock; the migrator's own table lock
  // does not cover creating that table.
  if (applied < latestMigration) {
    yield* sql.withTransaction(
      Effect.andThen(
        sql`SELECT pg_advisory_xact_lock(${migrationLockKey})`,
        PgMigrator.run({ loader: PgMigrator.fromRecord(migrations) })
      )
    ).pipe(
      Effect.provide(NodeServices.layer),
      Effect.provideService(PgClient.PgClient, sql),
      Effect.provideService(SqlClient, sql),
      Effect.mapError((cause) =>
        new PostgresError({
          reason: "MigrationFailed",
          message: `migrations failed on ${target}: ${describeError(cause)}`
        })
      )
    )
  }

  const health = yield* Health
  yield* health.register("database", checkSql`SELECT 1`, { timeout: settings.checkTimeout })

  const admission = yield* Semaphore.make(settings.poolSize)
  const acquireTimeoutMs = Duration.toMillis(settings.acquireTimeout)
  const timedOut = new PostgresError({
    reason: "AcquireTimeout",
    message: `no database connection free within ${acquireTimeoutMs}ms`
  })
  // A free permit is taken at once, with no timer; otherwise the request queues behind earlier
  // waiters (first come, first served) for at most DB_ACQUIRE_TIMEOUT. Only that wait is
  // interruptible (so the timeout can cut it); a permit once taken is always given back.
  let waiting = 0
  let timeouts = 0
  yield* poolMetrics(settings.poolSize, admission, () => waiting, () => timeouts)
  const wait = (restore: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>) =>
    Effect.suspend(() => {
      waiting++
      return restore(admission.take(1)).pipe(
        Effect.timeoutOrElse({
          duration: settings.acquireTimeout,
          orElse: () => Effect.suspend(() => (timeouts++, Effect.fail(timedOut)))
        }),
        Effect.ensuring(Effect.sync(() => waiting--))
      )
    })
  const release = admission.release(1)
  // A lost connection is the database being unavailable (503), not a bug in the request (500).
  const lost = <E>(error: E): E | PostgresError =>
    error instanceof SqlError && error.reason._tag === "ConnectionError"
      ? new PostgresError({
        reason: "Unreachable",
        message: `lost the connection to ${target}: ${describeError(error)}`
      })
      : error
  // Every request pays for this: the permit's release is one exit hook (not `ensuring`'s extra
  // fiber step), and the queue check is made where the mask runs (no suspend). 1.06 → 0.75 µs.
  const use = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | PostgresError, R> =>
    Effect.uninterruptibleMask((restore) => {
      const run = Effect.onExitPrimitive(restore(effect), () => release, true)
      const admitted = waiting === 0
        ? Effect.flatMap(admission.takeIfAvailable(1), (taken) => taken ? run : Effect.andThen(wait(restore), run))
        : Effect.andThen(wait(restore), run)
      return Effect.mapError(admitted, lost)
    })
  const lifecycle = yield* Lifecycle.Lifecycle
  const listen = (channel: string) =>
    listenOn(url, settings, target, channel).pipe(Effect.provideService(Lifecycle.Lifecycle, lifecycle))
  yield* Effect.logInfo("postgres ready").pipe(Effect.annotateLogs({ database: target, poolSize: settings.poolSize }))
  const service: Service = { sql, use, listen }
  return service
})

/** Reconnection delays after a lost LISTEN: quick at first, then no more than one attempt a few seconds. */
const relistenDelay = (attempt: number) => Math.min(5_000, 100 * 2 ** attempt)

const listenOn = (url: Redacted.Redacted, settings: PostgresSettings, target: string, channel: string) =>
  Lifecycle.resource(
    `listen ${channel}`,
    Effect.gen(function*() {
      const config: PgConnection.Config = {
        url,
        connectTimeout: settings.connectTimeout,
        applicationName: settings.applicationName,
        // The session only ever receives: without probes a peer gone silently (a dropped NAT
        // entry, a host powered off) would leave it waiting forever.
        keepAlive: "30 seconds"
      }
      // Nothing is dropped here (the session's own queue is unbounded too): what to shed when a
      // reader falls behind is the reader's decision.
      const heard = yield* Queue.unbounded<Heard>()
      const first = yield* Deferred.make<void, unknown>()
      /** One session: LISTEN, then every notification into `heard` until the connection fails. */
      const session = (listening: Effect.Effect<void>) =>
        Effect.scoped(Effect.gen(function*() {
          const connection = yield* PgConnection.make(config)
          const notifications = yield* connection.listen(channel)
          yield* listening
          return yield* Effect.forever(
            Effect.flatMap(
              Queue.takeAll(notifications),
              (batch) => Queue.offerAll(heard, batch.map((n): Heard => ({ _tag: "Notification", payload: n.payload })))
            )
          )
        }))
      const lost = (exit: Exit.Exit<unknown, unknown>) =>
        Effect.logWarning(`postgres listen lost: notifications on ${channel} are missed until it is back`).pipe(
          Effect.annotateLogs({
            channel,
            database: target,
            error: Exit.isFailure(exit) ? describeSqlError(Cause.squash(exit.cause)) : "ended"
          })
        )
      const now = Effect.clockWith((clock) => clock.currentTimeMillis)
      yield* Effect.forkScoped(Effect.gen(function*() {
        // A session ends only by failing: before its LISTEN was confirmed, the first one fails startup.
        const opened = yield* Effect.exit(session(Deferred.done(first, Exit.void)))
        if (!(yield* Deferred.isDone(first))) return yield* Deferred.done(first, opened)
        yield* lost(opened)
        let lostAt = yield* now
        let attempt = 0
        while (true) {
          yield* Effect.sleep(relistenDelay(attempt++))
          let listening = false
          const resumed = Effect.gen(function*() {
            listening = true
            attempt = 0
            const downMs = (yield* now) - lostAt
            yield* Effect.logInfo("postgres listen resumed").pipe(Effect.annotateLogs({ channel, downMs }))
            yield* Queue.offer(heard, { _tag: "Resumed", downMs })
          })
          const exit = yield* Effect.exit(session(resumed))
          if (listening) {
            yield* lost(exit)
            lostAt = yield* now
          }
        }
      }))
      yield* Deferred.await(first).pipe(
        Effect.timeoutOrElse({
          duration: settings.connectTimeout,
          orElse: () => Effect.fail(new Error(`no LISTEN within ${Duration.toMillis(settings.connectTimeout)}ms`))
        }),
        Effect.mapError((cause) =>
          new PostgresError({
            reason: "Unreachable",
            message: `cannot listen on ${channel} at ${target}: ${describeSqlError(cause)}`
          })
        )
      )
      return Stream.fromQueue(heard)
    })
  )

/**
 * The pool as OTel's `db.client.connection.*` metrics, read on a scrape from the admission
 * semaphore every request already passes: a permit held is a connection in use, a free one is a
 * connection the pool holds idle or would open on demand (both within DB_POOL_SIZE).
 */
const poolMetrics = (
  poolSize: number,
  admission: Semaphore.Semaphore,
  waiting: () => number,
  timeouts: () => number
) =>
  Effect.gen(function*() {
    // SemaphoreImpl keeps its count in `taken`; read directly, a scrape costs no fiber.
    const used = () => (admission as unknown as { readonly taken: number }).taken
    // db.client.connection.count maps to `_count`, which Prometheus reserves for histograms and
    // summaries (promtool refuses it on a gauge): the semconv's earlier name, connections.usage.
    const count = "Connections by state (db.client.connection.count): used = checked out, idle = free slots."
    yield* observe("db_client_connections_usage", count, used, { attributes: { state: "used" } })
    yield* observe("db_client_connections_usage", count, () => poolSize - used(), { attributes: { state: "idle" } })
    yield* observe("db_client_connection_max", "DB_POOL_SIZE (db.client.connection.max).", () => poolSize)
    yield* observe(
      "db_client_connection_pending_requests",
      "Requests waiting for a connection (db.client.connection.pending_requests).",
      waiting
    )
    yield* observe(
      "db_client_connection_timeouts_total",
      "Waits for a connection that exceeded DB_ACQUIRE_TIMEOUT (db.client.connection.timeouts).",
      timeouts,
      { counter: true }
    )
  })

export class Postgres extends Context.Service<Postgres, Service>()("scoped-server/Postgres") {
  /**
   * The pool on `settings.url` when set; otherwise the embedded server, which comes up before
   * the pool and goes down after it.
   */
  static readonly layer = (
    settings: PostgresSettings,
    options: PostgresOptions = {}
  ): Layer.Layer<Postgres, PostgresError | EmbeddedPostgresError | Config.ConfigError, Lifecycle.Lifecycle | Health> =>
    Option.isSome(settings.url)
      ? Layer.effect(Postgres, make(settings.url.value, settings, options))
      : Layer.effect(
        Postgres,
        Effect.gen(function*() {
          const embedded = yield* EmbeddedPostgres
          return yield* make(embedded.url, settings, options)
        })
      ).pipe(Layer.provide(EmbeddedPostgres.layerConfig))

  /** `layer` with the settings read from the environment (`PostgresConfig`). */
  static readonly layerConfig = (options: PostgresOptions = {}) =>
    Layer.unwrap(Effect.map(PostgresConfig, (settings) => Postgres.layer(settings, options)))
}

/** SQLSTATE and TLS failures that retrying cannot fix: the server answered, and the answer was no. */
const permanentCodes = new Set([
  "28000", // invalid_authorization_specification: no pg_hba.conf entry (e.g. TLS required), role cannot log in
  "28P01", // invalid_password
  "3D000", // invalid_catalog_name: the database does not exist
  "42501" // insufficient_privilege: no CONNECT on the database
])

/** The SQLSTATE of a failed query or connection, wherever the library put it. */
const sqlState = (error: unknown): string | undefined => {
  for (let current = error, depth = 0; typeof current === "object" && current !== null && depth < 4; depth++) {
    const code = (current as { code?: unknown }).code
    if (typeof code === "string" && /^[0-9A-Z]{5}$/.test(code)) return code
    current = (current as { reason?: unknown }).reason ?? (current as { cause?: unknown }).cause
  }
  return undefined
}

const isPermanent = (error: unknown): boolean => {
  const code = sqlState(error)
  if (code !== undefined) return permanentCodes.has(code)
  // The server refused TLS, or its certificate does not verify: the same on every attempt.
  return /refused TLS|does not support TLS|certificate|self[- ]signed/i.test(describeError(error))
}

/** pg's own words with its SQLSTATE (`28P01 password authentication failed for user "x"`). */
const describeSqlError = (error: unknown): string => {
  const code = sqlState(error)
  let innermost = error
  for (let depth = 0; depth < 4; depth++) {
    const next = (innermost as { reason?: unknown; cause?: unknown } | null)?.reason ??
      (innermost as { cause?: unknown } | null)?.cause
    if (typeof next !== "object" || next === null) break
    innermost = next
  }
  const message = describeError(innermost)
  return code === undefined || message.startsWith(code) ? message : `${code} ${message}`
}

/** The advisory lock replicas queue on while one migrates. */
export const migrationLockKey = 0x5ca0ed5e
