// npm run token [-- --sub alice --expires 2h]: prints a development JWT the server accepts.
// Signed HS256 with JWT_SECRET, or with the development secret the server created in
// .data/jwt-secret (JWT_DEV_SECRET_FILE) when JWT_SECRET is unset.
import { SignJWT } from "jose"
import { parseArgs } from "node:util"
import { devSecret, DevSecretRefused } from "../src/app/DevSecret.ts"

const { values } = parseArgs({
  options: {
    sub: { type: "string", default: "dev" },
    expires: { type: "string", default: "1h" }
  }
})

const secretFile = process.env.JWT_DEV_SECRET_FILE ?? ".data/jwt-secret"
let secret = process.env.JWT_SECRET === undefined ? undefined : new TextEncoder().encode(process.env.JWT_SECRET)
if (secret === undefined) {
  // The server's own reader (Node runs the TypeScript as is): same rules, same file, either may come first.
  try {
    secret = devSecret(secretFile)
  } catch (error) {
    if (!(error instanceof DevSecretRefused)) throw error
    console.error(`npm run token: ${error.message}`)
    process.exit(1)
  }
}

const token = await new SignJWT({})
  .setProtectedHeader({ alg: "HS256" })
  .setSubject(values.sub)
  .setIssuedAt()
  .setExpirationTime(values.expires)
  .sign(secret)
console.log(token)
