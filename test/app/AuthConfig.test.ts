/**
 * AuthConfig's refusals: one way of checking tokens, a secret long enough for HS256, and keys
 * fetched over https unless the JWKS server is on this machine.
 */
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Effect, Layer, Option } from "effect"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { AuthConfig, Authenticator } from "../../src/app/Auth.ts"
import { describeCause } from "../../src/kit/Log.ts"

const secret = "a-secret-of-exactly-32-bytes-ok!"

const check = (env: Record<string, string>) =>
  Effect.map(
    Effect.exit(AuthConfig.parse(ConfigProvider.fromEnv({ env }))),
    (exit) => exit._tag === "Success" ? "accepted" : describeCause(exit.cause)
  )

describe("AuthConfig", () => {
  it.effect("refuses JWT_SECRET beside JWKS_URL, naming both", () =>
    Effect.gen(function*() {
      assert.strictEqual(
        yield* check({ JWT_SECRET: secret, JWKS_URL: "https://keys.example/jwks.json" }),
        "invalid configuration: JWT_SECRET and JWKS_URL are both set: tokens are checked against one or the other; unset one"
      )
    }))

  it.effect("refuses a JWT_SECRET shorter than 32 bytes, without printing it", () =>
    Effect.gen(function*() {
      assert.strictEqual(secret.length, 32)
      assert.strictEqual(yield* check({ JWT_SECRET: secret }), "accepted")
      const line = yield* check({ JWT_SECRET: "hunter2-is-31-bytes-long-really" })
      assert.strictEqual(
        line,
        "invalid configuration: JWT_SECRET is 31 bytes; HS256 needs at least 32 (e.g. openssl rand -base64 32)"
      )
      // Bytes, not characters: 16 two-byte characters are 32 bytes.
      assert.strictEqual(yield* check({ JWT_SECRET: "é".repeat(16) }), "accepted")
    }))

  it.effect("refuses a JWKS_URL that is not https unless its host is loopback", () =>
    Effect.gen(function*() {
      assert.strictEqual(
        yield* check({ JWKS_URL: "http://keys.example/jwks.json" }),
        "invalid configuration: JWKS_URL must be https (plain http only for a loopback host): http://keys.example"
      )
      assert.match(yield* check({ JWKS_URL: "ftp://127.0.0.1/jwks.json" }), /JWKS_URL must be https/)
      for (
        const url of [
          "https://keys.example/jwks.json",
          "http://127.0.0.1:8080/jwks",
          "http://localhost/jwks",
          "http://[::1]:9/jwks"
        ]
      ) {
        assert.strictEqual(yield* check({ JWKS_URL: url }), "accepted", url)
      }
    }))

  it.effect("range-checks the token cache", () =>
    Effect.gen(function*() {
      assert.match(yield* check({ JWT_CACHE_SIZE: "-1" }), /^invalid configuration: JWT_CACHE_SIZE: -1 is out of range/)
      assert.match(
        yield* check({ JWT_CACHE_TTL: "60" }),
        /^invalid configuration: JWT_CACHE_TTL: .*did you mean 60s\?$/
      )
      const settings = yield* AuthConfig.parse(ConfigProvider.fromEnv({ env: { JWT_CACHE_SIZE: "0" } }))
      assert.strictEqual(settings.cacheSize, 0)
      assert.isTrue(Option.isNone(settings.secret))
    }))

  // What a deployment without JWT_SECRET meets under systemd (ProtectSystem=strict: a read-only
  // working directory): one line naming the variables, not a bare ENOENT/EROFS from mkdir.
  it.live("no JWT_SECRET and a development secret file that cannot be written: one line naming both variables", () =>
    Effect.gen(function*() {
      const root = Fs.mkdtempSync(Path.join(Os.tmpdir(), "scoped-server-auth-devsecret-"))
      // A regular file where the directory should be: mkdir fails for root too (EEXIST on Linux).
      Fs.writeFileSync(Path.join(root, "not-a-directory"), "")
      const file = Path.join(root, "not-a-directory", "jwt-secret")
      const exit = yield* Effect.exit(
        Layer.build(Authenticator.layer.pipe(
          Layer.provide(ConfigProvider.layer(ConfigProvider.fromUnknown({ JWT_DEV_SECRET_FILE: file })))
        )).pipe(Effect.scoped)
      )
      Fs.rmSync(root, { recursive: true, force: true })
      const line = exit._tag === "Success" ? "accepted" : describeCause(exit.cause)
      assert.strictEqual(
        line.replace(/\((EEXIST|ENOTDIR)\)/, "(CODE)"),
        `invalid configuration: JWT_DEV_SECRET_FILE: JWT_SECRET is not set and the development secret cannot be kept in ${file} (CODE): set JWT_SECRET (or JWKS_URL) in production`
      )
    }))

  it.live("a development secret file others can read stops startup with its one line, under JWT_DEV_SECRET_FILE", () =>
    Effect.gen(function*() {
      const root = Fs.mkdtempSync(Path.join(Os.tmpdir(), "scoped-server-auth-devsecret-"))
      const file = Path.join(root, "jwt-secret")
      Fs.writeFileSync(file, "k".repeat(43), { mode: 0o644 })
      const exit = yield* Effect.exit(
        Layer.build(Authenticator.layer.pipe(
          Layer.provide(ConfigProvider.layer(ConfigProvider.fromUnknown({ JWT_DEV_SECRET_FILE: file })))
        )).pipe(Effect.scoped)
      )
      Fs.rmSync(root, { recursive: true, force: true })
      assert.strictEqual(
        exit._tag === "Success" ? "accepted" : describeCause(exit.cause),
        `invalid configuration: JWT_DEV_SECRET_FILE: the development secret ${file} is refused: its mode is 0644; group and others must have no access (0600); remove it to have a new one made, or set JWT_SECRET`
      )
    }))
})
