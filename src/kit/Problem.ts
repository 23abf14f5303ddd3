/**
 * The one shape of every error the server answers, RFC 9457 problem details, whichever layer
 * answers it: routes, the pre-response hook, Node's own client errors, the not-yet-ready handler.
 */
import { Schema } from "effect"
import { HttpServerResponse, ProblemDetails } from "effect/http"
import { HttpApiError } from "effect/http-api"
import * as Http from "node:http"

/** `application/problem+json`, the media type of every error body. */
export const contentType = ProblemDetails.contentType

/**
 * `type` for a problem the HTTP status says everything about (RFC 9457 §4.2.1): clients branch on
 * the status, and the title is the status phrase.
 */
export const blankType = ProblemDetails.blankType

/**
 * `type` for problems that add members a client must understand (`issues`) or that share a
 * status with another meaning (an item that does not exist vs. a path that does not): a relative
 * URI, resolved against the server's own origin, so it names the deployment that answered
 * rather than a domain no deployment owns. Stable: clients may compare it as a string.
 */
export const typeUri = (name: string): string => `/problems/${name}`

/** The validation problem's `type`. */
export const validationType = typeUri("validation")

/** What every error body holds. `requestId` is added on the way out (see `errorBodies`). */
export interface Problem extends ProblemDetails.ProblemDetails {
  readonly type: string
  readonly title: string
  readonly status: number
  readonly detail?: string
  readonly requestId?: string
}

/** One offending value of a request: where it is (`["query", "perPage"]`) and what is wrong. */
export interface Issue {
  readonly path: ReadonlyArray<string | number>
  readonly message: string
}

const statusTitle = (status: number): string => Http.STATUS_CODES[status] ?? "Error"

/**
 * A problem for `status`: `about:blank` with the status phrase as title unless `members` says
 * otherwise (`type`, `title`, or extension members such as `issues`). The status is the
 * response's, whatever `members` holds.
 */
export const make = (status: number, detail?: string, members?: Readonly<Record<string, unknown>>): Problem => ({
  type: blankType,
  title: statusTitle(status),
  ...(detail === undefined ? {} : { detail }),
  ...members,
  status
})

/** 503 is always temporary here: a client is told when to come back unless the caller said. */
const withRetryAfter = (
  status: number,
  headers: HttpServerResponse.Options["headers"]
): HttpServerResponse.Options["headers"] => {
  if (status !== 503) return headers
  if (headers !== undefined && Object.keys(headers).some((name) => name.toLowerCase() === "retry-after")) return headers
  return { ...headers, "retry-after": "1" }
}

/**
 * The error answer: `application/problem+json` with `type`, `title`, `status` and `detail`;
 * `extensions` adds members (or replaces `type` and `title`). The request id is added on the
 * way out, so callers without the request at hand need not find it.
 */
export const errorResponse = (
  status: number,
  detail?: string,
  headers?: HttpServerResponse.Options["headers"],
  extensions?: Readonly<Record<string, unknown>>
): HttpServerResponse.HttpServerResponse => {
  const merged = withRetryAfter(status, headers)
  return HttpServerResponse.jsonUnsafe(
    make(status, detail, extensions),
    merged === undefined ? { status, contentType } : { status, headers: merged, contentType }
  )
}

// Declared problems, for the OpenAPI document of an HttpApi (an endpoint's or a middleware's
// `error`). Their bodies are exactly what `errorResponse` writes for the same status.
const requestIdField = {
  requestId: Schema.optionalKey(Schema.String.annotate({
    description: "The request's id, as in the X-Request-Id response header: quote it to find the request in the logs"
  }))
}

/** 400: the request's params, query, headers or payload failed the API's schemas. */
export class ValidationProblem extends HttpApiError.Problem<ValidationProblem>()("ValidationProblem", {
  type: validationType,
  status: 400,
  title: "The request is not valid"
}, {
  ...requestIdField,
  issues: Schema.Array(HttpApiError.ProblemIssue).annotate({
    description: "Each offending value: its path, starting with the part of the request it is in, and what is wrong"
  })
}) {}

/** 401: a missing, malformed, expired or forged credential; `WWW-Authenticate` says which. */
export class Unauthorized extends HttpApiError.Problem<Unauthorized>()("Unauthorized", {
  type: blankType,
  status: 401,
  title: statusTitle(401)
}, requestIdField) {}

/** 413: the body is larger than MAX_BODY_SIZE. */
export class PayloadTooLarge extends HttpApiError.Problem<PayloadTooLarge>()("PayloadTooLarge", {
  type: blankType,
  status: 413,
  title: statusTitle(413)
}, requestIdField) {}

/** 415: the body is not in a media type the endpoint reads. */
export class UnsupportedMediaType extends HttpApiError.Problem<UnsupportedMediaType>()("UnsupportedMediaType", {
  type: blankType,
  status: 415,
  title: statusTitle(415)
}, requestIdField) {}

/** 429: over the rate limit; `Retry-After` says when to try again. */
export class TooManyRequests extends HttpApiError.Problem<TooManyRequests>()("TooManyRequests", {
  type: blankType,
  status: 429,
  title: statusTitle(429)
}, requestIdField) {}

/** 500: a bug; the details are in the server's log under the request id. */
export class InternalError extends HttpApiError.Problem<InternalError>()("InternalError", {
  type: blankType,
  status: 500,
  title: statusTitle(500)
}, requestIdField) {}

/** 503: a backing store cannot answer now, or the server is starting or stopping; `Retry-After` says when to retry. */
export class ServiceUnavailable extends HttpApiError.Problem<ServiceUnavailable>()("ServiceUnavailable", {
  type: blankType,
  status: 503,
  title: statusTitle(503)
}, requestIdField) {}
