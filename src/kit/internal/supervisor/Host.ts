/**
 * The operating system as the supervisor sees it: the listening sockets (it accepts on the main one
 * and hands each connection to a worker), worker processes, upgrade signals, systemd, the pid file.
 */
import { Config, Context, Deferred, Duration, Effect, Layer, Option, Queue, Schema } from "effect"
import { type ChildProcess, spawn, type StdioOptions } from "node:child_process"
import * as Fs from "node:fs"
import type * as Net from "node:net"
import * as Path from "node:path"
import * as Lifecycle from "../../Lifecycle.ts"
import { duration, int, optionalInt, port } from "../../Settings.ts"
import * as Listener from "../http/Listener.ts"
import { observe } from "../metrics/Registry.ts"
import { makeGatherer } from "../metrics/Workers.ts"
import { makeHub, type Peer } from "./Hub.ts"
import { adminFd, type Counters, generationEnv, isToSupervisor, mainAddressEnv } from "./Protocol.ts"

/**
 * A worker silent this long is hung: it has not answered the supervisor's ping (Supervisor.ts), or
 * not applied a shared write, such as a cache invalidation, that every worker must apply before the
 * write answers (one stopped or stuck must not serve again with what the others have dropped).
 */
export const HeartbeatTimeoutConfig = duration("WORKER_HEARTBEAT_TIMEOUT", {
  default: "5 seconds",
  min: "500 millis",
  max: "10 minutes"
})

/** Where the supervisor's sockets come from: the same variables a single process reads. */
export const ListenerConfig = Config.all({
  port: port("PORT").pipe(Config.withDefault(3000)),
  host: Config.option(Config.NonEmptyString("HOST")),
  listenFd: optionalInt("LISTEN_FD"),
  systemdFds: optionalInt("LISTEN_FDS"),
  systemdPid: optionalInt("LISTEN_PID"),
  adminPort: Config.option(port("ADMIN_PORT")),
  adminHost: Config.option(Config.NonEmptyString("ADMIN_HOST")),
  /** Written atomically (temp file, rename) at start; removed at exit if it still names us. */
  pidFile: Config.option(Config.NonEmptyString("PID_FILE"))
})
export type ListenerSettings = Config.Success<typeof ListenerConfig>

export class WorkerError extends Schema.TaggedError<WorkerError>()("WorkerError", {
  reason: Schema.Literals(["SpawnFailed", "ExitedBeforeReady", "NotReadyInTime"]),
  message: Schema.String
}) {}

/** How a worker ended: its exit code, or the signal that killed it. */
export interface WorkerExit {
  readonly code: number | null
  readonly signal: string | null
}

export const describeExit = (exit: WorkerExit) => exit.signal !== null ? exit.signal : `code ${exit.code}`

export interface WorkerProcess {
  readonly pid: number
  readonly generation: number
  /** Succeeds when the worker reports ready; fails if it exits (or cannot start) first. */
  readonly ready: Effect.Effect<void, WorkerError>
  readonly exited: Effect.Effect<WorkerExit>
  /** Asks it to drain and exit (its SIGTERM); asked again, it forces its close. */
  readonly drain: Effect.Effect<void>
  readonly kill: Effect.Effect<void>
  /** From now on new connections may be handed to it (it is ready and serving). */
  readonly serve: Effect.Effect<void>
  /** Hand it no more connections (before it is told to drain, so none arrives after). */
  readonly unserve: Effect.Effect<void>
  /** What it last reported, and how many connections were handed to it. */
  readonly counters: Effect.Effect<Counters & { readonly handed: number }>
  /** Pings it over the channel; succeeds when it answers, never if it is stopped or its loop is blocked. */
  readonly ping: Effect.Effect<void>
}

/** What asked for an upgrade: a signal to the supervisor, or one forwarded by a worker. */
export interface UpgradeRequest {
  readonly signal: string
  readonly from: number
}

