/**
 * dist runs what the source runs: a main that uses CommonJS dependencies of the stack (undici through
 * NodeHttpClient.layerUndici, and ws), bundled by scripts/bundle.mjs with the production settings.
 */
import * as NodeWS from "@effect/platform-node/NodeWS"
import { spawnSync } from "node:child_process"
import * as Fs from "node:fs"
import * as NodeHttp from "node:http"
import type { AddressInfo } from "node:net"
import * as Path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { type ServerProcess, spawnServer } from "../support/process.ts"

const root = Path.resolve(import.meta.dirname, "../..")

// Inside the repository, as dist/ is: what the bundle leaves to Node resolves from node_modules
// beside it. scratch/ is git-ignored.
let outdir = ""
let upstream: NodeHttp.Server
let upstreamUrl = ""
let server: ServerProcess | undefined

beforeAll(async () => {
  Fs.mkdirSync(Path.join(root, "scratch"), { recursive: true })
  outdir = Fs.mkdtempSync(Path.join(root, "scratch", "dist-test-"))
  const bundled = spawnSync(
    process.execPath,
    ["scripts/bundle.mjs", "--entry", "test/fixtures/DistMain.ts", "--outdir", outdir],
    { cwd: root, encoding: "utf8" }
  )
  expect(bundled.stderr).toBe("")
  expect(bundled.status).toBe(0)

  upstream = NodeHttp.createServer((_request, response) => {
    response.writeHead(200, { "content-type": "text/plain" }).end("hello from upstream")
  })
  const echo = new NodeWS.WebSocketServer({ server: upstream, path: "/echo" })
  echo.on("connection", (socket) => socket.on("message", (data) => socket.send(`echo: ${String(data)}`)))
  await new Promise<void>((resolve) => upstream.listen(0, "127.0.0.1", resolve))
  upstreamUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`
})

afterAll(async () => {
  server?.child.kill("SIGKILL")
  upstream?.closeAllConnections()
  await new Promise((resolve) => upstream?.close(resolve))
  if (outdir !== "") Fs.rmSync(outdir, { recursive: true, force: true })
})

describe("dist and CommonJS dependencies", () => {
  it("a bundled main calls out through undici and ws, and stops cleanly", async () => {
    server = await spawnServer({
      main: Path.join(outdir, "DistMain.js"),
      env: { DATABASE_URL: undefined, PROBE_URL: upstreamUrl }
    })
    const get = async (path: string) => {
      const response = await fetch(`http://127.0.0.1:${server!.port}${path}`)
      return { status: response.status, body: await response.text() }
    }
    expect(await get("/probe/undici")).toEqual({ status: 200, body: "hello from upstream" })
    expect(await get("/probe/ws")).toEqual({ status: 200, body: "echo: ping over ws" })

    server.signal("SIGTERM")
    const exit = await server.exited
    expect(exit.code).toBe(0)
    expect(server.stderr()).toBe("")
  })
})
