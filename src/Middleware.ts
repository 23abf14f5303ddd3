/**
 * Router middleware every routed request gets: its request id on every log line, a recoverer
 * that answers a defect with a 500 carrying the request id and no stack, CORS, and 405 for a
 * path the API serves with other methods. (Request ids, security headers and the access log
 * are set on the Node response itself, in HttpServer.ts.)
 */
import { Cause, Context, Effect, Layer } from "effect"
import { HttpRouter, HttpServerError, HttpServerRequest, HttpServerRespondable, HttpServerResponse } from "effect/http"
import type { HttpApi, HttpApiGroup } from "effect/http-api"
import * as Settings from "./Config.ts"

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
    const { corsOrigins } = yield* Settings.web
    const cors = corsOrigins.length === 0 ? Layer.empty : HttpRouter.cors({
      allowedOrigins: corsOrigins,
      allowedHeaders: ["authorization", "content-type", "x-request-id"],
      exposedHeaders: ["x-request-id", "link", "location", "retry-after", "ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"],
      maxAge: 600
    })
    // The request id, security headers and access log are set where Node creates the response
    // (HttpServer.ts); here every log line of the request gets the id, and a defect its answer.
    const requests = HttpRouter.middleware((app) =>
      Effect.withFiber((fiber) => {
        const request = Context.getUnsafe(fiber.context, HttpServerRequest.HttpServerRequest)
        const requestId = request.headers["x-request-id"] ?? "unknown"
        return app.pipe(
          Effect.catchCause((cause) => {
            // Defects that carry their own answer (a response, a Respondable error) keep it.
            const answered = cause.reasons.some((reason) =>
              reason._tag === "Die" &&
              (HttpServerResponse.isHttpServerResponse(reason.defect) || HttpServerRespondable.isRespondable(reason.defect))
            )
            if (!Cause.hasDies(cause) || answered) return Effect.failCause(cause)
            // A bug: logged whole for us, answered without the stack.
            return Effect.logError("unhandled defect").pipe(
              Effect.annotateLogs({ cause: Cause.pretty(cause) }),
              Effect.as(HttpServerResponse.jsonUnsafe(
                { error: "Internal Server Error", status: 500, message: "an unexpected error occurred", requestId },
                { status: 500 }
              ))
            )
          }),
          Effect.annotateLogs("requestId", requestId)
        )
      }), { global: true })
    return Layer.mergeAll(requests, cors)
  })
)