export class Host extends Context.Service<Host, {
  /** Starts a worker of `generation` on the held sockets, with `env` added to ours. */
  readonly spawn: (
    generation: number,
    env: Readonly<Record<string, string>>
  ) => Effect.Effect<WorkerProcess, WorkerError>
  /** Waits for the next upgrade request. */
  readonly upgrades: Effect.Effect<UpgradeRequest>
  /**
   * Lets go of the listening sockets once no worker accepts any more (each says so when its drain
   * stops accepting), so connections are served through the workers' drain delay, then refused.
   */
  readonly stopListening: Effect.Effect<void>
  /** systemd's notify protocol (READY=1, RELOADING=1, STOPPING=1, …); nothing without NOTIFY_SOCKET. */
  readonly notify: (...assignments: ReadonlyArray<string>) => Effect.Effect<void>
}>()("scoped-server/supervisor/Host") {
  /** The real OS, settings from the environment. */
  static readonly layerConfig: Layer.Layer<Host, Config.ConfigError | Listener.ListenError, Lifecycle.Lifecycle> = Layer
    .effect(
      Host,
      Effect.gen(function*() {
        return yield* make(yield* ListenerConfig)
      })
    )
}

/** Node's TCP handle, bound (or adopted) here without a net.Server around it. */
interface TcpHandle {
  readonly fd: number
  onconnection: ((status: number, client: object) => void) | null
  listen(backlog: number): number
  bind(address: string, port: number): number
  bind6(address: string, port: number, flags: number): number
  open(fd: number): number
  getsockname(out: Record<string, unknown>): number
  close(): void
}

const tcpWrap = (): { new(type: number): TcpHandle; readonly constants: { readonly SERVER: number } } => {
  // A net.Server would listen (and accept) at once: the raw handle lets the supervisor bind first
  // and accept only once a worker can take the connections, and hand the admin socket on unpolled.
  const binding = (process as unknown as { binding: (name: string) => any }).binding("tcp_wrap")
  return Object.assign(binding.TCP, { constants: binding.constants })
}

const errnoError = (code: number, what: string) => {
  const util = process.getBuiltinModule("node:util")
  const name = util.getSystemErrorName(code)
  return Object.assign(new Error(`${what} ${name}`), { code: name })
}

interface Held {
  readonly name: "main" | "admin"
  readonly fd: number
  readonly address: string
  readonly sockname: Record<string, unknown>
  readonly handle: TcpHandle
  readonly close: () => void
}

/** Binds (or adopts) one listening socket; `listen(2)` comes later (main: here; admin: the first worker). */
const hold = (name: "main" | "admin", listener: Listener.Bindable) =>
  Effect.try({
    try: (): Held => {
      const TCP = tcpWrap()
      const handle = new TCP(TCP.constants.SERVER)
      if (listener._tag === "Fd") {
        const code = handle.open(listener.fd)
        if (code !== 0) throw errnoError(code, "open")
      } else {
        const host = listener.host
        let code = host === undefined || host.includes(":")
          ? handle.bind6(host ?? "::", listener.port, 0)
          : handle.bind(host, listener.port)
        // No IPv6 on this host: the unspecified IPv4 address, as Node's listen() falls back to.
        if (code !== 0 && host === undefined && errnoError(code, "").code === "EAFNOSUPPORT") {
          code = handle.bind("0.0.0.0", listener.port)
        }
        if (code !== 0) throw errnoError(code, listener.port === 0 ? "bind" : `bind ${host ?? "*"}:${listener.port}`)
      }
      const out: { address?: string; port?: number; family?: string } = {}
      handle.getsockname(out)
      const host = out.family === "IPv6" ? `[${out.address}]` : out.address
      let open = true
      const close = () => {
        if (open) handle.close()
        open = false
      }
      return { name, fd: handle.fd, address: `http://${host}:${out.port}`, sockname: out, handle, close }
    },
    catch: (cause) => new Listener.ListenError({ listener: Listener.describe(listener), cause })
  })

/** Environment a worker must not inherit: it is not the supervisor, systemd's fds are not its, and it listens on the fds it is given (PORT beside LISTEN_FD is refused). */
const supervisorOnly = [
  "WORKERS",
  "PORT",
  "ADMIN_PORT",
  "LISTEN_FDS",
  "LISTEN_PID",
  "LISTEN_FDNAMES",
  "LISTEN_FD",
  "ADMIN_LISTEN_FD",
  "NOTIFY_SOCKET",
  "PID_FILE"
]

