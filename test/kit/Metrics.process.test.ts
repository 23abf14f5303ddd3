/**
 * /metrics of the built server as Prometheus reads it: valid exposition (promtool and a JS
 * parser), histogram counts equal to the requests sent per route template and status, bounded series.
 */
import { spawnSync } from "node:child_process"
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Path from "node:path"
import parsePrometheusTextFormat from "parse-prometheus-text-format"
import { afterEach, describe, expect, it } from "vitest"
import { mint } from "../support/app.ts"
import { request } from "../support/http.ts"
import { type ServerProcess, spawnServer } from "../support/process.ts"

const secret = "metrics-test-secret-0123456789abcdef"
const running = new Set<ServerProcess>()
afterEach(() => {
  for (const server of running) server.child.kill("SIGKILL")
  running.clear()
})
const start = async (env: Record<string, string> = {}) => {
  const server = await spawnServer({ env: { JWT_SECRET: secret, ACCESS_LOG: "false", ...env } })
  running.add(server)
  return server
}

interface Family {
  readonly name: string
  readonly type: string
  readonly metrics: ReadonlyArray<{ readonly labels?: Record<string, string>; readonly value?: string; readonly count?: string; readonly buckets?: Record<string, string> }>
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
    const labels = Object.fromEntries([...labelText!.matchAll(/(\w+)="([^"]*)"/g)].map(([, key, label]) => [key!, label!]))
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
const seriesOf = (text: string) =>
  new Set(text.split("\n").filter((line) => line !== "" && !line.startsWith("#")).map((line) => line.slice(0, line.lastIndexOf(" "))))

describe("GET /metrics", () => {
  it("parses as Prometheus text, and counts each request once under its route template and status", async () => {
    const server = await start()
    const token = { authorization: `Bearer ${await mint({ subject: "metrics", secret })}` }
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
    const dashboard = JSON.parse(Fs.readFileSync(Path.resolve(import.meta.dirname, "../../deploy/grafana/scoped-server.json"), "utf8")) as {
      panels: Array<{ targets: Array<{ expr: string }> }>
    }
    const queried = new Set(
      dashboard.panels.flatMap((panel) => panel.targets.flatMap((target) => [...target.expr.matchAll(/\b(?:http|scoped_server|nodejs|v8js|process)_\w+(?=\{)/g)].map(([name]) => name)))
    )
    expect(queried.size).toBeGreaterThan(10)
    const server = await start()
    expect((await request(server.port, "/livez")).status).toBe(200)
    // The GC histogram has series only once a collection has happened, which a fresh server may not have had.
    const text = await scrape(server.port)
    const scraped = new Set(text.split("\n").filter((line) => line !== "" && !line.startsWith("#")).map((line) => line.split(/[{ ]/)[0]!))
    const missing = [...queried].filter((name) => !scraped.has(name) && name !== "v8js_gc_duration_seconds_bucket")
    expect(missing).toEqual([])
  })

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
