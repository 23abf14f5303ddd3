/**
 * The built server on an older Node (the system's Node 20 here and in CI, not the pinned one npm
 * scripts use): one line saying which Node it needs and how to run it, exit 1, nothing started.
 */
import { spawnSync } from "node:child_process"
import { describe, expect, it } from "vitest"
import * as NodeVersion from "../../src/kit/internal/NodeVersion.ts"
import { spawnServer } from "../support/process.ts"

const systemNode = "/usr/bin/node"
const systemVersion = spawnSync(systemNode, ["--version"], { encoding: "utf8" }).stdout?.trim() ?? ""
const older = /^v\d/.test(systemVersion) && !NodeVersion.satisfies(systemVersion)

describe("dist/main.js on an older Node", () => {
  it.skipIf(!older)(`${systemNode} (${systemVersion || "missing"}) is refused in one line, exit 1`, async () => {
    const server = await spawnServer({ shell: `exec ${systemNode} $MAIN`, waitReady: false })
    const exit = await server.exited
    expect(exit.code).toBe(1)
    const said = server.stderr().trim()
    expect(said.split("\n")).toHaveLength(1)
    expect(said).toContain(`needs Node.js ${NodeVersion.required}`)
    expect(said).toContain(systemVersion)
    expect(said).toContain("npx node dist/main.js")
    expect(server.lines).toHaveLength(0)
  })
})
