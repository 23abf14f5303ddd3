/**
 * The API's two rate limits: per client address outermost (before authentication, so floods of
 * bad tokens are refused before any signature check), per token subject behind authentication.
 */
import { Context, Effect, Layer, Option } from "effect"
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

type Allowed = RateLimitDecision & { readonly _tag: "Allowed" }

/**
 * The limits that let one request through, gathered so that their headers go on the response in
 * one `setHeaders` (one response copy per request, not one or two per limit). The address limit
 * (outermost) opens the record, keyed by the request's underlying object; the subject limit
 * inside it adds to the record instead of mapping the response itself.
 */
interface Applied {
  readonly policy: string
  readonly decision: Allowed
  inner?: { readonly policy: string; readonly decision: Allowed }
}
const applied = new WeakMap<object, Applied>()

/** The figures to send: a store that could not answer (failing open) has none. */
const known = (decision: Allowed | undefined) => decision?.unknown === true ? undefined : decision

/**
 * RateLimit-Policy lists every limit that applied, inner first; the limit/remaining/reset triple
 * describes the one closest to running out (draft-07, §5), the inner one on a tie. A response
 * that already carries the headers (an inner refusal's 429) keeps its policy first and its
 * triple unless a tighter one applies.
 */
const withLimitHeaders = (response: HttpServerResponse.HttpServerResponse, limits: Applied) => {
  let policy = limits.policy
  let chosen = known(limits.decision)
  if (limits.inner !== undefined) {
    policy = `${limits.inner.policy}, ${policy}`
    const inner = known(limits.inner.decision)
    if (inner !== undefined && (chosen === undefined || inner.remaining <= chosen.remaining)) chosen = inner
  }
  const present = response.headers["ratelimit-policy"]
  if (present !== undefined) {
    policy = `${present}, ${policy}`
    const remaining = response.headers["ratelimit-remaining"]
    if (remaining !== undefined && (chosen === undefined || Number(remaining) <= chosen.remaining)) chosen = undefined
  }
  return HttpServerResponse.setHeaders(
    response,
    chosen === undefined ? { "ratelimit-policy": policy } : {
      "ratelimit-policy": policy,
      "ratelimit-limit": String(chosen.limit),
      "ratelimit-remaining": String(chosen.remaining),
      "ratelimit-reset": String(seconds(chosen.resetAfterMs))
    }
  )
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
          return Effect.flatMap(perAddress.consume(ClientAddress.limitKey(address)), (decision) => {
            if (decision._tag !== "Allowed") return Effect.succeed(refuse(decision, perAddress.policy))
            const limits: Applied = { policy: perAddress.policy, decision }
            applied.set(request.source, limits)
            return Effect.map(httpEffect, (response) => withLimitHeaders(response, limits))
          })
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
          Effect.context<CurrentUser | HttpServerRequest.HttpServerRequest>(),
          (services) => {
            const user = Context.get(services, CurrentUser)
            const request = Context.get(services, HttpServerRequest.HttpServerRequest)
            return Effect.flatMap(rateLimit.consume(`sub:${user.subject}`), (decision) => {
              if (decision._tag !== "Allowed") return Effect.succeed(refuse(decision, rateLimit.policy))
              const outer = applied.get(request.source)
              // Behind the address limit, its record takes ours and sets both at once.
              if (outer !== undefined) {
                outer.inner = { policy: rateLimit.policy, decision }
                return httpEffect
              }
              const limits: Applied = { policy: rateLimit.policy, decision }
              return Effect.map(httpEffect, (response) => withLimitHeaders(response, limits))
            })
          }
        )
    })
  )
}
