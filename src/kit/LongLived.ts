/**
 * Long-lived answers that drain: Server-Sent Events streams and WebSockets are told to finish at
 * the start of closing (a final event, close code 1001), so the quiet window can close their sockets.
 */
import { Context, Deferred, Effect, Stream } from "effect"
import { HttpServerResponse } from "effect/http"
import type { Totals } from "./Lifecycle.ts"

/** One Server-Sent Event; `data` may hold newlines (each line becomes its own `data:` field). */
export interface ServerSentEvent {
  readonly event?: string | undefined
  readonly id?: string | undefined
  readonly data: string
}

/** A field value with CR or LF would end the field early: a client could be fed forged events. */
const field = (name: string, value: string) => `${name}: ${value.replace(/[\r\n]+/g, " ")}\n`

/** The wire form (WHATWG HTML, "Server-sent events"): fields, one `data:` per line, a blank line. */
export const encode = (event: ServerSentEvent): string => {
  let out = ""
  if (event.event !== undefined) out += field("event", event.event)
  if (event.id !== undefined) out += field("id", event.id)
  for (const line of event.data.split(/\r\n|\r|\n/)) out += `data: ${line}\n`
  return out + "\n"
}

export class LiveConnections extends Context.Service<LiveConnections, {
  /** Completes at the start of the closing phase, when long-lived answers must finish. */
  readonly closing: Effect.Effect<void>
  readonly isClosing: () => boolean
  /** Where the drain's counts are kept (`eventStreamsEnded`, `webSocketsClosed`). */
  readonly totals: Totals
}>()("scoped-server/LiveConnections") {
  /** The service for one server: `close()` is what its drain calls when closing starts. */
  static readonly make = (totals: Totals) =>
    Effect.map(Deferred.make<void>(), (closed) => {
      let closing = false
      return {
        service: LiveConnections.of({ closing: Deferred.await(closed), isClosing: () => closing, totals }),
        close: () => {
          closing = true
          Deferred.doneUnsafe(closed, Effect.void)
        }
      }
    })
}

export interface EventStreamOptions {
  /** Sent when the server starts closing, just before the stream ends (say "reconnect later" here). */
  readonly final: ServerSentEvent
  /** The reconnection delay the client is asked to use, sent first; it also flushes the head at once. */
  readonly retryMs?: number | undefined
}

/**
 * A `text/event-stream` response of `events` that ends with `options.final` when the server
 * starts closing (or when `events` ends, without it). Intermediaries are asked not to buffer
 * or cache it, so each event reaches the client as it is written.
 */
export const eventStream = <E>(
  events: Stream.Stream<ServerSentEvent, E>,
  options: EventStreamOptions
): Effect.Effect<HttpServerResponse.HttpServerResponse, never, LiveConnections> =>
  Effect.gen(function*() {
    const live = yield* LiveConnections
    const ending = Stream.unwrap(Effect.sync(() => {
      if (!live.isClosing()) return Stream.empty
      live.totals.eventStreamsEnded++
      return Stream.succeed(encode(options.final))
    }))
    const body = Stream.succeed(`retry: ${options.retryMs ?? 3_000}\n\n`).pipe(
      Stream.concat(Stream.interruptWhen(Stream.map(events, encode), live.closing)),
      Stream.concat(ending),
      Stream.encodeText
    )
    return HttpServerResponse.stream(body, {
      contentType: "text/event-stream; charset=utf-8",
      headers: { "cache-control": "no-store", "x-accel-buffering": "no" }
    })
  })
