/**
 * HS256 JWT verification at hash speed: an HMAC on this thread with `node:crypto`, no WebCrypto job on
 * the thread pool and no promise hop (jose's `jwtVerify` costs ~26 µs per token that way, ~61 µs
 * in a loaded server; this ~5 and ~18). The rules are the kit's, the same as `keyVerify` gives jose (Auth.ts):
 * - the compact form only, three base64url parts, a JSON object for header and payload;
 * - `alg` pinned to HS256 (`none`, RS256, anything else: "algorithm not accepted");
 * - `crit` refused (we understand no extension, so not even jose's `b64`);
 * - the signature compared in constant time, before any claim is read;
 * - `exp` required and numeric, `nbf` and `iat` numeric when present, all three with the clock
 *   tolerance; `iat` not in the future; `sub` a non-empty string; `iss` and `aud` when configured.
 * Each refusal is a `TokenRejected` with the same words as jose's path, so clients (and the
 * tests, which run both verifiers on the same tokens) cannot tell them apart.
 */
import * as Crypto from "node:crypto"

export interface Hs256Options {
  readonly issuer?: string | undefined
  readonly audience?: string | undefined
  /** Seconds of clock skew allowed for `exp`, `nbf` and `iat`. */
  readonly toleranceSeconds: number
}

export type Claims = Readonly<Record<string, unknown>> & {
  readonly sub: string
  readonly exp: number
}

/** A token refused, with the words a client can act on (Auth.ts turns it into a 401). */
export class TokenRejected extends Error {
  readonly description: string
  constructor(description: string) {
    super(description)
    this.description = description
  }
}

const invalid = (description: string) => new TokenRejected(description)

const base64url = /^[A-Za-z0-9_-]*$/

/**
 * Strict base64url, no padding, no whitespace (jose, through `atob`, also takes both; nothing a
 * JWT library emits has them). A length of 4n+1 is no encoding of any bytes.
 */
const decode = (part: string): Buffer => {
  if (part.length % 4 === 1 || !base64url.test(part)) throw invalid("the token is malformed")
  return Buffer.from(part, "base64url")
}

const decodeJson = (part: string): unknown => {
  const bytes = decode(part)
  try {
    return JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes))
  } catch {
    throw invalid("the token is malformed")
  }
}

const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value)

const numericDate = (payload: Record<string, unknown>, claim: string): number | undefined => {
  const value = payload[claim]
  if (value === undefined) return undefined
  if (typeof value !== "number") throw invalid(`the token's ${claim} claim is not a number`)
  return value
}

/**
 * HMAC-SHA256 (RFC 2104) over an ASCII message, as two one-shot `crypto.hash` calls with the
 * key's pads computed once. `createHmac` gives the same bytes (the tests compare them, and check
 * RFC 4231's vectors) but builds a native Hmac object per call: in the server's profile that was
 * ~14 µs of a ~23 µs token check, against ~8 µs for the two one-shot hashes (bench/README.md, JWT).
 */
export const hmacSha256 = (secret: Uint8Array) => {
  const key = secret.length > 64 ? Crypto.hash("sha256", secret, "buffer") : secret
  const inner = Buffer.alloc(64, 0x36)
  const outer = Buffer.alloc(64, 0x5c)
  for (let i = 0; i < key.length; i++) {
    inner[i]! ^= key[i]!
    outer[i]! ^= key[i]!
  }
  return (message: string): Buffer => {
    // Zeroed and unpooled (alloc, not allocUnsafe): key-derived bytes never sit in Node's shared pool.
    const first = Buffer.alloc(64 + Buffer.byteLength(message, "latin1"))
    inner.copy(first, 0)
    first.write(message, 64, "latin1")
    const second = Buffer.alloc(96)
    outer.copy(second, 0)
    Crypto.hash("sha256", first, "buffer").copy(second, 64)
    return Crypto.hash("sha256", second, "buffer")
  }
}

