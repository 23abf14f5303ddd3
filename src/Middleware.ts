/**
 * What every routed request gets: a request id (echoed, generated when absent, on every log
 * line), security headers, a JSON access log line, and a recoverer that answers a defect with a
 * 500 carrying the request id and no stack trace. One global router middleware; CORS beside it.
 */
import { Cause, Clock, Effect, Layer } from "effect"
import { HttpEffect, HttpRouter, HttpServerError, HttpServerRequest, HttpServerRespondable, HttpServerResponse } from "effect/http"
import type { HttpApi, HttpApiGroup } from "effect/http-api"
import * as Crypto from "node:crypto"
import * as Settings from "./Config.ts"

/** A client-supplied id is kept only if it is short and plain, so it is safe in logs and headers. */
const validRequestId = /^[A-Za-z0-9._:-]{1,128}$/

const securityHeaders = {
  "x-content-type-options": "nosniff",
  "x-frame-options": "DENY",
  "referrer-policy": "no-referrer",
  "cross-origin-opener-policy": "same-origin",
  "cross-origin-resource-policy": "same-origin"
}
// The docs page runs Scalar's inline script and styles; everything else is data only.
const apiPolicy = "default-src 'none'; frame-ancestors 'none'"
const docsPolicy = "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; connect-src 'self'; frame-ancestors 'none'"

/**
 * A path the API serves with another method answers 405 with `Allow`, not 404. The methods per
 * path come from the HttpApi contract itself.
 */
export const methodNotAllowed = <Id extends string, Groups extends HttpApiGroup.Constraint>(api: HttpApi.HttpApi<Id, Groups>) => {
  const byPattern = new Map<string, Set<string>>()
  for (const group of Object.values(api.groups) as ReadonlyArray<HttpApiGroup.Top>) {
    for (const endpoint of Object.values(group.endpoints)) {
      const source = "^" + endpoint.path.replace(/[.*+?^${}()|[\]\\]/g, "\\$&").replace(/:[A-Za-z0-9_]+/g, "[^/]+") + "/?$"
      byPattern.set(source, (byPattern.get(source) ?? new Set()).add(endpoint.method))
    }
  }
  const routes = [...byPattern].map(([source, methods]) => ({ pattern: new RegExp(source), methods }))
  return HttpRouter.middleware((app) =>
    Effect.catch(app, (error) =>
      Effect.gen(function*() {
        if (!HttpServerError.isHttpServerError(error) || error.reason._tag !== "RouteNotFound") return yield* Effect.fail(error)
        const request = yield* HttpServerRequest.HttpServerRequest
        const path = request.url.split("?")[0]!
        const route = routes.find((candidate) => candidate.pattern.test(path))
        if (route === undefined || route.methods.has(request.method)) return yield* Effect.fail(error)
        const allow = [...route.methods].join(", ")
        return HttpServerResponse.jsonUnsafe(
          { error: "Method Not Allowed", status: 405, message: `${request.method} is not allowed on ${path}; use ${allow}` },
          { status: 405, headers: { allow } }
        )
      })
    ), { global: true })
}

export const layer = Layer.unwrap(
  Effect.gen(function*() {
    const { accessLog, corsOrigins } = yield* Settings.web
    const cors = corsOrigins.length === 0 ? Layer.empty : HttpRouter.cors({
      allowedOrigins: corsOrigins,
      allowedHeaders: ["authorization", "content-type", "x-request-id"],
      exposedHeaders: ["x-request-id", "link", "location", "retry-after", "ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"],
      maxAge: 600
    })
    const requests = HttpRouter.middleware((app) =>
      Effect.gen(function*() {
        const request = yield* HttpServerRequest.HttpServerRequest
        const supplied = request.headers["x-request-id"]
        const requestId = supplied !== undefined && validRequestId.test(supplied) ? supplied : Crypto.randomUUID()
        const startedAt = yield* Clock.currentTimeMillis
        const path = request.url.split("?")[0]!
        yield* HttpEffect.appendPreResponseHandler((_, response) =>
          Effect.gen(function*() {
            if (accessLog) {
              const durationMs = (yield* Clock.currentTimeMillis) - startedAt
              yield* Effect.logInfo("request").pipe(Effect.annotateLogs({
                requestId,
                method: request.method,
                path,
                status: response.status,
                durationMs
              }))
            }
            const headers = HttpServerResponse.setHeaders(response, {
              ...securityHeaders,
              "content-security-policy": path === "/docs" ? docsPolicy : apiPolicy,
              "x-request-id": requestId
            })
            // Every 503 here is temporary: tell clients when to come back.
            return response.status === 503 && response.headers["retry-after"] === undefined
              ? HttpServerResponse.setHeader(headers, "retry-after", "1")
              : headers
          })
        )
        return yield* app.pipe(
          Effect.catchCause((cause) => {
            // A defect is a bug: log it whole for us, answer the client without the stack.
            // Defects that carry their own answer (a response, a Respondable error) keep it.
            const answered = cause.reasons.some((reason) =>
              reason._tag === "Die" &&
              (HttpServerResponse.isHttpServerResponse(reason.defect) || HttpServerRespondable.isRespondable(reason.defect))
            )
            if (!Cause.hasDies(cause) || answered) {
              return Effect.failCause(cause)
            }
            return Effect.logError("unhandled defect").pipe(
              Effect.annotateLogs({ cause: Cause.pretty(cause) }),
              Effect.as(HttpServerResponse.jsonUnsafe(
                { error: "Internal Server Error", status: 500, message: "an unexpected error occurred", requestId },
                { status: 500 }
              ))
            )
          }),
          Effect.annotateLogs({ requestId })
        )
      }), { global: true })
    return Layer.mergeAll(requests, cors)
  })
)

