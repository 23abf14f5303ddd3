// Bundles src/main.ts into dist/main.js (ESM): an unbundled Effect 4 server spends most of its
// startup resolving and loading modules. Code behind a dynamic import (the docs page's 3 MB of
// Scalar, undici) goes to chunks beside it, parsed only when first used. src/main.ts loads the
// rest dynamically, after turning on Node's compile cache.
import { build } from "esbuild"
import * as Fs from "node:fs"

// Chunk names are content hashes: without this, every build would leave the last one's behind.
Fs.rmSync("dist", { recursive: true, force: true })

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

await build({
  entryPoints: ["src/main.ts"],
  outdir: "dist",
  bundle: true,
  splitting: true,
  platform: "node",
  format: "esm",
  target: "node22",
  sourcemap: true,
  minifySyntax: true,
  legalComments: "none",
  logLevel: "warning",
  plugins: [lazyNodeHttp],
  // Some dependencies are CommonJS and call require() for Node built-ins.
  banner: {
    js:
      "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);"
  }
})
