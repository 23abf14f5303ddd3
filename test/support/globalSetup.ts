/**
 * One private PostgreSQL for the whole run, for process tests that need a database but are
 * not about the embedded one (each of those gets its own data directory).
 */
import { Effect, Exit, Redacted, Scope } from "effect"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import type { TestProject } from "vitest/node"
import * as EmbeddedPostgres from "../../src/kit/EmbeddedPostgres.ts"
import { optionsFor } from "./postgres.ts"

declare module "vitest" {
  export interface ProvidedContext {
    databaseUrl: string
  }
}

export default async function setup(project: TestProject) {
  const root = Fs.mkdtempSync(Path.join(Os.tmpdir(), "scoped-server-suite-pg-"))
  Fs.chmodSync(root, 0o755)
  const scope = Effect.runSync(Scope.make())
  const instance = await Effect.runPromise(
    EmbeddedPostgres.start(optionsFor(Path.join(root, "data"))).pipe(Scope.provide(scope))
  )
  project.provide("databaseUrl", Redacted.value(instance.url))
  return async () => {
    await Effect.runPromise(Scope.close(scope, Exit.void))
    Fs.rmSync(root, { recursive: true, force: true })
  }
}
