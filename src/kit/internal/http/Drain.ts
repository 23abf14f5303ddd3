/**
 * Draining one Node server without losing or resetting anything: stop accepting, finish what was
 * parsed, say `Connection: close` only on the last parsed response, close quiet sockets with a FIN.
 */
import { Deferred, Duration, Effect } from "effect"
import * as Http from "node:http"
import * as Net from "node:net"
import type { Lifecycle } from "../../Lifecycle.ts"
import { notReady, onClientError } from "./ErrorBodies.ts"

const kLatest = Symbol.for("scoped-server/latestResponse")
const kSeen = Symbol.for("scoped-server/drainSeen")
const kActiveAt = Symbol.for("scoped-server/activeAt")
const kBytesSeen = Symbol.for("scoped-server/bytesSeen")
const kLingeringSince = Symbol.for("scoped-server/lingeringSince")
const kLingerBytes = Symbol.for("scoped-server/lingerBytes")
const kIdleClose = Symbol.for("scoped-server/idleClose")
const kCloseByDrain = Symbol.for("scoped-server/closeByDrain")
const kIdleSince = Symbol.for("scoped-server/idleSince")
const kCadence = Symbol.for("scoped-server/cadence")

/** What Node keeps on a response that the drain reads: the stored head and whether it ends the socket. */
interface TrackedResponse extends Http.ServerResponse {
  _header?: string | null
  _last?: boolean
  [kCloseByDrain]?: boolean
}

interface TrackedSocket extends Net.Socket {
  /** Node's own pointer to the response being written on this socket, if any. */
  _httpMessage?: Http.ServerResponse | null
  /** The response of the last request parsed on this socket (set by `trackLatest`). */
  [kLatest]?: TrackedResponse
  /** The same, as the drain last saw it: the request listener compares the two. */
  [kSeen]?: TrackedResponse | undefined
  [kActiveAt]?: number
  [kBytesSeen]?: number
  [kLingeringSince]?: number
  [kLingerBytes]?: number
  [kIdleClose]?: boolean
  /** When the socket's last response finished (Date.now()), kept while serving normally too. */
  [kIdleSince]?: number
  /** The client's think time: the gap from an answer to the next request, remembered briefly (see `trackLatest`). */
  [kCadence]?: number
}

type RequestListener = (request: Http.IncomingMessage, response: Http.ServerResponse) => void

/**
 * How long a socket we have ended may keep sending before it is destroyed. Reading (and
 * discarding) until the peer's FIN is what keeps the kernel from answering late bytes with a
 * reset that would wipe the response the client has not read yet.
 */
const lingerMs = 2_000

/**
 * How much longer than its cadence a client may be late before its connection counts as quiet:
 * the multiple absorbs a client whose think time wanders (a busy machine, a jittery timer), the
 * margin the drain's tick (at most 50 ms) and the event loop's lag.
 */
const cadenceFactor = 1.5
const cadenceMarginMs = 50

/**
 * The ServerResponse class with a few stores per request: the socket remembers its last parsed
 * response (Node queues pipelined responses where nothing outside can see them, and the drain
 * must know which one is last to put `Connection: close` on that one only), when its last
 * response finished, and the client's cadence. The cadence must be known before the drain
 * starts: with `DRAIN_DELAY=0` a connection is judged one quiet window after the signal.
 *
 * The cadence is the gap between an answer and the next request on the socket, or half the one
 * remembered before it when that is longer: a burst of back-to-back requests does not erase a
 * client's think time at once, and one long pause is forgotten within a few requests. A request
 * pipelined behind an answer not yet finished, and a connection's first request, show no gap.
 */
