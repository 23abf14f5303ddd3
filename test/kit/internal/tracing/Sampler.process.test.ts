/**
 * OTEL_TRACES_SAMPLER from the built server to a real OTLP/HTTP receiver: what each sampler
 * exports, whole traces only, log lines correlating either way, and bad values refused at startup.
 */
import { afterEach, describe, expect, it } from "vitest"
import * as Sampler from "../../../../src/kit/internal/tracing/Sampler.ts"
import * as Testing from "../../../../src/kit/testing.ts"
import { request } from "../../../support/http.ts"
import { closeReceivers, hex, type Receiver, receiver, type Span } from "../../../support/otlp.ts"
import { type ServerProcess, spawnServer } from "../../../support/process.ts"

const secret = "sampler-test-secret-0123456789abcdef"
const running = new Set<ServerProcess>()
afterEach(() => {
  for (const server of running) server.child.kill("SIGKILL")
  running.clear()
  closeReceivers()
})

/** The server exporting to a fresh receiver, only at shutdown (so what arrived is all there is). */
const serve = async (env: Record<string, string>) => {
  const otlp = await receiver()
  const server = await spawnServer({
    env: {
      JWT_SECRET: secret,
      ACCESS_LOG: "true",
      RATE_LIMIT: "100000",
      OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url,
      OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
      OTEL_BSP_SCHEDULE_DELAY: "600000",
      ...env
    }
  })
  running.add(server)
  const authorization = `Bearer ${await Testing.mint({ subject: "sampler", secret })}`
  /** An item that does not exist: a 404 after a SQL query, so a sampled trace has a SQL child span. */
  const get = async (id: number, traceparent?: string) => {
    const answer = await request(server.port, `/api/v1/items/${id}`, {
      headers: { authorization, ...(traceparent === undefined ? {} : { traceparent }) }
    })
    expect(answer.status).toBe(404)
  }
  const stop = async () => {
    server.signal("SIGTERM")
    expect((await server.exited).code).toBe(0)
    // The exporters were live and flushed: the access lines went out as OTLP log records.
    expect(otlp.paths).toContain("/v1/logs")
  }
  /** The access line of the request for item `id`. */
  const accessLine = (id: number) => {
    const line = server.lines.find((line) =>
      line.message === "request" && line.annotations.path === `/api/v1/items/${id}`
    )
    expect(line, `no access line for ${id}`).toBeDefined()
    return line!.annotations as { readonly traceId?: string; readonly spanId?: string }
  }
  return { otlp, server, get, stop, accessLine }
}

const serverSpans = (otlp: Receiver) => otlp.spans.filter((span) => span.kind === 2)

/** The SQL spans descending from `root` in what arrived. */
const sqlUnder = (otlp: Receiver, root: Span) => {
  const byId = new Map(otlp.spans.map((span) => [span.spanId, span]))
  const under = (span: Span): boolean =>
    span.parentSpanId === root.spanId ||
    (span.parentSpanId !== undefined && byId.has(span.parentSpanId) && under(byId.get(span.parentSpanId)!))
  return otlp.spans.filter((span) =>
    span.traceId === root.traceId && span.attributes.some((entry) => entry.key.startsWith("db.")) && under(span)
  )
}

const traceparent = (traceId: string, flags: "00" | "01") => `00-${traceId}-${hex(16)}-${flags}`

