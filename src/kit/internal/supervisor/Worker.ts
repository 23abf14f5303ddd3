/**
 * A worker's side of the supervisor channel: drain on its word or when the channel is lost, report
 * readiness, answer heartbeats, forward upgrade signals. The rest is the one-process lifecycle.
 */
import { Effect, Layer, Queue } from "effect"
import type * as Http from "node:http"
import * as Lifecycle from "../../Lifecycle.ts"
import { countersIntervalMs, generationEnv, isToWorker, mainAddressEnv, type ToSupervisor } from "./Protocol.ts"

/** Which generation and process this is, when a supervisor started it. */
export const identity: { readonly generation: number; readonly pid: number } | undefined =
  process.env[generationEnv] !== undefined && process.env[generationEnv] !== "" && typeof process.send === "function"
    ? { generation: Number(process.env[generationEnv]), pid: process.pid }
    : undefined

const send = (message: ToSupervisor) => {
  // The channel may already be gone (supervisor killed); the disconnect handler deals with that.
  if (process.connected) process.send!(message, undefined, {}, () => {})
}

/** A TCP handle as libuv gives it to `net` (an accepted connection, passed over the channel). */
type ClientHandle = object

interface FakeListenHandle {
  onconnection?: (status: number, handle: ClientHandle) => void
}

/**
 * The main server's listening handle when the supervisor accepts: `net.Server#listen` takes it as
 * it takes a bound TCP handle (Node's `cluster` does the same in its round-robin mode), so the
 * server is `listening`, its address is the supervisor's socket, its timeouts run, and each
 * connection handed over goes through Node's own `onconnection` (noDelay, keep-alive, counts).
 * Its `close` is the drain's "stop accepting": the supervisor is told to hand over no more.
 */
const makeHandoff = (address: Record<string, unknown>) => {
  const TCP =
    (process as unknown as { binding: (name: string) => { TCP: { prototype: object } } }).binding("tcp_wrap").TCP
  let listening = false
  const early: Array<ClientHandle> = []
  const handle: FakeListenHandle & Record<string, unknown> = Object.assign(Object.create(TCP.prototype) as object, {
    getAsyncId: () => -1,
    getsockname: (out: Record<string, unknown>) => {
      Object.assign(out, address)
      return 0
    },
    listen: () => {
      listening = true
      for (const client of early.splice(0)) handle.onconnection?.(0, client)
      return 0
    },
    close: (callback?: () => void) => {
      send({ type: "closed", pid: process.pid })
      if (callback !== undefined) process.nextTick(callback)
    },
    ref: () => {},
    unref: () => {},
    hasRef: () => false
  })
  const counters = { open: 0, received: 0, requests: 0, inFlight: 0 }
  let reportScheduled = false
  const report = () => {
    if (reportScheduled) return
    reportScheduled = true
    // Batched: a burst of connections costs one message, and the supervisor's balancing counts
    // what it has handed over itself, so a report a few milliseconds late skews nothing.
    setTimeout(() => {
      reportScheduled = false
      send({ type: "counters", pid: process.pid, ...counters })
    }, countersIntervalMs).unref()
  }
  let unlisted = false
  const onUnlisted: Array<() => void> = []
  process.on("message", (message: unknown, client: ClientHandle | undefined) => {
    if (isToWorker(message) && message.type === "unlisted") {
      unlisted = true
      for (const resume of onUnlisted.splice(0)) resume()
      return
    }
    if (!isToWorker(message) || message.type !== "connection" || client === undefined) return
    counters.received++
    // One sent before the supervisor heard we stopped accepting is still served: the drain
    // answers it with `Connection: close`, where dropping it would reset a client.
    if (listening && handle.onconnection !== undefined) handle.onconnection(0, client)
    else early.push(client)
  })
  return {
    handle,
    /**
     * Waits, after `close`, for the supervisor's word that it hands over no more and (at
     * shutdown) has closed the main socket; at most `timeoutMs`, and not at all without a channel.
     */
    unlisted: (timeoutMs: number): Effect.Effect<void> =>
      Effect.callback<void>((resume) => {
        if (unlisted || !process.connected) return resume(Effect.void)
        const done = () => {
          clearTimeout(timer)
          resume(Effect.void)
        }
        const timer = setTimeout(() => {
          onUnlisted.splice(onUnlisted.indexOf(done) >>> 0, 1)
          resume(Effect.void)
        }, timeoutMs)
        onUnlisted.push(done)
        return Effect.sync(() => {
          clearTimeout(timer)
          const index = onUnlisted.indexOf(done)
          if (index >= 0) onUnlisted.splice(index, 1)
        })
      }),
    /** Counts `server`'s connections and requests into the reports to the supervisor. */
    track: (server: Http.Server) => {
      server.on("connection", (socket: { once: (event: "close", listener: () => void) => void }) => {
        counters.open++
        report()
        socket.once("close", () => {
          counters.open--
          report()
        })
      })
      server.prependListener("request", (_request: Http.IncomingMessage, response: Http.ServerResponse) => {
        counters.inFlight++
        response.once("close", () => {
          counters.inFlight--
          counters.requests++
          report()
        })
      })
    }
  }
}

/** Set when the supervisor accepts on the main socket and hands this worker its connections. */
export const handoff: ReturnType<typeof makeHandoff> | undefined =
  identity !== undefined && process.env[mainAddressEnv] !== undefined
    ? makeHandoff(JSON.parse(process.env[mainAddressEnv]!) as Record<string, unknown>)
    : undefined

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
      if (!isToWorker(message)) return
      if (message.type === "drain") Queue.offerUnsafe(signals, "SIGTERM")
      // Answered here, on the event loop: a stopped or blocked worker does not answer.
      else if (message.type === "ping") send({ type: "pong", pid: process.pid, id: message.id })
    }
    // With the process's logger and annotations: a line the default logger wrote would not be JSON.
    const log = Effect.runForkWith(yield* Effect.context<never>())
    const onDisconnect = () => {
      // The supervisor is gone (SIGKILL, crash): nobody will tell us to stop, and nobody will
      // restart us or hand our sockets on. Drain now rather than serve unsupervised.
      log(Effect.logWarning("lost the supervisor's channel; draining"))
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
export const run = <A, E>(main: Layer.Layer<A, E, Lifecycle.Lifecycle>): void =>
  // Tagged so the supervisor's interleaved output says which worker, of which generation, spoke.
  Lifecycle.run(main, layer, identity === undefined ? {} : { worker: `${identity.generation}.${identity.pid}` })