export const trackLatest = <C extends typeof Http.ServerResponse>(Base: C): C =>
  class extends (Base as typeof Http.ServerResponse) {
    constructor(request: Http.IncomingMessage) {
      super(request)
      const socket = request.socket as TrackedSocket
      socket[kLatest] = this
      const idleSince = socket[kIdleSince]
      if (idleSince !== undefined && socket._httpMessage == null) {
        const gap = Date.now() - idleSince
        const remembered = (socket[kCadence] ?? 0) / 2
        socket[kCadence] = gap > remembered ? gap : remembered
      }
    }

    /** Node detaches a response from its socket when it has finished: the client may think from here. */
    override detachSocket(socket: Net.Socket): void {
      ;(socket as TrackedSocket)[kIdleSince] = Date.now()
      super.detachSocket(socket)
    }
  } as C

/**
 * How long `socket` must have been idle since its last answer before a quiet close cannot cross
 * the next request of a client that keeps a cadence: 0 when it has shown none.
 */
export const cadenceWaitMs = (cadence: number | undefined): number =>
  cadence === undefined ? 0 : cadence * cadenceFactor + cadenceMarginMs

/** Node's list of the server's connections (private): its `idle()` names sockets between requests. */
const connectionsOf = (server: Http.Server): { idle(): Array<{ socket: Net.Socket }> } | undefined => {
  const key = Object.getOwnPropertySymbols(server).find((symbol) => symbol.description === "http.server.connections")
  return key === undefined ? undefined : (server as any)[key]
}

/** Whether the socket will be closed once `response` is written: a later request would run unanswered. */
const endsSocket = (response: TrackedResponse) =>
  response._header != null ? response._last === true : !response.shouldKeepAlive && response[kCloseByDrain] !== true

/**
 * One Node server and what its drain needs to know: the open sockets and, once draining,
 * when each was last active. Serving normally costs nothing per request beyond one property
 * store: the bookkeeping starts with the drain.
 */
export class DrainableServer {
  readonly sockets = new Set<TrackedSocket>()
  private handler: RequestListener = notReady
  private listener: RequestListener = notReady
  private draining = false
  private closingSince: number | undefined

  constructor(
    readonly name: string,
    readonly server: Http.Server,
    readonly lifecycle: Lifecycle["Service"]
  ) {
    const sockets = this.sockets
    const totals = lifecycle.totals
    this.onResponseClose = function(this: Http.ServerResponse) {
      const socket = this.req.socket as TrackedSocket | null
      if (socket !== null) socket[kActiveAt] = Date.now()
      totals.requestsDuringDrain++
    }
    server.on("connection", (socket: TrackedSocket) => {
      sockets.add(socket)
      socket.once("close", () => sockets.delete(socket))
      if (this.draining) this.watch(socket)
    })
    server.on("request", this.listener)
    server.on("clientError", onClientError)
  }

  setHandler(handler: RequestListener): void {
    this.handler = handler
    if (this.draining) return
    this.server.off("request", this.listener)
    this.listener = handler
    this.server.on("request", handler)
  }

  /** From here on, every response is counted, every socket's activity is known and closes linger. */
  startDraining(): void {
    if (this.draining) return
    this.draining = true
    this.server.off("request", this.listener)
    this.listener = (request, response) => this.onDrainingRequest(request, response as TrackedResponse)
    this.server.on("request", this.listener)
    for (const socket of this.sockets) {
      this.watch(socket)
      socket._httpMessage?.once("close", this.onResponseClose)
      const latest = socket[kLatest]
      if (latest !== undefined && latest !== socket._httpMessage && !latest.writableFinished) {
        latest.once("close", this.onResponseClose)
      }
    }
  }

  /** A response closed: its socket was active now, and the drain answered one more request. */
  private readonly onResponseClose: (this: Http.ServerResponse) => void

  private watch(socket: TrackedSocket): void {
    socket[kSeen] = socket[kLatest]
    socket[kActiveAt] = Date.now()
    socket[kBytesSeen] = socket.bytesRead
    // Node ends a socket after a `Connection: close` response with destroySoon, which destroys
    // it as soon as our FIN is out: late bytes from the client would then draw a reset.
    socket.destroySoon = () => this.linger(socket)
    socket.once("close", () => {
      if (socket[kLingeringSince] === undefined) return
      const raced = socket.bytesRead > (socket[kLingerBytes] ?? 0)
      if (raced) this.lifecycle.totals.socketsClosedRaced++
      else if (socket[kIdleClose] === true) this.lifecycle.totals.socketsClosedIdle++
    })
  }

