/**
 * Bearer JWT authentication: HS256 with JWT_SECRET on this thread (Hs256.ts, node:crypto), or
 * pinned algorithms from JWKS_URL through jose.
 * Bad tokens get 401 with a precise error_description; an unreachable key set gets 503.
 */
import { Clock, Config, Context, Duration, Effect, Layer, Option, Redacted, Result, Schema } from "effect"
import type { HttpServerResponse } from "effect/http"
import { HttpApiMiddleware, HttpApiSecurity } from "effect/http-api"
import * as Jose from "jose"
import { Metrics, Problem, Settings, throttledWarning } from "../kit/index.ts"
import { devSecret, DevSecretRefused } from "./DevSecret.ts"
import { hs256Verifier, TokenRejected } from "./Hs256.ts"

/** Asymmetric JWS algorithms a JWKS may sign with; HS* and `none` are never taken from a key set. */
const jwksAlgorithms = [
  "RS256",
  "RS384",
  "RS512",
  "PS256",
  "PS384",
  "PS512",
  "ES256",
  "ES384",
  "ES512",
  "EdDSA",
  "Ed25519"
]

const splitList = (value: string) => value.split(",").map((item) => item.trim()).filter((item) => item.length > 0)

const AlgorithmList = Schema.String.check(Schema.makeFilter((value: string) => {
  const unknown = splitList(value).filter((algorithm) => !jwksAlgorithms.includes(algorithm))
  return unknown.length === 0
    ? undefined
    : `${unknown.join(", ")}: not an asymmetric JWS algorithm (${jwksAlgorithms.join(", ")})`
}))

/** Bearer JWTs for the API: HS256 with a shared secret, or a JWKS URL. */
export const AuthConfig = Config.all({
  /** Unset (and no JWKS_URL): a development secret kept in `.data/jwt-secret`, which `npm run token` also reads. */
  secret: Config.option(Config.schema(Schema.Redacted(Schema.NonEmptyString), "JWT_SECRET")),
  jwksUrl: Config.option(Config.URL("JWKS_URL")),
  issuer: Config.option(Config.NonEmptyString("JWT_ISSUER")),
  audience: Config.option(Config.NonEmptyString("JWT_AUDIENCE")),
  devSecretFile: Config.NonEmptyString("JWT_DEV_SECRET_FILE").pipe(Config.withDefault(".data/jwt-secret")),
  /** Verified tokens remembered (0: verify every request); failures are never remembered. */
  cacheSize: Settings.int("JWT_CACHE_SIZE", { min: 0, max: 10_000_000, default: 10_000 }),
  /** The longest a verified token is remembered: a key dropped from the JWKS stops working within it. */
  cacheTtl: Settings.duration("JWT_CACHE_TTL", { default: "1 minute", max: "1 day" }),
  /** Clock skew allowed between the issuer and this server, for `exp`, `nbf` and `iat`. */
  clockTolerance: Settings.duration("JWT_CLOCK_TOLERANCE", { default: "30 seconds", max: "10 minutes" }),
  /** How long a fetch of JWKS_URL may take before the request is answered 503. */
  jwksTimeout: Settings.duration("JWKS_TIMEOUT", { default: "5 seconds", min: "100 millis", max: "1 minute" }),
  /** The algorithms accepted from JWKS_URL's keys (HS256 alone with JWT_SECRET). */
  algorithms: Config.schema(AlgorithmList, "JWT_ALGORITHMS").pipe(
    Config.withDefault("RS256,ES256,EdDSA"),
    Config.map(splitList)
  )
}).pipe(Settings.check((settings) => {
  if (Option.isSome(settings.secret) && Option.isSome(settings.jwksUrl)) {
    return "JWT_SECRET and JWKS_URL are both set: tokens are checked against one or the other; unset one"
  }
  // RFC 7518 §3.2: an HS256 key shorter than the hash (32 bytes) weakens it; a guessable one breaks it.
  const secretBytes = Option.map(settings.secret, (secret) => new TextEncoder().encode(Redacted.value(secret)).length)
  if (Option.isSome(secretBytes) && secretBytes.value < 32) {
    return `JWT_SECRET is ${secretBytes.value} bytes; HS256 needs at least 32 (e.g. openssl rand -base64 32)`
  }
  // Keys fetched over plain HTTP can be swapped by anyone on the path; loopback has no path.
  if (
    Option.isSome(settings.jwksUrl) && settings.jwksUrl.value.protocol !== "https:" &&
    !(settings.jwksUrl.value.protocol === "http:" && Settings.isLoopbackHost(settings.jwksUrl.value.hostname))
  ) {
    return `JWKS_URL must be https (plain http only for a loopback host): ${settings.jwksUrl.value.protocol}//${settings.jwksUrl.value.host}`
  }
  return undefined
}))

