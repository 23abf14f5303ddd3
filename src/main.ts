/**
 * The process entry point: run the application graph (src/app/App.ts) under the kit's
 * lifecycle kernel (signals, drain, deadline, exit code), or, with WORKERS set, the supervisor.
 *
 * Node's compile cache is turned on before the server's code is loaded, so from the second
 * start on V8 reads its compiled code from disk instead of parsing ~2 MB of JavaScript
 * (NODE_COMPILE_CACHE names the directory, default `<tmpdir>/node-compile-cache`;
 * NODE_DISABLE_COMPILE_CACHE=1 turns it off). Hence the dynamic imports, which also keep the
 * supervisor from loading the application graph at all. Before any of it, the Node version is
 * checked (NodeVersion.ts): on an older Node the process says which it needs, and exits 1.
 */
import * as Module from "node:module"
import * as NodeVersion from "./kit/internal/NodeVersion.ts"
import { mode } from "./kit/internal/supervisor/Protocol.ts"

if (!NodeVersion.satisfies(process.versions.node)) {
  process.stderr.write(NodeVersion.refusal(process.version) + "\n")
  process.exit(1)
}
Module.enableCompileCache()
switch (mode(process.env)) {
  case "supervisor": {
    const Supervisor = await import("./kit/internal/supervisor/Supervisor.ts")
    Supervisor.run()
    break
  }
  case "worker": {
    const [{ Main }, Worker] = await Promise.all([
      import("./app/App.ts"),
      import("./kit/internal/supervisor/Worker.ts")
    ])
    Worker.run(Main)
    break
  }
  case "single": {
    const [{ Main }, Lifecycle] = await Promise.all([import("./app/App.ts"), import("./kit/Lifecycle.ts")])
    Lifecycle.run(Main)
  }
}
