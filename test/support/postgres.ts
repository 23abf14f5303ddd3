/**
 * A private PostgreSQL for tests, from the same npm binaries the server embeds, in a temporary
 * directory on a free port, so a test can SIGKILL, SIGSTOP and restart it.
 */
import { Duration, Effect, Redacted, Scope } from "effect"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as EmbeddedPostgres from "../../src/kit/internal/EmbeddedPostgres.ts"

export const makeTempDir = (prefix: string) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), prefix))
      // PostgreSQL runs as an unprivileged user when we are root: it must reach its data directory.
      Fs.chmodSync(dir, 0o755)
      return dir
    }),
    (dir) => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true }))
  )

export const optionsFor = (dataDir: string, port = 0): EmbeddedPostgres.Options => ({
  dataDir,
  port,
  user: EmbeddedPostgres.defaultUser,
  startTimeout: Duration.seconds(60),
  stopTimeout: Duration.seconds(3)
})

/** The postmaster and its children, from /proc. */
const serverPids = (postmaster: number): Array<number> => {
  const children = Fs.readdirSync("/proc").filter((entry) => /^\d+$/.test(entry)).map(Number).filter((pid) => {
    try {
      return Number(Fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ")[1]) === postmaster
    } catch {
      return false
    }
  })
  return [postmaster, ...children]
}

/** A backend listed a moment ago may have exited since (ESRCH): it is past signalling. */
const killIfAlive = (pid: number, signal: NodeJS.Signals) => {
  try {
    process.kill(pid, signal)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ESRCH") throw error
  }
}

/** A running private server with handles to break it; everything stops with the scope. */
export const privatePostgres = Effect.gen(function*() {
  const scope = yield* Effect.scope
  const root = yield* makeTempDir("scoped-server-pg-")
  const dataDir = Path.join(root, "data")
  let instance = yield* EmbeddedPostgres.start(optionsFor(dataDir))
  const port = instance.port
  const urlFor = (database: string) =>
    Redacted.make(`postgres://postgres@localhost:${port}/${database}?host=${encodeURIComponent(instance.socketDir)}`)
  return {
    dataDir,
    port,
    url: instance.url,
    urlFor,
    env: (database = "postgres") => ({ DATABASE_URL: Redacted.value(urlFor(database)) }),
    pid: () => instance.pid,
    /** Signals the whole server: the postmaster and every backend (backends setsid, so not by group). */
    signal: (signal: NodeJS.Signals) =>
      Effect.sync(() => serverPids(instance.pid).forEach((pid) => killIfAlive(pid, signal))),
    /** SIGKILL the whole server and wait until the postmaster is gone. */
    kill: Effect.callback<void>((resume) => {
      instance.process.once("exit", () => resume(Effect.void))
      serverPids(instance.pid).forEach((pid) => killIfAlive(pid, "SIGKILL"))
    }),
    /** Start again on the same data and port (after `kill`, this is crash recovery). */
    restart: Effect.gen(function*() {
      instance = yield* EmbeddedPostgres.start(optionsFor(dataDir, port)).pipe(Scope.provide(scope))
    })
  }
})