export class CurrentUser extends Context.Service<CurrentUser, {
  /** The token's `sub`: who is calling, and the key they are rate limited by. */
  readonly subject: string
}>()("scoped-server/CurrentUser") {}

/**
 * Checks a token's signature and claims as of `nowMillis`: synchronously (HS256, on this thread)
 * or as a promise (a key set fetched, WebCrypto). Throws or rejects with the reason.
 */
export type Verify = (token: string, nowMillis: number) => Jose.JWTPayload | Promise<Jose.JWTPayload>

/**
 * `verify`, remembering tokens it accepted: a client sends the same token on every request, and
 * a check costs ~5–18 µs (HS256 on this thread) to ~50–125 µs (RS256, ES256 through jose) of CPU. A remembered token is accepted until its
 * `exp` (its `nbf` had passed when it was checked) and for at most `ttl`, so a key dropped from
 * the JWKS stops working within `ttl`. Rejections are never remembered. At most `size` tokens;
 * the oldest is forgotten first. Time is Effect's Clock, which jose is given too.
 */
export const cachedVerify = (verify: Verify, options: { readonly size: number; readonly ttl: Duration.Duration }) => {
  const accepted = new Map<string, { readonly payload: Jose.JWTPayload; readonly until: number }>()
  let hits = 0
  const ttlMillis = Duration.toMillis(options.ttl)
  const remember = (token: string, payload: Jose.JWTPayload, now: number) => {
    if (options.size === 0) return
    const expires = typeof payload.exp === "number" ? payload.exp * 1000 : Infinity
    accepted.set(token, { payload, until: Math.min(expires, now + ttlMillis) })
    if (accepted.size > options.size) accepted.delete(accepted.keys().next().value!)
  }
  const check = (token: string): Effect.Effect<Jose.JWTPayload, unknown> =>
    Effect.flatMap(Clock.currentTimeMillis, (now) => {
      const hit = accepted.get(token)
      if (hit !== undefined) {
        if (now < hit.until) {
          hits++
          return Effect.succeed(hit.payload)
        }
        accepted.delete(token)
      }
      let verified: Jose.JWTPayload | Promise<Jose.JWTPayload>
      try {
        verified = verify(token, now)
      } catch (cause) {
        return Effect.fail(cause)
      }
      if (typeof (verified as { then?: unknown }).then !== "function") {
        remember(token, verified as Jose.JWTPayload, now)
        return Effect.succeed(verified as Jose.JWTPayload)
      }
      // Handled at once, in this step: the fiber may yield before it would await the promise,
      // and a rejection unhandled until then is a crash (Lifecycle treats it as one).
      const settled = Promise.resolve(verified).then(
        (payload) => Result.succeed(payload),
        (cause: unknown) => Result.fail(cause)
      )
      return Effect.flatMap(Effect.promise(() => settled), (result) =>
        Result.isSuccess(result)
          ? Effect.sync(() => {
            remember(token, result.success, now)
            return result.success
          })
          : Effect.fail(result.failure))
    })
  return Object.assign(check, { size: () => accepted.size, hits: () => hits })
}

/**
 * Why a bearer token was not accepted. `InvalidToken` is the client's (401, `description` goes to
 * the client as error_description); `KeySetUnavailable` is ours: JWKS_URL did not answer, or
 * answered with something that is not a key set (503: a valid token must not read as forged).
 */
