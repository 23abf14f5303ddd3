/**
 * The reference service's long-lived routes: item changes as Server-Sent Events and a WebSocket
 * echo. Both end cleanly when the server starts closing (final event; close code 1001).
 */
import { Effect, Layer, Result, Stream } from "effect"
import { HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import * as Socket from "effect/socket/Socket"
import { LongLived, Problem } from "../kit/index.ts"
import { Authenticator } from "./Auth.ts"
import { ItemEvents } from "./items/Events.ts"

/** What the SSE client is told when the server goes away: reconnect (another instance will answer). */
const goingAway: LongLived.ServerSentEvent = { event: "shutdown", data: "{\"reconnect\":true}" }

const bearer = (request: HttpServerRequest.HttpServerRequest): string | undefined => {
  const header = request.headers["authorization"]
  return header !== undefined && /^bearer /i.test(header) ? header.slice(7).trim() : undefined
}

/**
 * `GET /api/v1/items/events`: item changes as they commit, whichever process made them (and
 * `resync` when some may have been missed); Bearer JWT as the API.
 */
const itemEvents = (
  authenticate: Authenticator["Service"]["authenticate"],
  changes: ItemEvents["Service"]
) =>
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const token = bearer(request)
    if (token === undefined || token.length === 0) {
      return Problem.errorResponse(401, "a bearer token is required", { "www-authenticate": "Bearer" })
    }
    const user = yield* authenticate(token)
    if (Result.isFailure(user)) return user.failure
    // Subscribed before the head goes out: no change committed after the 200 is missed.
    const subscription = Stream.fromPubSub(changes)
    return yield* LongLived.eventStream(
      Stream.map(subscription, (change) => ({ event: change.type, data: JSON.stringify(change) })),
      { final: goingAway }
    )
  })

/**
 * `GET /ws/echo`: every message back as it came (text as text, binary as binary). Messages are
 * bounded by MAX_BODY_SIZE; a close from either side, 1001 at shutdown included, ends it cleanly.
 */
const echo = Effect.gen(function*() {
  const request = yield* HttpServerRequest.HttpServerRequest
  const socket = yield* request.upgrade
  const write = (yield* socket.writer).writeAll
  const { pull } = yield* socket.reader
  yield* Effect.forever(Effect.flatMap(pull, write))
}).pipe(
  Effect.scoped,
  Effect.catchTag(
    "SocketError",
    (error) =>
      Socket.isSocketError(error) && error.reason._tag === "SocketCloseError" ? Effect.void : Effect.fail(error)
  ),
  Effect.as(HttpServerResponse.empty())
)

export const routes = Layer.effectDiscard(Effect.gen(function*() {
  const router = yield* HttpRouter.HttpRouter
  const { authenticate } = yield* Authenticator
  yield* router.add("GET", "/api/v1/items/events", itemEvents(authenticate, yield* ItemEvents))
  yield* router.add("GET", "/ws/echo", echo)
})).pipe(Layer.provide(Authenticator.layer))
