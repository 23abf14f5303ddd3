/**
 * The Node http.Server, owned here so shutdown drains keep-alive connections with no resets;
 * Effect's NodeHttpServer.makeHandler runs every request. Listens on a port, an fd or LISTEN_FDS.
 */
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import { Context, Deferred, Duration, Effect, Exit, Layer, Option, Result, Schema, Scope } from "effect"
import * as ByteSize from "effect/ByteSize"
import {
  HttpEffect,
  HttpIncomingMessage,
  type HttpMiddleware,
  HttpRouter,
  type HttpServerRequest,
  HttpServerResponse
} from "effect/http"
import * as EffectHttpServer from "effect/http/HttpServer"
import * as NetAddress from "effect/net/NetAddress"
import * as Http from "node:http"
import * as Net from "node:net"
import * as Settings from "./Config.ts"
import { Health } from "./Health.ts"
import { Lifecycle } from "./Lifecycle.ts"
import * as RequestId from "./RequestId.ts"

export class HttpServerError extends Schema.TaggedError<HttpServerError>()("HttpServerError", {
  reason: Schema.Literals(["ListenFailed", "InvalidSettings"]),
  message: Schema.String
}) {}

/** Where a server's listening socket comes from. */
export type Listener =
  | { readonly _tag: "Port"; readonly port: number; readonly host: string | undefined }
  | { readonly _tag: "Fd"; readonly fd: number; readonly source: "LISTEN_FD" | "LISTEN_FDS" }

/** systemd passes sockets from fd 3 (SD_LISTEN_FDS_START), for this pid only. */
const systemdFirstFd = 3

/** The main and admin listeners: systemd's sockets first, then LISTEN_FD, then ports. */
export const listeners = (
  settings: Settings.HttpSettings,
  pid: number
): { readonly main: Listener; readonly admin: Option.Option<Listener> } => {
  const systemd = Option.isSome(settings.systemdFds) && Option.getOrUndefined(settings.systemdPid) === pid
    ? settings.systemdFds.value
    : 0
  const adminPort = Option.map(settings.adminPort, (port): Listener => ({
    _tag: "Port",
    port,
    host: Option.getOrUndefined(Option.orElse(settings.adminHost, () => settings.host))
  }))
  if (systemd >= 1) {
    return {
      main: { _tag: "Fd", fd: systemdFirstFd, source: "LISTEN_FDS" },
      admin: systemd >= 2 ? Option.some({ _tag: "Fd", fd: systemdFirstFd + 1, source: "LISTEN_FDS" }) : adminPort
    }
  }
  const main: Listener = Option.isSome(settings.listenFd)
    ? { _tag: "Fd", fd: settings.listenFd.value, source: "LISTEN_FD" }
    : { _tag: "Port", port: settings.port, host: Option.getOrUndefined(settings.host) }
  return { main, admin: adminPort }
}

const describeListener = (listener: Listener) =>
  listener._tag === "Fd" ? `fd ${listener.fd} (${listener.source})` : `${listener.host ?? "*"}:${listener.port}`

const kIdleSince = Symbol.for("scoped-server/idleSince")

interface TrackedSocket extends Net.Socket {
  /** Node's own pointer to the response being written on this socket, if any. */
  _httpMessage?: Http.ServerResponse | null
  [kIdleSince]?: number
}

type RequestListener = (request: Http.IncomingMessage, response: Http.ServerResponse) => void

const notReadyBody = JSON.stringify({ error: "Service Unavailable", status: 503, message: "the server is starting" })
const notReady: RequestListener = (_request, response) => {
  response.writeHead(503, { "content-type": "application/json", "content-length": Buffer.byteLength(notReadyBody) })
  response.end(notReadyBody)
}

/**
 * One Node server and what its drain needs to know: the open sockets and, once draining,
 * when each went idle. Serving normally costs nothing per request: the bookkeeping starts
 * with the drain.
 */
