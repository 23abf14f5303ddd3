/**
 * A worker's side of the supervisor channel: drain on the supervisor's word or when the channel is
 * lost, report readiness, forward upgrade signals. The rest of a worker is the one-process lifecycle.
 */
import { Effect, Layer, Queue } from "effect"
import * as Lifecycle from "../Lifecycle.ts"
import { generationEnv, isToWorker, type ToSupervisor } from "./Protocol.ts"

/** Which generation and process this is, when a supervisor started it. */
export const identity: { readonly generation: number; readonly pid: number } | undefined =
  process.env[generationEnv] !== undefined && process.env[generationEnv] !== "" && typeof process.send === "function"
    ? { generation: Number(process.env[generationEnv]), pid: process.pid }
    : undefined

const send = (message: ToSupervisor) => {
  // The channel may already be gone (supervisor killed); the disconnect handler deals with that.
  if (process.connected) process.send!(message, undefined, {}, () => {})
}

/**
 * The OS as a worker sees it: SIGTERM, SIGINT, SIGQUIT and crashes as before, plus the supervisor's `drain` and the
 * loss of its channel, both as SIGTERM. SIGUSR2 and SIGHUP go to the supervisor as upgrade requests.
 */
export const layer: Layer.Layer<Lifecycle.Os> = Layer.effect(
  Lifecycle.Os,
  Effect.gen(function*() {
    const signals = yield* Queue.unbounded<Lifecycle.Signal>()
    const crashes = yield* Queue.unbounded<Lifecycle.Crash>()
    // As in the one-process Os: with a listener Node no longer dies on these, the lifecycle drains.
    const onException = (error: unknown) => {
      Queue.offerUnsafe(crashes, { kind: "uncaughtException", error })
    }
    const onRejection = (error: unknown) => {
      Queue.offerUnsafe(crashes, { kind: "unhandledRejection", error })
    }
    const onSignal = (signal: Lifecycle.Signal) => () => {
      Queue.offerUnsafe(signals, signal)
    }
    const onMessage = (message: unknown) => {
      if (isToWorker(message)) Queue.offerUnsafe(signals, "SIGTERM")
    }
    const onDisconnect = () => {
      // The supervisor is gone (SIGKILL, crash): nobody will tell us to stop, and nobody will
      // restart us or hand our sockets on. Drain now rather than serve unsupervised.
      Effect.runFork(Effect.logWarning("lost the supervisor's channel; draining"))
      Queue.offerUnsafe(signals, "SIGTERM")
    }
    const onUpgrade = (signal: "SIGUSR2" | "SIGHUP") => () => send({ type: "upgrade", pid: process.pid, signal })
    const handlers = [
      ["SIGTERM", onSignal("SIGTERM")],
      ["SIGINT", onSignal("SIGINT")],
      ["SIGQUIT", onSignal("SIGQUIT")],
      ["SIGUSR2", onUpgrade("SIGUSR2")],
      ["SIGHUP", onUpgrade("SIGHUP")]
    ] as const
    yield* Effect.acquireRelease(
      Effect.sync(() => {
        handlers.forEach(([signal, handler]) => process.on(signal, handler))
        process.on("message", onMessage)
        process.on("disconnect", onDisconnect)
        process.on("uncaughtException", onException)
        process.on("unhandledRejection", onRejection)
        if (!process.connected) onDisconnect()
      }),
      () =>
        Effect.sync(() => {
          handlers.forEach(([signal, handler]) => process.off(signal, handler))
          process.off("message", onMessage)
          process.off("disconnect", onDisconnect)
          process.off("uncaughtException", onException)
          process.off("unhandledRejection", onRejection)
        })
    )
    return {
      signal: Queue.take(signals),
      crash: Queue.take(crashes),
      exit: (code) => Effect.sync(() => process.exit(code)),
      ready: Effect.sync(() => send({ type: "ready", pid: process.pid }))
    }
  })
)

/** Runs `main` as a supervisor's worker: the one-process lifecycle on the supervisor's channel. */
export const run = <A, E>(main: Layer.Layer<A, E, Lifecycle.Lifecycle>): void => Lifecycle.run(main, layer)
