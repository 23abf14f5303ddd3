/**
 * The line between the kit and the app: no kit file imports from src/app, the app reaches the
 * kit only through its public surface, and the kit's modules import one another without a cycle.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Fs from "node:fs"
import * as Path from "node:path"

const kitRoot = Path.resolve(import.meta.dirname, "../../src/kit")
const appRoot = Path.resolve(import.meta.dirname, "../../src/app")

const filesUnder = (dir: string): Array<string> =>
  Fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory()
      ? filesUnder(Path.join(dir, entry.name))
      : entry.name.endsWith(".ts")
      ? [Path.join(dir, entry.name)]
      : []
  )

/** Every module specifier a file imports or re-exports, static or dynamic. */
const specifiers = (source: string): Array<string> =>
  [...source.matchAll(
    /(?:^|\s)(?:import|export)\s[^"'`;]*?from\s*["']([^"']+)["']|import\s*\(\s*["']([^"']+)["']\s*\)|^\s*import\s*["']([^"']+)["']/gm
  )]
    .map((match) => match[1] ?? match[2] ?? match[3]!)

describe("the kit and the app", () => {
  it("finds imports in every form a file can write them", () => {
    const found = specifiers(
      `import { a } from "./a.ts"\nimport type { B } from '../b.ts'\nexport * from "./c.ts"\nconst d = await import("./d.ts")\nimport "./e.ts"\nexport {\n  f\n} from "./f.ts"`
    )
    assert.sameMembers(found, ["./a.ts", "../b.ts", "./c.ts", "./d.ts", "./e.ts", "./f.ts"])
  })

  it("no kit file imports from src/app", () => {
    const offenders = filesUnder(kitRoot).flatMap((file) =>
      specifiers(Fs.readFileSync(file, "utf8"))
        .filter((specifier) => specifier.startsWith("."))
        .filter((specifier) => {
          const target = Path.resolve(Path.dirname(file), specifier)
          return target === appRoot || target.startsWith(appRoot + Path.sep)
        })
        .map((specifier) => `${Path.relative(kitRoot, file)} imports ${specifier}`)
    )
    assert.deepStrictEqual(offenders, [])
  })

  it("the app imports the kit only through src/kit/index.ts", () => {
    const offenders = filesUnder(appRoot).flatMap((file) =>
      specifiers(Fs.readFileSync(file, "utf8"))
        .filter((specifier) => specifier.startsWith("."))
        .map((specifier) => Path.resolve(Path.dirname(file), specifier))
        .filter((target) => target.startsWith(kitRoot + Path.sep) && target !== Path.join(kitRoot, "index.ts"))
        .map((target) => `${Path.relative(appRoot, file)} imports ${Path.relative(kitRoot, target)}`)
    )
    assert.deepStrictEqual(offenders, [])
  })

  it("no kit module imports itself back through another (static imports)", () => {
    const staticSpecifiers = (source: string) =>
      [...source.matchAll(/^(?:import|export)\s(?!type\s)[^"'`;]*?from\s*["'](\.[^"']+)["']/gm)].map((match) =>
        match[1]!
      )
    const graph = new Map(
      filesUnder(kitRoot).map((file) => [
        file,
        staticSpecifiers(Fs.readFileSync(file, "utf8")).map((specifier) => Path.resolve(Path.dirname(file), specifier))
      ])
    )
    const cycles: Array<string> = []
    const state = new Map<string, "visiting" | "done">()
    const visit = (file: string, path: Array<string>) => {
      if (state.get(file) === "done") return
      if (state.get(file) === "visiting") {
        cycles.push([...path.slice(path.indexOf(file)), file].map((f) => Path.relative(kitRoot, f)).join(" -> "))
        return
      }
      state.set(file, "visiting")
      for (const next of graph.get(file) ?? []) visit(next, [...path, file])
      state.set(file, "done")
    }
    for (const file of graph.keys()) visit(file, [])
    assert.isAbove(graph.size, 30)
    assert.deepStrictEqual(cycles, [])
  })
})