describe("OTEL_TRACES_SAMPLER", () => {
  it("always_off: no span arrives, requests succeed, and log lines still carry their trace and span ids", async () => {
    const { accessLine, get, otlp, stop } = await serve({ OTEL_TRACES_SAMPLER: "always_off" })
    const incoming = hex(32)
    await get(990101)
    await get(990102)
    await get(990103, traceparent(incoming, "01"))
    await stop()
    expect(otlp.spans, JSON.stringify(otlp.spans.map((span) => [span.name, span.traceId]))).toEqual([])
    const lines = [990101, 990102, 990103].map(accessLine)
    for (const line of lines) {
      expect(line.traceId).toMatch(/^[0-9a-f]{32}$/)
      expect(line.spanId).toMatch(/^[0-9a-f]{16}$/)
    }
    expect(new Set(lines.map((line) => line.traceId)).size).toBe(3)
    // The incoming trace continues in the logs even though it is not exported here.
    expect(lines[2]!.traceId).toBe(incoming)
  })

  it("traceidratio 0 exports nothing; parentbased_traceidratio 0 exports only the trace a sampled traceparent brought", async () => {
    const [plain, parentBased] = await Promise.all([
      serve({ OTEL_TRACES_SAMPLER: "traceidratio", OTEL_TRACES_SAMPLER_ARG: "0" }),
      serve({ OTEL_TRACES_SAMPLER: "parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG: "0" })
    ])
    const [plainTrace, parentTrace] = [hex(32), hex(32)]
    await plain.get(990201)
    await plain.get(990202, traceparent(plainTrace, "01"))
    await parentBased.get(990201)
    const parentHeader = traceparent(parentTrace, "01")
    await parentBased.get(990202, parentHeader)
    await Promise.all([plain.stop(), parentBased.stop()])

    expect(plain.otlp.spans.map((span) => [span.name, span.traceId])).toEqual([])

    // Only the incoming trace, whole: its server span under the remote parent, and the SQL query under it.
    expect(new Set(parentBased.otlp.spans.map((span) => span.traceId))).toEqual(new Set([parentTrace]))
    const root = serverSpans(parentBased.otlp)
    expect(root).toHaveLength(1)
    expect(root[0]!.parentSpanId).toBe(parentHeader.split("-")[2])
    expect(sqlUnder(parentBased.otlp, root[0]!).length).toBeGreaterThan(0)
    expect(parentBased.accessLine(990201).traceId).toMatch(/^[0-9a-f]{32}$/)
  })

  it("traceidratio 0.5 over 200 requests: about half exported, exactly those its trace ids decide, each trace whole", async () => {
    const { accessLine, get, otlp, stop } = await serve({
      OTEL_TRACES_SAMPLER: "traceidratio",
      OTEL_TRACES_SAMPLER_ARG: "0.5"
    })
    const n = 200
    const ids = Array.from({ length: n }, (_, index) => 990300 + index)
    for (let batch = 0; batch < n; batch += 10) await Promise.all(ids.slice(batch, batch + 10).map((id) => get(id)))
    await stop()

    const traceIds = ids.map((id) => accessLine(id).traceId!)
    expect(new Set(traceIds).size).toBe(n)
    const decide = Sampler.traceIdRatio(0.5)
    const expected = new Set(traceIds.filter(decide))
    const exported = new Set(serverSpans(otlp).map((span) => span.traceId))
    // Decided on the trace id that was exported and logged, the same way a peer with 0.5 would.
    expect([...exported].sort()).toEqual([...expected].sort())
    // Binomial(200, 0.5): a standard deviation of about 7; 60..140 is more than 5 either side.
    expect(exported.size).toBeGreaterThanOrEqual(60)
    expect(exported.size).toBeLessThanOrEqual(140)
    // No orphan of an unsampled root: a span of a request's trace arrived only with its server span,
    // and every span that arrived (the pool's own background spans too) came with its parent.
    const requestTraces = new Set(traceIds)
    const byId = new Set(otlp.spans.map((span) => span.spanId))
    for (const span of otlp.spans) {
      if (requestTraces.has(span.traceId)) expect(exported.has(span.traceId), span.name).toBe(true)
      if (span.parentSpanId !== undefined && span.parentSpanId !== "") {
        expect(byId.has(span.parentSpanId), `${span.name} without its parent`).toBe(true)
      }
    }
    // …and every exported request brought its SQL child with it.
    for (const root of serverSpans(otlp)) {
      expect(root.parentSpanId ?? "").toBe("")
      expect(sqlUnder(otlp, root).length, root.traceId).toBeGreaterThan(0)
    }
  })

  it("the default sampler exports nothing of a trace whose traceparent says not sampled (flag 00)", async () => {
    const { accessLine, get, otlp, stop } = await serve({})
    const [unsampled, sampled] = [hex(32), hex(32)]
    await get(990401, traceparent(unsampled, "00"))
    await get(990402, traceparent(sampled, "01"))
    await stop()
    expect(otlp.spans.filter((span) => span.traceId === unsampled)).toEqual([])
    expect(serverSpans(otlp).map((span) => span.traceId)).toEqual([sampled])
    expect(accessLine(990401).traceId).toBe(unsampled)
  })
})

describe("OTEL_TRACES_SAMPLER refused at startup", () => {
  const refusedWith = async (env: Record<string, string>) => {
    const server = await spawnServer({ env, waitReady: false })
    running.add(server)
    // Started after all (the value was accepted): fail now rather than at the test's timeout.
    const outcome = await Promise.race([
      server.exited.then(() => "exited"),
      server.waitForLine((line) => line.message === "ready", 30_000).then(
        () => "ready",
        () => server.exited.then(() => "exited")
      )
    ])
    expect(outcome, JSON.stringify(env)).toBe("exited")
    expect((await server.exited).code).toBe(1)
    const failures = server.lines.filter((line) => line.message === "startup failed")
    expect(failures).toHaveLength(1)
    expect(server.lines.some((line) => line.message === "ready")).toBe(false)
    expect(server.stderr()).toBe("")
    return String(failures[0]!.annotations.error)
  }

  it("an unknown sampler, even with tracing off; a ratio out of range; an argument to a sampler that takes none", async () => {
    expect(await refusedWith({ OTEL_TRACES_SAMPLER: "xray" })).toBe(
      `invalid configuration: OTEL_TRACES_SAMPLER: "xray" is not one of ${Sampler.samplerNames.join(", ")}`
    )
    expect(
      await refusedWith({
        OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:1",
        OTEL_TRACES_SAMPLER: "parentbased_traceidratio",
        OTEL_TRACES_SAMPLER_ARG: "2"
      })
    ).toBe("invalid configuration: OTEL_TRACES_SAMPLER_ARG: 2 is out of range; expected from 0 to 1")
    expect(await refusedWith({ OTEL_TRACES_SAMPLER: "always_on", OTEL_TRACES_SAMPLER_ARG: "0.1" })).toMatch(
      /^invalid configuration: OTEL_TRACES_SAMPLER_ARG is set but OTEL_TRACES_SAMPLER=always_on takes no argument/
    )
  })
})
