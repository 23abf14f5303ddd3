/**
 * Traces from the built server to a real OTLP/HTTP receiver in the test: the incoming
 * traceparent honoured, the SQL child span, the spans of a drain flushed before exit, the access
 * log's trace ids, and log records exported over OTLP.
 */
import { Effect, Exit, Scope } from "effect"
import { afterEach, describe, expect, it } from "vitest"
import * as Testing from "../../src/kit/testing.ts"
import { request } from "../support/http.ts"
import { attribute, closeReceivers, hex, type LogRecord, receiver, type Span } from "../support/otlp.ts"
import { type ServerProcess, spawnServer } from "../support/process.ts"
import { privateRedis } from "../support/redis.ts"

const secret = "tracing-test-secret-0123456789abcdef"
const running = new Set<ServerProcess>()
afterEach(() => {
  for (const server of running) server.child.kill("SIGKILL")
  running.clear()
  closeReceivers()
})

describe("OTLP traces", () => {
  it("exports the request's server span under the incoming traceparent with its SQL child, and a drain's spans before exit", async () => {
    const otlp = await receiver()
    const server = await spawnServer({
      env: {
        JWT_SECRET: secret,
        ACCESS_LOG: "true",
        OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url,
        OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
        OTEL_SERVICE_NAME: "tracing-test",
        // No periodic export: whatever arrives was flushed by the shutdown.
        OTEL_BSP_SCHEDULE_DELAY: "600000",
        DRAIN_DELAY: "1s"
      }
    })
    running.add(server)
    const headers = { authorization: `Bearer ${await Testing.mint({ subject: "tracer", secret })}` }
    const [traceA, parentA, traceB] = [hex(32), hex(16), hex(32)]
    const first = await request(server.port, "/api/v1/items/990001", {
      headers: { ...headers, traceparent: `00-${traceA}-${parentA}-01` }
    })
    expect(first.status).toBe(404)
    expect((await request(server.port, "/livez")).status).toBe(200)

    server.signal("SIGTERM")
    await server.waitForLine((line) => line.message === "signal")
    const during = await request(server.port, "/api/v1/items/990002", {
      headers: { ...headers, traceparent: `00-${traceB}-${hex(16)}-01` }
    })
    expect(during.status).toBe(404)
    const { code } = await server.exited
    expect(code).toBe(0)

    const serverA = otlp.spans.find((span) => span.traceId === traceA && span.kind === 2)
    expect(
      serverA,
      JSON.stringify([otlp.paths, otlp.spans.map((s) => [s.name, s.traceId, s.kind]), server.lines.slice(-8)])
    ).toBeDefined()
    expect(serverA!.parentSpanId).toBe(parentA)
    expect(attribute(serverA!, "http.route")).toEqual({ stringValue: "/api/v1/items/:id" })
    // The SQL query's span descends from the server span.
    const byId = new Map(otlp.spans.map((span) => [span.spanId, span]))
    const descends = (span: Span): boolean =>
      span.parentSpanId === serverA!.spanId ||
      (span.parentSpanId !== undefined && byId.has(span.parentSpanId) && descends(byId.get(span.parentSpanId)!))
    const sql = otlp.spans.filter((span) =>
      span.traceId === traceA && span.attributes.some((entry) => entry.key.startsWith("db.")) && descends(span)
    )
    expect(sql.length, JSON.stringify(otlp.spans.filter((s) => s.traceId === traceA))).toBeGreaterThan(0)
    // Served during the drain, delivered before the process exited.
    expect(otlp.spans.some((span) => span.traceId === traceB && span.kind === 2)).toBe(true)
    // The access-log line of the request names its trace and its server span.
    const accessLine = server.lines.find((line) =>
      line.message === "request" && line.annotations.path === "/api/v1/items/990001"
    )
    expect(accessLine?.annotations).toMatchObject({ traceId: traceA, spanId: serverA!.spanId, status: 404 })
    // A probe is untraced: its line has no trace ids.
    const probeLine = server.lines.find((line) => line.message === "request" && line.annotations.path === "/livez")
    expect(probeLine?.annotations.traceId).toBeUndefined()
    // Log records went out over OTLP too, down to the access line of the request served during the drain.
    expect(otlp.paths).toContain("/v1/logs")
    const pathOf = (record: LogRecord) => record.attributes?.find((entry) => entry.key === "path")?.value.stringValue
    expect(
      otlp.logs.some((record) => record.body?.stringValue === "request" && pathOf(record) === "/api/v1/items/990002")
    ).toBe(true)
    // Probes are not traced.
    expect(otlp.spans.some((span) => JSON.stringify(span.attributes).includes("/livez"))).toBe(false)
  })

  it("exports Redis commands and cache reads as children of the request's span, the cache's result on its span", async () => {
    const scope = Effect.runSync(Scope.make())
    try {
      const redis = await Effect.runPromise(privateRedis.pipe(Scope.provide(scope)))
      const otlp = await receiver()
      const server = await spawnServer({
        env: {
          JWT_SECRET: secret,
          REDIS_URL: redis.url,
          OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url,
          OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
          OTEL_BSP_SCHEDULE_DELAY: "600000"
        }
      })
      running.add(server)
      const headers = { authorization: `Bearer ${await Testing.mint({ subject: "tracer", secret })}` }
      const [miss, hit] = [hex(32), hex(32)]
      for (const trace of [miss, hit]) {
        const answer = await request(server.port, "/api/v1/items?perPage=3", {
          headers: { ...headers, traceparent: `00-${trace}-${hex(16)}-01` }
        })
        expect(answer.status).toBe(200)
      }
      server.signal("SIGTERM")
      expect((await server.exited).code).toBe(0)

      const byId = new Map(otlp.spans.map((span) => [span.spanId, span]))
      const under = (root: Span, span: Span): boolean =>
        span.parentSpanId === root.spanId ||
        (span.parentSpanId !== undefined && byId.has(span.parentSpanId) && under(root, byId.get(span.parentSpanId)!))
      for (const [trace, result] of [[miss, "miss"], [hit, "hit"]] as const) {
        const root = otlp.spans.find((span) => span.traceId === trace && span.kind === 2)
        expect(root, JSON.stringify(otlp.spans.map((span) => [span.name, span.traceId, span.kind]))).toBeDefined()
        const inTrace = otlp.spans.filter((span) => span.traceId === trace && under(root!, span))
        const cache = inTrace.find((span) => span.name === "cache items")
        expect(cache, JSON.stringify(inTrace.map((span) => span.name))).toBeDefined()
        expect(attribute(cache!, "cache.result")).toEqual({ stringValue: result })
        // The rate limiter's script and the cache's MGET, as Redis client spans (kind 3).
        const commands = inTrace.filter((span) => attribute(span, "db.system.name")?.stringValue === "redis")
        expect(commands.map((span) => span.name)).toEqual(expect.arrayContaining(["redis EVALSHA", "redis MGET"]))
        expect(commands.every((span) => span.kind === 3)).toBe(true)
      }
    } finally {
      await Effect.runPromise(Scope.close(scope, Exit.void))
    }
  })
})