export class AuthError extends Schema.TaggedError<AuthError>()("AuthError", {
  reason: Schema.Literals(["InvalidToken", "KeySetUnavailable"]),
  description: Schema.String,
  cause: Schema.optional(Schema.Defect())
}) {
  override get message() {
    return this.description
  }
}

const invalid = (description: string, cause?: unknown) => new AuthError({ reason: "InvalidToken", description, cause })

/** Marks a failure of fetching the key set, as opposed to a token that matches no key in it. */
class KeySetFetchFailed extends Error {}

/** jose's (and our own) rejections, each with the words a client can act on. */
export const classify = (error: unknown): AuthError => {
  if (error instanceof AuthError) return error
  if (error instanceof TokenRejected) return invalid(error.description, error)
  if (error instanceof KeySetFetchFailed) {
    const cause = error.cause
    const description = cause instanceof Jose.errors.JWKSTimeout
      ? "the signing key set did not answer in time"
      : cause instanceof Jose.errors.JWKSInvalid
      ? "the signing key set is not a valid JWKS"
      : cause instanceof Jose.errors.JOSEError
      ? `the signing key set could not be read: ${cause.message}`
      : `the signing key set could not be fetched: ${cause instanceof Error ? cause.message : String(cause)}`
    return new AuthError({ reason: "KeySetUnavailable", description, cause })
  }
  if (error instanceof Jose.errors.JWTExpired) return invalid("the token has expired", error)
  if (error instanceof Jose.errors.JWTClaimValidationFailed) {
    const claim = error.claim
    if (error.reason === "missing") return invalid(`the token has no ${claim} claim`, error)
    if (claim === "nbf" && error.reason === "check_failed") return invalid("the token is not valid yet (nbf)", error)
    if (error.reason === "invalid") return invalid(`the token's ${claim} claim is not a number`, error)
    return invalid(`the token's ${claim} claim is not accepted`, error)
  }
  if (error instanceof Jose.errors.JWSSignatureVerificationFailed) {
    return invalid("the token's signature is not valid", error)
  }
  if (error instanceof Jose.errors.JOSEAlgNotAllowed) return invalid("the token's algorithm is not accepted", error)
  if (error instanceof Jose.errors.JWKSNoMatchingKey) return invalid("no signing key matches the token", error)
  if (error instanceof Jose.errors.JWKSMultipleMatchingKeys) {
    return invalid("the token matches more than one signing key", error)
  }
  if (error instanceof Jose.errors.JOSENotSupported) {
    return invalid("the token's algorithm or key is not supported", error)
  }
  return invalid("the token is malformed", error)
}

/**
 * The checks jose leaves to us: a `sub` that is a non-empty string (it is the rate-limit key, so
 * tokens without one must not share a bucket) and an `iat` not in the future (jose checks `iat`
 * only with maxTokenAge). `exp` and `sub` presence are jose's `requiredClaims`.
 */
export const checkClaims = (
  payload: Jose.JWTPayload,
  nowSeconds: number,
  toleranceSeconds: number
): Jose.JWTPayload => {
  if (typeof payload.sub !== "string" || payload.sub.length === 0) {
    throw invalid("the token's sub claim must be a non-empty string")
  }
  if (payload.iat !== undefined) {
    if (typeof payload.iat !== "number" || !Number.isFinite(payload.iat)) {
      throw invalid("the token's iat claim is not a number")
    }
    if (payload.iat > nowSeconds + toleranceSeconds) throw invalid("the token's iat claim is in the future")
  }
  return payload
}

export interface VerifierOptions {
  readonly issuer?: string | undefined
  readonly audience?: string | undefined
  readonly clockTolerance: Duration.Duration
}

/** jose's options for every path: exp and sub required, the clock tolerance, issuer and audience. */
const verifyOptions = (options: VerifierOptions): Jose.JWTVerifyOptions => ({
  requiredClaims: ["exp", "sub"],
  clockTolerance: Duration.toSeconds(options.clockTolerance),
  ...(options.issuer !== undefined ? { issuer: options.issuer } : {}),
  ...(options.audience !== undefined ? { audience: options.audience } : {})
})