  private onDrainingRequest(request: Http.IncomingMessage, response: TrackedResponse): void {
    const socket = request.socket as TrackedSocket
    const previous = socket[kSeen]
    socket[kSeen] = response
    socket[kActiveAt] = Date.now()
    // Never run a request whose answer would be thrown away: the socket is ending, or the
    // response before it already says (or will say) `Connection: close`.
    if (
      socket[kLingeringSince] !== undefined || socket.writableEnded ||
      (previous !== undefined && previous !== response && !previous.writableFinished && endsSocket(previous))
    ) {
      this.lifecycle.totals.requestsNotRun++
      return
    }
    if (previous !== undefined && previous[kCloseByDrain] === true && previous._header == null) {
      // It is no longer the last: the close moves to this one.
      previous.shouldKeepAlive = true
      previous[kCloseByDrain] = false
    }
    if (this.closingSince !== undefined && response.shouldKeepAlive) {
      response.shouldKeepAlive = false
      response[kCloseByDrain] = true
    }
    response.once("close", this.onResponseClose)
    this.handler(request, response)
  }

  /**
   * What `drainSockets` waits for between closing the listener and telling clients to go: with a
   * supervisor, its word that the main socket hands this process nothing more (Worker.ts).
   */
  unlisted: Effect.Effect<void> = Effect.void

  /** Closes the listener only: open sockets, and what their responses say, are left as they are. */
  closeListener(): void {
    this.startDraining()
    if (this.server.listening) Net.Server.prototype.close.call(this.server)
  }

  /**
   * Stops accepting without touching open sockets (http.Server#close would close idle ones now,
   * under clients that are writing to them). The last response parsed on each socket, if its head
   * is not out yet, will say `Connection: close`; those queued before it keep the connection.
   */
  stopAccepting(): void {
    this.closeListener()
    if (this.closingSince !== undefined) return
    this.closingSince = Date.now()
    if (this.server.listening) Net.Server.prototype.close.call(this.server)
    for (const socket of this.sockets) {
      const latest = socket[kSeen]
      if (latest !== undefined && !latest.writableFinished && latest._header == null && latest.shouldKeepAlive) {
        latest.shouldKeepAlive = false
        latest[kCloseByDrain] = true
      }
    }
  }

  /** Ends our side, keeps reading (and discarding) until the peer closes; `closeQuiet` bounds it. */
  private linger(socket: TrackedSocket, idle = false): void {
    if (socket[kLingeringSince] !== undefined) return
    socket[kLingeringSince] = Date.now()
    socket[kLingerBytes] = socket.bytesRead
    socket[kIdleClose] = idle
    socket.end()
    socket.resume()
  }

  /**
   * Closes, with a FIN, sockets with nothing in flight, no request partly received, no byte
   * received nor response finished for `quietMs`, and (the cadence rule) idle since their last
   * answer for longer than their client's cadence allows (`cadenceWaitMs`), unless that wait would
   * end after `cadenceUntil`: such a client is thinking for longer than the budget can wait, and it
   * is closed as if it had no cadence. Destroys sockets that linger past the bound.
   */
  closeQuiet(quietMs: number, cadenceUntil = Infinity): void {
    const now = Date.now()
    const since = this.closingSince ?? now
    let between: Set<Net.Socket> | undefined
    for (const socket of this.sockets) {
      const lingering = socket[kLingeringSince]
      if (lingering !== undefined) {
        if (now - lingering >= lingerMs && !socket.destroyed) {
          // Its last answer still queued: a client that stopped reading, cut here.
          if (socket.writableLength > 0) this.lifecycle.totals.responsesCut++
          socket.destroy()
        }
        continue
      }
      const bytes = socket.bytesRead
      if (bytes !== socket[kBytesSeen]) {
        socket[kBytesSeen] = bytes
        socket[kActiveAt] = now
        continue
      }
      if (socket._httpMessage != null) continue
      if (now - Math.max(socket[kActiveAt] ?? since, since) < quietMs) continue
      const idleSince = socket[kIdleSince]
      if (idleSince !== undefined) {
        const until = idleSince + cadenceWaitMs(socket[kCadence])
        if (now < until && until <= cadenceUntil) continue
      }
      // Bytes of a request whose head or body is still arriving: that request is coming.
      between ??= new Set((connectionsOf(this.server)?.idle() ?? []).map((connection) => connection.socket))
      if (bytes > 0 && !between.has(socket)) continue
      this.linger(socket, true)
    }
  }

