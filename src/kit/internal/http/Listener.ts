/**
 * Where a server's listening socket comes from (a port, an inherited fd, systemd's LISTEN_FDS),
 * and listening on it with a failure that names the source.
 */
import { Effect, Option, Result, Schema } from "effect"
import * as NetAddress from "effect/net/NetAddress"
import type * as Http from "node:http"

/** The socket could not be bound or inherited; the cause (EADDRINUSE, EBADF, …) is kept. */
export class ListenError extends Schema.TaggedError<ListenError>()("ListenError", {
  listener: Schema.String,
  cause: Schema.Defect()
}) {
  override get message() {
    const cause = this.cause as { readonly message?: unknown } | undefined
    return `cannot listen on ${this.listener}: ${
      typeof cause?.message === "string" ? cause.message : String(this.cause)
    }`
  }
}

export type Listener =
  | { readonly _tag: "Port"; readonly port: number; readonly host: string | undefined }
  | { readonly _tag: "Fd"; readonly fd: number; readonly source: "LISTEN_FD" | "LISTEN_FDS" | "ADMIN_LISTEN_FD" }
  /** A supervisor accepts and hands the connections over; `handle` stands for its socket. */
  | { readonly _tag: "Handoff"; readonly handle: object }

/** A socket this process binds or inherits itself (what `listeners` finds in the settings). */
export type Bindable = Exclude<Listener, { readonly _tag: "Handoff" }>

/** What `listeners` reads; the HttpServer's settings carry these. */
export interface ListenerSettings {
  readonly port: number
  readonly host: Option.Option<string>
  readonly listenFd: Option.Option<number>
  readonly systemdFds: Option.Option<number>
  readonly systemdPid: Option.Option<number>
  readonly adminPort: Option.Option<number>
  readonly adminHost: Option.Option<string>
  /** The admin listening socket inherited from the parent (a supervisor hands both sockets down). */
  readonly adminListenFd?: Option.Option<number>
}

/** systemd passes sockets from fd 3 (SD_LISTEN_FDS_START), for this pid only. */
const systemdFirstFd = 3

/** The main and admin listeners: systemd's sockets first, then LISTEN_FD, then ports. */
export const listeners = (
  settings: ListenerSettings,
  pid: number
): { readonly main: Bindable; readonly admin: Option.Option<Bindable> } => {
  const systemd = Option.isSome(settings.systemdFds) && Option.getOrUndefined(settings.systemdPid) === pid
    ? settings.systemdFds.value
    : 0
  const adminFd = Option.map(
    settings.adminListenFd ?? Option.none(),
    (fd): Bindable => ({ _tag: "Fd", fd, source: "ADMIN_LISTEN_FD" })
  )
  const adminPort = Option.orElse(adminFd, () =>
    Option.map(settings.adminPort, (port): Bindable => ({
      _tag: "Port",
      port,
      host: Option.getOrUndefined(Option.orElse(settings.adminHost, () => settings.host))
    })))
  if (systemd >= 1) {
    return {
      main: { _tag: "Fd", fd: systemdFirstFd, source: "LISTEN_FDS" },
      admin: systemd >= 2 ? Option.some({ _tag: "Fd", fd: systemdFirstFd + 1, source: "LISTEN_FDS" }) : adminPort
    }
  }
  const main: Bindable = Option.isSome(settings.listenFd)
    ? { _tag: "Fd", fd: settings.listenFd.value, source: "LISTEN_FD" }
    : { _tag: "Port", port: settings.port, host: Option.getOrUndefined(settings.host) }
  return { main, admin: adminPort }
}

export const describe = (listener: Listener) =>
  listener._tag === "Fd"
    ? `fd ${listener.fd} (${listener.source})`
    : listener._tag === "Handoff"
    ? "the supervisor's socket"
    : `${listener.host ?? "*"}:${listener.port}`

export const listen = (server: Http.Server, listener: Listener) =>
  Effect.callback<void, ListenError>((resume) => {
    const onError = (cause: Error) => {
      resume(Effect.fail(new ListenError({ listener: describe(listener), cause })))
    }
    server.once("error", onError)
    const onListening = () => {
      server.off("error", onError)
      resume(Effect.void)
    }
    if (listener._tag === "Fd") {
      server.listen({ fd: listener.fd }, onListening)
    } else if (listener._tag === "Handoff") {
      server.listen(listener.handle, onListening)
    } else {
      server.listen(
        listener.host === undefined ? { port: listener.port } : { port: listener.port, host: listener.host },
        onListening
      )
    }
  })

export const addressOf = (server: Http.Server): NetAddress.SocketAddress => {
  const address = server.address()!
  if (typeof address === "string") return NetAddress.unixPathAddress(address)
  return Result.getOrElse(
    NetAddress.inetAddressFromIpString(address.address, address.port),
    () => NetAddress.inetAddressFromIpStringUnsafe("0.0.0.0", address.port)
  )
}

/** The TCP port a server listens on (0 for a unix socket, which has none). */
export const portOf = (server: Http.Server): number => {
  const address = server.address()
  return address !== null && typeof address === "object" ? address.port : 0
}
