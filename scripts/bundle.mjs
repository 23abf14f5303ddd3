// Bundles src/main.ts into dist/main.js (ESM): an unbundled Effect 4 server spends most of its
// startup resolving and loading modules. What is bundled: our code and every dependency file Node
// loads as an ES module (effect, @effect/*, jose: nearly all of it). What is not: every dependency
// file Node loads as CommonJS or as a native addon (ws at startup; undici and redis when first used),
// imported from the node_modules beside dist/ and loaded by Node exactly as the source run loads it
// (commonJsExternal below says why), so dist/ needs the production node_modules at run time
// (`npm ci --omit=dev`). Code behind a dynamic import (the docs page's 3 MB of Scalar, the Redis
// client, undici) goes to chunks beside it, parsed only when first used. src/main.ts loads the rest
// dynamically, after turning on Node's compile cache.
// `--entry <file> --outdir <dir>` bundle another entry with these same settings (a test's main).
import { build } from "esbuild"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { parseArgs } from "node:util"

const { values: args } = parseArgs({
  options: { entry: { type: "string", default: "src/main.ts" }, outdir: { type: "string", default: "dist" } }
})

// Chunk names are content hashes: without this, every build would leave the last one's behind.
Fs.rmSync(args.outdir, { recursive: true, force: true })

/**
 * `node:http` by process.getBuiltinModule, not import: an ES import of it makes Node evaluate
 * every export, including the lazy WebSocket/MessageEvent getters that load its bundled undici,
 * ~55 ms of startup here for code the server never uses (@effect/platform-node avoids it the same way).
 */
const lazyNodeHttp = {
  name: "lazy-node-http",
  setup(build) {
    build.onResolve({ filter: /^(node:)?http$/ }, () => ({ path: "node:http", namespace: "builtin-module" }))
    build.onLoad({ filter: /.*/, namespace: "builtin-module" }, (args) => ({
      contents: `module.exports = process.getBuiltinModule(${JSON.stringify(args.path)})`,
      loader: "js"
    }))
  }
}

/** The nearest package.json's `type`, per directory (Node's rule for a `.js` file). */
const packageTypes = new Map()
const packageType = (dir) => {
  let type = packageTypes.get(dir)
  if (type === undefined) {
    const manifest = Path.join(dir, "package.json")
    const parent = Path.dirname(dir)
    type = Fs.existsSync(manifest)
      ? JSON.parse(Fs.readFileSync(manifest, "utf8")).type ?? "commonjs"
      : parent === dir
      ? "commonjs"
      : packageType(parent)
    packageTypes.set(dir, type)
  }
  return type
}

/** What Node would load as CommonJS (or as a native addon) rather than as an ES module. */
const loadsAsCommonJs = (file) => {
  const extension = Path.extname(file)
  if (extension === ".cjs" || extension === ".node") return true
  if (extension !== ".js") return false
  return packageType(Path.dirname(file)) !== "module"
}

const resolving = Symbol("commonjs-external")

/**
 * Every dependency file Node loads as CommonJS stays out of the bundle and is imported from
 * node_modules, so Node loads it as it does for the source. Bundled, CommonJS is emulated, and the
 * emulation differs: with code splitting, an ES module's `export * from` a CommonJS module keeps
 * only `default` (undici through @effect/platform-node's Undici.js: `_.Agent is not a constructor`
 * at startup), and native addons and optional `require()`s cannot be bundled at all. ES modules
 * (effect, @effect/*, jose: nearly all of the code) are still bundled. The import names the
 * resolved file relative to the output directory, so it is the very file the build resolved (also
 * when npm nested the package), found in the node_modules beside dist/ with no resolution at run time.
 * Startup measured level with the all-bundled build; leaving every package to Node
 * (`packages: "external"`) took 1.8–2× as long (bench/README.md, "Startup"). The compile cache
 * covers these files too. Nothing bundled calls require() any more, so no createRequire banner.
 */
const commonJsExternal = {
  name: "commonjs-external",
  setup(build) {
    const outdir = Path.resolve(build.initialOptions.outdir)
    const nodeModules = Path.resolve(import.meta.dirname, "..", "node_modules")
    build.onResolve({ filter: /.*/ }, async (args) => {
      if (args.pluginData === resolving || args.kind === "entry-point") return undefined
      const resolved = await build.resolve(args.path, {
        kind: args.kind,
        importer: args.importer,
        namespace: args.namespace,
        resolveDir: args.resolveDir,
        pluginData: resolving
      })
      if (resolved.errors.length > 0 || resolved.external || resolved.namespace !== "file") return undefined
      const inPackage = resolved.path.indexOf(`${Path.sep}node_modules${Path.sep}`)
      if (inPackage < 0 || !loadsAsCommonJs(resolved.path)) {
        // As resolved: asking esbuild again would resolve every import twice.
        return { path: resolved.path, sideEffects: resolved.sideEffects, suffix: resolved.suffix }
      }
      // esbuild follows symlinks: a linked node_modules (or pnpm's store) would otherwise name a
      // path outside the project. Relative to the project's own node_modules instead.
      const file = Path.join(nodeModules, resolved.path.slice(inPackage + `${Path.sep}node_modules${Path.sep}`.length))
      const relative = Path.relative(outdir, file).split(Path.sep).join("/")
      return { path: relative.startsWith(".") ? relative : `./${relative}`, external: true }
    })
  }
}

await build({
  entryPoints: [args.entry],
  outdir: args.outdir,
  bundle: true,
  splitting: true,
  platform: "node",
  format: "esm",
  target: "node22",
  sourcemap: true,
  minifySyntax: true,
  legalComments: "none",
  logLevel: "warning",
  // lazyNodeHttp first: it claims node:http before anything else resolves it.
  plugins: [lazyNodeHttp, commonJsExternal]
})
