/** The Node version check main.ts runs first: the comparison and package.json agreeing with it. */
import { describe, expect, it } from "vitest"
import packageJson from "../../package.json" with { type: "json" }
import * as NodeVersion from "../../src/kit/internal/NodeVersion.ts"

describe("NodeVersion", () => {
  it("compares versions part by part, numerically", () => {
    expect(NodeVersion.satisfies("22.19.0")).toBe(true)
    expect(NodeVersion.satisfies("22.20.1")).toBe(true)
    expect(NodeVersion.satisfies("24.0.0")).toBe(true)
    expect(NodeVersion.satisfies("22.18.9")).toBe(false)
    expect(NodeVersion.satisfies("22.9.0")).toBe(false)
    expect(NodeVersion.satisfies("20.20.2")).toBe(false)
    expect(NodeVersion.satisfies("v100.0.0")).toBe(true)
  })

  it("needs what package.json's engines field says", () => {
    expect(packageJson.engines.node).toBe(`>=${NodeVersion.required}`)
  })

  it("refuses in one line naming the Node it needs, the one it found, and the command to run", () => {
    const line = NodeVersion.refusal("v20.20.2")
    expect(line).not.toContain("\n")
    expect(line).toContain(NodeVersion.required)
    expect(line).toContain("v20.20.2")
    expect(line).toContain("npx node dist/main.js")
  })
})
