/**
 * What a service's own tests import: the application graph on a free port with its settings
 * from a map (and a fresh database of its own), a client with the base URL set, a token minter,
 * the vitest globalSetup that starts one PostgreSQL per run when a test first asks, and a signal
 * harness for in-process lifecycle tests on TestClock.
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import {
  ConfigProvider,
  Context,
  Duration,
  Effect,
  Exit,
  Layer,
  Logger,
  Queue,
  Redacted,
  References,
  Scope
} from "effect"
import * as Reactivity from "effect/reactivity/Reactivity"
import * as Jose from "jose"
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Os_ from "node:os"
import * as Path from "node:path"
import { inject } from "vitest"
import type { TestProject } from "vitest/node"
import { HttpServer } from "./HttpServer.ts"
import * as EmbeddedPostgres from "./internal/EmbeddedPostgres.ts"
import { type Crash, Lifecycle, Os, runEffect, type Signal } from "./Lifecycle.ts"
import * as Log from "./Log.ts"

declare module "vitest" {
  export interface ProvidedContext {
    /** The socket on which the globalSetup hands out the run's PostgreSQL (see `globalSetup`). */
    "scoped-server/testDatabase": string
  }
}

export class TestServer extends Context.Service<TestServer, {
  readonly port: number
  /** `http://127.0.0.1:<port>` */
  readonly url: string
  /** The settings the server started with: `defaults`, then `env` (and `DATABASE_URL` with `layerDatabase`). */
  readonly env: Readonly<Record<string, string>>
  /** `fetch` against the server: `path` is relative to `url`; `token` sets a Bearer header. */
  readonly fetch: (path: string, init?: RequestInit & { readonly token?: string | undefined }) => Promise<Response>
}>()("scoped-server/testing/TestServer") {}

/** The settings every test server starts with; `env` overrides them. */
export const defaults: Readonly<Record<string, string>> = {
  PORT: "0",
  HOST: "127.0.0.1",
  ACCESS_LOG: "false",
  LOG_LEVEL: "Warn"
}

/**
 * `main` (a graph that includes `HttpServer`) served on a free loopback port under
 * `Lifecycle.layerTest`, its settings from `env` over `defaults`, logging at their `LOG_LEVEL`
 * and `LOG_FORMAT` as the server would: releasing the layer releases the graph exactly as a
 * signal would. Provides `TestServer` and whatever `main` provides.
 */
export const layer = <A, E>(main: Layer.Layer<A, E, Lifecycle>, env: Record<string, string> = {}) => {
  const settings = { ...defaults, ...env }
  return Layer.effect(
    TestServer,
    Effect.gen(function*() {
      const { port } = yield* HttpServer
      const url = `http://127.0.0.1:${port}`
      return {
        port,
        url,
        env: settings,
        fetch: (path, init = {}) => {
          const { token, ...rest } = init
          const headers = new Headers(rest.headers)
          if (token !== undefined) headers.set("authorization", `Bearer ${token}`)
          return fetch(`${url}${path}`, { ...rest, headers })
        }
      }
    })
  ).pipe(
    Layer.provideMerge(main as Layer.Layer<A | HttpServer, E, Lifecycle>),
    Layer.provide(Lifecycle.layerTest),
    Layer.provide(Log.layerConfig),
    Layer.provide(ConfigProvider.layer(ConfigProvider.fromUnknown(settings)))
  )
}

/**
 * `layer`, on a new empty database of its own (`freshDatabase`): the app migrates it as it
 * starts, and no other test sees its rows. `TestServer.env.DATABASE_URL` names it.
 */
export const layerDatabase = <A, E>(main: Layer.Layer<A, E, Lifecycle>, env: Record<string, string> = {}) =>
  Layer.unwrap(Effect.map(freshDatabase, (url) => layer(main, { ...env, DATABASE_URL: url })))

// ---------------------------------------------------------------------------------------------
// the run's PostgreSQL
// ---------------------------------------------------------------------------------------------

/**
 * vitest's globalSetup for tests that need PostgreSQL: list a file that re-exports it as its
 * default (`export { globalSetup as default } from ".../kit/testing.ts"`) under `globalSetup` in
 * vitest.config. Nothing starts until a test asks (`freshDatabase`, `databaseServer`): then one
 * embedded PostgreSQL starts for the whole run (or, with `DATABASE_URL` set when the run starts,
 * that server is used: it must let its user CREATE DATABASE), and stops when the run ends.
 */
export const globalSetup = async (project: TestProject) => {
  const root = Fs.mkdtempSync(Path.join(Os_.tmpdir(), "scoped-server-tests-"))
  // PostgreSQL runs as its own account when the tests run as root: it must reach its data directory.
  Fs.chmodSync(root, 0o755)
  const scope = Effect.runSync(Scope.make())
  const external = process.env.DATABASE_URL
  let server: Promise<string> | undefined
  const ensure = () =>
    server ??= external !== undefined && external !== ""
      ? Promise.resolve(external)
      : Effect.runPromise(
        EmbeddedPostgres.start({
          dataDir: Path.join(root, "data"),
          port: 0,
          user: EmbeddedPostgres.defaultUser,
          startTimeout: Duration.seconds(60),
          stopTimeout: Duration.seconds(3)
        }).pipe(Scope.provide(scope), Effect.map((instance) => Redacted.value(instance.url)))
      )
  const socketPath = Path.join(root, "database.sock")
  const handout = Net.createServer((socket) => {
    socket.on("error", () => {})
    ensure().then(
      (url) => socket.end(JSON.stringify({ url }) + "\n"),
      (error: unknown) => socket.end(JSON.stringify({ error: String(error) }) + "\n")
    )
  })
  await new Promise<void>((resolve) => handout.listen(socketPath, resolve))
  project.provide("scoped-server/testDatabase", socketPath)
  return async () => {
    await new Promise<void>((resolve) => handout.close(() => resolve()))
    await Effect.runPromise(Scope.close(scope, Exit.void))
    Fs.rmSync(root, { recursive: true, force: true })
  }
}

