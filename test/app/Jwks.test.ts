/**
 * Authentication against a JWKS server of the test's own (real node:http on a random port):
 * RS256 and ES256 pass, a removed key stops working within JWT_CACHE_TTL, a down or broken key set is 503.
 */
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Context, Effect, Layer, Logger, References, Result } from "effect"
import * as Jose from "jose"
import * as Http from "node:http"
import type * as Net from "node:net"
import { Authenticator } from "../../src/app/Auth.ts"

interface KeyServer {
  readonly url: string
  /** What the server answers: a key set, a body that is not one, or nothing at all. */
  mode: "keys" | "garbage" | "hang"
  keys: Array<Jose.JWK>
  fetches: number
  readonly close: () => Promise<void>
}

const keyServer = Effect.acquireRelease(
  Effect.promise(() =>
    new Promise<KeyServer>((resolve) => {
      const state = { mode: "keys" as KeyServer["mode"], keys: [] as Array<Jose.JWK>, fetches: 0 }
      const server = Http.createServer((_request, response) => {
        state.fetches++
        if (state.mode === "hang") return
        response.setHeader("content-type", "application/json")
        response.end(
          state.mode === "garbage" ? JSON.stringify({ not: "a key set" }) : JSON.stringify({ keys: state.keys })
        )
      })
      server.listen(0, "127.0.0.1", () => {
        const port = (server.address() as Net.AddressInfo).port
        resolve(Object.assign(state, {
          url: `http://127.0.0.1:${port}/jwks.json`,
          close: () =>
            new Promise<void>((done) => {
              server.closeAllConnections()
              server.close(() => done())
            })
        }))
      })
    })
  ),
  (server) => Effect.promise(() => server.close())
)

const signingKey = (alg: "RS256" | "ES256", kid: string) =>
  Effect.promise(async () => {
    const { privateKey, publicKey } = await Jose.generateKeyPair(alg, { extractable: true })
    const jwk = { ...(await Jose.exportJWK(publicKey)), kid, alg, use: "sig" }
    const sign = (claims: { readonly sub?: string } = { sub: "alice" }) =>
      new Jose.SignJWT({}).setProtectedHeader({ alg, kid }).setSubject(claims.sub ?? "alice").setIssuedAt()
        .setExpirationTime("10m").sign(privateKey)
    return { jwk, sign }
  })

const logs: Array<{ readonly level: string; readonly message: string; readonly error: unknown }> = []
const recorder = Logger.make((options) => {
  const message = Array.isArray(options.message) ? options.message[0] : options.message
  logs.push({
    level: options.logLevel,
    message: String(message),
    error: options.fiber.getRef(References.CurrentLogAnnotations).error
  })
})

/** The Authenticator over `url` with `env`, the way the server builds it. */
const authenticatorFor = (url: string, env: Record<string, string> = {}) =>
  Layer.build(Authenticator.layer.pipe(
    Layer.provide(ConfigProvider.layer(ConfigProvider.fromUnknown({ JWKS_URL: url, ...env })))
  )).pipe(Effect.map((context) => Context.get(context, Authenticator)))

const statusOf = (result: Result.Result<unknown, { readonly status: number }>) =>
  Result.isSuccess(result) ? 200 : result.failure.status

describe("JWKS", () => {
  it.live("RS256 and ES256 tokens from the key set pass; an HS256 token or an unknown kid does not", () =>
    Effect.scoped(Effect.gen(function*() {
      const server = yield* keyServer
      const rsa = yield* signingKey("RS256", "rsa-1")
      const ec = yield* signingKey("ES256", "ec-1")
      server.keys = [rsa.jwk, ec.jwk]
      const auth = yield* authenticatorFor(server.url)
      const rsaResult = yield* auth.authenticate(yield* Effect.promise(() => rsa.sign({ sub: "rsa-user" })))
      assert.deepStrictEqual(Result.getOrUndefined(rsaResult), { subject: "rsa-user" })
      const ecResult = yield* auth.authenticate(yield* Effect.promise(() => ec.sign({ sub: "ec-user" })))
      assert.deepStrictEqual(Result.getOrUndefined(ecResult), { subject: "ec-user" })

      const hs = yield* Effect.promise(() =>
        new Jose.SignJWT({}).setProtectedHeader({ alg: "HS256", kid: "rsa-1" }).setSubject("x").setExpirationTime("1h")
          .sign(new TextEncoder().encode("a-secret-a-secret-a-secret-a-secret"))
      )
      const hsResult = yield* auth.authenticate(hs)
      assert.strictEqual(statusOf(hsResult), 401)
      assert.include(
        Result.isFailure(hsResult) ? hsResult.failure.headers["www-authenticate"] : "",
        "algorithm is not accepted"
      )

      const stranger = yield* signingKey("ES256", "not-in-the-set")
      const strangerResult = yield* auth.authenticate(yield* Effect.promise(() => stranger.sign()))
      assert.strictEqual(statusOf(strangerResult), 401)
      assert.include(
        Result.isFailure(strangerResult) ? strangerResult.failure.headers["www-authenticate"] : "",
        `error_description="no signing key matches the token"`
      )
    })))

  it.live("a key removed from the set stops working within JWT_CACHE_TTL (jose alone would keep it 10 minutes)", () =>
    Effect.scoped(Effect.gen(function*() {
      const server = yield* keyServer
      const rsa = yield* signingKey("RS256", "rotating")
      server.keys = [rsa.jwk]
      const auth = yield* authenticatorFor(server.url, { JWT_CACHE_TTL: "1s" })
      const token = yield* Effect.promise(() => rsa.sign())
      assert.strictEqual(statusOf(yield* auth.authenticate(token)), 200)
      server.keys = []
      // Within the TTL the remembered token may still pass; at the TTL it must not.
      yield* Effect.sleep("1 second")
      const after = yield* auth.authenticate(token)
      assert.strictEqual(statusOf(after), 401)
      assert.include(
        Result.isFailure(after) ? after.failure.headers["www-authenticate"] : "",
        "no signing key matches the token"
      )
    })))

  it.live("a key set that is down, hangs or is not a key set: 503 with Retry-After and one throttled warning", () =>
    Effect.scoped(
      Effect.gen(function*() {
        const server = yield* keyServer
        const rsa = yield* signingKey("RS256", "k")
        const token = yield* Effect.promise(() => rsa.sign())
        logs.length = 0

        server.mode = "garbage"
        const garbage = yield* authenticatorFor(server.url)
        const answers = [yield* garbage.authenticate(token), yield* garbage.authenticate(token)]
        for (const answer of answers) {
          assert.strictEqual(statusOf(answer), 503)
          assert.strictEqual(Result.isFailure(answer) ? answer.failure.headers["retry-after"] : undefined, "5")
        }
        const warnings = logs.filter((line) =>
          line.level === "Warn" && line.message.includes("JWT signing keys unavailable")
        )
        assert.strictEqual(warnings.length, 1, "the second failure within 10 s is not logged again")

        server.mode = "hang"
        const hung = yield* authenticatorFor(server.url, { JWKS_TIMEOUT: "300 millis" })
        const started = Date.now()
        assert.strictEqual(statusOf(yield* hung.authenticate(token)), 503)
        assert.isBelow(Date.now() - started, 2_000)

        yield* Effect.promise(() => server.close())
        const down = yield* authenticatorFor(server.url)
        assert.strictEqual(statusOf(yield* down.authenticate(token)), 503)
        assert.isAtLeast(logs.filter((line) => line.level === "Warn").length, 3)
      }).pipe(Effect.provide(Logger.layer([recorder])))
    ))
})
