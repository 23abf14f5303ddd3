/**
 * Request ids: the client's `X-Request-Id` when it is short and plain (safe in logs and headers),
 * else one made here. Set where Node creates the response (HttpServer.ts); log lines and the
 * recoverer read it with `RequestId.of`.
 */
import type { HttpServerRequest } from "effect/http"
import * as Crypto from "node:crypto"
import type * as Http from "node:http"

const key = Symbol.for("scoped-server/requestId")

interface Tagged {
  [key]?: string
}

const plain = /^[A-Za-z0-9._:-]{1,128}$/

/**
 * Unique without a random draw per request: 12 random characters for this process, then a
 * counter (`Hx3k9Qa_2LwM-1`, `Hx3k9Qa_2LwM-2`, ...), as Go's chi and Fastify number theirs.
 * Ids are for correlating log lines, not secrets.
 */
const processPrefix = Crypto.randomBytes(9).toString("base64url")
let counter = 0
export const generate = (): string => `${processPrefix}-${(++counter).toString(36)}`

/**
 * The client's id, read from the raw header list: `request.headers` is built on first use, and
 * a request nothing else reads the headers of does not pay for it. Sent twice, it is not plain.
 */
const fromClient = (request: Http.IncomingMessage): string | undefined => {
  const raw = request.rawHeaders
  let found: string | undefined
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!
    if (name.length === 12 && name.toLowerCase() === "x-request-id") {
      if (found !== undefined) return undefined
      found = raw[i + 1]!
    }
  }
  return found !== undefined && plain.test(found) ? found : undefined
}

/** Gives `request` its id, once. */
export const assign = (request: Http.IncomingMessage): string => {
  const tagged = request as Http.IncomingMessage & Tagged
  return tagged[key] ??= fromClient(request) ?? generate()
}

/** The id of a request being served, for log lines and error bodies. */
export const of = (request: HttpServerRequest.HttpServerRequest): string | undefined => (request.source as Tagged)[key]
