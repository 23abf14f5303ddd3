/**
 * The Node.js the server needs, checked before anything else is loaded: on an older Node the
 * first missing API (Module.enableCompileCache on Node 20) would otherwise end the process with a
 * TypeError that says nothing about versions. Plain code, no imports: it must run on any Node.
 */

/** The oldest Node.js the server runs on; package.json's `engines.node` says the same (a test checks). */
export const required = "22.19.0"

const parse = (version: string): ReadonlyArray<number> =>
  version.replace(/^v/, "").split(".").map((part) => Number.parseInt(part, 10) || 0)

/** True when `version` (as `process.versions.node` gives it) is at least `minimum`. */
export const satisfies = (version: string, minimum: string = required): boolean => {
  const have = parse(version)
  const need = parse(minimum)
  for (let i = 0; i < need.length; i++) {
    const a = have[i] ?? 0
    const b = need[i] ?? 0
    if (a !== b) return a > b
  }
  return true
}

/** The one line an operator gets on an older Node: what it needs, what it found, what to run. */
export const refusal = (version: string): string =>
  `scoped-server needs Node.js ${required} or newer and this is ${version}: ` +
  `run it with the project's own Node, \`npx node dist/main.js\` (or install Node.js ${required}+)`