let serverUrl: Promise<string> | undefined

const askForServer = (): Promise<string> =>
  new Promise((resolve, reject) => {
    let socketPath: string
    try {
      socketPath = inject("scoped-server/testDatabase")
    } catch (error) {
      return reject(error)
    }
    if (socketPath === undefined) {
      return reject(
        new Error("no test database: add the kit's globalSetup to vitest.config (see Testing.globalSetup)")
      )
    }
    let answer = ""
    Net.connect(socketPath)
      .setEncoding("utf8")
      .on("data", (chunk: string) => void (answer += chunk))
      .on("error", reject)
      .on("end", () => {
        const parsed = JSON.parse(answer) as { readonly url?: string; readonly error?: string }
        if (parsed.url !== undefined) resolve(parsed.url)
        else reject(new Error(`the test database did not start: ${parsed.error}`))
      })
  })

/**
 * The URL of the run's PostgreSQL server (its `postgres` database), started on the first call
 * of the run. Tests that share it must not step on each other's rows; most want `freshDatabase`.
 */
export const databaseServer: Effect.Effect<string> = Effect.promise(() => serverUrl ??= askForServer())

/** A new empty database on the run's server (a random name), for one test layer. */
export const freshDatabase: Effect.Effect<string> = Effect.gen(function*() {
  const base = yield* databaseServer
  const name = `test_${Crypto.randomBytes(6).toString("hex")}`
  yield* Effect.scoped(Effect.gen(function*() {
    const sql = yield* PgClient.make({ url: Redacted.make(base), maxConnections: 1 })
    yield* sql.unsafe(`CREATE DATABASE ${name}`)
  })).pipe(Effect.provide(Reactivity.layer), Effect.orDie)
  // Only the path names the database; the query may carry the socket directory.
  const url = new URL(base)
  url.pathname = `/${name}`
  return url.toString()
})

/** Runs one SQL statement on the database at `url` directly, bypassing the app (to arrange or inspect rows). */
export const sql = (url: string, text: string): Effect.Effect<ReadonlyArray<Record<string, unknown>>> =>
  Effect.scoped(Effect.gen(function*() {
    const client = yield* PgClient.make({ url: Redacted.make(url), maxConnections: 1 })
    return yield* client.unsafe<Record<string, unknown>>(text)
  })).pipe(Effect.provide(Reactivity.layer), Effect.orDie)

// ---------------------------------------------------------------------------------------------
// tokens
// ---------------------------------------------------------------------------------------------

/** A JWT_SECRET for test servers: 43 bytes, as HS256 wants at least 32. */
export const jwtSecret = "test-secret-with-enough-entropy-0123456789"

/**
 * An HS256 Bearer token as the app's `Authentication` accepts it: `sub` (default `tester`; an
 * empty string leaves it out), `iat` now, `exp` in `expiresIn` (default `1h`; a jose time span
 * or epoch seconds), signed with `secret` (default `jwtSecret`); `claims` adds or overrides others.
 */
export const mint = (options: {
  readonly subject?: string | undefined
  readonly expiresIn?: string | number | undefined
  readonly secret?: string | undefined
  readonly claims?: Readonly<Record<string, unknown>> | undefined
} = {}): Promise<string> => {
  let jwt = new Jose.SignJWT({ ...options.claims }).setProtectedHeader({ alg: "HS256" }).setIssuedAt()
  if (options.subject !== "") jwt = jwt.setSubject(options.subject ?? "tester")
  jwt = jwt.setExpirationTime(options.expiresIn ?? "1h")
  return jwt.sign(new TextEncoder().encode(options.secret ?? jwtSecret))
}

export interface LogEntry {
  readonly message: string
  readonly level: string
  readonly annotations: Readonly<Record<string, unknown>>
}

/**
 * An in-process harness for `runEffect`: signals from a queue, exits and log lines recorded,
 * settings from a map, time from the Clock (TestClock in `it.effect`).
 */
export const makeHarness = Effect.gen(function*() {
  const signals = yield* Queue.unbounded<Signal>()
  const crashes = yield* Queue.unbounded<Crash>()
  const exits: Array<number> = []
  const logs: Array<LogEntry> = []
  const os = Os.of({
    signal: Queue.take(signals),
    crash: Queue.take(crashes),
    exit: (code) =>
      Effect.sync(() => {
        exits.push(code)
      })
  })
  const logger = Logger.make((options) => {
    const message = Array.isArray(options.message) ? options.message[0] : options.message
    logs.push({
      message: String(message),
      level: options.logLevel,
      annotations: { ...options.fiber.getRef(References.CurrentLogAnnotations) }
    })
  })
  return {
    exits,
    logs,
    send: (signal: Signal) => Queue.offer(signals, signal),
    /** What an uncaught exception or unhandled rejection would report. */
    crash: (crash: Crash) => Queue.offer(crashes, crash),
    /** Runs `main` as the process would; fork it, then drive it with `send` and TestClock. */
    run: <A, E>(main: Layer.Layer<A, E, Lifecycle>, env: Record<string, string> = {}) =>
      runEffect(main).pipe(
        Effect.provideService(Os, os),
        Effect.provide(Logger.layer([logger])),
        Effect.provideService(ConfigProvider.ConfigProvider, ConfigProvider.fromEnv({ env }))
      ),
    /** The annotations of every `phase` line, in order. */
    phases: () => logs.filter((entry) => entry.message === "phase").map((entry) => entry.annotations)
  }
})
