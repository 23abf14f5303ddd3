/**
 * The kit's `Expect: 100-continue` hook on a bare Node server over raw sockets: the size check and
 * an app's own check refuse from the head; otherwise 100 goes out only when the handler reads.
 */
import * as Http from "node:http"
import * as Net from "node:net"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as Continue from "../../../../src/kit/internal/http/Continue.ts"
import { errorResponse } from "../../../../src/kit/Problem.ts"

let server: Http.Server
let port = 0
let bodiesRead = 0

beforeAll(async () => {
  server = Http.createServer(Continue.refuseOversized(100, (request, response) => {
    // A handler that answers without reading unless asked to.
    if (request.url === "/ignore-body") return response.writeHead(204).end()
    let length = 0
    request.on("data", (chunk: Buffer) => (length += chunk.length))
    request.on("end", () => {
      bodiesRead++
      response.writeHead(200, { "content-type": "text/plain" }).end(`read ${length}`)
    })
  }))
  Continue.installExpectation(server)
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
  [`POST ${path} HTTP/1.1`, "Host: x", `Content-Length: ${length}`, "Expect: 100-continue", ...extra, "", ""].join(
    "\r\n"
  )

/** Status line, lower-cased headers and the JSON body of one raw answer. */
const parse = (text: string) => {
  const end = text.indexOf("\r\n\r\n")
  const [statusLine, ...lines] = text.slice(0, end).split("\r\n")
  const headers = Object.fromEntries(lines.map((line) => {
    const colon = line.indexOf(":")
    return [line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim()]
  }))
  return { status: Number(statusLine!.split(" ")[1]), headers, body: JSON.parse(text.slice(end + 4)) }
}

/** What every refusal from the head carries: a problem with the id the header names, security headers, a close. */
const expectRefusal = (text: string, status: number, detail: RegExp) => {
  const answer = parse(text)
  expect(answer.status).toBe(status)
  expect(answer.headers["content-type"]).toBe("application/problem+json")
  expect(answer.headers.connection).toBe("close")
  expect(answer.headers["x-content-type-options"]).toBe("nosniff")
  expect(answer.headers["content-security-policy"]).toContain("default-src 'none'")
  expect(answer.headers["x-request-id"]).toMatch(/.+/)
  expect(answer.body.requestId).toBe(answer.headers["x-request-id"])
  expect(answer.body.status).toBe(status)
  expect(answer.body.detail ?? answer.body.message).toMatch(detail)
}

describe("refusals from the head", () => {
  it("a 413 before 100 Continue is a problem with the request id and the security headers", async () => {
    expectRefusal(await exchange(head("/", 101)), 413, /larger than 100 bytes/)
  })

  it("the client's own X-Request-Id is kept in the refusal", async () => {
    const answer = parse(await exchange(head("/", 101, ["X-Request-Id: trace-42"])))
    expect(answer.headers["x-request-id"]).toBe("trace-42")
    expect(answer.body.requestId).toBe("trace-42")
  })

  it("a declared Content-Length over the bound without Expect is 413 at once, the handler never runs", async () => {
    const before = bodiesRead
    const startedAt = performance.now()
    const text = await exchange(
      ["POST / HTTP/1.1", "Host: x", "Content-Length: 99999999999", "", ""].join("\r\n"),
      undefined,
      100
    )
    expect(performance.now() - startedAt).toBeLessThan(900)
    expectRefusal(text, 413, /larger than 100 bytes/)
    expect(bodiesRead).toBe(before)
  })

  it("an Expect other than 100-continue is a 417 problem, the handler never runs", async () => {
    const before = bodiesRead
    const text = await exchange(
      ["POST / HTTP/1.1", "Host: x", "Content-Length: 5", "Expect: teapot", "", "hello"].join("\r\n")
    )
    expectRefusal(text, 417, /100-continue/)
    expect(bodiesRead).toBe(before)
  })

  it("a declared length within the bound without Expect is served", async () => {
    const text = await exchange(["POST / HTTP/1.1", "Host: x", "Content-Length: 5", "", "hello"].join("\r\n"))
    expect(text).toMatch(/^HTTP\/1\.1 200 /)
    expect(text).toContain("read 5")
  })
})

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
