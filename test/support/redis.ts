/**
 * A private redis-server (from PATH) on a free port, so a test can SIGKILL, SIGSTOP and restart it.
 */
import { Effect, Scope } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import * as Net from "node:net"

const freePort = Effect.callback<number>((resume) => {
  const server = Net.createServer()
  server.listen(0, "127.0.0.1", () => {
    const { port } = server.address() as Net.AddressInfo
    server.close(() => resume(Effect.succeed(port)))
  })
})

const ping = (port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = Net.connect(port, "127.0.0.1")
    socket.setTimeout(200, () => socket.destroy())
    socket.once("error", () => resolve(false))
    socket.once("close", () => resolve(false))
    socket.once("data", (data) => {
      resolve(data.toString().startsWith("+PONG"))
      socket.destroy()
    })
    socket.write("PING\r\n")
  })

const launch = (port: number) =>
  Effect.acquireRelease(
    Effect.gen(function*() {
      const child = spawn("redis-server", [
        "--port",
        String(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no"
      ], { stdio: "ignore" })
      for (let attempt = 0; attempt < 200; attempt++) {
        if (yield* Effect.promise(() => ping(port))) return child
        yield* Effect.sleep(25)
      }
      child.kill("SIGKILL")
      return yield* Effect.die(new Error(`redis-server did not start on port ${port}`))
    }),
    (child) => stopChild(child)
  )

const stopChild = (child: ChildProcess) =>
  Effect.callback<void>((resume) => {
    if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
    child.once("exit", () => resume(Effect.void))
    child.kill("SIGCONT")
    child.kill("SIGKILL")
  })

export const privateRedis = Effect.gen(function*() {
  const scope = yield* Effect.scope
  const port = yield* freePort
  let child = yield* launch(port)
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    pid: () => child.pid!,
    signal: (signal: NodeJS.Signals) => Effect.sync(() => void child.kill(signal)),
    kill: Effect.suspend(() => stopChild(child)),
    restart: Effect.gen(function*() {
      child = yield* launch(port).pipe(Scope.provide(scope))
    })
  }
})
