/**
 * Bearer JWT authentication with jose: HS256 with JWT_SECRET, or keys from JWKS_URL. Missing,
 * malformed, expired or forged tokens get 401 with WWW-Authenticate; the API reads CurrentUser.
 */
import { Clock, Config, Context, Duration, Effect, Layer, Option, Redacted, Result, Schema } from "effect"
import { HttpApiMiddleware, HttpApiSecurity } from "effect/http-api"
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Path from "node:path"
import * as Jose from "jose"
import { Problem, Settings } from "../kit/index.ts"

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
  cacheTtl: Settings.duration("JWT_CACHE_TTL", "1 minute", { max: "1 day" })
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

/** Checks a token's signature and claims as of `now`. */
export type Verify = (token: string, now: Date) => Promise<Jose.JWTPayload>

/**
 * `verify`, remembering tokens it accepted: a client sends the same token on every request, and
 * an HS256 check through WebCrypto costs ~65 µs of CPU. A remembered token is accepted until its
 * `exp` (its `nbf` had passed when it was checked) and for at most `ttl`, so a key dropped from
 * the JWKS stops working within `ttl`. Rejections are never remembered. At most `size` tokens;
 * the oldest is forgotten first. Time is Effect's Clock, which jose is given too.
 */
export const cachedVerify = (verify: Verify, options: { readonly size: number; readonly ttl: Duration.Duration }) => {
  const accepted = new Map<string, { readonly payload: Jose.JWTPayload; readonly until: number }>()
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
        if (now < hit.until) return Effect.succeed(hit.payload)
        accepted.delete(token)
      }
      return Effect.tryPromise({ try: () => verify(token, new Date(now)), catch: (cause) => cause }).pipe(
        Effect.tap((payload) => Effect.sync(() => remember(token, payload, now)))
      )
    })
  return Object.assign(check, { size: () => accepted.size })
}

/** The development secret: created once (0600) so `npm run token` and the server agree. */
export const devSecret = (file: string): Uint8Array => {
  if (!Fs.existsSync(file)) {
    Fs.mkdirSync(Path.dirname(file), { recursive: true })
    try {
      Fs.writeFileSync(file, Crypto.randomBytes(32).toString("base64url"), { mode: 0o600, flag: "wx" })
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error
    }
  }
  return new TextEncoder().encode(Fs.readFileSync(file, "utf8").trim())
}

const unauthorized = (code: "invalid_request" | "invalid_token", description: string) =>
  Problem.errorResponse(401, description, {
    "www-authenticate": code === "invalid_request"
      ? `Bearer realm="api"`
      : `Bearer realm="api", error="invalid_token", error_description="${description}"`
  })

const describeJoseError = (error: unknown): string =>
  error instanceof Jose.errors.JWTExpired
    ? "the token has expired"
    : error instanceof Jose.errors.JWSSignatureVerificationFailed
    ? "the token's signature is not valid"
    : error instanceof Jose.errors.JWTClaimValidationFailed
    ? `the token's ${error.claim} claim is not accepted`
    : error instanceof Jose.errors.JOSEAlgNotAllowed
    ? "the token's algorithm is not accepted"
    : "the token is malformed"

/** Every endpoint under it needs `Authorization: Bearer <jwt>`; handlers get CurrentUser. */
export class Authentication extends HttpApiMiddleware.Service<Authentication, {
  provides: CurrentUser
}>()("scoped-server/Authentication", {
  security: { bearer: HttpApiSecurity.bearer }
}) {
  static readonly layer = Layer.effect(
    Authentication,
    Effect.gen(function*() {
      const settings = yield* AuthConfig
      const options: Jose.JWTVerifyOptions = {
        ...(Option.isSome(settings.issuer) ? { issuer: settings.issuer.value } : {}),
        ...(Option.isSome(settings.audience) ? { audience: settings.audience.value } : {})
      }
      let verify: Verify
      if (Option.isSome(settings.jwksUrl)) {
        const keys = Jose.createRemoteJWKSet(settings.jwksUrl.value)
        verify = async (token, currentDate) => (await Jose.jwtVerify(token, keys, { ...options, currentDate })).payload
      } else {
        const secret = Option.isSome(settings.secret)
          ? new TextEncoder().encode(Redacted.value(settings.secret.value))
          : devSecret(settings.devSecretFile)
        if (Option.isNone(settings.secret)) {
          yield* Effect.logWarning("JWT_SECRET is not set: using the development secret").pipe(
            Effect.annotateLogs({ file: settings.devSecretFile })
          )
        }
        // Imported once: given raw bytes, jose imports the key again on every call.
        const key = yield* Effect.promise(() =>
          Crypto.webcrypto.subtle.importKey("raw", secret, { name: "HMAC", hash: "SHA-256" }, false, ["verify"])
        )
        verify = async (token, currentDate) =>
          (await Jose.jwtVerify(token, key, { ...options, currentDate, algorithms: ["HS256"] })).payload
      }
      const check = cachedVerify(verify, { size: settings.cacheSize, ttl: settings.cacheTtl })
      return {
        bearer: (httpEffect, { credential }) =>
          Effect.gen(function*() {
            const token = Redacted.value(credential)
            if (token.length === 0) return unauthorized("invalid_request", "a bearer token is required")
            const verified = yield* Effect.result(check(token))
            if (Result.isFailure(verified)) return unauthorized("invalid_token", describeJoseError(verified.failure))
            const subject = verified.success.sub
            if (subject === undefined || subject.length === 0) {
              return unauthorized("invalid_token", "the token has no subject")
            }
            return yield* Effect.provideService(httpEffect, CurrentUser, { subject })
          })
      }
    })
  )
}
