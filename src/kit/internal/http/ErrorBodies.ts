/**
 * The Node-level error bodies: every 4xx/5xx Effect answers becomes a problem document, and the
 * answers Node gives before Effect sees a request (not ready yet, a malformed head) are too.
 */
import { Effect } from "effect"
import type { HttpEffect, HttpServerRequest } from "effect/http"
import { HttpBody, HttpServerResponse } from "effect/http"
import * as Http from "node:http"
import type * as Net from "node:net"
import { contentType, make, type Problem } from "../../Problem.ts"
import * as RequestId from "../../RequestId.ts"
import { dataHeaders } from "./Headers.ts"

const statusTitle = (status: number): string => Http.STATUS_CODES[status] ?? "Error"

const isProblem = (response: HttpServerResponse.HttpServerResponse) =>
  response.body._tag === "Uint8Array" && response.body.contentType.startsWith(contentType)

const isJson = (response: HttpServerResponse.HttpServerResponse) =>
  response.body._tag === "Uint8Array" && /^application\/(.+\+)?json/.test(response.body.contentType)

const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value)

const decoder = new TextDecoder()

/** The body as a JSON object, when it is one (error bodies are small; only those are read). */
const jsonObject = (response: HttpServerResponse.HttpServerResponse): Record<string, unknown> | undefined => {
  if (response.body._tag !== "Uint8Array" || response.body.contentLength > 64 * 1024) return undefined
  try {
    const parsed: unknown = JSON.parse(decoder.decode(response.body.body))
    return isRecord(parsed) ? parsed : undefined
  } catch {
    return undefined
  }
}

const defaultDetail = (request: HttpServerRequest.HttpServerRequest, status: number, maxBodySize: number) =>
  status === 404
    ? `no route for ${request.method} ${request.url.split("?")[0]}`
    : status === 405
    ? `${request.method} is not allowed here`
    : status === 413
    ? `the request body is larger than ${maxBodySize} bytes`
    : status === 503
    ? "the server is shutting down"
    : status === 400
    ? "the request is not valid"
    : status >= 500
    ? "an unexpected error occurred"
    : undefined

/**
 * The problem for an error response some other layer wrote: a problem gets the request id;
 * plain text becomes `detail`; an empty body gets a detail that says what was wrong. Any other
 * JSON body is a representation on purpose (the health report a 503 `/readyz` carries) and is
 * left alone (`undefined`).
 */
const toProblem = (
  request: HttpServerRequest.HttpServerRequest,
  response: HttpServerResponse.HttpServerResponse,
  maxBodySize: number
): Problem | undefined => {
  const status = response.status
  const requestId = RequestId.of(request)
  const id = requestId === undefined ? {} : { requestId }
  if (isJson(response)) {
    const object = isProblem(response) ? jsonObject(response) : undefined
    if (object === undefined || typeof object.type !== "string") return undefined
    return { ...make(status, undefined, object), status, ...id }
  }
  // Only short plain text is carried over: an HTML page or bytes would not read as a detail.
  const text = response.body._tag === "Uint8Array" && response.body.contentLength <= 500 &&
      response.body.contentType.startsWith("text/plain")
    ? decoder.decode(response.body.body).trim()
    : ""
  return { ...make(status, text.length > 0 ? text : defaultDetail(request, status, maxBodySize)), ...id }
}

/**
 * Every error answer leaves as a problem with the request's id, whoever wrote it: Effect's
 * router and HttpApi (empty 400/404/405/500 bodies, plain-text 413/415), the kit, the app.
 * A 503 without `Retry-After` gets one.
 */
export const errorBodies = (maxBodySize: number): HttpEffect.PreResponseHandler => (request, response) => {
  if (response.status < 400) return Effect.succeed(response)
  const problem = toProblem(request, response, maxBodySize)
  const answer = problem === undefined ? response : HttpServerResponse.setBody(
    HttpServerResponse.removeHeader(response, "content-type"),
    HttpBody.jsonUnsafe(problem, contentType)
  )
  return Effect.succeed(
    answer.status === 503 && answer.headers["retry-after"] === undefined
      ? HttpServerResponse.setHeader(answer, "retry-after", "1")
      : answer
  )
}

