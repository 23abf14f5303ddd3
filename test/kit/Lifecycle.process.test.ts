/**
 * The lifecycle seen from outside: the built dist/main.js under real keep-alive load,
 * real signals, real sockets. Every request is answered or refused at connect; none is lost.
 */
import * as Http from "node:http"
import * as Net from "node:net"
import { afterEach, describe, expect, it } from "vitest"
import { request } from "../support/http.ts"
import { keepAliveLoad } from "../support/load.ts"
import { phases, type ServerProcess, spawnServer } from "../support/process.ts"

const running = new Set<ServerProcess>()
const start = async (env: Record<string, string> = {}) => {
  const server = await spawnServer({ env: { DEBUG_ROUTES: "true", ...env } })
  running.add(server)
  return server
}
afterEach(() => {
  for (const server of running) server.child.kill("SIGKILL")
  running.clear()
})

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

describe("shutdown under keep-alive load", () => {
  it("loses no request on a fast route across SIGTERM and exits 0 within a second", async () => {
    const server = await start()
    let warm!: () => void
    const warmed = new Promise<void>((resolve) => (warm = resolve))
    const load = keepAliveLoad({ port: server.port, path: "/livez", clients: 20, stop: server.exited, onWarm: warm })
    await warmed
    await sleep(300)
    const signalledAt = server.signal("SIGTERM")
    const [result, exit] = await Promise.all([load, server.exited])

    expect(result.lost).toEqual([])
    expect(exit.code).toBe(0)
    expect(exit.at - signalledAt).toBeLessThan(1_000)
    expect(result.answered).toBeGreaterThan(100)
    expect(Object.keys(result.statuses)).toEqual(["200"])
    // Each of the 20 connections was told to close rather than being closed under it.
    expect(result.closeHeaders).toBeGreaterThanOrEqual(1)
    const stopped = phases(server.lines).find((phase) => phase.phase === "stopped")!
    expect(stopped.exitCode).toBe(0)
  })

  it("answers every request in flight on a slow route and exits soon after, though clients keep sending", async () => {
    const server = await start()
    let warm!: () => void
    const warmed = new Promise<void>((resolve) => (warm = resolve))
    const load = keepAliveLoad({
      port: server.port,
      path: "/debug/sleep?ms=300",
      clients: 20,
      stop: server.exited,
      onWarm: warm
    })
    await warmed
    await sleep(150)
    const signalledAt = server.signal("SIGTERM")
    const [result, exit] = await Promise.all([load, server.exited])

    expect(result.lost).toEqual([])
    expect(Object.keys(result.statuses)).toEqual(["200"])
    expect(exit.code).toBe(0)
    // In-flight requests need up to 300 ms more; nothing new is started on a closing connection.
    expect(exit.at - signalledAt).toBeLessThan(300 + 500)
    const stopped = phases(server.lines).find((phase) => phase.phase === "stopped")!
    expect(stopped.requestsDuringDrain).toBeGreaterThanOrEqual(20)
  })
})

const get = (port: number, path: string, agent: Http.Agent | false = false) => request(port, path, { agent })

describe("deadline and second signal", () => {
  it("exits 1 at SHUTDOWN_TIMEOUT when a handler outlives it, naming the phase that overran", async () => {
    const server = await start({ SHUTDOWN_TIMEOUT: "1s" })
    const slow = get(server.port, "/debug/sleep?ms=10000").catch((error: NodeJS.ErrnoException) => error.code)
    await sleep(100)
    const signalledAt = server.signal("SIGTERM")
    const exit = await server.exited
    expect(exit.code).toBe(1)
    expect(Math.abs(exit.at - signalledAt - 1_000)).toBeLessThan(250)
    const overran = server.lines.find((line) => line.message === "shutdown deadline exceeded")!
    expect(overran.annotations.phase).toBe("closing")
    expect(await slow).toBe("ECONNRESET")
    const stopped = phases(server.lines).find((phase) => phase.phase === "stopped")!
    expect(stopped).toMatchObject({ exitCode: 1, socketsDestroyed: 1 })
  })

  it("a second signal 5 ms after the first with nothing in flight ends DRAIN_DELAY early and exits 0", async () => {
    const server = await start({ DRAIN_DELAY: "5s", SHUTDOWN_TIMEOUT: "10s" })
    const firstAt = server.signal("SIGTERM")
    await sleep(5)
    server.signal("SIGTERM")
    const exit = await server.exited
    expect(exit.code).toBe(0)
    expect(exit.at - firstAt).toBeLessThan(2_000)
    expect(server.lines.find((line) => line.message === "shutdown forced")).toBeUndefined()
  })

  it("forces the close at once on a second signal and exits 1", async () => {
    const server = await start()
    void get(server.port, "/debug/sleep?ms=10000").catch(() => undefined)
    await sleep(100)
    server.signal("SIGTERM")
    await server.waitForLine((line) => line.message === "signal")
    const secondAt = server.signal("SIGINT")
    const exit = await server.exited
    expect(exit.code).toBe(1)
    expect(exit.at - secondAt).toBeLessThan(250)
    expect(server.lines.find((line) => line.message === "shutdown forced")?.annotations.reason).toBe("second signal")
  })
})

