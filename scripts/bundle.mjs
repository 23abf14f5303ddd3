// Bundles src/main.ts into dist/main.js (ESM): an unbundled Effect 4 server spends most of its
// startup resolving and loading modules. Code behind a dynamic import (the docs page's 3 MB of
// Scalar, undici) goes to chunks beside it, parsed only when first used. src/main.ts loads the
// rest dynamically, after turning on Node's compile cache.
import { build } from "esbuild"
import * as Fs from "node:fs"

// Chunk names are content hashes: without this, every build would leave the last one's behind.
Fs.rmSync("dist", { recursive: true, force: true })

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
  // Some dependencies are CommonJS and call require() for Node built-ins.
  banner: { js: "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);" }
})