const make = Effect.fnUntraced(function*(settings: ListenerSettings) {
  // Read before anything binds: a bad value is refused with nothing listening.
  const rateLimitMaxKeys = yield* int("RATE_LIMIT_MAX_KEYS", { min: 1, max: 10_000_000, default: 100_000 })
  // A worker that cannot apply a shared write is as hung as one that cannot answer a ping.
  const barrierTimeoutMs = Duration.toMillis(yield* HeartbeatTimeoutConfig)
  const sources = Listener.listeners(settings, process.pid)
  const main = yield* Lifecycle.acquireRelease(
    "listener main",
    hold("main", sources.main),
    (held) => Effect.sync(held.close)
  )
  const admin = Option.isSome(sources.admin)
    ? yield* Lifecycle.acquireRelease(
      "listener admin",
      hold("admin", sources.admin.value),
      (held) => Effect.sync(held.close)
    )
    : undefined
  if (Option.isSome(settings.pidFile)) {
    const file = settings.pidFile.value
    yield* Lifecycle.acquireRelease(
      "pid-file",
      Effect.sync(() => {
        // A reader sees no file or the whole pid, never half of it.
        const temporary = Path.join(Path.dirname(file), `.${Path.basename(file)}.${process.pid}.tmp`)
        Fs.writeFileSync(temporary, `${process.pid}\n`)
        Fs.renameSync(temporary, file)
      }),
      () =>
        Effect.sync(() => {
          // Removed only if still ours: a successor may already have written its own.
          if (Fs.existsSync(file) && Fs.readFileSync(file, "utf8").trim() === String(process.pid)) Fs.rmSync(file)
        })
    )
  }
  yield* Effect.logInfo("listening").pipe(Effect.annotateLogs({
    servers: [main, ...(admin === undefined ? [] : [admin])].map((held) => ({ name: held.name, address: held.address }))
  }))

  const upgrades = yield* Queue.unbounded<UpgradeRequest>()
  const onSignal = (signal: "SIGUSR2" | "SIGHUP") => () => {
    Queue.offerUnsafe(upgrades, { signal, from: process.pid })
  }
  const handlers = [["SIGUSR2", onSignal("SIGUSR2")], ["SIGHUP", onSignal("SIGHUP")]] as const
  yield* Effect.acquireRelease(
    Effect.sync(() => handlers.forEach(([signal, handler]) => process.on(signal, handler))),
    () => Effect.sync(() => handlers.forEach(([signal, handler]) => process.off(signal, handler)))
  )

  const baseEnv: Record<string, string> = {}
  for (const [key, value] of Object.entries(process.env)) {
    if (value !== undefined && !supervisorOnly.includes(key)) baseEnv[key] = value
  }
  // The main socket stays here (fd 3 is left empty so the admin socket keeps its place at 4).
  const stdio: StdioOptions = admin === undefined
    ? ["ignore", "inherit", "inherit", "ignore", "ipc"]
    : ["ignore", "inherit", "inherit", "ignore", admin.fd, "ipc"]

  // The accept loop runs outside any fiber; its few lines go through our logger all the same.
  const log = Effect.runForkWith(yield* Effect.context<never>())
  const handoff = makeHandoff(main, (effect) => void log(effect))

  // Scrapes reach whichever worker accepts them; the supervisor merges every worker's series.
  const gatherer = makeGatherer()
  yield* observe(
    "scoped_server_scrape_workers_missing",
    "Workers left out of the last scrape for not answering within 1 s.",
    gatherer.missing
  )

  // The state the workers share: written through a barrier, and the rate-limit counters.
  const runLog = Effect.runForkWith(yield* Effect.context<never>())
  /** Each worker's channel peer, and how to kill it (out of the handoff first; false if it already was). */
  const hubChildren = new Map<Peer, { readonly child: ChildProcess; readonly kill: () => boolean }>()
  const hub = makeHub({
    now: Date.now,
    maxKeys: rateLimitMaxKeys,
    barrierTimeoutMs,
    onUnresponsive: (peer) => {
      const worker = hubChildren.get(peer)
      if (worker === undefined) return
      const { child } = worker
      if (child.exitCode !== null || child.signalCode !== null || !worker.kill()) return
      // It may still serve what every other worker has dropped: it must not answer again. Its
      // barriers settle when its exit is seen, so no write is answered while it could still run.
      runLog(
        Effect.logError("worker did not apply a shared write in time; killing it").pipe(
          Effect.annotateLogs({ pid: child.pid, timeoutMs: barrierTimeoutMs })
        )
      )
    }
  })
  yield* Effect.acquireRelease(
    Effect.sync(() => setInterval(hub.sweep, 10_000).unref()),
    (timer) => Effect.sync(() => clearInterval(timer))
  )

  const spawnWorker = (generation: number, env: Readonly<Record<string, string>>) =>
    Effect.gen(function*() {
      const ready = yield* Deferred.make<void, WorkerError>()
      const exited = yield* Deferred.make<WorkerExit>()
      let child: ChildProcess
      try {
        // The same command as ours, re-read from disk: that is what makes it an upgrade.
        child = spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
          env: {
            ...baseEnv,
            ...env,
            [generationEnv]: String(generation),
            [mainAddressEnv]: JSON.stringify(main.sockname),
            ...(admin === undefined ? {} : { ADMIN_LISTEN_FD: String(adminFd) })
          },
          stdio,
          // Its own process group: a terminal's Ctrl+C reaches only the supervisor, which drains
          // the workers itself (a worker signalled directly and by us would take it as a second signal).
          detached: true
        })
      } catch (cause) {
        return yield* new WorkerError({ reason: "SpawnFailed", message: `cannot start a worker: ${String(cause)}` })
      }
      child.on("error", (error) => {
        Deferred.doneUnsafe(
          ready,
          Effect.fail(new WorkerError({ reason: "SpawnFailed", message: `cannot start a worker: ${error.message}` }))
        )
      })
      const target = handoff.target(child)
      gatherer.add(child, generation)
      const peer: Peer = {
        send: (message) => {
          if (child.connected) child.send(message, undefined, {}, () => {})
        }
      }
      /**
       * SIGKILL, taking it out of the handoff first: until its exit is seen (a loaded supervisor
       * may see it well after the kernel has reaped it) it would still be picked for new
       * connections, which die with it.
       */
      let killed = false
      const kill = () => {
        if (killed) return false
        killed = true
        handoff.remove(target)
        // What it had not reported receiving dies with it: our copies are closed now, not at exit.
        handoff.release(target)
        child.kill("SIGKILL")
        return true
      }
      hubChildren.set(peer, { child, kill })
      const pongs = new Map<number, () => void>()
      let nextPing = 0
      child.on("message", (message) => {
        if (gatherer.handle(child, message) || hub.handle(peer, message) || !isToSupervisor(message)) return
        if (message.type === "ready") Deferred.doneUnsafe(ready, Effect.void)
        else if (message.type === "upgrade") Queue.offerUnsafe(upgrades, { signal: message.signal, from: message.pid })
        else if (message.type === "counters") target.report(message)
        else if (message.type === "pong") pongs.get(message.id)?.()
        else {
          handoff.closed(target)
          // Out of the handoff (and at shutdown the main socket closed) before this is sent.
          if (child.connected) child.send({ type: "unlisted" }, undefined, {}, () => {})
        }
      })
      child.once("exit", (code, signal) => {
        const exit: WorkerExit = { code, signal }
        Deferred.doneUnsafe(
          ready,
          Effect.fail(
            new WorkerError({
              reason: "ExitedBeforeReady",
              message: `worker exited before it was ready (${describeExit(exit)})`
            })
          )
        )
        handoff.remove(target)
        handoff.release(target)
        hub.remove(peer)
        hubChildren.delete(peer)
        Deferred.doneUnsafe(exited, Effect.succeed(exit))
      })
      const alive = () => child.exitCode === null && child.signalCode === null
      const worker: WorkerProcess = {
        pid: child.pid ?? -1,
        generation,
        ready: Deferred.await(ready),
        exited: Deferred.await(exited),
        drain: Effect.sync(() => {
          if (!alive()) return
          if (child.connected) child.send({ type: "drain" }, undefined, {}, () => {})
          else child.kill("SIGTERM")
        }),
        kill: Effect.sync(() => {
          if (alive()) kill()
        }),
        serve: Effect.sync(() => {
          if (alive() && !killed) handoff.add(target)
        }),
        unserve: Effect.sync(() => handoff.remove(target)),
        counters: Effect.sync(() => ({ ...target.counters, handed: target.handed })),
        ping: Effect.callback<void>((resume) => {
          // No channel, no answer: the caller's timeout decides what that means.
          if (!alive() || !child.connected) return
          const id = nextPing++
          pongs.set(id, () => {
            pongs.delete(id)
            resume(Effect.void)
          })
          child.send({ type: "ping", id }, undefined, {}, () => {})
          return Effect.sync(() => void pongs.delete(id))
        })
      }
      return worker
    })

  const notifySocket = process.env.NOTIFY_SOCKET
  let notifyMissing = false
  const notify = (...assignments: ReadonlyArray<string>) =>
    Effect.callback<void>((resume) => {
      if (notifySocket === undefined || notifySocket === "" || notifyMissing) return resume(Effect.void)
      // Node has no unix datagram socket; systemd-notify speaks for us. Its messages come from its
      // own pid, so the unit needs NotifyAccess=all; --pid names us as the main process.
      const child = spawn("systemd-notify", [`--pid=${process.pid}`, ...assignments], { stdio: "ignore" })
      child.once("error", () => {
        notifyMissing = true
        resume(Effect.logWarning("NOTIFY_SOCKET is set but systemd-notify is not installed; not notifying"))
      })
      child.once("exit", () => resume(Effect.void))
    })

  return Host.of({
    spawn: spawnWorker,
    upgrades: Queue.take(upgrades),
    stopListening: Effect.sync(() => {
      handoff.closeWhenIdle()
      admin?.close()
    }),
    notify
  })
})

