/**
 * Draining one Node server without resets: stop accepting without touching open sockets,
 * let in-flight responses finish with `Connection: close`, close a keep-alive socket only when
 * it has been quiet for the window, destroy what is left when forced.
 */
import { Deferred, Duration, Effect } from "effect"
import * as Http from "node:http"
import * as Net from "node:net"
import type { Lifecycle } from "../Lifecycle.ts"
import { notReady, onClientError } from "./Problem.ts"

const kIdleSince = Symbol.for("scoped-server/idleSince")

interface TrackedSocket extends Net.Socket {
  /** Node's own pointer to the response being written on this socket, if any. */
  _httpMessage?: Http.ServerResponse | null
  [kIdleSince]?: number
}

type RequestListener = (request: Http.IncomingMessage, response: Http.ServerResponse) => void

/**
 * One Node server and what its drain needs to know: the open sockets and, once draining,
 * when each went idle. Serving normally costs nothing per request: the bookkeeping starts
 * with the drain.
 */
export class DrainableServer {
  readonly sockets = new Set<TrackedSocket>()
  private handler: RequestListener = notReady
  private draining = false
  private closingSince: number | undefined

  constructor(
    readonly name: string,
    readonly server: Http.Server,
    readonly lifecycle: Lifecycle["Service"]
  ) {
    const sockets = this.sockets
    server.on("connection", (socket: TrackedSocket) => {
      sockets.add(socket)
      socket.once("close", () => sockets.delete(socket))
    })
    server.on("request", this.handler)
    server.on("clientError", onClientError)
  }

  setHandler(handler: RequestListener): void {
    this.server.off("request", this.handler)
    this.handler = handler
    this.server.on("request", handler)
  }

  /** From here on, every response is counted and every socket's idle time is known. */
  startDraining(): void {
    if (this.draining) return
    this.draining = true
    const totals = this.lifecycle.totals
    // One listener for every response: `this` is the response that closed.
    const onResponseClose = function(this: Http.ServerResponse) {
      ;(this.req.socket as TrackedSocket)[kIdleSince] = Date.now()
      totals.requestsDuringDrain++
    }
    // Prepended, so it runs before the handler can write the response head.
    this.server.prependListener("request", (_request, response: Http.ServerResponse) => {
      if (this.closingSince !== undefined) response.shouldKeepAlive = false
      response.once("close", onResponseClose)
    })
    for (const socket of this.sockets) {
      socket._httpMessage?.once("close", onResponseClose)
    }
  }

  /**
   * Stops accepting without touching open sockets (http.Server#close would close idle ones now,
   * under clients that are writing to them). Responses not yet started will say `Connection: close`.
   */
  stopAccepting(): void {
    this.startDraining()
    if (this.closingSince !== undefined) return
    this.closingSince = Date.now()
    if (this.server.listening) Net.Server.prototype.close.call(this.server)
    for (const socket of this.sockets) {
      const response = socket._httpMessage
      if (response != null && !response.headersSent) response.shouldKeepAlive = false
    }
  }

  /** Closes sockets with no response in flight that have been quiet for `quietMs` since closing began. */
  closeQuiet(quietMs: number): void {
    const now = Date.now()
    const since = this.closingSince ?? now
    for (const socket of this.sockets) {
      if (socket._httpMessage == null && now - Math.max(socket[kIdleSince] ?? since, since) >= quietMs) {
        this.sockets.delete(socket)
        socket.destroy()
        this.lifecycle.totals.socketsClosedIdle++
      }
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

/** Waits until every socket of `server` is gone, closing quiet ones; destroys the rest if forced. */
export const drainSockets = (server: DrainableServer, lifecycle: Lifecycle["Service"]) => {
  const quietMs = Duration.toMillis(lifecycle.settings.quietWindow)
  const tick = Duration.millis(Math.max(5, Math.min(50, Math.floor(quietMs / 4))))
  const loop: Effect.Effect<void> = Effect.suspend(() => {
    server.closeQuiet(quietMs)
    return server.sockets.size === 0 ? Effect.void : Effect.andThen(Effect.sleep(tick), loop)
  })
  return Effect.sync(() => server.stopAccepting()).pipe(
    Effect.andThen(Effect.raceFirst(
      loop,
      Effect.andThen(Deferred.await(lifecycle.forced), Effect.sync(() => server.destroyAll()))
    ))
  )
}