/** What a request gets before the routes are mounted. */
export const notReady = (request: Http.IncomingMessage, response: Http.ServerResponse) => {
  const body = JSON.stringify({ ...make(503, "the server is starting"), requestId: RequestId.assign(request) })
  response.writeHead(503, {
    "content-type": contentType,
    "content-length": Buffer.byteLength(body),
    "retry-after": "1"
  })
  response.end(body)
}

const clientErrorStatus = (code: string | undefined): number =>
  code === "HPE_HEADER_OVERFLOW" ? 431 : code === "ERR_HTTP_REQUEST_TIMEOUT" ? 408 : 400

const clientErrorDetail = (status: number): string =>
  status === 431
    ? "the request's headers are larger than the server accepts"
    : status === 408
    ? "the request did not arrive in time"
    : "the request is not valid HTTP"

const rawHeaders = Object.entries(dataHeaders).map(([name, value]) => `${name}: ${value}\r\n`).join("")

/** How long an error answer written before a close may take to flush before the socket is destroyed anyway. */
const flushBoundMs = 1_000

/**
 * Ends a request that will never complete (its body timed out at REQUEST_TIMEOUT, or did not
 * parse) on the response still waiting for it, as Node does without a listener: the problem
 * goes out with `Connection: close` and the socket is destroyed once it has flushed, or at the
 * bound when the client reads nothing. The handler, still waiting for the body, finds its
 * response ended and writes nothing.
 */
const answerPending = (pending: Http.ServerResponse, socket: Net.Socket, status: number) => {
  const requestId = RequestId.assign(pending.req)
  const body = JSON.stringify({ ...make(status, clientErrorDetail(status)), requestId })
  const destroy = () => socket.destroy()
  setTimeout(destroy, flushBoundMs).unref()
  pending.shouldKeepAlive = false
  pending.writeHead(status, {
    ...dataHeaders,
    "content-type": contentType,
    "content-length": Buffer.byteLength(body),
    "x-request-id": requestId,
    connection: "close"
  })
  pending.end(body, destroy)
}

/**
 * Bytes Node could not parse as HTTP get a problem and a closed connection, never a hang. No
 * request exists, so an id is made here and sent as `X-Request-Id` too: every problem carries
 * one, and the two always agree. With a listener installed Node closes nothing itself, so
 * every path here ends the socket or leaves a response that will.
 */
export function onClientError(error: Error & { code?: string }, socket: Net.Socket) {
  // Node sets `_httpMessage` to null once a response is done: a keep-alive socket that sends
  // garbage after its first answer has null here, not undefined (and once crashed the process).
  const pending = (socket as Net.Socket & { _httpMessage?: Http.ServerResponse | null })._httpMessage
  // Bytes pipelined after a request that said `Connection: close`: Node stops parsing there, so
  // nothing after it runs; the answer in progress is the last one and must still go out whole.
  if (error.code === "HPE_CLOSED_CONNECTION" && pending != null) return
  if (error.code === "ECONNRESET" || !socket.writable || (pending != null && pending.headersSent)) {
    socket.destroy()
    return
  }
  const status = clientErrorStatus(error.code)
  if (pending != null) {
    // The request being answered never arrived whole (a body trickled past REQUEST_TIMEOUT, or
    // one that does not parse): its handler would wait for it forever.
    if (!pending.req.complete) return answerPending(pending, socket, status)
    // A valid request is still being answered and bytes after it are not HTTP: writing here
    // would interleave with its response. It finishes, says `Connection: close`, and Node closes.
    pending.shouldKeepAlive = false
    return
  }
  const requestId = RequestId.generate()
  const body = JSON.stringify({ ...make(status, clientErrorDetail(status)), requestId })
  socket.end(
    `HTTP/1.1 ${status} ${statusTitle(status)}\r\nContent-Type: ${contentType}\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\nX-Request-Id: ${requestId}\r\n${rawHeaders}` +
      `Connection: close\r\n\r\n${body}`
  )
}
