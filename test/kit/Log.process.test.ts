/**
 * The log format the built server picks by itself: JSON into a pipe, pretty (coloured) on a
 * real terminal (a pty from util-linux `script`), and LOG_FORMAT overriding either way.
 */
import { Effect } from "effect"
import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import { afterEach, describe, expect, it } from "vitest"
import * as Testing from "../../src/kit/testing.ts"
import { request } from "../support/http.ts"
import { mainJs, type ServerProcess, spawnServer } from "../support/process.ts"

const hasScript = spawnSync("script", ["--version"]).status === 0
// eslint-disable-next-line no-control-regex
const stripColours = (text: string) => text.replace(/\x1b\[[0-9;]*m/g, "")
const quote = (word: string) => `'${word.replace(/'/g, "'\\''")}'`

const children = new Set<ChildProcess>()
const servers = new Set<ServerProcess>()
afterEach(() => {
  for (const child of children) if (child.exitCode === null) process.kill(-child.pid!, "SIGKILL")
  for (const server of servers) server.child.kill("SIGKILL")
  children.clear()
  servers.clear()
})

/**
 * dist/main.js with its stdout on a pseudo-terminal; resolves once `ready` (by default the pretty
 * format's ready line) is in its output, with its output so far.
 */
const spawnOnTerminal = async (env: Record<string, string>, ready: RegExp = / INFO +ready\b/) => {
  const child = spawn("script", ["-qec", `${quote(process.execPath)} ${quote(mainJs)}`, "/dev/null"], {
    env: {
      PATH: process.env.PATH ?? "",
      TERM: "xterm-256color",
      PORT: "0",
      HOST: "127.0.0.1",
      DATABASE_URL: await Effect.runPromise(Testing.databaseServer),
      ...env
    },
    stdio: ["pipe", "pipe", "pipe"],
    // Its own group, so the test can signal `script` and the server together, as a terminal would.
    detached: true
  })
  children.add(child)
  let output = ""
  child.stdout.setEncoding("utf8").on("data", (chunk: string) => (output += chunk))
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()))
  const waitFor = async (pattern: RegExp) => {
    const deadline = Date.now() + 20_000
    for (;;) {
      const match = pattern.exec(stripColours(output))
      if (match !== null) return match
      if (Date.now() > deadline || child.exitCode !== null) {
        throw new Error(`no line matching ${pattern}; output:\n${output}`)
      }
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
  }
  const [, port] = await waitFor(/"name":"main","address":"http:\/\/127\.0\.0\.1:(\d+)"/)
  await waitFor(ready)
  return {
    port: Number(port),
    output: () => output,
    waitFor,
    stop: async () => {
      process.kill(-child.pid!, "SIGTERM")
      await exited
    }
  }
}

describe("log format at process level", () => {
  it("writes JSON lines when stdout is a pipe, the request id in each request's line", async () => {
    const server = await spawnServer({ env: { ACCESS_LOG: "true" } })
    servers.add(server)
    expect((await request(server.port, "/livez", { headers: { "x-request-id": "pipe-req-1" } })).status).toBe(200)
    const line = await server.waitForLine((line) => line.annotations.requestId === "pipe-req-1")
    expect(line.message).toBe("request")
    server.signal("SIGTERM")
    await server.exited
    // spawnServer keeps a line it cannot parse as JSON with level RAW.
    expect(server.lines.filter((line) => line.level === "RAW")).toEqual([])
    expect(server.lines.length).toBeGreaterThan(3)
  })

  it.skipIf(!hasScript)(
    "writes one coloured human line per entry on a terminal, the request id as key=value",
    async () => {
      const server = await spawnOnTerminal({ ACCESS_LOG: "true" })
      expect((await request(server.port, "/livez", { headers: { "x-request-id": "tty-req-1" } })).status).toBe(200)
      const [line] = await server.waitFor(/^.*requestId=tty-req-1.*$/m)
      expect(line).toMatch(/^\d\d:\d\d:\d\d\.\d{3} INFO {2}request .*status=200/)
      const lines = server.output().split(/\r?\n/).filter((line) => line.length > 0)
      expect(server.output()).toContain("\x1b[")
      for (const line of lines) {
        expect(stripColours(line)).toMatch(
          /^\d\d:\d\d:\d\d\.\d{3} (TRACE|DEBUG|INFO |WARN |ERROR|FATAL) /
        )
      }
      await server.stop()
      expect(stripColours(server.output())).toMatch(/ INFO +phase phase=starting .*outcome=ok/)
    }
  )

  it.skipIf(!hasScript)("LOG_FORMAT=JSON keeps a terminal's lines machine-readable", async () => {
    const server = await spawnOnTerminal({ LOG_FORMAT: "JSON" }, /"message":"ready"/)
    await server.stop()
    const lines = server.output().split(/\r?\n/).filter((line) => line.length > 0)
    expect(lines.map((line) => JSON.parse(line).message)).toContain("ready")
  })

  it("LOG_FORMAT=pretty writes the human format into a pipe too", async () => {
    const server = await spawnServer({ env: { LOG_FORMAT: "pretty" }, waitReady: false })
    servers.add(server)
    const ready = await server.waitForLine((line) =>
      line.level === "RAW" && /^\d\d:\d\d:\d\d\.\d{3} INFO {2}ready\b/.test(String(line.message))
    )
    // No colour codes into a pipe: whatever reads it did not ask for them.
    expect(String(ready.message)).not.toContain("\x1b[")
    expect(server.lines.filter((line) => line.level !== "RAW")).toEqual([])
    server.signal("SIGTERM")
    await server.exited
  })
})
