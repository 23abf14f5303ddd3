/**
 * The HS256 verifier against jose on the same tokens: every hand-made case (each claim rule, each
 * header trick, each way to break the compact form) and a few thousand random corruptions of a good
 * token get the same answer from both, word for word, so the kit's rules are kept, not re-derived.
 */
import { Duration } from "effect"
import * as Jose from "jose"
import * as Crypto from "node:crypto"
import { describe, expect, it } from "vitest"
import { classify, keyVerify } from "../../src/app/Auth.ts"
import { hmacSha256, hs256Verifier } from "../../src/app/Hs256.ts"

const secretText = "a-secret-of-exactly-32-bytes-ok!"
const secret = new TextEncoder().encode(secretText)
const now = Date.UTC(2026, 11, 7, 12, 0, 0, 500)
const nowSeconds = Math.floor(now / 1000)
const tolerance = 30

const b64 = (value: unknown) =>
  Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url")

/** A token with this header and payload, signed HS256 with `key` (or given `signature`). */
const token = (header: unknown, payload: unknown, options: { key?: string; alg?: string; signature?: string } = {}) => {
  const input = `${b64(header)}.${b64(payload)}`
  const signature = options.signature ??
    Crypto.createHmac(options.alg ?? "sha256", options.key ?? secretText).update(input).digest("base64url")
  return `${input}.${signature}`
}
const hs = { alg: "HS256" }
const good = { sub: "alice", exp: nowSeconds + 600, iat: nowSeconds - 10 }

type Options = { readonly issuer?: string; readonly audience?: string }

const ours = (options: Options = {}) => {
  const verify = hs256Verifier(secret, { ...options, toleranceSeconds: tolerance })
  return async (jwt: string) => {
    try {
      return `accepted ${JSON.stringify(verify(jwt, now))}`
    } catch (error) {
      return classify(error).description
    }
  }
}

const jose = (options: Options = {}) => {
  const verify = keyVerify(secret, ["HS256"], { ...options, clockTolerance: Duration.seconds(tolerance) })
  return async (jwt: string) => {
    try {
      return `accepted ${JSON.stringify(await verify(jwt, now))}`
    } catch (error) {
      return classify(error).description
    }
  }
}

