/**
 * Requests refused from the head, before the client sends its body: `Expect: 100-continue` (declared size, the app's
 * own checks; else `100 Continue` only when a handler reads), other `Expect`s, and any declared size over the bound.
 */
import type { HttpServerResponse } from "effect/http"
import type * as Http from "node:http"
import { contentType, errorResponse } from "../../Problem.ts"
import * as RequestId from "../../RequestId.ts"
import { dataHeaders } from "./Headers.ts"

/** A refusal of a request from its head alone, or `undefined` to let it go on. */
export type ContinueCheck = (request: Http.IncomingMessage) => HttpServerResponse.HttpServerResponse | undefined

/** The kit's own check: a declared Content-Length over MAX_BODY_SIZE is 413 before a byte is sent. */
export const declaredSize = (maxBodySize: number): ContinueCheck => (request) => {
  const length = request.headers["content-length"]
  return length !== undefined && Number(length) > maxBodySize
    ? errorResponse(413, `the request body is larger than ${maxBodySize} bytes`)
    : undefined
}

const decoder = new TextDecoder()

/** The refusal's body, with the request's id added when it is a problem (every problem carries one). */
const bodyOf = (response: HttpServerResponse.HttpServerResponse, requestId: string): Uint8Array | string => {
  if (response.body._tag !== "Uint8Array") return new Uint8Array(0)
  const body = response.body.body
  if (!response.body.contentType.startsWith(contentType)) return body
  try {
    return JSON.stringify({ ...JSON.parse(decoder.decode(body)), requestId })
  } catch {
    return body
  }
}

/**
 * Writes an Effect response on the Node one, refusing `request` from its head: refusals are small
 * buffered bodies, carrying the request's id and the data security headers like any answer.
 */
export const refuse = (
  request: Http.IncomingMessage,
  nodeResponse: Http.ServerResponse,
  response: HttpServerResponse.HttpServerResponse
) => {
  const requestId = RequestId.assign(request)
  const body = bodyOf(response, requestId)
  const headers: Record<string, string> = { ...dataHeaders, ...response.headers, "x-request-id": requestId }
  if (response.body._tag === "Uint8Array") headers["content-type"] = response.body.contentType
  headers["content-length"] = String(typeof body === "string" ? Buffer.byteLength(body) : body.byteLength)
  // Node closes the connection after a final status sent instead of 100 (the client may still
  // send the body); saying so lets the client know not to reuse it.
  headers["connection"] = "close"
  nodeResponse.shouldKeepAlive = false
  nodeResponse.writeHead(response.status, headers)
  nodeResponse.end(body)
}

/**
 * The declared-size check for every request, not only those that wait for `100 Continue`: a
 * Content-Length over MAX_BODY_SIZE is refused before the handler runs and before a byte of the
 * body is read. Costs one header read per request.
 */
export const refuseOversized = (
  maxBodySize: number,
  handler: (request: Http.IncomingMessage, response: Http.ServerResponse) => void
) => {
  const check = declaredSize(maxBodySize)
  return (request: Http.IncomingMessage, response: Http.ServerResponse) => {
    const refusal = check(request)
    return refusal === undefined ? handler(request, response) : refuse(request, response, refusal)
  }
}

/**
 * Sends `100 Continue` on the first read of the body, not before: authentication, rate limits and
 * routing run on the head first, and an answer given without reading (401, 429, 404) reaches the
 * client before it has sent a byte of its body. A response already begun sends no 100.
 */
const continueOnRead = (request: Http.IncomingMessage, response: Http.ServerResponse) => {
  const readable = request as Http.IncomingMessage & { _read: (size: number) => void }
  const read = readable._read
  readable._read = function(size) {
    readable._read = read
    if (!response.headersSent && !response.writableEnded) response.writeContinue()
    return read.call(this, size)
  }
}

/** Takes over Node's `checkContinue` on `server` (without a listener Node answers 100 at once). */
export const install = (server: Http.Server, checks: ReadonlyArray<ContinueCheck>) => {
  server.on("checkContinue", (request: Http.IncomingMessage, response: Http.ServerResponse) => {
    for (const check of checks) {
      const refusal = check(request)
      if (refusal !== undefined) return refuse(request, response, refusal)
    }
    continueOnRead(request, response)
    server.emit("request", request, response)
  })
}

/**
 * Takes over Node's `checkExpectation`: an `Expect` other than `100-continue` is 417 as a problem
 * (without a listener Node writes a bare 417 with no body, id or security headers).
 */
export const installExpectation = (server: Http.Server) => {
  server.on("checkExpectation", (request: Http.IncomingMessage, response: Http.ServerResponse) => {
    refuse(request, response, errorResponse(417, "the only expectation this server meets is Expect: 100-continue"))
  })
}
