/**
 * Logging as an operator sees it from the built server: the access line and every other line
 * logged while handling a request carry its request id.
 */
import { afterAll, describe, expect, it } from "vitest"
import { request } from "../support/http.ts"
import { type ServerProcess, spawnServer } from "../support/process.ts"

const running = new Set<ServerProcess>()
afterAll(() => {
  for (const server of running) server.child.kill("SIGKILL")
})

describe("request ids in the log", () => {
  it("the access line and the defect's error line carry the request id; the client gets it without a stack", async () => {
    const server = await spawnServer({ env: { DEBUG_ROUTES: "true" } })
    running.add(server)
    const answer = await request(server.port, "/debug/defect", { headers: { "x-request-id": "trace-7" } })
    expect(answer.status).toBe(500)
    expect(answer.headers["content-type"]).toBe("application/problem+json")
    expect(JSON.parse(answer.body)).toEqual({
      type: "about:blank",
      title: "Internal Server Error",
      status: 500,
      detail: "an unexpected error occurred",
      requestId: "trace-7"
    })
    await server.waitForLine((line) => line.message === "request" && line.annotations.requestId === "trace-7")
    const defect = server.lines.find((line) => line.message === "unhandled defect")!
    expect(defect.annotations.requestId).toBe("trace-7")
    expect(String(defect.annotations.cause)).toMatch(/deliberate defect/)
    const access = server.lines.find((line) => line.message === "request" && line.annotations.requestId === "trace-7")!
    expect(access.annotations).toMatchObject({ method: "GET", path: "/debug/defect", status: 500 })
    expect(typeof access.annotations.durationMs).toBe("number")
  })
})
