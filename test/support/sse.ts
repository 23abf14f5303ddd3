/**
 * A Server-Sent Events client for tests: the events parsed as they arrive, a wait for the one a
 * test expects (by predicate, never a sleep), and the response's head (e.g. which worker answered).
 */
import * as Http from "node:http"

export interface ServerSentEvent {
  readonly event: string
  readonly data: string
}

export interface Subscription {
  readonly status: number
  readonly headers: Http.IncomingHttpHeaders
  readonly events: ReadonlyArray<ServerSentEvent>
  /** The first event (from the start of the stream) that satisfies `test`, within `timeoutMs`. */
  readonly waitFor: (test: (event: ServerSentEvent) => boolean, timeoutMs?: number) => Promise<ServerSentEvent>
  readonly close: () => void
}

/** `GET path` on a connection of its own, resolved once the head has arrived. */
export const subscribe = (port: number, token: string, path = "/api/v1/items/events") =>
  new Promise<Subscription>((resolve, reject) => {
    const request = Http.get({
      host: "127.0.0.1",
      port,
      path,
      agent: false,
      headers: { authorization: `Bearer ${token}` }
    }, (response) => {
      const events: Array<ServerSentEvent> = []
      const waiters = new Set<() => void>()
      let buffer = ""
      response.setEncoding("utf8")
      response.on("data", (chunk: string) => {
        buffer += chunk
        let end: number
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end)
          buffer = buffer.slice(end + 2)
          let event = "message"
          const data: Array<string> = []
          for (const line of block.split("\n")) {
            if (line.startsWith("event: ")) event = line.slice(7)
            else if (line.startsWith("data: ")) data.push(line.slice(6))
          }
          if (data.length > 0) events.push({ event, data: data.join("\n") })
        }
        for (const waiter of waiters) waiter()
      })
      response.on("error", () => {})
      resolve({
        status: response.statusCode!,
        headers: response.headers,
        events,
        close: () => request.destroy(),
        waitFor: (test, timeoutMs = 10_000) =>
          new Promise<ServerSentEvent>((done, fail) => {
            const timer = setTimeout(() => {
              waiters.delete(check)
              fail(new Error(`no such event within ${timeoutMs}ms; got ${JSON.stringify(events)}`))
            }, timeoutMs)
            const check = () => {
              const found = events.find(test)
              if (found === undefined) return
              clearTimeout(timer)
              waiters.delete(check)
              done(found)
            }
            waiters.add(check)
            check()
          })
      })
    })
    request.on("error", reject)
  })

/** The changes about item `id`, in the order the stream delivered them. */
export const changesOf = (subscription: Subscription, id: number) =>
  subscription.events.filter((event) => {
    if (event.event !== "created" && event.event !== "removed") return false
    const change = JSON.parse(event.data) as { id?: number; item?: { id: number } }
    return (change.item?.id ?? change.id) === id
  })
