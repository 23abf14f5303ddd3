/**
 * DEBUG_ROUTES from the built server: mounted with a warning on loopback, refused on an address
 * other hosts can reach unless DEBUG_ROUTES_UNSAFE=true says so too.
 */
import { afterAll, describe, expect, it } from "vitest"
import { request } from "../support/http.ts"
import { type ServerProcess, spawnServer } from "../support/process.ts"

const running = new Set<ServerProcess>()
afterAll(() => {
  for (const server of running) server.child.kill("SIGKILL")
})

const warning = (server: ServerProcess) =>
  server.lines.find((line) => line.level === "WARN" && String(line.message).startsWith("DEBUG_ROUTES=true"))

describe("DEBUG_ROUTES", () => {
  it("on loopback: mounted, with a warning at startup", async () => {
    const server = await spawnServer({ env: { DEBUG_ROUTES: "true", HOST: "127.0.0.1" } })
    running.add(server)
    expect(warning(server)).toBeDefined()
    expect((await request(server.port, "/debug/sleep?ms=1")).status).toBe(200)
    server.signal("SIGTERM")
    expect((await server.exited).code).toBe(0)
  })

  it("on every interface: refused at startup, exit 1, one line naming both variables", async () => {
    const server = await spawnServer({ env: { DEBUG_ROUTES: "TRUE", HOST: "0.0.0.0" }, waitReady: false })
    running.add(server)
    expect((await server.exited).code).toBe(1)
    const failures = server.lines.filter((line) => line.message === "startup failed")
    expect(failures).toHaveLength(1)
    expect(String(failures[0]!.annotations.error)).toMatch(
      /^invalid configuration: DEBUG_ROUTES=true is refused on .*0\.0\.0\.0.*which other hosts can reach.*DEBUG_ROUTES_UNSAFE=true$/
    )
    expect(server.lines.some((line) => line.message === "ready")).toBe(false)
    expect(server.stderr()).toBe("")
  })

  it("on every interface with DEBUG_ROUTES_UNSAFE=true: mounted, with the warning", async () => {
    const server = await spawnServer({ env: { DEBUG_ROUTES: "true", DEBUG_ROUTES_UNSAFE: "yes", HOST: "0.0.0.0" } })
    running.add(server)
    expect(warning(server)?.annotations.unsafe).toBe(true)
    expect((await request(server.port, "/debug/sleep?ms=1")).status).toBe(200)
    server.signal("SIGTERM")
    expect((await server.exited).code).toBe(0)
  })

  it("unset: no routes and no warning", async () => {
    const server = await spawnServer({ env: { HOST: "0.0.0.0" } })
    running.add(server)
    expect(warning(server)).toBeUndefined()
    expect((await request(server.port, "/debug/sleep?ms=1")).status).toBe(404)
    server.signal("SIGTERM")
    expect((await server.exited).code).toBe(0)
  })
})
