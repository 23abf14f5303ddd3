/**
 * `Expect: 100-continue` decided before the client sends its body: cheap checks on the head
 * (declared size, the app's own) answer at once; otherwise `100 Continue` goes out only when a handler reads the body.
 */
import type { HttpServerResponse } from "effect/http"
import type * as Http from "node:http"
import { errorResponse } from "./Problem.ts"

/** A refusal of a request from its head alone, or `undefined` to let it go on. */
export type ContinueCheck = (request: Http.IncomingMessage) => HttpServerResponse.HttpServerResponse | undefined

/** The kit's own check: a declared Content-Length over MAX_BODY_SIZE is 413 before a byte is sent. */
export const declaredSize = (maxBodySize: number): ContinueCheck => (request) => {
  const length = request.headers["content-length"]
  return length !== undefined && Number(length) > maxBodySize
    ? errorResponse(413, `the request body is larger than ${maxBodySize} bytes`)
    : undefined
}

/** Writes an Effect response on the Node one; refusals are small buffered bodies. */
const writeRefusal = (nodeResponse: Http.ServerResponse, response: HttpServerResponse.HttpServerResponse) => {
  const body = response.body._tag === "Uint8Array" ? response.body.body : new Uint8Array(0)
  const headers: Record<string, string> = { ...response.headers }
  if (response.body._tag === "Uint8Array") headers["content-type"] = response.body.contentType
  headers["content-length"] = String(body.byteLength)
  // Node closes the connection after a final status sent instead of 100 (the client may still
  // send the body); saying so lets the client know not to reuse it.
  headers["connection"] = "close"
  nodeResponse.writeHead(response.status, headers)
  nodeResponse.end(body)
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
      if (refusal !== undefined) return writeRefusal(response, refusal)
    }
    continueOnRead(request, response)
    server.emit("request", request, response)
  })
}
