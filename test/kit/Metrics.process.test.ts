/**
 * /metrics of the built server as Prometheus reads it: valid exposition (promtool and a JS
 * parser), histogram counts equal to the requests sent per route template and status, bounded series.
 */
import { Effect, Exit, Scope } from "effect"
import { spawnSync } from "node:child_process"
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Path from "node:path"
import parsePrometheusTextFormat from "parse-prometheus-text-format"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import * as Testing from "../../src/kit/testing.ts"
import { request } from "../support/http.ts"
import { type ServerProcess, spawnServer } from "../support/process.ts"
import { privateRedis } from "../support/redis.ts"

const secret = "metrics-test-secret-0123456789abcdef"
const running = new Set<ServerProcess>()
afterEach(() => {
  for (const server of running) {
    server.child.kill("SIGKILL")
    // A supervisor's workers are in their own process groups: SIGKILL them too.
    for (const pid of workerPids(server)) {
      try {
        process.kill(pid, "SIGKILL")
      } catch {
        // already gone
      }
    }
  }
  running.clear()
})
const redisScope = Effect.runSync(Scope.make())
let redis: Effect.Success<typeof privateRedis>
beforeAll(async () => {
  redis = await Effect.runPromise(privateRedis.pipe(Scope.provide(redisScope)))
})
afterAll(() => Effect.runPromise(Scope.close(redisScope, Exit.void)))

const workerPids = (server: ServerProcess): Array<number> =>
  server.lines.flatMap((line) =>
    line.message === "workers ready" || (line.message === "upgrade" && line.annotations.step === "ready")
      ? (line.annotations.pids as Array<number>)
      : []
  )
const start = async (env: Record<string, string> = {}) => {
  const server = await spawnServer({ env: { JWT_SECRET: secret, ACCESS_LOG: "false", ...env } })
  running.add(server)
  return server
}

interface Family {
  readonly name: string
  readonly type: string
  readonly metrics: ReadonlyArray<
    {
      readonly labels?: Record<string, string>
      readonly value?: string
      readonly count?: string
      readonly buckets?: Record<string, string>
    }
  >
}

const scrape = async (port: number) => {
  const answer = await request(port, "/metrics")
  expect(answer.status).toBe(200)
  expect(answer.headers["content-type"]).toMatch(/^text\/plain; version=0\.0\.4/)
  return answer.body
}

/** promtool (Prometheus's own checker) when installed; the JS parser always. */
const parse = (text: string): ReadonlyArray<Family> => {
  if (Fs.existsSync("/usr/bin/promtool")) {
    const checked = spawnSync("/usr/bin/promtool", ["check", "metrics"], { input: text, encoding: "utf8" })
    expect(checked.status, checked.stdout + checked.stderr).toBe(0)
  }
  return parsePrometheusTextFormat(text) as ReadonlyArray<Family>
}

/**
 * `_count` per series, read off the text: the JS parser validates the exposition and types the
 * families, but drops the labels of histogram series.
 */
const requestCounts = (families: ReadonlyArray<Family>, text: string) => {
  expect(families.find((family) => family.name === "http_server_request_duration_seconds")?.type).toBe("HISTOGRAM")
  const counts = new Map<string, number>()
  for (const [, labelText, value] of text.matchAll(/^http_server_request_duration_seconds_count\{([^}]*)\} (\S+)$/gm)) {
    const labels = Object.fromEntries(
      [...labelText!.matchAll(/(\w+)="([^"]*)"/g)].map(([, key, label]) => [key!, label!])
    )
    counts.set(
      `${labels.http_request_method} ${labels.http_route ?? "-"} ${labels.http_response_status_code}${
        labels.error_type === undefined ? "" : ` ${labels.error_type}`
      }`,
      Number(value)
    )
  }
  return counts
}