const cases: ReadonlyArray<readonly [string, string]> = [
  ["good", token(hs, good)],
  ["good, typ JWT", token({ alg: "HS256", typ: "JWT" }, good)],
  ["no exp", token(hs, { sub: "a" })],
  ["no sub", token(hs, { exp: nowSeconds + 600 })],
  ["neither", token(hs, {})],
  ["exp a string", token(hs, { sub: "a", exp: String(nowSeconds + 600) })],
  ["exp null", token(hs, { sub: "a", exp: null })],
  ["exp huge", `${b64(hs)}.${b64(`{"sub":"a","exp":1e999}`)}`],
  ["numeric sub", token(hs, { sub: 42, exp: nowSeconds + 600 })],
  ["empty sub", token(hs, { sub: "", exp: nowSeconds + 600 })],
  ["null sub", token(hs, { sub: null, exp: nowSeconds + 600 })],
  ["iat 2 min ahead", token(hs, { ...good, iat: nowSeconds + 120 })],
  ["iat 10 s ahead", token(hs, { ...good, iat: nowSeconds + 10 })],
  ["iat a string", token(hs, { ...good, iat: "yesterday" })],
  ["iat infinite", `${b64(hs)}.${b64(`{"sub":"a","exp":${nowSeconds + 600},"iat":1e999}`)}`],
  ["nbf 2 min ahead", token(hs, { ...good, nbf: nowSeconds + 120 })],
  ["nbf 10 s ahead", token(hs, { ...good, nbf: nowSeconds + 10 })],
  ["nbf at the edge", token(hs, { ...good, nbf: nowSeconds + tolerance })],
  ["nbf past the edge", token(hs, { ...good, nbf: nowSeconds + tolerance + 1 })],
  ["nbf a string", token(hs, { ...good, nbf: "soon" })],
  ["expired 2 min ago", token(hs, { sub: "a", exp: nowSeconds - 120 })],
  ["expired 10 s ago", token(hs, { sub: "a", exp: nowSeconds - 10 })],
  ["exp at the edge", token(hs, { sub: "a", exp: nowSeconds - tolerance })],
  ["exp inside the edge", token(hs, { sub: "a", exp: nowSeconds - tolerance + 1 })],
  ["payload an array", token(hs, [good])],
  ["payload a number", token(hs, 7)],
  ["payload not JSON", `${b64(hs)}.${b64("{sub")}.x`],
  ["header an array", token([hs], good)],
  ["header not JSON", token("{alg", good)],
  ["no alg", token({}, good)],
  ["alg a number", token({ alg: 256 }, good)],
  ["alg none", `${b64({ alg: "none" })}.${b64(good)}.`],
  ["alg none, signed", token({ alg: "none" }, good)],
  ["alg HS384", token({ alg: "HS384" }, good, { alg: "sha384" })],
  ["alg hs256", token({ alg: "hs256" }, good)],
  ["alg RS256", token({ alg: "RS256" }, good)],
  ["crit b64", token({ alg: "HS256", crit: ["b64"], b64: false }, good)],
  ["crit exp", token({ alg: "HS256", crit: ["exp"] }, good)],
  ["crit empty", token({ alg: "HS256", crit: [] }, good)],
  ["crit b64 true", token({ alg: "HS256", crit: ["b64"], b64: true }, good)],
  ["crit not a list", token({ alg: "HS256", crit: "exp" }, good)],
  ["b64 false without crit", token({ alg: "HS256", b64: false }, good)],
  ["b64 true", token({ alg: "HS256", b64: true }, good)],
  ["another secret", token(hs, good, { key: "another-secret-another-secret-0123" })],
  ["signature empty", token(hs, good, { signature: "" })],
  ["signature short", token(hs, good).slice(0, -2)],
  ["signature long", `${token(hs, good)}AA`],
  ["signature padded", `${token(hs, good)}=`],
  ["signature with +", token(hs, good).slice(0, -1) + "+"],
  ["payload tampered", token(hs, good).replace(/\.[^.]+\./, `.${b64({ ...good, sub: "mallory" })}.`)],
  ["two parts", `${b64(hs)}.${b64(good)}`],
  ["four parts", `${token(hs, good)}.x`],
  ["one part", "eyJ"],
  ["empty", ""],
  ["dots", ".."],
  ["not a jwt", "not.a.jwt"],
  ["spaces", ` ${token(hs, good)}`]
]

const issuerCases: ReadonlyArray<readonly [string, string]> = [
  ["iss and aud right", token(hs, { ...good, iss: "issuer", aud: "api" })],
  ["aud in an array", token(hs, { ...good, iss: "issuer", aud: ["other", "api"] })],
  ["no iss", token(hs, { ...good, aud: "api" })],
  ["no aud", token(hs, { ...good, iss: "issuer" })],
  ["neither iss nor aud", token(hs, good)],
  ["iss wrong", token(hs, { ...good, iss: "other", aud: "api" })],
  ["aud wrong", token(hs, { ...good, iss: "issuer", aud: "other" })],
  ["aud an empty array", token(hs, { ...good, iss: "issuer", aud: [] })],
  ["iss a number", token(hs, { ...good, iss: 1, aud: "api" })],
  ["no sub, no aud", token(hs, { exp: nowSeconds + 600, iss: "issuer" })]
]

/**
 * Where ours is stricter than jose on purpose, and only there: characters outside base64url
 * (jose decodes through `atob`, which skips whitespace and takes padding) and any `crit` header
 * (jose understands `b64`; we understand no extension). Stricter means refusing, never accepting.
 */
const stricter = (jwt: string) => {
  if (/[^A-Za-z0-9_.-]/.test(jwt)) return true
  try {
    return "crit" in JSON.parse(Buffer.from(jwt.split(".")[0]!, "base64url").toString())
  } catch {
    return false
  }
}

/** Both verifiers' answers to `jwt` are the same words, or ours refuses where we are stricter. */
const same = async (
  a: (jwt: string) => Promise<string>,
  b: (jwt: string) => Promise<string>,
  name: string,
  jwt: string
) => {
  const [mine, theirs] = [await a(jwt), await b(jwt)]
  if (mine === theirs) return mine
  expect(mine.startsWith("accepted"), `${name}: we accept what jose refuses (${theirs})`).toBe(false)
  expect(stricter(jwt), `${name}: ours "${mine}", jose's "${theirs}"`).toBe(true)
  return mine
}

