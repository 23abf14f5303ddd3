/**
 * The kit's public line, drawn as Effect's packages draw it: every module at the top of
 * `src/kit/` is public as a whole (each of its exports reachable from `src/kit/index.ts`), what
 * users never import lives under `src/kit/internal/`, and every name the app and the docs use is public.
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

const kitRoot = Path.join(root, "src/kit")

describe("the kit's public surface", () => {
  it("exports every top-level kit module whole", async () => {
    const reachable = new Set<unknown>()
    for (const value of Object.values(Kit)) {
      reachable.add(value)
      if (typeof value === "object" && value !== null) {
        for (const member of Object.values(value)) reachable.add(member)
      }
    }
    const modules = Fs.readdirSync(kitRoot).filter((name) => name.endsWith(".ts") && name !== "index.ts")
    const unreachable: Array<string> = []
    for (const name of modules) {
      // testing.ts is public too, as its own entry point (`kit/testing`): tests import it, servers never load it.
      if (name === "testing.ts") continue
      const module = (await import(Path.join(kitRoot, name))) as Record<string, unknown>
      for (const [exported, value] of Object.entries(module)) {
        if (!reachable.has(value)) unreachable.push(`${name}: ${exported}`)
      }
    }
    assert.isAbove(modules.length, 15)
    assert.deepStrictEqual(unreachable, [])
  })

  it("keeps the Node-level hooks and the startup renderer out of the public modules", () => {
    for (const name of ["errorBodies", "notReady", "onClientError"]) assert.notProperty(Kit.Problem, name)
    assert.notProperty(Kit.Settings, "describe")
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
