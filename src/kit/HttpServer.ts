/**
 * The HTTP server as a scoped Layer: settings → Node servers (main, optional admin) → Effect's
 * HttpServer, with the drain phases run as its finalizer. The parts live in `http/`.
 */
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as NodeWS from "@effect/platform-node/NodeWS"
import { Config, Context, Deferred, Duration, Effect, Exit, Layer, Option, Scope } from "effect"
import * as ByteSize from "effect/ByteSize"
import { HttpEffect, HttpIncomingMessage, type HttpMiddleware, HttpRouter, type HttpServerResponse } from "effect/http"
import * as EffectHttpServer from "effect/http/HttpServer"
import type * as NetAddress from "effect/net/NetAddress"
import * as Http from "node:http"
import type { Duplex } from "node:stream"
import { Health } from "./Health.ts"
import * as Continue from "./internal/http/Continue.ts"
import { cutStalledWrites, DrainableServer, drainSockets, trackLatest } from "./internal/http/Drain.ts"
import { errorBodies, notReady } from "./internal/http/ErrorBodies.ts"
import * as Listener from "./internal/http/Listener.ts"
import { type AccessLogLine, makeServerResponse } from "./internal/http/Response.ts"
import { metricsRoute, RequestMetrics } from "./internal/metrics/Http.ts"
import { observe } from "./internal/metrics/Registry.ts"
import { collect } from "./internal/metrics/Runtime.ts"
import * as Worker from "./internal/supervisor/Worker.ts"
import { Lifecycle } from "./Lifecycle.ts"
import { LiveConnections } from "./LongLived.ts"
import { boolean, bytes, check, duration, formatDuration, optionalInt, port } from "./Settings.ts"

/**
 * Where the HTTP servers listen, and the limits on what clients may send. Settings that
 * contradict each other are refused here, before anything listens.
 */
export const HttpServerConfig = Config.all({
  /** None when unset, so an explicit PORT beside LISTEN_FD can be told from the default. */
  port: Config.option(port("PORT")),
  host: Config.option(Config.NonEmptyString("HOST")),
  /** A listening socket inherited from the parent process (e.g. during an upgrade). */
  listenFd: optionalInt("LISTEN_FD", { min: 0, max: 65535 }),
  /** systemd socket activation: fds from 3, only when LISTEN_PID is this process. */
  systemdFds: optionalInt("LISTEN_FDS", { min: 0, max: 64 }),
  systemdPid: optionalInt("LISTEN_PID", { min: 1, max: 4_194_304 }),
  adminPort: Config.option(port("ADMIN_PORT")),
  adminHost: Config.option(Config.NonEmptyString("ADMIN_HOST")),
  /** The admin listening socket inherited from the parent, as LISTEN_FD is the main one. */
  adminListenFd: optionalInt("ADMIN_LISTEN_FD", { min: 0, max: 65535 }),
  headersTimeout: duration("HEADERS_TIMEOUT", { default: "10 seconds", min: "100 millis", max: "10 minutes" }),
  /**
   * Below the default SHUTDOWN_TIMEOUT (25s): a client trickling its body is cut here, so by
   * default it cannot hold a shutdown to the deadline and turn a clean exit into 1.
   */
  requestTimeout: duration("REQUEST_TIMEOUT", { default: "20 seconds", min: "100 millis", max: "1 hour" }),
  // Up to an hour: behind a Google Cloud load balancer (backend keep-alive fixed at 600s) it must exceed 10 minutes.
  keepAliveTimeout: duration("KEEP_ALIVE_TIMEOUT", { default: "5 seconds", min: "100 millis", max: "1 hour" }),
  /**
   * A response whose client reads nothing for this long is cut and its socket closed: a client
   * that never reads holds neither memory nor the shutdown past it. 0 turns it off.
   */
  writeTimeout: duration("WRITE_TIMEOUT", { default: "10 seconds", max: "1 hour" }),
  maxBodySize: bytes("MAX_BODY_SIZE", { default: 1024 * 1024, min: 1, max: 1024 ** 3 }),
  // Below 1 KiB a request line and Host header with a few cookies no longer fit.
  maxHeaderSize: bytes("MAX_HEADER_SIZE", { default: 16 * 1024, min: 1024, max: 1024 * 1024 }),
  accessLog: boolean("ACCESS_LOG", { default: true }),
  /** `/metrics` (admin server, else main) and the per-request histogram; false records nothing. */
  metrics: boolean("METRICS", { default: true })
}).pipe(
  check((settings) => {
    if (Option.isSome(settings.listenFd) && Option.isSome(settings.port)) {
      return "LISTEN_FD and PORT are both set: the server listens on the inherited socket, so PORT would be ignored; unset one"
    }
    // Node refuses this pair when it creates the server; refused here it names both variables.
    if (Duration.isGreaterThan(settings.headersTimeout, settings.requestTimeout)) {
      return `HEADERS_TIMEOUT must not exceed REQUEST_TIMEOUT (${formatDuration(settings.headersTimeout)} > ${
        formatDuration(settings.requestTimeout)
      })`
    }
    return undefined
  }),
  Config.map((settings) => ({ ...settings, port: Option.getOrElse(settings.port, () => 3000) }))
)
export type HttpServerSettings = Config.Success<typeof HttpServerConfig>

