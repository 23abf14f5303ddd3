/**
 * WORKERS=N as one service, seen from outside dist/main.js: one rate limit whichever worker answers,
 * kept across an upgrade, and a list cache that never serves a page from before a write.
 */
import { Effect } from "effect"
import * as Http from "node:http"
import { afterEach, describe, expect, it } from "vitest"
import * as Testing from "../../../../src/kit/testing.ts"
import type { ServerProcess } from "../../../support/process.ts"
import { alive, cleanup, pidOf, start, upgradeDone } from "../../../support/supervisor.ts"

afterEach(cleanup)

interface Answer {
  readonly status: number
  readonly worker: string
  readonly body: string
}

/** One request on a connection of its own (so the supervisor picks the worker each time). */
const request = (port: number, method: string, path: string, token: string, body?: unknown) =>
  new Promise<Answer>((resolve, reject) => {
    const req = Http.request({
      host: "127.0.0.1",
      port,
      path,
      method,
      agent: false,
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" }
    }, (res) => {
      let text = ""
      res.setEncoding("utf8").on("data", (chunk: string) => (text += chunk))
      res.on("end", () => resolve({ status: res.statusCode!, worker: String(res.headers["x-worker"]), body: text }))
    }).on("error", reject)
    req.setTimeout(20_000, () => req.destroy(new Error("timeout")))
    req.end(body === undefined ? undefined : JSON.stringify(body))
  })

/** `count` requests, `concurrency` at a time, each on a new connection: their answers. */
const burst = async (port: number, token: string, count: number, concurrency: number) => {
  const answers: Array<Answer> = []
  let next = 0
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < count) {
      next++
      answers.push(await request(port, "GET", "/api/v1/items?perPage=1", token))
    }
  }))
  return answers
}

const statuses = (answers: ReadonlyArray<Answer>) => {
  const counts: Record<number, number> = {}
  for (const answer of answers) counts[answer.status] = (counts[answer.status] ?? 0) + 1
  return counts
}

const env = (extra: Record<string, string>) => ({ JWT_SECRET: Testing.jwtSecret, CACHE_TTL: "0", ...extra })

describe("rate limits with WORKERS", () => {
  it("RATE_LIMIT_PER_ADDRESS=5 admits 5 of 8 requests spread over both workers", async () => {
    const server = await start(env({ RATE_LIMIT_PER_ADDRESS: "5" }))
    const token = await Testing.mint()
    const answers: Array<Answer> = []
    for (let i = 0; i < 8; i++) answers.push(await request(server.port, "GET", "/api/v1/items?perPage=1", token))
    expect(new Set(answers.map((answer) => answer.worker)).size).toBe(2)
    expect(statuses(answers)).toEqual({ 200: 5, 429: 3 })
  })

  for (const workers of [2, 4]) {
    it(`a concurrent burst of one subject over ${workers} workers is admitted at most RATE_LIMIT + 10 %`, async () => {
      const server = await start(env({ WORKERS: String(workers), RATE_LIMIT: "100" }))
      const token = await Testing.mint({ subject: "burst" })
      const answers = await burst(server.port, token, 300, 16)
      const admitted = statuses(answers)[200] ?? 0
      expect(new Set(answers.map((answer) => answer.worker)).size).toBe(workers)
      expect(admitted).toBeGreaterThanOrEqual(100)
      expect(admitted).toBeLessThanOrEqual(110)
      expect(admitted + (statuses(answers)[429] ?? 0)).toBe(300)
    })
  }

  it("an upgrade does not reset anyone's count", async () => {
    const server = await start(env({ RATE_LIMIT_PER_ADDRESS: "5" }))
    const token = await Testing.mint()
    const before = await burst(server.port, token, 8, 1)
    expect(statuses(before)).toEqual({ 200: 5, 429: 3 })
    const oldPids = new Set(before.map((answer) => pidOf(answer.worker)))
    server.signal("SIGUSR2")
    expect((await upgradeDone(server, 1)).annotations.step).toBe("completed")
    const after = await burst(server.port, token, 6, 1)
    // Every answer comes from the new generation, and refuses.
    expect(after.every((answer) => !oldPids.has(pidOf(answer.worker)))).toBe(true)
    expect(statuses(after)).toEqual({ 429: 6 })
  })
})

/** The item with `id` is on the list's last page (ids ascend), as this request saw it. */
const listed = async (port: number, token: string, id: number) => {
  const first = await request(port, "GET", "/api/v1/items?perPage=100", token)
  const total = (JSON.parse(first.body) as { pagination: { total: number } }).pagination.total
  const last = Math.max(1, Math.ceil(total / 100))
  const page = last === 1 ? first : await request(port, "GET", `/api/v1/items?perPage=100&page=${last}`, token)
  return (JSON.parse(page.body) as { items: Array<{ id: number }> }).items.some((item) => item.id === id)
}

const cachedServer = async (workers: number): Promise<ServerProcess> =>
  start(env({
    WORKERS: String(workers),
    DATABASE_URL: await Effect.runPromise(Testing.freshDatabase),
    CACHE_TTL: "30s",
    RATE_LIMIT: "1000000",
    RATE_LIMIT_PER_ADDRESS: "1000000"
  }))

describe("the list cache with WORKERS", () => {
  it("a client that writes and then lists on any connection reads its write", async () => {
    const server = await cachedServer(2)
    const token = await Testing.mint()
    // Both workers have the first page cached before each write.
    const warm = await burst(server.port, token, 8, 1)
    expect(new Set(warm.map((answer) => answer.worker)).size).toBe(2)
    const workers = new Set<string>()
    for (let write = 0; write < 8; write++) {
      const created = await request(server.port, "POST", "/api/v1/items", token, { name: `item ${write}` })
      expect(created.status).toBe(201)
      const id = (JSON.parse(created.body) as { id: number }).id
      for (let read = 0; read < 4; read++) expect(await listed(server.port, token, id)).toBe(true)
      workers.add(created.worker)
    }
    expect(workers.size).toBe(2)
    // And the cache is used: the metrics of the workers count hits.
    const metrics = await request(server.port, "GET", "/metrics", token)
    expect(metrics.body).toMatch(/scoped_server_cache_requests_total\{[^}]*result="hit"[^}]*\} [1-9]/)
  })

  it("a write waits for a stopped worker to be killed, never answers while it could serve a stale page", async () => {
    const server = await cachedServer(2)
    const token = await Testing.mint()
    const warm = await burst(server.port, token, 8, 1)
    const stopped = pidOf(warm[0]!.worker)
    process.kill(stopped, "SIGSTOP")
    // Two writes at once: the supervisor hands the second to the worker with fewer connections, so
    // one reaches the running worker; it answers once the stopped one is gone (the other is lost with it).
    const post = () => request(server.port, "POST", "/api/v1/items", token, { name: "after stop" })
    const created = await Promise.any([post(), post()])
    expect(created.status).toBe(201)
    expect(alive(stopped)).toBe(false)
    expect(server.lines.some((line) => line.level === "ERROR" && line.annotations.pid === stopped)).toBe(true)
    const id = (JSON.parse(created.body) as { id: number }).id
    // At once, on new connections: the killed worker takes none of them, though the supervisor
    // may not have seen its exit yet (it is out of the handoff from the moment it is killed).
    expect(await Promise.all(Array.from({ length: 8 }, () => listed(server.port, token, id)))).toEqual(
      Array.from({ length: 8 }, () => true)
    )
  })
})
