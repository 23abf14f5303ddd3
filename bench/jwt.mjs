// node bench/jwt.mjs — CPU per token verification, each verifier alone on one core, in-process:
// jose's jwtVerify (WebCrypto, the thread pool and a promise), fast-jwt (@fastify/jwt's), the kit's HS256 on this thread
// (src/app/Hs256.ts, node:crypto), a remembered token (the JWT cache's hit), and RS256/ES256
// through jose and a local JWKS (what JWKS_URL deployments pay per cache miss).
// Env: BENCH_ROUNDS (9), BENCH_TOKENS (20000 per round for HS256; a tenth for RS/ES).
// CPU is the process's user+system time (the thread pool's included), so a thread hop is paid.
import * as Esbuild from "esbuild"
import { createVerifier } from "fast-jwt"
import * as Jose from "jose"
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Http from "node:http"
import * as Os from "node:os"
import * as Path from "node:path"

const root = Path.resolve(import.meta.dirname, "..")
const rounds = Number(process.env.BENCH_ROUNDS ?? 9)
const tokens = Number(process.env.BENCH_TOKENS ?? 20_000)

// The verifiers as the server runs them: src/app bundled (Node cannot strip every type we use).
const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "scoped-server-bench-jwt-"))
const outfile = Path.join(dir, "verifiers.mjs")
await Esbuild.build({
  stdin: {
    contents: `export { cachedVerify, jwksVerify, keyVerify } from "./src/app/Auth.ts"
export { hs256Verifier } from "./src/app/Hs256.ts"
export { Duration, Effect } from "effect"`,
    resolveDir: root,
    loader: "ts"
  },
  bundle: true,
  platform: "node",
  format: "esm",
  outfile,
  packages: "external",
  logLevel: "warning"
})
// Resolved from the project's node_modules.
Fs.symlinkSync(Path.join(root, "node_modules"), Path.join(dir, "node_modules"))
const { cachedVerify, Duration, Effect, hs256Verifier, jwksVerify, keyVerify } = await import(outfile)

const secret = new TextEncoder().encode("bench-secret-0123456789abcdef0123456789")
const sign = (claims = {}) =>
  new Jose.SignJWT(claims).setProtectedHeader({ alg: "HS256" }).setSubject("bench").setIssuedAt()
    .setExpirationTime("1h").sign(secret)
const options = { clockTolerance: Duration.seconds(30) }
const key = await Crypto.webcrypto.subtle.importKey("raw", secret, { name: "HMAC", hash: "SHA-256" }, false, [
  "verify"
])

const cpu = () => {
  const usage = process.cpuUsage()
  return usage.user + usage.system
}
const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]
const results = []
const measure = async (name, count, make) => {
  const once = await make()
  for (let i = 0; i < Math.min(count, 2_000); i++) await once(i)
  const perRound = []
  for (let round = 0; round < rounds; round++) {
    const before = cpu()
    for (let i = 0; i < count; i++) await once(i)
    perRound.push((cpu() - before) / count)
  }
  const sorted = [...perRound].sort((a, b) => a - b)
  results.push({ name, median: median(perRound), min: sorted[0], max: sorted.at(-1) })
  console.log(
    `${name.padEnd(44)} ${median(perRound).toFixed(2).padStart(7)} µs  (${sorted[0].toFixed(2)}–${
      sorted.at(-1).toFixed(2)
    })`
  )
}

// One token per verification, as a cache miss sees them: distinct tokens, signed beforehand.
const distinct = await Promise.all(Array.from({ length: 2_000 }, (_, i) => sign({ n: i })))
const now = Date.now()
await measure("jose jwtVerify HS256 (WebCrypto key)", tokens, () => {
  const verify = keyVerify(key, ["HS256"], options)
  return (i) => verify(distinct[i % distinct.length], now)
})
await measure("kit HS256 (node:crypto, this thread)", tokens, () => {
  const verify = hs256Verifier(secret, { toleranceSeconds: 30 })
  return (i) => verify(distinct[i % distinct.length], now)
})
await measure("fast-jwt HS256 (what @fastify/jwt uses), no cache", tokens, () => {
  const verify = createVerifier({ key: Buffer.from(secret), algorithms: ["HS256"], cache: false })
  return (i) => verify(distinct[i % distinct.length])
})
await measure("kit HS256 through the cache, every token new", tokens, () => {
  const verify = hs256Verifier(secret, { toleranceSeconds: 30 })
  const check = cachedVerify(verify, { size: 0, ttl: Duration.minutes(1) })
  return (i) => Effect.runSync(check(distinct[i % distinct.length]))
})
await measure("kit HS256 through the cache, a remembered token", tokens, () => {
  const verify = hs256Verifier(secret, { toleranceSeconds: 30 })
  const check = cachedVerify(verify, { size: 10_000, ttl: Duration.minutes(1) })
  return () => Effect.runSync(check(distinct[0]))
})
for (const alg of ["RS256", "ES256"]) {
  const { privateKey, publicKey } = await Jose.generateKeyPair(alg)
  const jwk = { ...(await Jose.exportJWK(publicKey)), kid: "bench", alg }
  const server = Http.createServer((_, res) => res.end(JSON.stringify({ keys: [jwk] }))).listen(0, "127.0.0.1")
  await new Promise((resolve) => server.once("listening", resolve))
  const url = new URL(`http://127.0.0.1:${server.address().port}/jwks.json`)
  const signed = await Promise.all(
    Array.from(
      { length: 500 },
      (_, i) =>
        new Jose.SignJWT({ n: i }).setProtectedHeader({ alg, kid: "bench" }).setSubject("bench")
          .setExpirationTime("1h").sign(privateKey)
    )
  )
  await measure(`jose ${alg} via JWKS (key set cached)`, Math.ceil(tokens / 10), () => {
    const verify = jwksVerify(url, { ...options, algorithms: [alg], keySetMaxAge: Duration.minutes(10) })
    return (i) => verify(signed[i % signed.length], now)
  })
  server.close()
}
Fs.rmSync(dir, { recursive: true, force: true })
