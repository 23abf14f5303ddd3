/**
 * The cadence the drain reads, as `trackLatest` keeps it on a bare Node server while serving
 * normally: the clock is Date's alone, set by the test, so every gap is exact.
 */
import * as Http from "node:http"
import * as Net from "node:net"
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest"
import { cadenceWaitMs, trackLatest } from "../../../../src/kit/internal/http/Drain.ts"

const kCadence = Symbol.for("scoped-server/cadence")

let server: Http.Server
let port = 0
let accepted: Array<Net.Socket> = []

beforeAll(async () => {
  vi.useFakeTimers({ toFake: ["Date"] })
  server = Http.createServer({ ServerResponse: trackLatest(Http.ServerResponse) }, (request, response) => {
    // A handler that takes 100 ms of the test's clock.
    if (request.url === "/later") vi.setSystemTime(Date.now() + 100)
    response.writeHead(204).end()
  })
  server.on("connection", (socket: Net.Socket) => accepted.push(socket))
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  port = (server.address() as Net.AddressInfo).port
})
afterAll(async () => {
  vi.useRealTimers()
  server.closeAllConnections()
  await new Promise((resolve) => server.close(resolve))
})

/** A client socket and the server's side of it. */
const open = async () => {
  accepted = []
  const client = Net.connect(port, "127.0.0.1")
  await new Promise((resolve) => client.once("connect", resolve))
  while (accepted.length === 0) await new Promise((resolve) => setImmediate(resolve))
  return { client, cadence: () => (accepted[0] as unknown as Record<symbol, number | undefined>)[kCadence] }
}

/** Sends `paths` at once (pipelined when more than one) and waits for all their answers. */
const send = (client: Net.Socket, paths: ReadonlyArray<string> = ["/"]) =>
  new Promise<void>((resolve) => {
    let text = ""
    const onData = (chunk: Buffer) => {
      text += chunk.toString("latin1")
      if (text.split("HTTP/1.1 204").length - 1 === paths.length) {
        client.off("data", onData)
        resolve()
      }
    }
    client.on("data", onData)
    client.write(paths.map((path) => `GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`).join(""))
  })

describe("a client's cadence", () => {
  it("is the gap from an answer to the next request; the first request shows none", async () => {
    const { cadence, client } = await open()
    vi.setSystemTime(10_000)
    await send(client)
    expect(cadence()).toBeUndefined()
    vi.setSystemTime(10_320)
    await send(client)
    expect(cadence()).toBe(320)
    client.destroy()
  })

  it("keeps half the one before when that is longer, so a burst does not erase it at once", async () => {
    const { cadence, client } = await open()
    vi.setSystemTime(20_000)
    await send(client)
    vi.setSystemTime(20_400)
    await send(client)
    vi.setSystemTime(20_401)
    await send(client)
    expect(cadence()).toBe(200)
    await send(client)
    expect(cadence()).toBe(100)
    // A longer gap replaces it at once.
    vi.setSystemTime(21_000)
    await send(client)
    expect(cadence()).toBe(599)
    client.destroy()
  })

  it("a request pipelined behind an answer not yet finished shows no gap", async () => {
    const { cadence, client } = await open()
    vi.setSystemTime(30_000)
    await send(client)
    vi.setSystemTime(30_600)
    // The first of the two has a gap of 600 ms and takes 100 ms; the second, parsed while the first
    // answer is still on the socket, would otherwise count 700 ms since the last finished answer.
    await send(client, ["/later", "/"])
    expect(cadence()).toBe(600)
    client.destroy()
  })

  it("is waited out for 1.5 times its length and 50 ms; no cadence, no wait", () => {
    expect(cadenceWaitMs(undefined)).toBe(0)
    expect(cadenceWaitMs(320)).toBe(530)
  })
})
