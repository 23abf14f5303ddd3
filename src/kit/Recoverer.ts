/**
 * The recoverer: a 405 problem with `Allow` for a path an HttpApi serves with other methods, a 500
 * problem with the request id for a defect (the stack goes to the log, never to the client).
 */
import { Cause, Effect, Option } from "effect"
import { HttpRouter, HttpServerError, HttpServerRequest, HttpServerRespondable, HttpServerResponse } from "effect/http"
import type { HttpApi, HttpApiGroup } from "effect/http-api"
import { errorResponse } from "./Problem.ts"
import * as RequestId from "./RequestId.ts"

const isAnswered = (cause: Cause.Cause<unknown>) =>
  cause.reasons.some((reason) =>
    reason._tag === "Die" &&
    (HttpServerResponse.isHttpServerResponse(reason.defect) || HttpServerRespondable.isRespondable(reason.defect))
  )

/**
 * The failures a router answers on the way out, in one frame per request: a path the API
 * serves with other methods is 405 with `Allow` (the methods come from the HttpApi contract),
 * and a defect is a 500 with the request id and no stack (the stack goes to the log).
 */
export const layer = <Id extends string, Groups extends HttpApiGroup.Constraint>(api: HttpApi.HttpApi<Id, Groups>) => {
  const byPattern = new Map<string, Set<string>>()
  for (const group of Object.values(api.groups) as ReadonlyArray<HttpApiGroup.Top>) {
    for (const endpoint of Object.values(group.endpoints)) {
      const source = "^" + endpoint.path.replace(/[.*+?^${}()|[\]\\]/g, "\\$&").replace(/:[A-Za-z0-9_]+/g, "[^/]+") +
        "/?$"
      byPattern.set(source, (byPattern.get(source) ?? new Set()).add(endpoint.method))
    }
  }
  const routes = [...byPattern].map(([source, methods]) => ({ pattern: new RegExp(source), methods }))

  const methodNotAllowed = (request: HttpServerRequest.HttpServerRequest) => {
    const path = request.url.split("?")[0]!
    const route = routes.find((candidate) => candidate.pattern.test(path))
    if (route === undefined || route.methods.has(request.method)) return undefined
    const allow = [...route.methods].join(", ")
    return errorResponse(405, `${request.method} is not allowed on ${path}; use ${allow}`, { allow })
  }

  return HttpRouter.middleware((app) =>
    Effect.catchCause(app, (cause) =>
      Effect.gen(function*() {
        const request = yield* HttpServerRequest.HttpServerRequest
        const failure = Cause.findErrorOption(cause)
        if (
          Option.isSome(failure) && HttpServerError.isHttpServerError(failure.value) &&
          failure.value.reason._tag === "RouteNotFound"
        ) {
          const answer = methodNotAllowed(request)
          if (answer !== undefined) return answer
        }
        if (!Cause.hasDies(cause) || isAnswered(cause)) return yield* Effect.failCause(cause)
        yield* Effect.logError("unhandled defect").pipe(Effect.annotateLogs({ cause: Cause.pretty(cause) }))
        const requestId = RequestId.of(request)
        return errorResponse(
          500,
          "an unexpected error occurred",
          undefined,
          requestId === undefined ? undefined : { requestId }
        )
      })), { global: true })
}
