/**
 * A private PostgreSQL for tests, from the same npm binaries the server embeds, in a temporary
 * directory on a free port, so a test can SIGKILL, SIGSTOP and restart it.
 */
import { Duration, Effect, Redacted } from "effect"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as EmbeddedPostgres from "../../src/EmbeddedPostgres.ts"

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
  user: "nobody",
  startTimeout: Duration.seconds(60),
  stopTimeout: Duration.seconds(3)
})

/** A running private server with handles to break it; everything stops with the scope. */
export const privatePostgres = Effect.gen(function*() {
  const root = yield* makeTempDir("scoped-server-pg-")
  const dataDir = Path.join(root, "data")
  let instance = yield* EmbeddedPostgres.start(optionsFor(dataDir))
  const port = instance.port
  const urlFor = (database: string) => Redacted.make(`postgres://postgres@127.0.0.1:${port}/${database}`)
  return {
    dataDir,
    port,
    url: instance.url,
    urlFor,
    env: (database = "postgres") => ({ DATABASE_URL: Redacted.value(urlFor(database)) }),
    pid: () => instance.pid,
    signal: (signal: NodeJS.Signals) => Effect.sync(() => process.kill(instance.pid, signal)),
    /** SIGKILL the postmaster and wait until it is gone (its backends follow). */
    kill: Effect.callback<void>((resume) => {
      instance.process.once("exit", () => resume(Effect.void))
      process.kill(instance.pid, "SIGKILL")
    }),
    /** Start again on the same data and port (after `kill`, this is crash recovery). */
    restart: Effect.gen(function*() {
      instance = yield* EmbeddedPostgres.start(optionsFor(dataDir, port))
    })
  }
})