/** What the app tells the server that settings do not: which paths are HTML documents. */
export interface HttpServerOptions {
  /** Served with the document set of security headers (`/docs`, say); everything else is data. */
  readonly documentPaths?: ReadonlyArray<string>
  /**
   * Refuses an `Expect: 100-continue` request from its head, before the client sends the body
   * (after the kit's own check of the declared size against MAX_BODY_SIZE).
   */
  readonly checkContinue?: Continue.ContinueCheck
}

const nodeServerOptions = (
  settings: HttpServerSettings,
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

const makeServer = Effect.fnUntraced(function*(
  name: string,
  listener: Listener.Listener,
  settings: HttpServerSettings,
  lifecycle: Lifecycle["Service"],
  ServerResponse: typeof Http.ServerResponse
) {
  const drainable = new DrainableServer(name, Http.createServer(nodeServerOptions(settings, ServerResponse)), lifecycle)
  // An inherited socket is shared: its owner (a supervisor, systemd) keeps it open, and its other
  // holders serve what it queues. A request this process accepts before its routes are installed
  // waits for them, instead of the 503 a freshly bound port answers then.
  const parked: Array<readonly [Http.IncomingMessage, Http.ServerResponse]> = []
  if (name === "main" && listener._tag !== "Port") {
    drainable.setHandler((request, response) => {
      parked.push([request, response])
    })
  }
  cutStalledWrites(drainable, Duration.toMillis(settings.writeTimeout))
  // Whatever the drain did, nothing of this server outlives its scope.
  yield* Effect.addFinalizer(() =>
    Effect.sync(() => {
      for (const [request, response] of parked.splice(0)) notReady(request, response)
      drainable.destroyAll()
      drainable.dispose()
    })
  )
  if (Worker.identity !== undefined) {
    const tag = `${Worker.identity.generation}.${Worker.identity.pid}`
    drainable.server.prependListener("request", (_request, response: Http.ServerResponse) => {
      response.setHeader("x-worker", tag)
    })
  }
  if (listener._tag === "Handoff" && Worker.handoff !== undefined) {
    Worker.handoff.track(drainable.server)
    // Bounded: a supervisor too busy to answer within it is answered by the drain going on.
    drainable.unlisted = Worker.handoff.unlisted(1_000)
  }
  yield* Listener.listen(drainable.server, listener)
  return Object.assign(drainable, {
    /** Installs the handler and hands it whatever arrived before it. */
    install: (handler: (request: Http.IncomingMessage, response: Http.ServerResponse) => void) => {
      drainable.setHandler(handler)
      for (const [request, response] of parked.splice(0)) handler(request, response)
    }
  })
})

/** A raw 503 on a socket Node handed over for an upgrade: there is no ServerResponse to answer with. */
const refuseUpgrade = (socket: Duplex) => {
  const body = JSON.stringify({
    status: 503,
    title: "Service Unavailable",
    detail: "the server is shutting down; retry"
  })
  socket.on("error", () => {})
  socket.end(
    `HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\ncontent-length: ${
      Buffer.byteLength(body)
    }\r\nretry-after: 1\r\nconnection: close\r\n\r\n${body}`
  )
}

const make = Effect.fnUntraced(function*(settings: HttpServerSettings, options: HttpServerOptions) {
  const lifecycle = yield* Lifecycle
  const health = yield* Health
  const scope = yield* Effect.scope
  // Request fibers belong to the server, not to the routes' layer: they live through the drain.
  const requestScope = yield* Scope.fork(scope, "parallel")
  const listed = Listener.listeners(settings, process.pid)
  // Under a supervisor that accepts for its workers, the main socket is its, not ours.
  const sources = Worker.handoff === undefined
    ? listed
    : { ...listed, main: { _tag: "Handoff" as const, handle: Worker.handoff.handle } }

  const logContext = yield* Effect.context<never>()
  const log = Effect.runSyncWith(logContext)
  // Registered before the drain's finalizer, so a scrape during the drain still sees them.
  if (settings.metrics) yield* collect(lifecycle)
  const responseOptions = {
    documentPaths: options.documentPaths ?? [],
    accessLog: settings.accessLog
      ? (line: AccessLogLine) => log(Effect.logInfo("request").pipe(Effect.annotateLogs({ ...line })))
      : undefined
  }
  const requestMetrics = settings.metrics ? new RequestMetrics(logContext) : undefined
  if (requestMetrics !== undefined) {
    yield* observe(
      "http_server_active_requests",
      "Requests in flight (http.server.active_requests).",
      () => requestMetrics.active
    )
  }
  const ServerResponse = trackLatest(makeServerResponse({ ...responseOptions, metrics: requestMetrics }))
  const main = yield* makeServer("main", sources.main, settings, lifecycle, ServerResponse)
  // Probes and scrapes on the admin server stay out of the application's request metrics.
  const admin = Option.isSome(sources.admin)
    ? Option.some(
      yield* makeServer(
        "admin",
        sources.admin.value,
        settings,
        lifecycle,
        requestMetrics === undefined
          ? ServerResponse
          : trackLatest(makeServerResponse({ ...responseOptions, metrics: undefined }))
      )
    )
    : Option.none<DrainableServer>()
  const servers = Option.match(admin, { onNone: () => [main], onSome: (admin) => [main, admin] })
  const continueChecks = [
    Continue.declaredSize(settings.maxBodySize),
    ...(options.checkContinue ? [options.checkContinue] : [])
  ]
  servers.forEach((server) => {
    Continue.install(server.server, continueChecks)
    Continue.installExpectation(server.server)
  })

  const live = yield* LiveConnections.make(lifecycle.totals)
  // WebSocket messages are bounded like request bodies (ws would take 100 MiB by default).
  const webSockets = yield* Effect.acquireRelease(
    Effect.sync(() => new NodeWS.WebSocketServer({ noServer: true, maxPayload: settings.maxBodySize })),
    (wss) => Effect.callback<void>((resume) => wss.close(() => resume(Effect.void)))
  )
  // At the start of closing: streams send their final event, WebSockets are told "going away";
  // their clients close, and the quiet window then closes what is left like any idle socket.
  const closeLive = Effect.sync(() => {
    live.close()
    for (const ws of webSockets.clients) {
      ws.close(1001, "server shutting down")
      lifecycle.totals.webSocketsClosed++
    }
  })

  const preResponse = errorBodies(settings.maxBodySize)
  // A handler can outlive its socket (a client gone mid-transaction): it counts as work to cut.
  let running = 0
  const leave = Effect.sync(() => {
    running--
  })
  yield* lifecycle.trackWork(() => running > 0 || servers.some((server) => server.sockets.size > 0))
  const handlerFor = <E, R>(
    app: Effect.Effect<HttpServerResponse.HttpServerResponse, E, R>,
    middleware?: HttpMiddleware.HttpMiddleware
  ) =>
    NodeHttpServer.makeHandler(
      Effect.suspend(() => {
        running++
        return Effect.ensuring(HttpEffect.withPreResponseHandler(app, preResponse), leave)
      }),
      { scope: requestScope, middleware: middleware as any }
    ).pipe(
      Effect.map((handler) => Continue.refuseOversized(settings.maxBodySize, handler)),
      Effect.provideService(HttpIncomingMessage.MaxBodySize, ByteSize.bytes(settings.maxBodySize))
    )

  if (Option.isSome(admin)) {
    const adminApp = yield* HttpRouter.toHttpEffect(
      settings.metrics ? Layer.mergeAll(Health.routes, metricsRoute) : Health.routes
    )
    admin.value.setHandler(
      yield* handlerFor(adminApp).pipe(
        Effect.provideService(Health, health),
        Effect.provideService(Lifecycle, lifecycle)
      )
    )
  }

  // The first finalizer to run (the routes' or this layer's) drains; the other finds it done.
  const drain = yield* Effect.cached(
    lifecycle.phase(
      "draining",
      Effect.andThen(
        Effect.sync(() => servers.forEach((server) => server.startDraining())),
        Effect.raceFirst(
          Effect.sleep(lifecycle.settings.drainDelay),
          Effect.raceFirst(Deferred.await(lifecycle.forced), Deferred.await(lifecycle.hurried))
        )
      )
    ).pipe(
      Effect.andThen(lifecycle.phase(
        "closing",
        Effect.andThen(
          closeLive,
          Effect.forEach(servers, (server) => drainSockets(server, lifecycle), {
            concurrency: "unbounded",
            discard: true
          })
        ),
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
      address: EffectHttpServer.formatAddress(Listener.addressOf(server.server))
    }))
  }))

  const effectServer = EffectHttpServer.make({
    address: Listener.addressOf(main.server),
    serve: (app, middleware) =>
      Effect.gen(function*() {
        main.install(yield* handlerFor(app, middleware))
        const upgrade = yield* NodeHttpServer.makeUpgradeHandler(
          Effect.succeed(webSockets),
          HttpEffect.withPreResponseHandler(app, preResponse),
          {
            scope: requestScope,
            middleware: middleware as any
          }
        ).pipe(Effect.provideService(HttpIncomingMessage.MaxBodySize, ByteSize.bytes(settings.maxBodySize)))
        main.server.on("upgrade", (request: Http.IncomingMessage, socket: Duplex, head: Buffer) => {
          // A connection the drain is closing takes no new long-lived answer: it would be cut at once.
          if (live.service.isClosing()) return refuseUpgrade(socket)
          upgrade(request, socket, head)
        })
        yield* Effect.addFinalizer(() => drain)
      })
  })
  return Context.make(HttpServer, {
    metrics: settings.metrics,
    requestMetrics,
    address: Listener.addressOf(main.server),
    port: Listener.portOf(main.server),
    adminAddress: Option.map(admin, (admin) => Listener.addressOf(admin.server)),
    adminPort: Option.map(admin, (admin) => Listener.portOf(admin.server))
  }).pipe(Context.add(EffectHttpServer.HttpServer, effectServer), Context.add(LiveConnections, live.service))
})