/** A worker as a destination for connections: what it reported, and what was handed to it since. */
interface Target {
  readonly child: ChildProcess
  counters: Counters
  handed: number
  /** Handles sent and not yet reported received: ours to close once the worker has its copy. */
  readonly inTransit: Array<{ readonly client: { close: () => void }; readonly at: number }>
  /** Open connections, counting those handed over but not yet reported as received. */
  readonly load: () => number
  readonly report: (counters: Counters) => void
  /** Whether it was last seen stuck (logged once when it turns stuck, once when it recovers). */
  stuck: boolean
}

/**
 * Connections accepted while no worker can take them (none serving, or every one stuck) wait
 * here, up to a listen backlog's worth; beyond that each is closed as it is accepted, so the
 * supervisor never holds an fd per connection without bound.
 */
const pendingLimit = 511

/**
 * Handles sent to one worker and not yet reported received, at most: a worker this far behind is
 * treated as stuck at once, without waiting for `stuckAfterMs`, so a burst toward a stopped worker
 * costs at most this many fds. A healthy worker reports every 20 ms, far below it.
 */
const inTransitLimit = 64

/**
 * A worker that has not reported receiving a handle this long after it was sent is not reading
 * its channel (hung, stopped, stuck in a loop): it gets no more connections while any other can
 * take them, or one stuck worker would keep its share of new connections it never serves.
 */
