/**
 * A mistyped REDIS_URL from the built server: refused before anything starts (no embedded
 * PostgreSQL, no initdb), exit 1, one line naming the variable and never its password.
 */
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { type ServerProcess, spawnServer } from "../support/process.ts"

const running = new Set<ServerProcess>()
const dirs: Array<string> = []
afterAll(() => {
  for (const server of running) server.child.kill("SIGKILL")
  for (const dir of dirs) Fs.rmSync(dir, { recursive: true, force: true })
})

describe("REDIS_URL refused at startup", () => {
  it("notaurl or a non-Redis URL: exit 1 before the embedded database starts, one line naming REDIS_URL", async () => {
    for (const url of ["notaurl", "http://:hunter2@cache:6379"]) {
      const root = Fs.mkdtempSync(Path.join(Os.tmpdir(), "scoped-server-redisurl-"))
      dirs.push(root)
      // As root the database runs as its own account, which must reach the directory (as in support/postgres.ts).
      Fs.chmodSync(root, 0o755)
      const dataDir = Path.join(root, "pg")
      const server = await spawnServer({
        env: { DATABASE_URL: undefined, EMBEDDED_POSTGRES_DIR: dataDir, REDIS_URL: url },
        waitReady: false
      })
      running.add(server)
      const exit = await server.exited
      expect(exit.code).toBe(1)
      const failures = server.lines.filter((line) => line.message === "startup failed")
      expect(failures).toHaveLength(1)
      expect(String(failures[0]!.annotations.error)).toMatch(/^invalid configuration: REDIS_URL: is not a/)
      // Nothing started: no cluster, no lock, no log beside it.
      expect(Fs.readdirSync(root)).toEqual([])
      expect(server.lines.some((line) => /PostgreSQL/.test(String(line.message)))).toBe(false)
      for (const line of server.lines) expect(JSON.stringify(line)).not.toContain("hunter2")
      expect(server.stderr()).toBe("")
    }
  })
})