describe("startup failures", () => {
  const expectOneClearLine = async (env: Record<string, string>, pattern: RegExp) => {
    const server = await spawnServer({ env, waitReady: false })
    const exit = await server.exited
    expect(exit.code).toBe(1)
    const failures = server.lines.filter((line) => line.message === "startup failed")
    expect(failures).toHaveLength(1)
    expect(String(failures[0]!.annotations.error)).toMatch(pattern)
    expect(failures[0]!.annotations.cause).toBeUndefined()
    expect(server.stderr()).toBe("")
  }

  it("names the port when it is already in use", async () => {
    const blocker = Net.createServer()
    await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve))
    const port = (blocker.address() as Net.AddressInfo).port
    try {
      await expectOneClearLine(
        { PORT: String(port) },
        new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port}: .*EADDRINUSE`)
      )
    } finally {
      blocker.close()
    }
  })

  it("names the variable when a setting is invalid", async () => {
    await expectOneClearLine({ PORT: "eighty" }, /invalid configuration: .*PORT/)
    await expectOneClearLine({ SHUTDOWN_TIMEOUT: "soon" }, /invalid configuration: .*SHUTDOWN_TIMEOUT/)
    await expectOneClearLine(
      { HEADERS_TIMEOUT: "40s", REQUEST_TIMEOUT: "30s" },
      /HEADERS_TIMEOUT must not exceed REQUEST_TIMEOUT/
    )
  })

  it("prints the full cause only with LOG_LEVEL=debug", async () => {
    const server = await spawnServer({ env: { PORT: "eighty", LOG_LEVEL: "Debug" }, waitReady: false })
    expect((await server.exited).code).toBe(1)
    expect(server.lines.find((line) => line.message === "startup failed")?.annotations.error).toMatch(/PORT/)
  })
})

describe("connections that never finish a request", () => {
  it("an idle connected socket that never sends does not delay exit", async () => {
    const server = await start()
    const socket = Net.connect(server.port, "127.0.0.1")
    await new Promise((resolve) => socket.once("connect", resolve))
    const closed = new Promise((resolve) => socket.once("close", resolve))
    socket.on("error", () => undefined)
    const signalledAt = server.signal("SIGTERM")
    const exit = await server.exited
    await closed
    expect(exit.code).toBe(0)
    // The quiet window (300 ms by default), not a header or keep-alive timeout.
    expect(exit.at - signalledAt).toBeLessThan(800)
    expect(phases(server.lines).find((phase) => phase.phase === "stopped")).toMatchObject({ socketsClosedIdle: 1 })
  })

  it("a client dribbling its headers is answered 408 and closed at the header timeout", async () => {
    const server = await start({ HEADERS_TIMEOUT: "1s" })
    const socket = Net.connect(server.port, "127.0.0.1")
    let received = ""
    socket.setEncoding("utf8").on("data", (chunk: string) => (received += chunk))
    const openedAt = performance.now()
    socket.write("GET /livez HTTP/1.1\r\nHost: x\r\n")
    const dribble = setInterval(() => socket.write("X-Slow: 1\r\n"), 200)
    await new Promise((resolve) => socket.once("close", resolve))
    clearInterval(dribble)
    const closedAfter = performance.now() - openedAt
    expect(closedAfter).toBeGreaterThan(900)
    expect(closedAfter).toBeLessThan(2_500)
    expect(received).toMatch(/^HTTP\/1\.1 408 /)
    expect(received).toMatch(/\r\nContent-Type: application\/problem\+json\r\n/)
    expect(JSON.parse(received.split("\r\n\r\n")[1]!)).toMatchObject({
      type: "about:blank",
      title: "Request Timeout",
      status: 408
    })
  })

  // A half-sent request is now activity, not idleness: test/kit/internal/http/Drain.process.test.ts.
})

describe("crashes and other signals", () => {
  for (const kind of ["exception", "rejection"] as const) {
    it(`an uncaught ${kind} logs one line, drains the request in flight, releases, exits 1`, async () => {
      const server = await start()
      const inFlight = get(server.port, "/debug/sleep?ms=400")
      await sleep(50)
      expect((await get(server.port, `/debug/crash?kind=${kind}`)).status).toBe(202)
      const [answer, exit] = await Promise.all([inFlight, server.exited])
      expect(answer.status).toBe(200)
      expect(exit.code).toBe(1)
      expect(server.lines.filter((line) => line.message === "crashed")).toHaveLength(1)
      expect(phases(server.lines).map((phase) => phase.resource ?? phase.phase))
        .toEqual([
          "starting",
          "ready",
          "draining",
          "closing",
          "listen items",
          "job expire-reservations",
          "postgres",
          "stopped"
        ])
      expect(server.stderr()).toBe("")
    })
  }

  for (const signal of ["SIGHUP", "SIGQUIT"] as const) {
    it(`${signal} drains and releases like SIGTERM, with a log line, exit 0`, async () => {
      const server = await start()
      const inFlight = get(server.port, "/debug/sleep?ms=300")
      await sleep(50)
      server.signal(signal)
      const [answer, exit] = await Promise.all([inFlight, server.exited])
      expect(answer.status).toBe(200)
      expect(exit).toMatchObject({ code: 0, signal: null })
      expect(server.lines.find((line) => line.message === "signal")?.annotations.signal).toBe(signal)
      expect(phases(server.lines).some((phase) => phase.resource === "postgres" && phase.outcome === "ok")).toBe(true)
    })
  }

  it("SIGUSR2 to a single process (no supervisor) is logged and ignored: it keeps serving", async () => {
    const server = await start()
    server.signal("SIGUSR2")
    const ignored = await server.waitForLine((line) => line.message === "signal ignored")
    expect(ignored.annotations.signal).toBe("SIGUSR2")
    expect((await get(server.port, "/livez")).status).toBe(200)
    server.signal("SIGTERM")
    expect(await server.exited).toMatchObject({ code: 0, signal: null })
  })
})

describe("drain delay and readiness", () => {
  it("/readyz answers 503 during DRAIN_DELAY while other routes still answer 200 on the same connection", async () => {
    const server = await start({ DRAIN_DELAY: "1s" })
    const agent = new Http.Agent({ keepAlive: true, maxSockets: 1 })
    expect((await get(server.port, "/readyz", agent)).status).toBe(200)
    const signalledAt = server.signal("SIGTERM")
    await server.waitForLine((line) => line.message === "signal")
    const ready = await get(server.port, "/readyz", agent)
    expect(ready.status).toBe(503)
    expect(JSON.parse(ready.body)).toEqual({ status: "draining" })
    const live = await get(server.port, "/livez", agent)
    expect(live.status).toBe(200)
    // Still serving normally: the connection is kept, not closed.
    expect(live.headers.connection).toBe("keep-alive")
    // A new connection is still accepted during the delay.
    expect((await get(server.port, "/livez")).status).toBe(200)
    agent.destroy()
    const exit = await server.exited
    expect(exit.code).toBe(0)
    expect(exit.at - signalledAt).toBeGreaterThan(1_000)
    expect(exit.at - signalledAt).toBeLessThan(1_800)
    expect(
      phases(server.lines).map((phase) =>
        phase.resource === undefined ? phase.phase : `${phase.phase} ${phase.resource}`
      )
    )
      .toEqual([
        "starting",
        "ready",
        "draining",
        "closing",
        "releasing listen items",
        "releasing job expire-reservations",
        "releasing postgres",
        "stopped"
      ])
    expect(phases(server.lines).find((phase) => phase.phase === "draining")!.durationMs).toBeGreaterThanOrEqual(1_000)
  })
})

describe("limits", () => {
  it("answers a body over MAX_BODY_SIZE with a 413 problem", async () => {
    const server = await start({ MAX_BODY_SIZE: "1KiB" })
    const post = async (bytes: number) => {
      const { body, status } = await request(server.port, "/debug/echo", {
        method: "POST",
        body: Buffer.alloc(bytes, 97)
      })
      return { status, body }
    }
    expect(await post(1000)).toEqual({ status: 200, body: JSON.stringify({ bytes: 1000 }) })
    const tooLarge = await post(4096)
    expect(tooLarge.status).toBe(413)
    const problem = JSON.parse(tooLarge.body)
    expect(problem).toMatchObject({ status: 413 })
    expect(problem.detail ?? problem.message).toBe("the request body is larger than 1024 bytes")
  })

  it("refuses a declared Content-Length over MAX_BODY_SIZE from the head, without Expect: 413 at once, the route never run", async () => {
    const server = await start({ MAX_BODY_SIZE: "1KiB" })
    const socket = Net.connect(server.port, "127.0.0.1")
    let received = ""
    socket.setEncoding("latin1").on("data", (chunk: string) => (received += chunk))
    socket.on("error", () => {})
    const sentAt = performance.now()
    socket.write(
      "POST /debug/echo HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 99999999999\r\n\r\nabc"
    )
    await new Promise((resolve) => socket.once("close", resolve))
    expect(performance.now() - sentAt).toBeLessThan(1_000)
    const [head, body] = received.split("\r\n\r\n")
    expect(head).toMatch(/^HTTP\/1\.1 413 /)
    expect(head).toMatch(/\r\nConnection: close\r\n/i)
    expect(head).toMatch(/\r\nContent-Type: application\/problem\+json\r\n/i)
    const problem = JSON.parse(body!)
    expect(problem.status).toBe(413)
    expect(problem.detail ?? problem.message).toBe("the request body is larger than 1024 bytes")
    expect(head).toContain(`x-request-id: ${problem.requestId}`)
    expect(
      server.lines.some((line) =>
        line.message === "request" && line.annotations.path === "/debug/echo" && line.annotations.status !== 413
      )
    ).toBe(false)
  })

  it("answers oversized headers with a 431 problem", async () => {
    const server = await start()
    const response = await request(server.port, "/livez", { headers: { "x-big": "a".repeat(20_000) } })
    expect(response.status).toBe(431)
    expect(response.headers["content-type"]).toBe("application/problem+json")
    expect(JSON.parse(response.body)).toEqual({
      type: "about:blank",
      title: "Request Header Fields Too Large",
      status: 431,
      detail: "the request's headers are larger than the server accepts",
      requestId: response.headers["x-request-id"]
    })
  })
})

describe("several servers and listener sources", () => {
  it("serves the probes on ADMIN_PORT and drains both servers together", async () => {
    const server = await start({ ADMIN_PORT: "0", DRAIN_DELAY: "300ms" })
    expect(server.adminPort).toBeGreaterThan(0)
    expect((await get(server.adminPort!, "/readyz")).status).toBe(200)
    expect((await get(server.adminPort!, "/debug/sleep?ms=1")).status).toBe(404)
    server.signal("SIGTERM")
    await server.waitForLine((line) => line.message === "signal")
    expect((await get(server.adminPort!, "/readyz")).status).toBe(503)
    expect((await get(server.port, "/livez")).status).toBe(200)
    const exit = await server.exited
    expect(exit.code).toBe(0)
    const closing = phases(server.lines).filter((phase) => phase.phase === "closing")
    expect(closing).toHaveLength(1)
    expect(closing[0]!.servers).toEqual(["main", "admin"])
  })

  const inheritedListener = async () => {
    const listener = Net.createServer()
    await new Promise<void>((resolve) => listener.listen(0, "127.0.0.1", resolve))
    const port = (listener.address() as Net.AddressInfo).port
    const fd = (listener as unknown as { _handle: { fd: number } })._handle.fd
    return { listener, port, fd }
  }

  /** Spawns the server with our listening socket as its fd 3 and checks it serves there. */
  const servesInheritedSocket = async (
    options: { readonly env: Record<string, string | undefined>; readonly shell?: string }
  ) => {
    const { listener, port, fd } = await inheritedListener()
    try {
      const server = await spawnServer({ ...options, extraStdio: [fd] })
      running.add(server)
      // The child has its own copy now; ours would otherwise accept (and stall) half the connections.
      listener.close()
      expect(server.port).toBe(port)
      expect((await get(port, "/livez")).status).toBe(200)
      server.signal("SIGTERM")
      expect((await server.exited).code).toBe(0)
    } finally {
      listener.close()
    }
  }

  // PORT unset: beside LISTEN_FD it is a conflict.
  it("listens on an inherited fd (LISTEN_FD)", () =>
    servesInheritedSocket({ env: { LISTEN_FD: "3", PORT: undefined } }))

  it("listens on systemd's socket when LISTEN_PID is this process", () =>
    servesInheritedSocket({ env: { LISTEN_FDS: "1" }, shell: "LISTEN_PID=$$ exec $NODE $MAIN" }))

  it("ignores LISTEN_FDS meant for another process", async () => {
    const server = await start({ LISTEN_FDS: "1", LISTEN_PID: "1" })
    expect(server.port).toBeGreaterThan(0)
    expect((await get(server.port, "/livez")).status).toBe(200)
  })
})
