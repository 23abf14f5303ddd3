/**
 * The API's rate-limit middleware: every request counts against its caller (the token's subject
 * when authenticated, else the client address). Over the limit: 429 with Retry-After.
 */
import { Effect, Layer, Option } from "effect"
import { HttpServerRequest, HttpServerResponse } from "effect/http"
import { HttpApiMiddleware } from "effect/http-api"
import { CurrentUser } from "./Auth.ts"
import { ClientAddress, Problem, RateLimit, type RateLimitDecision } from "../kit/index.ts"

const limitHeaders = (decision: RateLimitDecision & { readonly _tag: "Allowed" }) => ({
  "ratelimit-limit": String(decision.limit),
  "ratelimit-remaining": String(decision.remaining),
  "ratelimit-reset": String(Math.ceil(decision.resetAfterMs / 1000))
})

export class RateLimited extends HttpApiMiddleware.Service<RateLimited>()("scoped-server/RateLimited") {
  static readonly layer = Layer.effect(
    RateLimited,
    Effect.gen(function*() {
      const rateLimit = yield* RateLimit
      const trusted = ClientAddress.trustedSet((yield* ClientAddress.ClientAddressConfig).trustedProxies)
      return (httpEffect) =>
        Effect.gen(function*() {
          const user = yield* Effect.serviceOption(CurrentUser)
          const request = yield* HttpServerRequest.HttpServerRequest
          const key = Option.isSome(user)
            ? `sub:${user.value.subject}`
            : `ip:${ClientAddress.clientAddress(Option.getOrUndefined(request.remoteAddress), request.headers["x-forwarded-for"], trusted)}`
          const decision = yield* rateLimit.consume(key)
          switch (decision._tag) {
            case "Exceeded": {
              const seconds = Math.max(1, Math.ceil(decision.retryAfterMs / 1000))
              return Problem.errorResponse(429, `too many requests; retry in ${seconds}s`, {
                "retry-after": String(seconds),
                "ratelimit-limit": String(decision.limit),
                "ratelimit-remaining": "0",
                "ratelimit-reset": String(seconds)
              })
            }
            case "StoreUnavailable":
              return Problem.errorResponse(503, "rate limiting is unavailable; try again", {
                "retry-after": String(Math.ceil(decision.retryAfterMs / 1000))
              })
            case "Allowed":
              return HttpServerResponse.setHeaders(yield* httpEffect, limitHeaders(decision))
          }
        })
    })
  )
}