class DrainableServer {
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

/**
 * What protects a response that is not a page (every JSON answer): no MIME sniffing, never run
 * or framed as a document (CSP, whose frame-ancestors supersedes X-Frame-Options), not loadable
 * cross-origin except through CORS. Headers that only mean something for an HTML document are
 * left off data (OWASP's REST guidance); every header costs the server and each client per response.
 */
const dataHeaders = {
  "x-content-type-options": "nosniff",
  "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
  "cross-origin-resource-policy": "same-origin"
}
/** The docs page is a document: the rest of the set too, and a CSP that lets Scalar run. */
const docsHeaders = {
  ...dataHeaders,
  "x-frame-options": "DENY",
  "referrer-policy": "no-referrer",
  "cross-origin-opener-policy": "same-origin",
  "content-security-policy":
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; connect-src 'self'; frame-ancestors 'none'"
}

export interface AccessLogLine {
  readonly requestId: string
  readonly method: string
  readonly path: string
  readonly status: number
  readonly durationMs: number
}

/**
 * The response every request gets, set up where Node creates it (cheaper than any Effect
 * middleware on the hot path): the request id (RequestId.ts), security headers, and, when
 * enabled, one access-log line when the response finishes.
 *
 * `end(body)`: Effect sets `strictContentLength`, which turns off Node's single-write path, so
 * the head, the body and an empty finishing chunk go out as a writev. When the body's length is
 * exactly the declared one, the strict check has nothing left to catch and is lifted for the
 * call: one write.
 */
const makeServerResponse = (accessLog: ((line: AccessLogLine) => void) | undefined) =>
  class ServerResponse<Request extends Http.IncomingMessage = Http.IncomingMessage> extends Http.ServerResponse<Request> {
    private readonly requestId: string
    private readonly securityHeaders: Record<string, string>

    constructor(request: Request) {
      super(request)
      const requestId = RequestId.assign(request)
      const url = request.url ?? "/"
      this.requestId = requestId
      this.securityHeaders = url === "/docs" || url.startsWith("/docs?") ? docsHeaders : dataHeaders
      if (accessLog !== undefined) {
        const startedAt = performance.now()
        this.once("finish", () =>
          accessLog({
            requestId,
            method: request.method ?? "",
            path: url.split("?")[0]!,
            status: this.statusCode,
            durationMs: Math.round((performance.now() - startedAt) * 10) / 10
          }))
      }
    }

    /** Merged into the head in one pass (setHeader per header would take Node's slow path). */
    override writeHead(statusCode: number, statusMessage?: any, headers?: any): this {
      if (typeof statusMessage === "object" && statusMessage !== null) {
        headers = statusMessage
        statusMessage = undefined
      }
      const merged = Array.isArray(headers)
        ? [...Object.entries(this.securityHeaders).flat(), "x-request-id", this.requestId, ...headers.flat()]
        : { ...this.securityHeaders, "x-request-id": this.requestId, ...headers }
      return statusMessage === undefined ? super.writeHead(statusCode, merged) : super.writeHead(statusCode, statusMessage, merged)
    }

