/**
 * What a service's own tests import: the application graph on a free port with its settings
 * from a map, a client with the base URL set, and a signal harness for in-process lifecycle
 * tests on TestClock.
 */
import { ConfigProvider, Context, Effect, Layer, Logger, Queue, References } from "effect"
import { HttpServer } from "./HttpServer.ts"
import { type Crash, Lifecycle, Os, runEffect, type Signal } from "./Lifecycle.ts"

export class TestServer extends Context.Service<TestServer, {
  readonly port: number
  /** `http://127.0.0.1:<port>` */
  readonly url: string
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
 * `Lifecycle.layerTest`, its settings from `env` over `defaults`: releasing the layer releases
 * the graph exactly as a signal would. Provides `TestServer` and whatever `main` provides.
 */
export const layer = <A, E>(main: Layer.Layer<A, E, Lifecycle>, env: Record<string, string> = {}) =>
  Layer.effect(
    TestServer,
    Effect.gen(function*() {
      const { port } = yield* HttpServer
      const url = `http://127.0.0.1:${port}`
      return {
        port,
        url,
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
    Layer.provide(ConfigProvider.layer(ConfigProvider.fromUnknown({ ...defaults, ...env })))
  )

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
