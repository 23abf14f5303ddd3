/**
 * The reference application under the kit's test helpers (src/kit/testing.ts): its graph with
 * the kit's test JWT secret, on a fresh database of its own unless `env` names one.
 */
import { Main } from "../../src/app/App.ts"
import * as Testing from "../../src/kit/testing.ts"

/** The app's server in a test: `Testing.TestServer` (its `env.DATABASE_URL` names its database). */
export const App = Testing.TestServer
export type App = Testing.TestServer

export const appLayer = (env: Record<string, string> = {}) => {
  const settings = { JWT_SECRET: Testing.jwtSecret, ...env }
  return env.DATABASE_URL === undefined ? Testing.layerDatabase(Main, settings) : Testing.layer(Main, settings)
}
