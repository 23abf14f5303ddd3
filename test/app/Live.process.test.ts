/**
 * The long-lived routes against the built server across SIGTERM: a WebSocket hears close code 1001
 * and an SSE stream its final event and a clean end, and the process exits 0 well before the deadline.
 */
import * as Http from "node:http"
import * as Net from "node:net"
import { afterEach, describe, expect, it } from "vitest"
import * as Testing from "../../src/kit/testing.ts"
import { type ServerProcess, spawnServer } from "../support/process.ts"

const deadlineMs = 10_000
let server: ServerProcess | undefined
afterEach(() => {
  server?.child.kill("SIGKILL")
  server = undefined
})

const start = () =>
  spawnServer({
    env: {
      JWT_SECRET: Testing.jwtSecret,
      SHUTDOWN_TIMEOUT: `${deadlineMs}ms`,
      DRAIN_QUIET_WINDOW: "300ms",
      MAX_BODY_SIZE: "16KiB"
    }
  })

const openSocket = (port: number) =>
  new Promise<WebSocket>((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws/echo`)
    ws.addEventListener("open", () => resolve(ws), { once: true })
    ws.addEventListener("error", () => reject(new Error("the WebSocket did not open")), { once: true })
  })

const nextMessage = (ws: WebSocket) =>
  new Promise<unknown>((resolve) => ws.addEventListener("message", (event) => resolve(event.data), { once: true }))

const closeOf = (ws: WebSocket) =>
  new Promise<{ code: number; wasClean: boolean; at: number }>((resolve) =>
    ws.addEventListener(
      "close",
      (event) => resolve({ code: event.code, wasClean: event.wasClean, at: performance.now() }),
      { once: true }
    )
  )

/** An SSE subscription: the raw text so far, a wait for text, and how the response ended. */
const subscribe = (port: number, token: string) =>
  new Promise<{
    status: number
    headers: Http.IncomingHttpHeaders
    text: () => string
    waitFor: (text: string) => Promise<void>
    ended: Promise<"end" | "aborted">
  }>((resolve, reject) => {
    const request = Http.get({
      host: "127.0.0.1",
      port,
      path: "/api/v1/items/events",
      headers: { authorization: `Bearer ${token}` }
    }, (response) => {
      let text = ""
      const waiters = new Set<() => void>()
      response.setEncoding("utf8")
      response.on("data", (chunk: string) => {
        text += chunk
        for (const waiter of waiters) waiter()
      })
      const ended = new Promise<"end" | "aborted">((done) => {
        response.once("end", () => done("end"))
        response.once("aborted", () => done("aborted"))
        response.once("error", () => done("aborted"))
      })
      resolve({
        status: response.statusCode!,
        headers: response.headers,
        text: () => text,
        ended,
        waitFor: (wanted) =>
          new Promise<void>((done, fail) => {
            const timer = setTimeout(() => fail(new Error(`no ${wanted} in ${JSON.stringify(text)}`)), 5_000)
            const check = () => {
              if (!text.includes(wanted)) return
              clearTimeout(timer)
              waiters.delete(check)
              done()
            }
            waiters.add(check)
            check()
          })
      })
    })
    request.on("error", reject)
  })

const post = (port: number, token: string, body: unknown) =>
  fetch(`http://127.0.0.1:${port}/api/v1/items`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify(body)
  })

const stoppedTotals = (s: ServerProcess) =>
  s.lines.find((line) => line.message === "phase" && line.annotations.phase === "stopped")!.annotations