/** A Verify over a fixed key (HS256 from JWT_SECRET, imported once). */
export const keyVerify = (
  key: Jose.CryptoKey | Uint8Array,
  algorithms: ReadonlyArray<string>,
  options: VerifierOptions
): Verify => {
  const base = verifyOptions(options)
  const tolerance = Duration.toSeconds(options.clockTolerance)
  return async (token, nowMillis) =>
    checkClaims(
      (await Jose.jwtVerify(token, key, { ...base, currentDate: new Date(nowMillis), algorithms: [...algorithms] }))
        .payload,
      nowMillis / 1000,
      tolerance
    )
}

/**
 * A Verify over JWKS_URL. jose caches the key set for 10 minutes by default; here it is refetched
 * once `keySetMaxAge` has passed (and, for a token naming an unknown key, at most once per
 * cooldown), so a key removed from the set stops working within the TTL the operator set.
 * Failures to fetch the set are told apart from tokens no key matches.
 */
export const jwksVerify = (
  url: URL,
  options: VerifierOptions & {
    readonly algorithms: ReadonlyArray<string>
    readonly keySetMaxAge: Duration.Duration
    readonly timeout?: Duration.Duration | undefined
  }
): Verify => {
  const maxAge = Duration.toMillis(options.keySetMaxAge)
  const keys = Jose.createRemoteJWKSet(url, {
    cacheMaxAge: maxAge,
    cooldownDuration: Math.min(30_000, maxAge),
    timeoutDuration: Math.round(Duration.toMillis(options.timeout ?? Duration.seconds(5)))
  })
  const getKey: Jose.JWTVerifyGetKey = async (header, token) => {
    try {
      return await keys(header, token)
    } catch (error) {
      const aboutTheToken = error instanceof Jose.errors.JWKSNoMatchingKey ||
        error instanceof Jose.errors.JWKSMultipleMatchingKeys ||
        error instanceof Jose.errors.JOSENotSupported ||
        error instanceof Jose.errors.JOSEAlgNotAllowed
      if (aboutTheToken) throw error
      throw new KeySetFetchFailed("the signing key set could not be fetched", { cause: error })
    }
  }
  const base = verifyOptions(options)
  const tolerance = Duration.toSeconds(options.clockTolerance)
  return async (token, nowMillis) =>
    checkClaims(
      (await Jose.jwtVerify(token, getKey, {
        ...base,
        currentDate: new Date(nowMillis),
        algorithms: [...options.algorithms]
      })).payload,
      nowMillis / 1000,
      tolerance
    )
}

const unauthorized = (code: "invalid_request" | "invalid_token", description: string) =>
  Problem.errorResponse(401, description, {
    "www-authenticate": code === "invalid_request"
      ? `Bearer realm="api"`
      : `Bearer realm="api", error="invalid_token", error_description="${description.replaceAll("\"", "'")}"`
  })

/** The caller, or the answer to send instead. */
type Authenticated = Result.Result<CurrentUser["Service"], HttpServerResponse.HttpServerResponse>

/**
 * What `Authentication` decides about one bearer token (also used before `100 Continue`): the
 * caller, or the answer to send instead.
 */
