/**
 * The one shape of every error the server answers, whichever layer answers it: routes, the
 * pre-response hook, Node's own client errors, the not-yet-ready handler.
 */
import { Effect } from "effect"
import type { HttpEffect, HttpServerRequest } from "effect/http"
import { HttpServerResponse } from "effect/http"
import * as Http from "node:http"
import type * as Net from "node:net"

/** The one shape of every error answer: `{error, status, message?}`. */
export const errorResponse = (
  status: number,
  message?: string,
  headers?: HttpServerResponse.Options["headers"]
): HttpServerResponse.HttpServerResponse => {
  const error = Http.STATUS_CODES[status] ?? "Error"
  return HttpServerResponse.jsonUnsafe(
    message === undefined ? { error, status } : { error, status, message },
    headers === undefined ? { status } : { status, headers }
  )
}

const isJson = (response: HttpServerResponse.HttpServerResponse) =>
  response.body._tag !== "Empty" && (response.body.contentType ?? response.headers["content-type"] ?? "").startsWith("application/json")

/**
 * Every error answer is JSON: an empty one gets a body that says what was wrong, a plain-text
 * one (some library paths answer `text/plain`) has its text carried over as the message.
 */
export const errorBodies = (maxBodySize: number): HttpEffect.PreResponseHandler => (request, response) => {
  if (response.status < 400) return Effect.succeed(response)
  const answer = isJson(response) ? response : jsonBody(request, response, maxBodySize)
  // Every 503 here is temporary: tell clients when to come back.
  return Effect.succeed(
    answer.status === 503 && answer.headers["retry-after"] === undefined
      ? HttpServerResponse.setHeader(answer, "retry-after", "1")
      : answer
  )
}

const jsonBody = (
  request: HttpServerRequest.HttpServerRequest,
  response: HttpServerResponse.HttpServerResponse,
  maxBodySize: number
) => {
  const status = response.status
  const text = response.body._tag === "Uint8Array" && response.body.contentLength <= 500
    ? new TextDecoder().decode(response.body.body)
    : undefined
  const message = text !== undefined && text.length > 0
    ? text
    : status === 404
    ? `no route for ${request.method} ${request.url.split("?")[0]}`
    : status === 405
    ? `${request.method} is not allowed here`
    : status === 413
    ? `the request body is larger than ${maxBodySize} bytes`
    : status === 503
    ? "the server is shutting down"
    : undefined
  const { "content-type": _, "content-length": __, ...headers } = response.headers
  return errorResponse(status, message, headers)
}

const notReadyBody = JSON.stringify({ error: "Service Unavailable", status: 503, message: "the server is starting" })

/** What a request gets before the routes are mounted. */
export const notReady = (_request: Http.IncomingMessage, response: Http.ServerResponse) => {
  response.writeHead(503, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(notReadyBody),
    "retry-after": "1"
  })
  response.end(notReadyBody)
}

const clientErrorStatus = (code: string | undefined): number =>
  code === "HPE_HEADER_OVERFLOW" ? 431 : code === "ERR_HTTP_REQUEST_TIMEOUT" ? 408 : 400

/** Bytes Node could not parse as HTTP get a JSON answer and a closed connection, never a hang. */
export function onClientError(error: Error & { code?: string }, socket: Net.Socket) {
  const pending = (socket as Net.Socket & { _httpMessage?: Http.ServerResponse })._httpMessage
  // Bytes pipelined after a request that said `Connection: close`: Node stops parsing there, so
  // nothing after it runs; the answer in progress is the last one and must still go out whole.
  if (error.code === "HPE_CLOSED_CONNECTION" && pending != null) return
  if (error.code === "ECONNRESET" || !socket.writable || (pending !== undefined && pending.headersSent)) {
    socket.destroy()
    return
  }
  const status = clientErrorStatus(error.code)
  const body = JSON.stringify({ error: Http.STATUS_CODES[status], status })
  socket.end(
    `HTTP/1.1 ${status} ${Http.STATUS_CODES[status]}\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`
  )
}
