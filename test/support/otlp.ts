/**
 * An OTLP/HTTP JSON collector for process tests: real HTTP on a free port, every span and log
 * record that arrives decoded, closed after each test by `closeReceivers`.
 */
import * as Http from "node:http"
import type { AddressInfo } from "node:net"

export interface Span {
  readonly traceId: string
  readonly spanId: string
  readonly parentSpanId?: string
  readonly name: string
  readonly kind: number
  readonly attributes: ReadonlyArray<{ readonly key: string; readonly value: Record<string, unknown> }>
}

export interface LogRecord {
  readonly body?: { readonly stringValue?: string }
  readonly severityText?: string
  readonly traceId?: string
  readonly spanId?: string
  readonly attributes?: ReadonlyArray<{ readonly key: string; readonly value: { readonly stringValue?: string } }>
}

export interface Receiver {
  readonly spans: Array<Span>
  readonly logs: Array<LogRecord>
  /** The path of every export request, in order of arrival. */
  readonly paths: Array<string>
  readonly url: string
}

const receivers = new Set<Http.Server>()

/** Closes every receiver `receiver` started; call it in `afterEach`. */
export const closeReceivers = () => {
  for (const server of receivers) server.close()
  receivers.clear()
}

/** A collector on 127.0.0.1: every span that arrives on /v1/traces and log record on /v1/logs, decoded. */
export const receiver = async (): Promise<Receiver> => {
  const spans: Array<Span> = []
  const logs: Array<LogRecord> = []
  const paths: Array<string> = []
  const server = Http.createServer((req, res) => {
    let body = ""
    req.setEncoding("utf8").on("data", (chunk: string) => (body += chunk))
    req.on("end", () => {
      paths.push(req.url ?? "")
      if (req.url === "/v1/traces") {
        const decoded = JSON.parse(body) as { resourceSpans: Array<{ scopeSpans: Array<{ spans: Array<Span> }> }> }
        for (const resource of decoded.resourceSpans) {
          for (const scope of resource.scopeSpans) spans.push(...scope.spans)
        }
      }
      if (req.url === "/v1/logs") {
        const decoded = JSON.parse(body) as {
          resourceLogs: Array<{ scopeLogs: Array<{ logRecords: Array<LogRecord> }> }>
        }
        for (const resource of decoded.resourceLogs) {
          for (const scope of resource.scopeLogs) logs.push(...scope.logRecords)
        }
      }
      res.writeHead(200, { "content-type": "application/json" }).end("{}")
    })
  })
  receivers.add(server)
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  return { spans, logs, paths, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` }
}

export const hex = (length: number) =>
  Array.from({ length }, () => Math.floor(Math.random() * 16).toString(16)).join("")

export const attribute = (span: Span, key: string) => span.attributes.find((entry) => entry.key === key)?.value