/** The header's rules, in jose's order: an object, crit, then alg. */
const checkHeader = (header: unknown) => {
  if (!isObject(header)) throw invalid("the token is malformed")
  const crit = header.crit
  if (crit !== undefined) {
    if (!Array.isArray(crit) || crit.length === 0 || crit.some((name) => typeof name !== "string")) {
      throw invalid("the token is malformed")
    }
    // We understand no extension, b64 included: a token that needs one is refused.
    throw invalid("the token's algorithm or key is not supported")
  }
  if (typeof header.alg !== "string" || header.alg.length === 0) throw invalid("the token is malformed")
  if (header.alg !== "HS256") throw invalid("the token's algorithm is not accepted")
}

/** A verifier for one secret: `verify(token, nowMillis)` returns the claims or throws `TokenRejected`. */
export const hs256Verifier = (secret: Uint8Array, options: Hs256Options) => {
  const mac = hmacSha256(secret)
  const { audience, issuer, toleranceSeconds: tolerance } = options
  let acceptedHeader: string | undefined
  return (token: string, nowMillis: number): Claims => {
    const firstDot = token.indexOf(".")
    const secondDot = firstDot < 0 ? -1 : token.indexOf(".", firstDot + 1)
    if (secondDot < 0 || token.indexOf(".", secondDot + 1) >= 0) throw invalid("the token is malformed")
    const headerPart = token.slice(0, firstDot)
    // An issuer sends the same header on every token: one that passed is not decoded again.
    if (headerPart !== acceptedHeader) {
      checkHeader(decodeJson(headerPart))
      acceptedHeader = headerPart
    }
    const signature = decode(token.slice(secondDot + 1))
    // jose refuses a payload that is not ASCII before the signature; the HMAC reads latin1.
    if (!base64url.test(token.slice(firstDot + 1, secondDot))) throw invalid("the token is malformed")
    const expected = mac(token.slice(0, secondDot))
    if (signature.length !== expected.length || !Crypto.timingSafeEqual(expected, signature)) {
      throw invalid("the token's signature is not valid")
    }
    const payload = decodeJson(token.slice(firstDot + 1, secondDot))
    if (!isObject(payload)) throw invalid("the token is malformed")
    // In jose's order, so the first broken rule is named the same: presence, iss and aud, then the dates.
    if (issuer !== undefined && !Object.hasOwn(payload, "iss")) throw invalid("the token has no iss claim")
    if (audience !== undefined && !Object.hasOwn(payload, "aud")) throw invalid("the token has no aud claim")
    if (!Object.hasOwn(payload, "sub")) throw invalid("the token has no sub claim")
    if (!Object.hasOwn(payload, "exp")) throw invalid("the token has no exp claim")
    if (issuer !== undefined && payload.iss !== issuer) throw invalid("the token's iss claim is not accepted")
    if (audience !== undefined) {
      const aud = payload.aud
      if (!(aud === audience || (Array.isArray(aud) && aud.includes(audience)))) {
        throw invalid("the token's aud claim is not accepted")
      }
    }
    const now = Math.floor(nowMillis / 1000)
    const iat = numericDate(payload, "iat")
    const nbf = numericDate(payload, "nbf")
    if (nbf !== undefined && nbf > now + tolerance) throw invalid("the token is not valid yet (nbf)")
    const exp = numericDate(payload, "exp")!
    if (exp <= now - tolerance) throw invalid("the token has expired")
    // The kit's own rules beyond jose's (checkClaims in Auth.ts).
    if (typeof payload.sub !== "string" || payload.sub.length === 0) {
      throw invalid("the token's sub claim must be a non-empty string")
    }
    if (iat !== undefined) {
      if (!Number.isFinite(iat)) throw invalid("the token's iat claim is not a number")
      if (iat > nowMillis / 1000 + tolerance) throw invalid("the token's iat claim is in the future")
    }
    return payload as Claims
  }
}