export class Authenticator extends Context.Service<Authenticator, {
  readonly authenticate: (
    token: string
  ) => Effect.Effect<Result.Result<CurrentUser["Service"], HttpServerResponse.HttpServerResponse>>
  /** Verifications that ran (cache misses): what a flood of forged tokens costs. */
  readonly verifications: () => number
}>()("scoped-server/Authenticator") {
  static readonly layer = Layer.effect(
    Authenticator,
    Effect.gen(function*() {
      const settings = yield* AuthConfig
      const options: VerifierOptions = {
        issuer: Option.getOrUndefined(settings.issuer),
        audience: Option.getOrUndefined(settings.audience),
        clockTolerance: settings.clockTolerance
      }
      let verify: Verify
      let rememberFor = settings.cacheTtl
      if (Option.isSome(settings.jwksUrl)) {
        // Half the TTL for the key set and half for a remembered token: together within the TTL.
        rememberFor = Duration.divideUnsafe(settings.cacheTtl, 2)
        verify = jwksVerify(settings.jwksUrl.value, {
          ...options,
          algorithms: settings.algorithms,
          keySetMaxAge: rememberFor,
          timeout: settings.jwksTimeout
        })
      } else {
        const file = settings.devSecretFile
        const secret = Option.isSome(settings.secret)
          ? new TextEncoder().encode(Redacted.value(settings.secret.value))
          // A read-only or missing directory (a deployment that forgot JWT_SECRET: systemd's
          // ProtectSystem=strict makes the working directory read-only) is a configuration error.
          : yield* Effect.try({
            try: () => devSecret(file),
            catch: (cause) =>
              Settings.refuse(
                "JWT_DEV_SECRET_FILE",
                // A file another user could have written (or read) is refused, never used.
                cause instanceof DevSecretRefused
                  ? cause.message
                  : `JWT_SECRET is not set and the development secret cannot be kept in ${file} (${
                    (cause as NodeJS.ErrnoException).code ?? String(cause)
                  }): set JWT_SECRET (or JWKS_URL) in production`
              )
          })
        if (Option.isNone(settings.secret)) {
          yield* Effect.logWarning("JWT_SECRET is not set: using the development secret").pipe(
            Effect.annotateLogs({ file: settings.devSecretFile })
          )
        }
        // On this thread with node:crypto (src/app/Hs256.ts): no WebCrypto job, no promise.
        verify = hs256Verifier(secret, {
          issuer: options.issuer,
          audience: options.audience,
          toleranceSeconds: Duration.toSeconds(options.clockTolerance)
        })
      }
      let verifications = 0
      const counted: Verify = (token, now) => {
        verifications++
        return verify(token, now)
      }
      const check = cachedVerify(counted, { size: settings.cacheSize, ttl: rememberFor })
      const described = "Bearer tokens checked: hit = a remembered verified token, miss = a signature verification ran."
      yield* Metrics.observe("scoped_server_jwt_cache_requests_total", described, check.hits, {
        counter: true,
        attributes: { result: "hit" }
      })
      yield* Metrics.observe("scoped_server_jwt_cache_requests_total", described, () => verifications, {
        counter: true,
        attributes: { result: "miss" }
      })
      const warn = throttledWarning("JWT signing keys unavailable; answering 503")
      const authenticate = (token: string) =>
        Effect.matchEffect(check(token), {
          // Every Verify checks `sub`; a custom one that did not is refused here, not trusted.
          onSuccess: (payload): Effect.Effect<Authenticated> =>
            Effect.succeed(
              typeof payload.sub === "string" && payload.sub.length > 0
                ? Result.succeed({ subject: payload.sub })
                : Result.fail(unauthorized("invalid_token", "the token's sub claim must be a non-empty string"))
            ),
          onFailure: (error) => {
            const rejected = classify(error)
            if (rejected.reason === "InvalidToken") {
              return Effect.succeed(Result.fail(unauthorized("invalid_token", rejected.description)))
            }
            return Effect.as(
              warn({ message: rejected.description }),
              Result.fail(
                Problem.errorResponse(503, "the token cannot be checked now: its signing keys are unavailable", {
                  "retry-after": "5"
                })
              )
            )
          }
        })
      return { authenticate, verifications: () => verifications }
    })
  )
}

/** Every endpoint under it needs `Authorization: Bearer <jwt>`; handlers get CurrentUser. */
export class Authentication extends HttpApiMiddleware.Service<Authentication, {
  provides: CurrentUser
}>()("scoped-server/Authentication", {
  security: { bearer: HttpApiSecurity.bearer }
}) {
  static readonly layer = Layer.effect(
    Authentication,
    Effect.map(Effect.service(Authenticator), ({ authenticate }) => ({
      bearer: (httpEffect, { credential }) => {
        const token = Redacted.value(credential)
        if (token.length === 0) return Effect.succeed(unauthorized("invalid_request", "a bearer token is required"))
        return Effect.flatMap(authenticate(token), (result) =>
          Result.isSuccess(result)
            ? Effect.provideService(httpEffect, CurrentUser, result.success)
            : Effect.succeed(result.failure))
      }
    }))
  ).pipe(Layer.provide(Authenticator.layer))
}