    override end(chunk?: any, encoding?: any, callback?: any): this {
      const self = this as unknown as { _contentLength: number | null; _headerSent: boolean }
      if (
        this.strictContentLength && typeof chunk === "string" && encoding === undefined && callback === undefined &&
        !self._headerSent && self._contentLength !== null && Buffer.byteLength(chunk) === self._contentLength
      ) {
        this.strictContentLength = false
      }
      return super.end(chunk, encoding, callback)
    }
  }

const clientErrorStatus = (code: string | undefined): number =>
  code === "HPE_HEADER_OVERFLOW" ? 431 : code === "ERR_HTTP_REQUEST_TIMEOUT" ? 408 : 400

/** Bytes Node could not parse as HTTP get a JSON answer and a closed connection, never a hang. */
function onClientError(error: Error & { code?: string }, socket: Net.Socket) {
  const pending = (socket as Net.Socket & { _httpMessage?: Http.ServerResponse })._httpMessage
  if (error.code === "ECONNRESET" || !socket.writable || (pending !== undefined && pending.headersSent)) {
    socket.destroy()
    return
  }
  const status = clientErrorStatus(error.code)
  const body = JSON.stringify({ error: Http.STATUS_CODES[status], status })
  socket.end(
    `HTTP/1.1 ${status} ${Http.STATUS_CODES[status]}\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`
  )
}

const listen = (server: Http.Server, listener: Listener) =>
  Effect.callback<void, HttpServerError>((resume) => {
    const onError = (error: Error & { code?: string }) => {
      resume(Effect.fail(
        new HttpServerError({
          reason: "ListenFailed",
          message: `cannot listen on ${describeListener(listener)}: ${error.message}`
        })
      ))
    }
    server.once("error", onError)
    const onListening = () => {
      server.off("error", onError)
      resume(Effect.void)
    }
    if (listener._tag === "Fd") {
      server.listen({ fd: listener.fd }, onListening)
    } else {
      server.listen(listener.host === undefined ? { port: listener.port } : { port: listener.port, host: listener.host }, onListening)
    }
  })

const addressOf = (server: Http.Server): NetAddress.SocketAddress => {
  const address = server.address()!
  if (typeof address === "string") return NetAddress.unixPathAddress(address)
  return Result.getOrElse(
    NetAddress.inetAddressFromIpString(address.address, address.port),
    () => NetAddress.inetAddressFromIpStringUnsafe("0.0.0.0", address.port)
  )
}

const nodeServerOptions = (
  settings: Settings.HttpSettings,
  ServerResponse: typeof Http.ServerResponse
): Http.ServerOptions => {
  const headersTimeout = Duration.toMillis(settings.headersTimeout)
  return {
    headersTimeout,
    requestTimeout: Duration.toMillis(settings.requestTimeout),
    keepAliveTimeout: Duration.toMillis(settings.keepAliveTimeout),
    maxHeaderSize: settings.maxHeaderSize,
    ServerResponse,
    // Node checks the header and request timeouts on this tick (default 30 s, far too coarse).
    connectionsCheckingInterval: Math.max(100, Math.min(1_000, Math.floor(headersTimeout / 4))),
    noDelay: true
  }
}

/** The one shape of every error answer: `{error, status, message?}`. */
export const errorResponse = (
  status: number,
  message?: string,
  headers?: HttpServerResponse.Options["headers"]
): HttpServerResponse.HttpServerResponse => {
  const error = Http.STATUS_CODES[status] ?? "Error"
  return HttpServerResponse.jsonUnsafe(
    message === undefined ? { error, status } : { error, status, message },
    headers === undefined ? { status } : { status, headers }
  )
}

const isJson = (response: HttpServerResponse.HttpServerResponse) =>
  response.body._tag !== "Empty" && (response.body.contentType ?? response.headers["content-type"] ?? "").startsWith("application/json")

/**
 * Every error answer is JSON: an empty one gets a body that says what was wrong, a plain-text
 * one (some library paths answer `text/plain`) has its text carried over as the message.
 */
const jsonErrorBodies = (maxBodySize: number): HttpEffect.PreResponseHandler => (request, response) => {
  if (response.status < 400) return Effect.succeed(response)
  const answer = isJson(response) ? response : jsonBody(request, response, maxBodySize)
  // Every 503 here is temporary: tell clients when to come back.
  return Effect.succeed(
    answer.status === 503 && answer.headers["retry-after"] === undefined
      ? HttpServerResponse.setHeader(answer, "retry-after", "1")
      : answer
  )
}

const jsonBody = (
  request: HttpServerRequest.HttpServerRequest,
  response: HttpServerResponse.HttpServerResponse,
  maxBodySize: number
) => {
  const status = response.status
  const text = response.body._tag === "Uint8Array" && response.body.contentLength <= 500
    ? new TextDecoder().decode(response.body.body)
    : undefined
  const message = text !== undefined && text.length > 0
    ? text
    : status === 404
    ? `no route for ${request.method} ${request.url.split("?")[0]}`
    : status === 405
    ? `${request.method} is not allowed here`
    : status === 413
    ? `the request body is larger than ${maxBodySize} bytes`
    : status === 503
    ? "the server is shutting down"
    : undefined
  const { "content-type": _, "content-length": __, ...headers } = response.headers
  return errorResponse(status, message, headers)
}

const makeServer = Effect.fnUntraced(function*(
  name: string,
  listener: Listener,
  settings: Settings.HttpSettings,
  lifecycle: Lifecycle["Service"],
  ServerResponse: typeof Http.ServerResponse
) {
  if (Duration.toMillis(settings.headersTimeout) > Duration.toMillis(settings.requestTimeout)) {
    return yield* new HttpServerError({
      reason: "InvalidSettings",
      message: "HEADERS_TIMEOUT must not exceed REQUEST_TIMEOUT"
    })
  }
  const drainable = new DrainableServer(name, Http.createServer(nodeServerOptions(settings, ServerResponse)), lifecycle)
  // Whatever the drain did, nothing of this server outlives its scope.
  yield* Effect.addFinalizer(() =>
    Effect.sync(() => {
      drainable.destroyAll()
      drainable.dispose()
    })
  )
  yield* listen(drainable.server, listener)
  return drainable
})

/** Waits until every socket of `server` is gone, closing quiet ones; destroys the rest if forced. */
const drainSockets = (server: DrainableServer, lifecycle: Lifecycle["Service"]) => {
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

export class HttpServer extends Context.Service<HttpServer, {
  readonly address: NetAddress.SocketAddress
  readonly adminAddress: Option.Option<NetAddress.SocketAddress>
}>()("scoped-server/HttpServer") {
  /**
   * The main server (provided as Effect's `HttpServer`, so `HttpRouter.serve` works) and,
   * with `ADMIN_PORT`, an admin server for the probes. Both drain together on shutdown.
   */
  static readonly layer = Layer.effectContext(
    Effect.gen(function*() {
      const settings = yield* Settings.http
      const lifecycle = yield* Lifecycle
      const health = yield* Health
      const scope = yield* Effect.scope
      // Request fibers belong to the server, not to the routes' layer: they live through the drain.
      const requestScope = yield* Scope.fork(scope, "parallel")
      const sources = listeners(settings, process.pid)

      const { accessLog } = yield* Settings.web
      const logContext = yield* Effect.context<never>()
      const log = Effect.runSyncWith(logContext)
      const ServerResponse = makeServerResponse(
        accessLog ? (line) => log(Effect.logInfo("request").pipe(Effect.annotateLogs({ ...line }))) : undefined
      )
      const main = yield* makeServer("main", sources.main, settings, lifecycle, ServerResponse)
      const admin = Option.isSome(sources.admin)
        ? Option.some(yield* makeServer("admin", sources.admin.value, settings, lifecycle, ServerResponse))
        : Option.none<DrainableServer>()
      const servers = Option.match(admin, { onNone: () => [main], onSome: (admin) => [main, admin] })

      const preResponse = jsonErrorBodies(settings.maxBodySize)
      const handlerFor = <E, R>(
        app: Effect.Effect<HttpServerResponse.HttpServerResponse, E, R>,
        middleware?: HttpMiddleware.HttpMiddleware
      ) =>
        NodeHttpServer.makeHandler(HttpEffect.withPreResponseHandler(app, preResponse), {
          scope: requestScope,
          middleware: middleware as any
        }).pipe(
          Effect.provideService(HttpIncomingMessage.MaxBodySize, ByteSize.bytes(settings.maxBodySize))
        )

      if (Option.isSome(admin)) {
        const adminApp = yield* HttpRouter.toHttpEffect(Health.routes)
        admin.value.setHandler(yield* handlerFor(adminApp).pipe(
          Effect.provideService(Health, health),
          Effect.provideService(Lifecycle, lifecycle)
        ))
      }

      // The first finalizer to run (the routes' or this layer's) drains; the other finds it done.
      const drain = yield* Effect.cached(
        lifecycle.phase(
          "draining",
          Effect.andThen(
            Effect.sync(() => servers.forEach((server) => server.startDraining())),
            Effect.raceFirst(Effect.sleep(lifecycle.settings.drainDelay), Deferred.await(lifecycle.forced))
          )
        ).pipe(
          Effect.andThen(lifecycle.phase(
            "closing",
            Effect.forEach(servers, (server) => drainSockets(server, lifecycle), {
              concurrency: "unbounded",
              discard: true
            }),
            { servers: servers.map((server) => server.name) }
          )),
          // Handlers still running at the deadline are interrupted; their sockets are already gone.
          Effect.andThen(Scope.close(requestScope, Exit.void))
        )
      )
      yield* Effect.addFinalizer(() => drain)

      yield* Effect.logInfo("listening").pipe(Effect.annotateLogs({
        servers: servers.map((server) => ({
          name: server.name,
          address: EffectHttpServer.formatAddress(addressOf(server.server))
        }))
      }))

      const effectServer = EffectHttpServer.make({
        address: addressOf(main.server),
        serve: (app, middleware) =>
          Effect.gen(function*() {
            main.setHandler(yield* handlerFor(app, middleware))
            yield* Effect.addFinalizer(() => drain)
          })
      })
      return Context.make(HttpServer, {
        address: addressOf(main.server),
        adminAddress: Option.map(admin, (admin) => addressOf(admin.server))
      }).pipe(Context.add(EffectHttpServer.HttpServer, effectServer))
    })
  ).pipe(Layer.provideMerge(NodeHttpServer.layerHttpServices))
}
