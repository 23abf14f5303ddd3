/**
 * The Node response every request gets, set up where Node creates it (cheaper than any Effect
 * middleware on the hot path): the request id, security headers for what the response is, and
 * an optional access-log line.
 */
import * as Http from "node:http"
import * as RequestId from "../../RequestId.ts"
import { kSpan, type RequestMetrics } from "../metrics/Http.ts"
import { dataHeaders, documentHeaders } from "./Headers.ts"

export interface AccessLogLine {
  readonly requestId: string
  readonly method: string
  readonly path: string
  readonly status: number
  readonly durationMs: number
  /** With tracing on, the request's server span. */
  readonly traceId?: string
  readonly spanId?: string
}

export interface ResponseOptions {
  /** Paths served as documents (with or without a trailing slash or a query): they get `documentHeaders`. */
  readonly documentPaths: ReadonlyArray<string>
  readonly accessLog: ((line: AccessLogLine) => void) | undefined
  /** `http.server.request.duration` and requests in flight; undefined records nothing. */
  readonly metrics?: RequestMetrics | undefined
}

/** Whether `url` is one of `paths`, ignoring a trailing slash and the query. */
const matcher = (paths: ReadonlyArray<string>) => {
  const set = new Set(paths.map((path) => path.replace(/\/+$/, "")))
  if (set.size === 0) return () => false
  return (url: string) => {
    const query = url.indexOf("?")
    const path = query === -1 ? url : url.slice(0, query)
    return set.has(path.length > 1 && path.endsWith("/") ? path.slice(0, -1) : path)
  }
}

/**
 * A ServerResponse class for `http.createServer({ ServerResponse })`.
 *
 * `end(body)`: Effect sets `strictContentLength`, which turns off Node's single-write path, so
 * the head, the body and an empty finishing chunk go out as a writev. When the body's length is
 * exactly the declared one, the strict check has nothing left to catch and is lifted for the
 * call: one write.
 */
export const makeServerResponse = (options: ResponseOptions) => {
  const isDocument = matcher(options.documentPaths)
  const accessLog = options.accessLog
  const metrics = options.metrics
  // One listener function for every response (`this` is the response): no closure per request.
  // `close` fires for every response, finished or cut off, so the in-flight count cannot leak.
  const onClose = function(this: Http.ServerResponse & { readonly startedAt: number }) {
    metrics!.end(this.req, this.statusCode, this.writableFinished, (performance.now() - this.startedAt) / 1000)
  }
  return class ServerResponse<Request extends Http.IncomingMessage = Http.IncomingMessage>
    extends Http.ServerResponse<Request>
  {
    private readonly requestId: string
    private readonly securityHeaders: Readonly<Record<string, string>>
    startedAt = 0

    constructor(request: Request) {
      super(request)
      const requestId = RequestId.assign(request)
      const url = request.url ?? "/"
      this.requestId = requestId
      this.securityHeaders = isDocument(url) ? documentHeaders : dataHeaders
      if (metrics !== undefined) {
        this.startedAt = performance.now()
        metrics.active++
        // `on`, not `once`: close fires once, and `once` would allocate a wrapper per response.
        this.on("close", onClose)
      }
      if (accessLog !== undefined) {
        const startedAt = performance.now()
        this.once("finish", () => {
          const line: AccessLogLine = {
            requestId,
            method: request.method ?? "",
            path: url.split("?")[0]!,
            status: this.statusCode,
            durationMs: Math.round((performance.now() - startedAt) * 10) / 10
          }
          const span = (request as { [kSpan]?: { readonly traceId: string; readonly spanId: string } })[kSpan]
          accessLog(span === undefined ? line : { ...line, traceId: span.traceId, spanId: span.spanId })
        })
      }
    }

    /** Merged into the head in one pass (setHeader per header would take Node's slow path). */
    override writeHead(statusCode: number, statusMessage?: any, headers?: any): this {
      if (typeof statusMessage === "object" && statusMessage !== null) {
        headers = statusMessage
        statusMessage = undefined
      }
      const merged = Array.isArray(headers)
        ? [...Object.entries(this.securityHeaders).flat(), "x-request-id", this.requestId, ...headers.flat()]
        : { ...this.securityHeaders, "x-request-id": this.requestId, ...headers }
      return statusMessage === undefined
        ? super.writeHead(statusCode, merged)
        : super.writeHead(statusCode, statusMessage, merged)
    }

    override end(chunk?: any, encoding?: any, callback?: any): this {
      const self = this as unknown as { _contentLength: number | null; _headerSent: boolean }
      if (
        this.strictContentLength && typeof chunk === "string" && encoding === undefined && callback === undefined &&
        !self._headerSent && self._contentLength !== null && Buffer.byteLength(chunk) === self._contentLength
      ) {
        this.strictContentLength = false
      }
      return super.end(chunk, encoding, callback)
    }
  }
}