describe("long-lived answers across SIGTERM", () => {
  it("a WebSocket gets 1001 and an SSE stream its final event and end; exit 0 well before the deadline", async () => {
    server = await start()
    const token = await Testing.mint()
    const ws = await openSocket(server.port)
    const message = nextMessage(ws)
    ws.send("hello")
    expect(await message).toBe("hello")

    const events = await subscribe(server.port, token)
    expect(events.status).toBe(200)
    expect(events.headers["content-type"]).toMatch(/^text\/event-stream/)
    expect(events.headers["cache-control"]).toBe("no-store")
    await events.waitFor("retry: ")
    const created = await post(server.port, token, { name: "live one" })
    expect(created.status).toBe(201)
    await events.waitFor("event: created")
    expect(events.text()).toContain("\"name\":\"live one\"")
    const { id } = await created.json() as { id: number }
    const removed = await fetch(`http://127.0.0.1:${server.port}/api/v1/items/${id}`, {
      method: "DELETE",
      headers: { authorization: `Bearer ${token}` }
    })
    expect(removed.status).toBe(204)
    await events.waitFor(`event: removed\ndata: {"type":"removed","id":${id}}\n\n`)

    const closed = closeOf(ws)
    const signalledAt = server.signal("SIGTERM")
    const close = await closed
    expect(close.code).toBe(1001)
    expect(close.wasClean).toBe(true)
    expect(await events.ended).toBe("end")
    expect(events.text()).toMatch(/event: shutdown\ndata: \{"reconnect":true\}\n\n$/)
    const exit = await server.exited
    expect(exit.code).toBe(0)
    // The deadline is 10 s; everything here ends within the quiet window and a few ticks.
    expect(exit.at - signalledAt).toBeLessThan(3_000)
    expect(close.at - signalledAt).toBeLessThan(2_000)
    const totals = stoppedTotals(server)
    expect(totals.webSocketsClosed).toBe(1)
    expect(totals.eventStreamsEnded).toBe(1)
    expect(totals.socketsDestroyed).toBe(0)
  }, 30_000)

  it(
    "refuses the event stream without a valid token, and a WebSocket message over MAX_BODY_SIZE closes with 1009",
    async () => {
      server = await start()
      const missing = await fetch(`http://127.0.0.1:${server.port}/api/v1/items/events`)
      expect(missing.status).toBe(401)
      const forged = await fetch(`http://127.0.0.1:${server.port}/api/v1/items/events`, {
        headers: {
          authorization: `Bearer ${await Testing.mint({ secret: "another-secret-with-enough-entropy-000000" })}`
        }
      })
      expect(forged.status).toBe(401)

      const ws = await openSocket(server.port)
      const closed = closeOf(ws)
      ws.send("x".repeat(17 * 1024))
      expect((await closed).code).toBe(1009)
      // The server is unharmed: another socket echoes.
      const again = await openSocket(server.port)
      const message = nextMessage(again)
      again.send("still here")
      expect(await message).toBe("still here")
      again.close(1000)
      server.signal("SIGTERM")
      expect((await server.exited).code).toBe(0)
    },
    30_000
  )

  it(
    "an upgrade asked for on an open connection once closing has started is refused with 503 and Retry-After",
    async () => {
      server = await spawnServer({
        env: { JWT_SECRET: Testing.jwtSecret, DRAIN_QUIET_WINDOW: "3s", SHUTDOWN_TIMEOUT: "10s" }
      })
      const socket = Net.connect(server.port, "127.0.0.1")
      await new Promise<void>((resolve) => socket.once("connect", () => resolve()))
      let received = ""
      socket.setEncoding("utf8").on("data", (chunk: string) => received += chunk)
      const ended = new Promise<void>((resolve) => socket.once("close", () => resolve()))
      server.signal("SIGTERM")
      // The draining phase (DRAIN_DELAY 0) has ended: closing has started, this socket is still open.
      await server.waitForLine((line) => line.message === "phase" && line.annotations.phase === "draining")
      socket.write(
        "GET /ws/echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
          "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
      )
      await ended
      expect(received).toMatch(/^HTTP\/1\.1 503 /)
      expect(received.toLowerCase()).toContain("retry-after: 1\r\n")
      const body = JSON.parse(received.slice(received.indexOf("\r\n\r\n") + 4))
      expect(body.detail ?? body.message).toMatch(/shutting down/)
      expect((await server.exited).code).toBe(0)
    },
    30_000
  )
})