const stuckAfterMs = 1_000

/**
 * The main socket's accept loop: each connection goes to the serving worker with the fewest open
 * connections (ties in turn), as its raw handle over the channel: the supervisor reads no byte of it,
 * and closes its copy once the worker reports it received.
 */
const makeHandoff = (main: Held, log: (effect: Effect.Effect<void>) => void) => {
  const targets: Array<Target> = []
  const pending: Array<object> = []
  let next = 0
  let listening = false
  let closing = false
  /** Whether connections are being closed for want of room, so that is logged once per episode. */
  let overflowing = false
  let refused = 0

  const hold = (client: object) => {
    if (pending.length < pendingLimit) return void pending.push(client)
    ;(client as { close: () => void }).close()
    refused++
    if (!overflowing) {
      overflowing = true
      log(
        Effect.logWarning("closing new connections: no worker is taking them").pipe(Effect.annotateLogs({
          held: pending.length,
          workers: targets.map((target) => target.child.pid)
        }))
      )
    }
  }

  const isStuck = (target: Target, now: number) =>
    target.inTransit.length >= inTransitLimit ||
    (target.inTransit.length > 0 && now - target.inTransit[0]!.at > stuckAfterMs)

  const dispatch = (client: object) => {
    if (targets.length === 0) return hold(client)
    const now = Date.now()
    let best: Target | undefined
    for (let index = 0; index < targets.length; index++) {
      const target = targets[(next + index) % targets.length]!
      const stuck = isStuck(target, now)
      if (stuck !== target.stuck) {
        target.stuck = stuck
        if (stuck) {
          log(
            Effect.logWarning("worker not taking connections").pipe(Effect.annotateLogs({
              pid: target.child.pid,
              inTransit: target.inTransit.length,
              oldestMs: now - target.inTransit[0]!.at
            }))
          )
        }
      }
      if (stuck) continue
      if (best === undefined || target.load() < best.load()) best = target
    }
    // Every worker is stuck: hold the connection (bounded) until one reports or is replaced.
    if (best === undefined) return hold(client)
    next = (next + 1) % targets.length
    best.handed++
    best.inTransit.push({ client: client as { close: () => void }, at: now })
    // Sent as the raw handle, never read here. Node may resend it until the worker acknowledges
    // it, so our copy is closed only when the worker's counters say it has received it.
    best.child.send({ type: "connection" }, client as Net.Socket)
  }

  /** Held connections go out again (to a worker that took some, or a new one), or wait on. */
  const flush = () => {
    if (pending.length === 0) return
    const held = pending.splice(0)
    if (overflowing) {
      log(Effect.logInfo("taking new connections again").pipe(Effect.annotateLogs({ held: held.length, refused })))
      overflowing = false
      refused = 0
    }
    for (const client of held) dispatch(client)
  }

  const closeIfIdle = () => {
    if (!closing || targets.length > 0) return
    main.close()
    // Nobody is left to serve them (every worker has exited).
    for (const client of pending.splice(0)) (client as { close: () => void }).close()
  }

  return {
    target: (child: ChildProcess): Target => {
      const target: Target = {
        child,
        counters: { open: 0, received: 0, requests: 0, inFlight: 0 },
        handed: 0,
        inTransit: [],
        stuck: false,
        load: () => target.counters.open + target.handed - target.counters.received,
        report: (counters) => {
          for (let arrived = counters.received - target.counters.received; arrived > 0; arrived--) {
            target.inTransit.shift()?.client.close()
          }
          if (target.stuck && !isStuck(target, Date.now())) {
            target.stuck = false
            log(Effect.logInfo("worker taking connections again").pipe(Effect.annotateLogs({ pid: child.pid })))
          }
          target.counters = {
            open: counters.open,
            received: counters.received,
            requests: counters.requests,
            inFlight: counters.inFlight
          }
          // Held because every worker was stuck: this one may take them now.
          flush()
        }
      }
      return target
    },
    add: (target: Target) => {
      if (closing || targets.includes(target)) return
      targets.push(target)
      if (!listening) {
        listening = true
        main.handle.onconnection = (status, client) => {
          if (status === 0) dispatch(client)
        }
        const code = main.handle.listen(pendingLimit)
        if (code !== 0) throw errnoError(code, "listen")
      }
      flush()
    },
    /** The worker is gone: what it had not received is lost with it. */
    release: (target: Target) => {
      for (const { client } of target.inTransit.splice(0)) client.close()
    },
    /**
     * The worker's drain stopped accepting. At shutdown every worker gets there together (same
     * drain delay), so the first one closes the socket: from then on connecting is refused, where
     * waiting for the last would accept connections only to find no worker that takes them.
     * Whatever was already accepted still goes to the workers, which serve it in their drain.
     */
    closed: (target: Target) => {
      if (closing) main.close()
      else {
        const index = targets.indexOf(target)
        if (index >= 0) targets.splice(index, 1)
      }
    },
    remove: (target: Target) => {
      const index = targets.indexOf(target)
      if (index >= 0) targets.splice(index, 1)
      closeIfIdle()
      if (!closing) flush()
    },
    closeWhenIdle: () => {
      closing = true
      closeIfIdle()
    }
  }
}