/** Every series in a scrape: name and labels, not values. */
/** The value of the one sample `series` (name and labels exactly as written), or undefined. */
const sample = (text: string, series: string) => {
  const line = text.split("\n").find((line) => line.startsWith(`${series} `))
  return line === undefined ? undefined : Number(line.slice(series.length + 1))
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

const seriesOf = (text: string) =>
  new Set(
    text.split("\n").filter((line) => line !== "" && !line.startsWith("#")).map((line) =>
      line.slice(0, line.lastIndexOf(" "))
    )
  )

describe("GET /metrics", () => {
  it("parses as Prometheus text, and counts each request once under its route template and status", async () => {
    const server = await start()
    const token = { authorization: `Bearer ${await Testing.mint({ subject: "metrics", secret })}` }
    for (let i = 0; i < 7; i++) expect((await request(server.port, "/livez")).status).toBe(200)
    for (let i = 0; i < 3; i++) {
      const answer = await request(server.port, `/api/v1/items/${990_000 + i}`, { headers: token })
      expect(answer.status).toBe(404)
    }
    for (let i = 0; i < 2; i++) expect((await request(server.port, `/no/such/${i}`)).status).toBe(404)
    expect((await request(server.port, "/livez", { method: "PROPFIND" })).status).toBe(404)

    const text = await scrape(server.port)
    const counts = requestCounts(parse(text), text)
    expect(counts.get("GET /livez 200")).toBe(7)
    expect(counts.get("GET /api/v1/items/:id 404")).toBe(3)
    expect(counts.get("GET - 404")).toBe(2)
    expect(counts.get("_OTHER - 404")).toBe(1)
    // The raw paths never become label values.
    expect(text).not.toMatch(/no\/such|items\/99/)
    for (
      const name of [
        "http_server_active_requests",
        "scoped_server_phase",
        "scoped_server_ready",
        "nodejs_eventloop_delay_p99_seconds",
        "nodejs_eventloop_utilization_ratio",
        "process_cpu_time_seconds_total",
        "process_open_handles"
      ]
    ) expect(text).toContain(`# TYPE ${name} `)
    expect(text).toMatch(/^scoped_server_phase\{phase="ready"\} 1$/m)
    expect(text).toMatch(/^http_server_active_requests 1$/m)
  })

  it("is served by the admin server when there is one, which keeps probes out of the request metrics", async () => {
    const server = await start({ ADMIN_PORT: "0" })
    expect((await request(server.port, "/metrics")).status).toBe(404)
    expect((await request(server.adminPort!, "/livez")).status).toBe(200)
    expect((await request(server.port, "/livez")).status).toBe(200)
    const text = await scrape(server.adminPort!)
    const counts = requestCounts(parse(text), text)
    expect(counts.get("GET /livez 200")).toBe(1)
    expect(counts.get("GET - 404")).toBe(1)
  })

  it("feeds every metric the Grafana dashboard queries", async () => {
    const dashboard = JSON.parse(
      Fs.readFileSync(Path.resolve(import.meta.dirname, "../../deploy/grafana/scoped-server.json"), "utf8")
    ) as {
      panels: Array<{ targets: Array<{ expr: string }> }>
    }
    const queried = new Set(
      dashboard.panels.flatMap((panel) =>
        panel.targets.flatMap((target) =>
          [...target.expr.matchAll(/\b(?:http|scoped_server|nodejs|v8js|process|db_client)_\w+(?=\{)/g)].map(([name]) =>
            name
          )
        )
      )
    )
    expect(queried.size).toBeGreaterThan(30)
    // Workers (the supervisor's series) and Redis (its breaker's): every panel has data.
    const server = await start({ WORKERS: "2", REDIS_URL: redis.url })
    await server.waitForLine((line) => line.message === "workers ready", 30_000)
    expect((await request(server.port, "/livez")).status).toBe(200)
    // The GC histogram has series only once a collection has happened, which a fresh server may not have had.
    const text = await scrape(server.port)
    const scraped = new Set(
      text.split("\n").filter((line) => line !== "" && !line.startsWith("#")).map((line) => line.split(/[{ ]/)[0]!)
    )
    const missing = [...queried].filter((name) => !scraped.has(name) && name !== "v8js_gc_duration_seconds_bucket")
    expect(missing).toEqual([])
  })

  it("counts the pool, Redis and its breaker, the cache, rate-limit decisions and the JWT cache", async () => {
    const server = await start({
      REDIS_URL: redis.url,
      REDIS_COMMAND_TIMEOUT: "300ms",
      REDIS_BREAKER_COOLDOWN: "10s",
      DB_POOL_SIZE: "1",
      DB_ACQUIRE_TIMEOUT: "600ms",
      DEBUG_ROUTES: "true",
      RATE_LIMIT: "3"
    })
    const token = { authorization: `Bearer ${await Testing.mint({ subject: "resources", secret })}` }
    let text = await scrape(server.port)
    parse(text)
    expect(sample(text, "db_client_connection_max")).toBe(1)
    expect(sample(text, `db_client_connections_usage{state="used"}`)).toBe(0)
    expect(sample(text, `db_client_connections_usage{state="idle"}`)).toBe(1)
    expect(sample(text, "scoped_server_redis_up")).toBe(1)
    expect(sample(text, `scoped_server_redis_breaker_state{state="closed"}`)).toBe(1)

    // The one connection held for 1.2 s; a second request waits for it past DB_ACQUIRE_TIMEOUT.
    const holding = request(server.port, "/debug/transaction?marker=metrics&ms=1200", { method: "POST" })
    await sleep(200)
    const waiting = request(server.port, "/api/v1/items/1", { headers: token })
    await sleep(200)
    text = await scrape(server.port)
    expect(sample(text, `db_client_connections_usage{state="used"}`)).toBe(1)
    expect(sample(text, `db_client_connections_usage{state="idle"}`)).toBe(0)
    expect(sample(text, "db_client_connection_pending_requests")).toBe(1)
    expect((await waiting).status).toBe(503)
    expect((await holding).status).toBe(200)
    text = await scrape(server.port)
    expect(sample(text, "db_client_connection_timeouts_total")).toBe(1)
    expect(sample(text, "db_client_connection_pending_requests")).toBe(0)

    // A page computed, then served from the cache; the fourth request of the subject is over RATE_LIMIT.
    expect((await request(server.port, "/api/v1/items", { headers: token })).status).toBe(200)
    expect((await request(server.port, "/api/v1/items", { headers: token })).status).toBe(200)
    expect((await request(server.port, "/api/v1/items", { headers: token })).status).toBe(429)
    text = await scrape(server.port)
    parse(text)
    expect(sample(text, `scoped_server_cache_requests_total{cache="items",result="miss"}`)).toBe(1)
    expect(sample(text, `scoped_server_cache_requests_total{cache="items",result="hit"}`)).toBe(1)
    expect(sample(text, `scoped_server_rate_limit_decisions_total{limit="subject",decision="allowed"}`)).toBe(3)
    expect(sample(text, `scoped_server_rate_limit_decisions_total{limit="subject",decision="exceeded"}`)).toBe(1)
    expect(sample(text, `scoped_server_rate_limit_decisions_total{limit="address",decision="allowed"}`)).toBe(4)
    // One signature check for the token; the other three were remembered.
    expect(sample(text, `scoped_server_jwt_cache_requests_total{result="miss"}`)).toBe(1)
    expect(sample(text, `scoped_server_jwt_cache_requests_total{result="hit"}`)).toBe(3)
    expect(sample(text, `scoped_server_redis_command_failures_total{reason="timeout"}`)).toBe(0)

    // Redis hung: the limiter's command times out, opens the breaker, and the request goes through (fail open).
    await Effect.runPromise(redis.signal("SIGSTOP"))
    try {
      expect((await request(server.port, "/livez")).status).toBe(200)
      expect((await request(server.port, "/api/v1/items/1", { headers: token })).status).not.toBe(500)
      text = await scrape(server.port)
      expect(sample(text, "scoped_server_redis_up")).toBe(0)
      expect(sample(text, `scoped_server_redis_breaker_state{state="closed"}`)).toBe(0)
      expect(sample(text, "scoped_server_redis_breaker_openings_total")).toBe(1)
      expect(sample(text, `scoped_server_redis_command_failures_total{reason="timeout"}`)).toBeGreaterThanOrEqual(1)
      expect(sample(text, `scoped_server_rate_limit_decisions_total{limit="address",decision="store_unavailable"}`))
        .toBe(1)
    } finally {
      await Effect.runPromise(redis.signal("SIGCONT"))
    }
  }, 60_000)

  it("is off with METRICS=false", async () => {
    const server = await start({ METRICS: "false" })
    const answer = await request(server.port, "/metrics")
    expect(answer.status).toBe(404)
    expect(answer.body).not.toContain("http_server")
  })

  it("keeps the number of series constant under 10,000 distinct unknown paths and method strings", async () => {
    const server = await start()
    const hostile = async (i: number) => {
      const path = `/${Crypto.randomBytes(6).toString("hex")}/${i}?q=${i}`
      // Node's parser refuses methods it does not know (400, no request); those it knows but
      // OpenTelemetry does not name are `_OTHER`.
      const method = i % 3 === 0 ? `X${i}METHOD` : i % 3 === 1 ? "GET" : (i % 2 === 0 ? "PROPFIND" : "MKCOL")
      return request(server.port, path, { method }).catch(() => undefined)
    }
    for (let i = 0; i < 6; i++) await hostile(i)
    await scrape(server.port) // the scrape's own series, from the second on
    const before = seriesOf(await scrape(server.port))
    for (let batch = 0; batch < 10_000; batch += 50) {
      await Promise.all(Array.from({ length: 50 }, (_, j) => hostile(6 + batch + j)))
    }
    const after = seriesOf(await scrape(server.port))
    expect([...after].filter((series) => !before.has(series))).toEqual([])
    expect(after.size).toBe(before.size)
  }, 120_000)
})

/** One request on a connection of its own, answered by whichever worker accepted it ("gen.pid"). */
const askWorker = async (port: number, path: string) => {
  const answer = await request(port, path)
  return { status: answer.status, worker: String(answer.headers["x-worker"]) }
}

/** The distinct values of `label` on the samples of `name`. */
const labelValues = (text: string, name: string, label: string) =>
  new Set([...text.matchAll(new RegExp(`^${name}\\{[^}]*\\b${label}="([^"]*)"`, "gm"))].map(([, value]) => value!))

describe("GET /metrics with WORKERS=2", () => {
  it(
    "answers every worker's series under worker and generation labels in one valid scrape, and follows an upgrade",
    async () => {
      const server = await start({ WORKERS: "2" })
      await server.waitForLine((line) => line.message === "workers ready", 30_000)
      const first = workerPids(server).map(String).sort()
      expect(first).toHaveLength(2)

      let sent = 0
      for (let i = 0; i < 40; i++) {
        expect((await askWorker(server.port, "/livez")).status).toBe(200)
        sent++
      }
      const text = await scrape(server.port)
      const families = parse(text)
      // Each family declared once, with both workers' samples in it.
      expect(text.match(/^# TYPE http_server_request_duration_seconds /gm)).toHaveLength(1)
      expect([...labelValues(text, "process_open_handles", "worker")].sort()).toEqual(first)
      expect([...labelValues(text, "process_open_handles", "generation")]).toEqual(["1"])
      // Series with labels of their own get the worker's first (the histogram's, the phase's).
      expect([...labelValues(text, "scoped_server_phase", "worker")].sort()).toEqual(first)
      expect(text).toMatch(/^scoped_server_phase\{worker="\d+",generation="1",phase="ready"\} 1$/m)
      let livez = 0
      for (
        const [, labels, value] of text.matchAll(/^http_server_request_duration_seconds_count\{([^}]*)\} (\S+)$/gm)
      ) {
        if (labels!.includes(`http_route="/livez"`)) livez += Number(value)
      }
      expect(livez).toBe(sent)
      expect(families.find((family) => family.name === "scoped_server_generation")?.type).toBe("GAUGE")
      expect(sample(text, "scoped_server_generation")).toBe(1)
      expect(sample(text, "scoped_server_workers")).toBe(2)
      expect(sample(text, `scoped_server_upgrades_total{outcome="completed"}`)).toBe(0)
      expect(sample(text, "scoped_server_scrape_workers_missing")).toBe(0)

      server.signal("SIGUSR2")
      await server.waitForLine((line) => line.message === "upgrade" && line.annotations.step === "completed", 60_000)
      const second = workerPids(server).map(String).filter((pid) => !first.includes(pid)).sort()
      expect(second).toHaveLength(2)
      const after = await scrape(server.port)
      parse(after)
      expect([...labelValues(after, "process_open_handles", "worker")].sort()).toEqual(second)
      expect([...labelValues(after, "process_open_handles", "generation")]).toEqual(["2"])
      expect(sample(after, "scoped_server_generation")).toBe(2)
      expect(sample(after, `scoped_server_upgrades_total{outcome="completed"}`)).toBe(1)
      expect(sample(after, "scoped_server_upgrade_duration_seconds")).toBeGreaterThan(0)
    },
    120_000
  )

  it("leaves out a worker that does not answer (SIGSTOP) within a second, and says so", async () => {
    // The heartbeat would kill the stopped worker (5 s by default); this test continues it instead.
    const server = await start({ WORKERS: "2", WORKER_HEARTBEAT_TIMEOUT: "1m" })
    await server.waitForLine((line) => line.message === "workers ready", 30_000)
    const [stopped, serving] = workerPids(server)
    process.kill(stopped!, "SIGSTOP")
    try {
      // The supervisor hands connections to workers; a stopped one takes a share until it is seen
      // not to acknowledge them (a second), then none while its peer can take them.
      const probes = Array.from({ length: 4 }, () => request(server.port, "/livez").catch(() => undefined))
      await new Promise((resolve) => setTimeout(resolve, 1_200))
      const startedAt = performance.now()
      // The stopped worker receives nothing now; its peer answers the scrape without it.
      const text = await scrape(server.port)
      expect(performance.now() - startedAt).toBeLessThan(2_500)
      parse(text)
      expect([...labelValues(text, "process_open_handles", "worker")]).toEqual([String(serving)])
      expect(sample(text, "scoped_server_scrape_workers_missing")).toBe(1)
      // Every probe is answered: the ones held by the stopped worker once it continues.
      process.kill(stopped!, "SIGCONT")
      expect((await Promise.all(probes)).every((answer) => answer?.status === 200)).toBe(true)
    } finally {
      process.kill(stopped!, "SIGCONT")
    }
  }, 60_000)
})
