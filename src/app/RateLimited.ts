/**
 * The API's two rate limits: per client address outermost (before authentication, so floods of
 * bad tokens are refused before any signature check), per token subject behind authentication.
 */
import { Effect, Layer, Option } from "effect"
import { HttpServerRequest, HttpServerResponse } from "effect/http"
import { HttpApiMiddleware } from "effect/http-api"
import { ClientAddress, Problem, RateLimit, type RateLimitDecision } from "../kit/index.ts"
import { CurrentUser } from "./Auth.ts"

const seconds = (ms: number) => Math.max(0, Math.ceil(ms / 1000))

/** 429 (over the limit) or 503 (store down, failing closed), with the limit's headers. */
const refuse = (decision: Exclude<RateLimitDecision, { readonly _tag: "Allowed" }>, policy: string) => {
  const retryAfter = String(Math.max(1, seconds(decision.retryAfterMs)))
  return decision._tag === "Exceeded"
    ? Problem.errorResponse(429, `too many requests; retry in ${retryAfter}s`, {
      "retry-after": retryAfter,
      "ratelimit-policy": policy,
      "ratelimit-limit": String(decision.limit),
      "ratelimit-remaining": "0",
      "ratelimit-reset": retryAfter
    })
    : Problem.errorResponse(503, "rate limiting is unavailable; try again", { "retry-after": retryAfter })
}

/**
 * Adds this limit's headers to `response`. RateLimit-Policy lists every limit that applied; the
 * limit/remaining/reset triple describes the one closest to running out (draft-07, §5), so an
 * inner limit's figures are replaced only by tighter ones. When the store could not answer
 * (failing open) only the policy is sent: nothing else is known.
 */
const withLimitHeaders = (
  response: HttpServerResponse.HttpServerResponse,
  decision: RateLimitDecision & { readonly _tag: "Allowed" },
  policy: string
) => {
  const inner = response.headers["ratelimit-policy"]
  const withPolicy = HttpServerResponse.setHeader(
    response,
    "ratelimit-policy",
    inner === undefined ? policy : `${inner}, ${policy}`
  )
  if (decision.unknown === true) return withPolicy
  const innerRemaining = response.headers["ratelimit-remaining"]
  if (innerRemaining !== undefined && Number(innerRemaining) <= decision.remaining) return withPolicy
  return HttpServerResponse.setHeaders(withPolicy, {
    "ratelimit-limit": String(decision.limit),
    "ratelimit-remaining": String(decision.remaining),
    "ratelimit-reset": String(seconds(decision.resetAfterMs))
  })
}

/**
 * Counts every request against its client address (X-Forwarded-For believed only from
 * TRUSTED_PROXIES; IPv6 by /64). Runs before authentication and costs one map lookup with the
 * memory store: no generator, no allocation beyond the decision.
 */
export class AddressRateLimited
  extends HttpApiMiddleware.Service<AddressRateLimited>()("scoped-server/AddressRateLimited")
{
  static readonly layer = Layer.effect(
    AddressRateLimited,
    Effect.gen(function*() {
      const { perAddress } = yield* RateLimit
      const trusted = ClientAddress.trusted((yield* ClientAddress.ClientAddressConfig).trustedProxies)
      return (httpEffect) =>
        Effect.flatMap(Effect.service(HttpServerRequest.HttpServerRequest), (request) => {
          const address = ClientAddress.clientAddress(
            Option.getOrUndefined(request.remoteAddress),
            request.headers["x-forwarded-for"],
            trusted
          )
          return Effect.flatMap(perAddress.consume(ClientAddress.limitKey(address)), (decision) =>
            decision._tag === "Allowed"
              ? Effect.map(httpEffect, (response) =>
                withLimitHeaders(response, decision, perAddress.policy))
              : Effect.succeed(refuse(decision, perAddress.policy)))
        })
    })
  )
}

/** Counts every authenticated request against its token's subject (RATE_LIMIT). */
export class RateLimited extends HttpApiMiddleware.Service<RateLimited, {
  requires: CurrentUser
}>()("scoped-server/RateLimited") {
  static readonly layer = Layer.effect(
    RateLimited,
    Effect.gen(function*() {
      const rateLimit = yield* RateLimit
      return (httpEffect) =>
        Effect.flatMap(
          Effect.service(CurrentUser),
          (user) =>
            Effect.flatMap(rateLimit.consume(`sub:${user.subject}`), (decision) =>
              decision._tag === "Allowed"
                ? Effect.map(httpEffect, (response) => withLimitHeaders(response, decision, rateLimit.policy))
                : Effect.succeed(refuse(decision, rateLimit.policy)))
        )
    })
  )
}