describe("HS256 on this thread gives jose's answers", () => {
  it("where ours is stricter, it refuses: whitespace, padding and every crit header", async () => {
    const a = ours()
    expect(await a(` ${token(hs, good)}`)).toBe("the token is malformed")
    expect(await a(`${token(hs, good)}=`)).toBe("the token is malformed")
    expect(await a(token({ alg: "HS256", crit: ["b64"], b64: true }, good))).toBe(
      "the token's algorithm or key is not supported"
    )
    expect(await jose()(token({ alg: "HS256", crit: ["b64"], b64: true }, good))).toMatch(/^accepted /)
  })

  it("for every hand-made case", async () => {
    const [a, b] = [ours(), jose()]
    for (const [name, jwt] of cases) await same(a, b, name, jwt)
    // The cases are not all refusals of one kind.
    const answers = new Set(await Promise.all(cases.map(([, jwt]) => a(jwt))))
    expect(answers.size).toBeGreaterThan(12)
  })

  it("with JWT_ISSUER and JWT_AUDIENCE set", async () => {
    const options = { issuer: "issuer", audience: "api" }
    const [a, b] = [ours(options), jose(options)]
    for (const [name, jwt] of issuerCases) expect(await a(jwt), name).toBe(await b(jwt))
    expect(await a(issuerCases[0]![1])).toMatch(/^accepted /)
  })

  it("for 3,000 random corruptions of a good token (a character replaced, dropped or added)", async () => {
    const [a, b] = [ours(), jose()]
    const base = token(hs, good)
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ "
    let seed = 7
    const random = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2147483648
      return seed % n
    }
    const accepted: Array<string> = []
    for (let i = 0; i < 3_000; i++) {
      const at = random(base.length)
      const char = alphabet[random(alphabet.length)]!
      const kind = random(3)
      const jwt = kind === 0
        ? base.slice(0, at) + char + base.slice(at + 1)
        : kind === 1
        ? base.slice(0, at) + base.slice(at + 1)
        : base.slice(0, at) + char + base.slice(at)
      const answer = await same(a, b, jwt, jwt)
      if (answer.startsWith("accepted")) accepted.push(jwt)
    }
    // What both accept differs from the original only where base64url decodes to the same bytes
    // (the last character's spare bits): never a changed claim.
    for (const jwt of accepted) expect(await a(jwt)).toBe(await a(base))
  })

  it("a token signed by jose itself is accepted with its claims", async () => {
    const jwt = await new Jose.SignJWT({ scope: "items" }).setProtectedHeader({ alg: "HS256" }).setSubject("bob")
      .setIssuedAt(nowSeconds).setExpirationTime(nowSeconds + 60).sign(secret)
    expect(await ours()(jwt)).toBe(
      `accepted ${JSON.stringify({ scope: "items", sub: "bob", iat: nowSeconds, exp: nowSeconds + 60 })}`
    )
  })
})

describe("hmacSha256", () => {
  it("gives RFC 4231's HMAC-SHA-256 values (short, long and over-long keys)", () => {
    const vectors: ReadonlyArray<readonly [Buffer, string, string]> = [
      [Buffer.alloc(20, 0x0b), "Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"],
      [
        Buffer.from("Jefe"),
        "what do ya want for nothing?",
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
      ],
      [
        Buffer.alloc(131, 0xaa),
        "Test Using Larger Than Block-Size Key - Hash Key First",
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
      ],
      [
        Buffer.alloc(131, 0xaa),
        "This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm.",
        "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"
      ]
    ]
    for (const [key, message, expected] of vectors) expect(hmacSha256(key)(message).toString("hex")).toBe(expected)
  })

  it("equals createHmac for keys of 0 to 200 bytes and messages of 0 to 300 characters", () => {
    for (let keyLength = 0; keyLength <= 200; keyLength += 7) {
      const key = Crypto.randomBytes(keyLength)
      const mac = hmacSha256(key)
      for (let length = 0; length <= 300; length += 13) {
        const message = Crypto.randomBytes(length).toString("base64url").slice(0, length)
        expect(mac(message).equals(Crypto.createHmac("sha256", key).update(message).digest())).toBe(true)
      }
    }
  })
})
