/**
 * The line between the kit and the app: no kit file imports from src/app, and the kit's
 * public surface (index.ts) re-exports only kit modules.
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
})