  destroyAll(): void {
    for (const socket of this.sockets) {
      this.sockets.delete(socket)
      if (socket.destroyed) continue
      socket.destroy()
      this.lifecycle.totals.socketsDestroyed++
    }
  }

  /** Clears Node's own connection-check interval once nothing is left. */
  dispose(): void {
    this.server.closeAllConnections()
    Http.Server.prototype.close.call(this.server, () => {})
  }
}

/**
 * A response whose client has read nothing for `timeoutMs` is cut: the socket is destroyed (a
 * stalled body cannot be ended cleanly) and counted. Node's socket timer is already refreshed on
 * every read and write, so this costs nothing per request; a handler still computing is left be.
 */
export const cutStalledWrites = (server: DrainableServer, timeoutMs: number): void => {
  if (timeoutMs <= 0) return
  server.server.timeout = timeoutMs
  server.server.on("timeout", (socket: TrackedSocket) => {
    // Bytes still queued: the client stopped reading (between two pipelined answers too, when
    // Node has detached the finished one and not yet parsed the next).
    if (socket.writableLength > 0) {
      server.lifecycle.totals.responsesCut++
      socket.destroy()
    } else if (socket._httpMessage == null) {
      // Node's own behaviour without a listener: the keep-alive timeout ends an idle socket.
      socket.destroy()
    } else {
      socket.setTimeout(timeoutMs)
    }
  })
}

/**
 * Waits until every socket of `server` is gone, closing quiet ones; destroys the rest if forced.
 * A client's cadence is waited for only up to halfway from here to the deadline: the other half
 * stays for the closes to complete and the resources to release within the budget.
 */
export const drainSockets = (server: DrainableServer, lifecycle: Lifecycle["Service"]) => {
  const quietMs = Duration.toMillis(lifecycle.settings.quietWindow)
  const tick = Duration.millis(Math.max(5, Math.min(50, Math.floor(quietMs / 4))))
  let cadenceUntil = Infinity
  const loop: Effect.Effect<void> = Effect.suspend(() => {
    server.closeQuiet(quietMs, cadenceUntil)
    return server.sockets.size === 0 ? Effect.void : Effect.andThen(Effect.sleep(tick), loop)
  })
  return Effect.sync(() => server.closeListener()).pipe(
    // A client told `Connection: close` reconnects at once: the socket it reconnects to must be
    // closed (refusing) or still handing over, never in between (dropping what it queued).
    Effect.andThen(server.unlisted),
    Effect.andThen(Effect.sync(() => {
      server.stopAccepting()
      const now = Date.now()
      // stoppedAt is the Clock's time: Date.now() in a real run. Without a signal (a scope closed in
      // a test), the deadline is counted from here.
      const deadline = (lifecycle.stoppedAt() ?? now) + Duration.toMillis(lifecycle.settings.shutdownTimeout)
      cadenceUntil = now + Math.max(0, deadline - now) / 2
    })),
    Effect.andThen(Effect.raceFirst(
      loop,
      Effect.andThen(Deferred.await(lifecycle.forced), Effect.sync(() => server.destroyAll()))
    ))
  )
}
