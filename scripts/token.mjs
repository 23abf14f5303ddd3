// npm run token [-- --sub alice --expires 2h]: prints a development JWT the server accepts.
// Signed HS256 with JWT_SECRET, or with the development secret the server created in
// .data/jwt-secret (JWT_DEV_SECRET_FILE) when JWT_SECRET is unset.
import { SignJWT } from "jose"
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { parseArgs } from "node:util"

const { values } = parseArgs({
  options: {
    sub: { type: "string", default: "dev" },
    expires: { type: "string", default: "1h" }
  }
})

const secretFile = process.env.JWT_DEV_SECRET_FILE ?? ".data/jwt-secret"
let secret = process.env.JWT_SECRET
if (secret === undefined) {
  if (!Fs.existsSync(secretFile)) {
    // Same as the server does on its first start, so either may come first.
    Fs.mkdirSync(Path.dirname(secretFile), { recursive: true })
    Fs.writeFileSync(secretFile, Crypto.randomBytes(32).toString("base64url"), { mode: 0o600, flag: "wx" })
  }
  secret = Fs.readFileSync(secretFile, "utf8").trim()
}

const token = await new SignJWT({})
  .setProtectedHeader({ alg: "HS256" })
  .setSubject(values.sub)
  .setIssuedAt()
  .setExpirationTime(values.expires)
  .sign(new TextEncoder().encode(secret))
console.log(token)
