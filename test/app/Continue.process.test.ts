/**
 * `Expect: 100-continue` against the built server over raw sockets: a client is refused (401,
 * 413, 415, 429) from its head alone, before it sends a byte of its body; a good request gets 100, then 201.
 */
import * as Net from "node:net"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as Testing from "../../src/kit/testing.ts"
import { type ServerProcess, spawnServer } from "../support/process.ts"

let server: ServerProcess
beforeAll(async () => {
  server = await spawnServer({
    env: { JWT_SECRET: Testing.jwtSecret, RATE_LIMIT_PER_ADDRESS: "1000", MAX_BODY_SIZE: "64KiB" }
  })
}, 60_000)
afterAll(() => {
  server?.child.kill("SIGKILL")
})

interface Conversation {
  /** Everything the server sent, as text. */
  readonly received: () => string
  /** Resolves when `text` has arrived. */
  readonly waitFor: (text: string | RegExp) => Promise<void>
  readonly write: (text: string) => void
  /** Resolves when the server ends the connection. */
  readonly closed: Promise<void>
}

const converse = (head: string): Promise<Conversation> =>
  new Promise((resolve, reject) => {
    const socket = Net.connect(server.port, "127.0.0.1")
    let received = ""
    const waiters = new Set<() => void>()
    socket.setEncoding("utf8")
    socket.on("data", (chunk: string) => {
      received += chunk
      for (const waiter of waiters) waiter()
    })
    const closed = new Promise<void>((done) => socket.once("close", () => done()))
    socket.once("error", reject)
    socket.once("connect", () => {
      socket.write(head)
      resolve({
        received: () => received,
        write: (text) => socket.write(text),
        closed,
        waitFor: (text) =>
          new Promise<void>((done, fail) => {
            const timer = setTimeout(() => fail(new Error(`no ${String(text)} in ${JSON.stringify(received)}`)), 5_000)
            const check = () => {
              if (typeof text === "string" ? received.includes(text) : text.test(received)) {
                clearTimeout(timer)
                waiters.delete(check)
                done()
              }
            }
            waiters.add(check)
            check()
          })
      })
    })
  })

const head = (
  options: {
    readonly token?: string | undefined
    readonly length: number
    readonly type?: string
    readonly path?: string
  }
) =>
  [
    `POST ${options.path ?? "/api/v1/items"} HTTP/1.1`,
    "Host: localhost",
    ...(options.token === undefined ? [] : [`Authorization: Bearer ${options.token}`]),
    `Content-Type: ${options.type ?? "application/json"}`,
    `Content-Length: ${options.length}`,
    "Expect: 100-continue",
    "",
    ""
  ].join("\r\n")

/** The final answer's status and body, once the server has closed the connection. */
const refusal = async (conversation: Conversation) => {
  // The server closes without waiting for the body the client never sends.
  await conversation.closed
  const text = conversation.received()
  const body = JSON.parse(text.slice(text.indexOf("\r\n\r\n") + 4))
  return { text, status: Number(text.slice(9, 12)), detail: body.detail ?? body.message }
}

describe("Expect: 100-continue", () => {
  it("a forged or missing token is 401 from the head alone: no 100 Continue, the body never sent", async () => {
    const forged = await Testing.mint({ secret: "not-the-servers-secret-0123456789abcdef" })
    for (const token of [forged, undefined]) {
      const answer = await refusal(await converse(head({ token, length: 1_000 })))
      expect(answer.status).toBe(401)
      expect(answer.text).not.toContain("100 Continue")
      expect(answer.text.toLowerCase()).toContain("www-authenticate: bearer")
    }
  })

  it("a declared length over MAX_BODY_SIZE is 413 before the body, even with a good token", async () => {
    const answer = await refusal(await converse(head({ token: await Testing.mint(), length: 10 * 1024 * 1024 })))
    expect(answer.status).toBe(413)
    expect(answer.text).not.toContain("100 Continue")
    expect(answer.detail).toContain("65536 bytes")
  })

  it("a body that is not JSON for a JSON endpoint is 415 before the body", async () => {
    const answer = await refusal(await converse(head({ token: await Testing.mint(), length: 10, type: "text/plain" })))
    expect(answer.status).toBe(415)
    expect(answer.text).not.toContain("100 Continue")
  })

  it("an unknown route is 404 before the body", async () => {
    const answer = await refusal(
      await converse(head({ token: await Testing.mint(), length: 10, path: "/api/v1/nothing-here" }))
    )
    expect(answer.status).toBe(404)
    expect(answer.text).not.toContain("100 Continue")
  })

  it("a good request gets 100 Continue, then, with its body, 201", async () => {
    const body = JSON.stringify({ name: "sent after 100" })
    const conversation = await converse(head({ token: await Testing.mint(), length: Buffer.byteLength(body) }))
    await conversation.waitFor("HTTP/1.1 100 Continue\r\n\r\n")
    expect(conversation.received()).toBe("HTTP/1.1 100 Continue\r\n\r\n")
    conversation.write(body)
    await conversation.waitFor(/HTTP\/1\.1 201 [^]*\r\n\r\n\{[^]*\}/)
    expect(conversation.received()).toContain(`"name":"sent after 100"`)
  })
})
