/**
 * An in-process harness for Lifecycle.runEffect: signals from a queue, exits and log lines
 * recorded, settings from a map, time from TestClock.
 */
import { ConfigProvider, Effect, type Layer, Logger, Queue, References } from "effect"
import * as Lifecycle from "../../src/Lifecycle.ts"

export interface LogEntry {
  readonly message: string
  readonly level: string
  readonly annotations: Readonly<Record<string, unknown>>
}

export const makeHarness = Effect.gen(function*() {
  const signals = yield* Queue.unbounded<Lifecycle.Signal>()
  const exits: Array<number> = []
  const logs: Array<LogEntry> = []
  const os = Lifecycle.Os.of({
    signal: Queue.take(signals),
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
    send: (signal: Lifecycle.Signal) => Queue.offer(signals, signal),
    /** Runs `main` as the process would; fork it, then drive it with `send` and TestClock. */
    run: <A, E>(main: Layer.Layer<A, E, Lifecycle.Lifecycle>, env: Record<string, string> = {}) =>
      Lifecycle.runEffect(main).pipe(
        Effect.provideService(Lifecycle.Os, os),
        Effect.provide(Logger.layer([logger])),
        Effect.provideService(ConfigProvider.ConfigProvider, ConfigProvider.fromEnv({ env }))
      ),
    phases: () => logs.filter((entry) => entry.message === "phase").map((entry) => entry.annotations)
  }
})
