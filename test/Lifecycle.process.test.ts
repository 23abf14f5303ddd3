/**
 * The lifecycle seen from outside: the built dist/main.js under real keep-alive load,
 * real signals, real sockets. Every request is answered or refused at connect; none is lost.
 */
import { afterEach, describe, expect, it } from "vitest"
import { keepAliveLoad } from "./support/load.ts"
import { phases, type ServerProcess, spawnServer } from "./support/process.ts"

const running = new Set<ServerProcess>()
const start = async (env: Record<string, string> = {}) => {
  const server = await spawnServer({ env: { DEBUG_ROUTES: "true", ...env } })
  running.add(server)
  return server
}
afterEach(() => {
  for (const server of running) server.child.kill("SIGKILL")
  running.clear()
})

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

describe("shutdown under keep-alive load", () => {
  it("loses no request on a fast route across SIGTERM and exits 0 within a second", async () => {
    const server = await start()
    let warm!: () => void
    const warmed = new Promise<void>((resolve) => (warm = resolve))
    const load = keepAliveLoad({ port: server.port, path: "/livez", clients: 20, stop: server.exited, onWarm: warm })
    await warmed
    await sleep(300)
    const signalledAt = server.signal("SIGTERM")
    const [result, exit] = await Promise.all([load, server.exited])

    expect(result.lost).toEqual([])
    expect(exit.code).toBe(0)
    expect(exit.at - signalledAt).toBeLessThan(1_000)
    expect(result.answered).toBeGreaterThan(100)
    expect(Object.keys(result.statuses)).toEqual(["200"])
    // Each of the 20 connections was told to close rather than being closed under it.
    expect(result.closeHeaders).toBeGreaterThanOrEqual(1)
    const stopped = phases(server.lines).find((phase) => phase.phase === "stopped")!
    expect(stopped.exitCode).toBe(0)
  })

  it("answers every request in flight on a slow route and exits soon after, though clients keep sending", async () => {
    const server = await start()
    let warm!: () => void
    const warmed = new Promise<void>((resolve) => (warm = resolve))
    const load = keepAliveLoad({ port: server.port, path: "/debug/sleep?ms=300", clients: 20, stop: server.exited, onWarm: warm })
    await warmed
    await sleep(150)
    const signalledAt = server.signal("SIGTERM")
    const [result, exit] = await Promise.all([load, server.exited])

    expect(result.lost).toEqual([])
    expect(Object.keys(result.statuses)).toEqual(["200"])
    expect(exit.code).toBe(0)
    // In-flight requests need up to 300 ms more; nothing new is started on a closing connection.
    expect(exit.at - signalledAt).toBeLessThan(300 + 500)
    const stopped = phases(server.lines).find((phase) => phase.phase === "stopped")!
    expect(stopped.requestsDuringDrain).toBeGreaterThanOrEqual(20)
  })
})