export class HttpServer extends Context.Service<HttpServer, {
  /** `METRICS`: whether the main server's routes should carry the route label (and `/metrics` without an admin server). */
  readonly metrics: boolean
  /** The per-request counters (requests in flight), undefined with `METRICS=false`. */
  readonly requestMetrics: RequestMetrics | undefined
  readonly address: NetAddress.SocketAddress
  /** The main server's TCP port (the one picked when `PORT=0`). */
  readonly port: number
  readonly adminAddress: Option.Option<NetAddress.SocketAddress>
  readonly adminPort: Option.Option<number>
}>()("scoped-server/HttpServer") {
  /**
   * The main server (provided as Effect's `HttpServer`, so `HttpRouter.serve` works) and,
   * with an admin port, an admin server for the probes. Both drain together on shutdown.
   */
  static readonly layer = (settings: HttpServerSettings, options: HttpServerOptions = {}) =>
    Layer.effectContext(make(settings, options)).pipe(Layer.provideMerge(NodeHttpServer.layerHttpServices))

  /** `layer` with the settings read from the environment (`HttpServerConfig`). */
  static readonly layerConfig = (options: HttpServerOptions = {}) =>
    Layer.unwrap(Effect.map(HttpServerConfig, (settings) => HttpServer.layer(settings, options)))
}
