/**
 * The process entry point: run the application graph under the lifecycle kernel
 * (signals, drain, deadline, exit code). The graph itself is in App.ts.
 */
import { Main } from "./App.ts"
import * as Lifecycle from "./Lifecycle.ts"

Lifecycle.run(Main)
