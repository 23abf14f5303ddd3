/**
 * The kit's public surface names what users call and nothing internal: the Node-level hooks of
 * the error bodies are not reachable from `src/kit/index.ts`, and every name the app and the docs use is.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Fs from "node:fs"
import * as Path from "node:path"
import * as Kit from "../../src/kit/index.ts"

const root = Path.resolve(import.meta.dirname, "../..")

const sources = (dir: string): Array<string> =>
  Fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory()
      ? sources(Path.join(dir, entry.name))
      : /\.(ts|md)$/.test(entry.name)
      ? [Fs.readFileSync(Path.join(dir, entry.name), "utf8")]
      : []
  )

describe("the kit's public surface", () => {
  it("keeps the Node-level hooks and internal tables out of the namespaces", () => {
    for (const name of ["errorBodies", "notReady", "onClientError"]) assert.notProperty(Kit.Problem, name)
    for (const name of ["describe", "byteUnits"]) assert.notProperty(Kit.Settings, name)
  })

  it("exports every Problem., Settings. and ClientAddress. name that src/app and docs/ use", () => {
    const text = [...sources(Path.join(root, "src/app")), ...sources(Path.join(root, "docs"))].join("\n")
    const namespaces = { Problem: Kit.Problem, Settings: Kit.Settings, ClientAddress: Kit.ClientAddress } as Record<
      string,
      object
    >
    // File names (`Problem.ts`, `Settings.test.ts`) are not members.
    const used = new Set(
      [...text.matchAll(/\b(Problem|Settings|ClientAddress)\.([A-Za-z]\w*)\b/g)]
        .filter((m) => !["ts", "test", "md"].includes(m[2]!))
        .map((m) => `${m[1]}.${m[2]}`)
    )
    // Type-only names (interfaces) have no runtime value to find.
    const typeOnly = new Set([
      "Problem.Problem",
      "Problem.Issue",
      "ClientAddress.Trusted",
      "Settings.ConfigError",
      "Settings.DurationOptions"
    ])
    const missing = [...used].filter((name) => {
      const [space, member] = name.split(".") as [string, string]
      return !typeOnly.has(name) && !(member in namespaces[space]!)
    })
    assert.isAbove(used.size, 5)
    assert.deepStrictEqual(missing, [])
  })
})
