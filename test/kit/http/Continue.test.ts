/**
 * The kit's `Expect: 100-continue` hook on a bare Node server over raw sockets: the size check and
 * an app's own check refuse from the head; otherwise 100 goes out only when the handler reads.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as Http from "node:http"
import * as Net from "node:net"
import * as Continue from "../../../src/kit/http/Continue.ts"
import { errorResponse } from "../../../src/kit/http/Problem.ts"

let server: Http.Server
let port = 0
let bodiesRead = 0

beforeAll(async () => {
  server = Http.createServer((request, response) => {
    // A handler that answers without reading unless asked to.
    if (request.url === "/ignore-body") return response.writeHead(204).end()
    let length = 0
    request.on("data", (chunk: Buffer) => (length += chunk.length))
    request.on("end", () => {
      bodiesRead++
      response.writeHead(200, { "content-type": "text/plain" }).end(`read ${length}`)
    })
  })
  Continue.install(server, [
    Continue.declaredSize(100),
    (request) => request.headers["x-refuse"] === "yes" ? errorResponse(403, "refused from the head") : undefined
  ])
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  port = (server.address() as Net.AddressInfo).port
})
afterAll(() => {
  server.closeAllConnections()
  server.close()
})

/** Sends `head`, then (if given) `body` once 100 arrives; resolves with all text when the server closes or after `settleMs`. */
const exchange = (head: string, body?: string, settleMs = 300) =>
  new Promise<string>((resolve, reject) => {
    const socket = Net.connect(port, "127.0.0.1")
    let received = ""
    let timer: NodeJS.Timeout | undefined
    const finish = () => {
      clearTimeout(timer)
      socket.destroy()
      resolve(received)
    }
    socket.setEncoding("utf8")
    socket.on("data", (chunk: string) => {
      received += chunk
      if (body !== undefined && received === "HTTP/1.1 100 Continue\r\n\r\n") socket.write(body)
      clearTimeout(timer)
      timer = setTimeout(finish, settleMs)
    })
    socket.once("close", finish)
    socket.once("error", reject)
    socket.once("connect", () => {
      socket.write(head)
      timer = setTimeout(finish, 1_000)
    })
  })

const head = (path: string, length: number, extra: Array<string> = []) =>
  [`POST ${path} HTTP/1.1`, "Host: x", `Content-Length: ${length}`, "Expect: 100-continue", ...extra, "", ""].join("\r\n")

describe("Expect: 100-continue hook", () => {
  it("a declared length over the bound is 413 and closed, with no 100 and no handler run", async () => {
    const before = bodiesRead
    const text = await exchange(head("/", 101))
    expect(text).toMatch(/^HTTP\/1\.1 413 /)
    expect(text).not.toContain("100 Continue")
    expect(text.toLowerCase()).toContain("connection: close")
    expect(bodiesRead).toBe(before)
  })

  it("the app's own check refuses from the head", async () => {
    const text = await exchange(head("/", 10, ["X-Refuse: yes"]))
    expect(text).toMatch(/^HTTP\/1\.1 403 /)
    expect(text).toContain("refused from the head")
    expect(text).not.toContain("100 Continue")
  })

  it("a handler that answers without reading sends no 100", async () => {
    const text = await exchange(head("/ignore-body", 10))
    expect(text).toMatch(/^HTTP\/1\.1 204 /)
    expect(text).not.toContain("100 Continue")
  })

  it("a handler that reads gets 100 first, then the body", async () => {
    const text = await exchange(head("/", 5), "hello")
    expect(text).toMatch(/^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 /)
    expect(text).toContain("read 5")
  })
})
