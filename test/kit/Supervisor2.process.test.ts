/**
 * The supervisor's edges seen from outside: upgrade signals sent to a worker, the supervisor
 * SIGKILLed, a crash loop, a forced shutdown, socket activation, systemd notify, a stopped worker.
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import { type LogLine } from "../support/process.ts"
import {
  alive,
  ask,
  children,
  cleanup,
  distCopy,
  forget,
  load,
  pidOf,
  removeLater,
  sleep,
  start,
  stopper,
  upgradeDone,
  upgradeLines,
  workersAnswering
} from "../support/supervisor.ts"

const helpers = new Set<ChildProcess>()
afterEach(() => {
  for (const helper of helpers) helper.kill("SIGKILL")
  helpers.clear()
  cleanup()
})

const until = async (condition: () => boolean, timeoutMs: number, stepMs = 50) => {
  const deadline = performance.now() + timeoutMs
  while (!condition() && performance.now() < deadline) await sleep(stepMs)
  return condition()
}

const refuses = (port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = Net.connect(port, "127.0.0.1", () => {
      socket.destroy()
      resolve(false)
    })
    socket.on("error", (error: NodeJS.ErrnoException) => resolve(error.code === "ECONNREFUSED"))
  })

const at = (line: LogLine) => Date.parse(line.timestamp)

describe("supervisor (WORKERS=2), process level", () => {
  it("SIGUSR2 and SIGHUP sent to a worker upgrade: the signalled worker drains and exits 0; the supervisor's pid is unchanged; /health names each worker's generation", async () => {
    const server = await start()
    const supervisor = server.child.pid!
    /** /health from both workers: each names its own generation and pid, as its X-Worker header does. */
    const healthNames = async (generation: number) => {
      const named = new Map<string, unknown>()
      for (let i = 0; i < 40 && named.size < 2; i++) {
        const answer = await ask(server.port, "/health")
        expect(answer.status).toBe(200)
        named.set(answer.worker, (JSON.parse(answer.body) as { worker: unknown }).worker)
      }
      expect(named.size).toBe(2)
      for (const [tag, worker] of named) expect(worker).toEqual({ generation, pid: pidOf(tag) })
      return [...named.keys()]
    }
    for (const [round, signal] of [[1, "SIGUSR2"], [2, "SIGHUP"]] as const) {
      const workers = await healthNames(round)
      const signalled = pidOf(workers[0]!)
      process.kill(signalled, signal)
      const done = await upgradeDone(server, round)
      expect(done.annotations).toMatchObject({ step: "completed", outcome: "ok", generation: round + 1 })
      const starting = upgradeLines(server).filter((line) => line.annotations.step === "starting")[round - 1]!
      expect(starting.annotations).toMatchObject({ signal, requestedBy: signalled })
      const retired = done.annotations.retired as Array<{ pid: number; exit: string }>
      expect(retired.find((worker) => worker.pid === signalled)?.exit).toBe("code 0")
      expect(await until(() => !alive(signalled), 2_000)).toBe(true)
      expect(server.child.pid).toBe(supervisor)
      expect(server.child.exitCode).toBeNull()
      await healthNames(round + 1)
    }
  })

  it("SIGKILL of the supervisor under load: every worker notices the lost channel, drains and exits; the port refuses", async () => {
    const server = await start()
    const workers = children(server.child.pid!).map(Number)
    expect(workers).toHaveLength(2)
    const { stop, stopped } = stopper()
    const traffic = load(server.port, stopped)
    await traffic.warmed
    await sleep(200)
    const killedAt = performance.now()
    server.signal("SIGKILL")
    const gone = await until(() => workers.every((pid) => !alive(pid)), 10_000)
    const tookMs = performance.now() - killedAt
    stop()
    await traffic.done
    expect(gone).toBe(true)
    console.log(`workers gone ${Math.round(tookMs)} ms after the supervisor's SIGKILL`)
    expect(await refuses(server.port)).toBe(true)
    // The workers share the supervisor's stdout: their last words arrive before it closes.
    await server.exited
    forget(server)
    for (const pid of workers) {
      const said = server.lines.filter((line) => String(line.annotations.worker).endsWith(`.${pid}`))
      const lost = said.findIndex((line) => line.message === "lost the supervisor's channel; draining")
      expect(lost, String(pid)).toBeGreaterThanOrEqual(0)
      expect(said.slice(lost).some((line) => line.message === "phase" && line.annotations.phase === "draining")).toBe(
        true
      )
    }
  })

  it("a crash loop: replacements that exit at startup are retried with doubling delays, then the supervisor stops with exit 1 and says why", async () => {
    const dir = distCopy()
    const server = await start(
      { RESTART_DELAY: "200ms", RESTART_LIMIT: "4", RESTART_WINDOW: "1m" },
      { shell: `exec $NODE ${Path.join(dir, "main.js")}` }
    )
    const workers = children(server.child.pid!).map(Number)
    // Every worker started from now on fails at startup.
    Fs.writeFileSync(Path.join(dir, "main.js"), "console.error('broken build'); process.exit(3)\n")
    process.kill(workers[0]!, "SIGKILL")
    const exit = await server.exited
    forget(server)
    expect(exit.code).toBe(1)
    const crash = server.lines.find((line) => line.message === "worker exited unexpectedly")!
    expect(crash.annotations).toMatchObject({ pid: workers[0], exit: "SIGKILL", crashesInWindow: 1 })
    const failures = server.lines.filter((line) => line.message === "replacement worker failed")
    expect(failures.map((line) => line.annotations.crashesInWindow)).toEqual([2, 3, 4])
    for (const line of failures) expect(String(line.annotations.error)).toMatch(/exited before it was ready \(code 3\)/)
    // No spin: 200, 400, 800 ms between the crash and each failed restart.
    const times = [crash, ...failures].map(at)
    const gaps = times.slice(1).map((time, index) => time - times[index]!)
    console.log(`gaps between restarts (ms): ${gaps.join(", ")}`)
    gaps.forEach((gap, index) => expect(gap).toBeGreaterThanOrEqual(200 * 2 ** index - 5))
    const why = server.lines.filter((line) => line.message === "workers keep failing; stopping")
    expect(why).toHaveLength(1)
    expect(why[0]!.annotations).toMatchObject({ failures: 4, windowMs: 60_000 })
    expect(workers.every((pid) => !alive(pid))).toBe(true)
  })

  it("a second SIGTERM during a drain held open by a slow request forces everything: exit 1 at once, no worker left", async () => {
    const server = await start({ DEBUG_ROUTES: "true", SHUTDOWN_TIMEOUT: "60s" })
    const workers = children(server.child.pid!).map(Number)
    const held = ask(server.port, "/debug/sleep?ms=50000", 60_000).then(
      (answer) => `answered ${answer.status}`,
      (error: NodeJS.ErrnoException) => error.code ?? error.message
    )
    await sleep(300)
    server.signal("SIGTERM")
    // Both workers drain; the held request keeps one of them (and so the supervisor) waiting.
    await server.waitForLine((line) => line.message === "phase" && line.annotations.phase === "closing", 10_000)
    await sleep(500)
    expect(server.child.exitCode).toBeNull()
    const second = server.signal("SIGTERM")
    const exit = await server.exited
    forget(server)
    console.log(`exit ${Math.round(exit.at - second)} ms after the second SIGTERM`)
    expect(exit.code).toBe(1)
    expect(exit.at - second).toBeLessThan(5_000)
    expect(server.lines.some((line) => line.message === "shutdown forced" && line.annotations.worker === undefined))
      .toBe(true)
    expect(await held).not.toBe("answered 200")
    expect(workers.every((pid) => !alive(pid))).toBe(true)
  })

  it("socket activation: the supervisor adopts systemd's fd 3 (LISTEN_PID = its pid); both workers answer on it, and an upgrade keeps it", async () => {
    const listener = Net.createServer()
    await new Promise<void>((resolve) => listener.listen(0, "127.0.0.1", resolve))
    const port = (listener.address() as Net.AddressInfo).port
    const fd = (listener as unknown as { _handle: { fd: number } })._handle.fd
    try {
      const server = await start({ LISTEN_FDS: "1", PORT: undefined }, {
        shell: "LISTEN_PID=$$ exec $NODE $MAIN",
        extraStdio: [fd]
      })
      // The supervisor has its own copy now; ours would otherwise accept (and stall) some connections.
      listener.close()
      expect(server.port).toBe(port)
      const before = await workersAnswering(port)
      expect([...before].every((worker) => worker.startsWith("1."))).toBe(true)
      expect(before.size).toBe(2)
      server.signal("SIGUSR2")
      expect((await upgradeDone(server, 1)).annotations).toMatchObject({ step: "completed", generation: 2 })
      const after = await workersAnswering(port)
      expect(after.size).toBe(2)
      expect([...after].every((worker) => worker.startsWith("2."))).toBe(true)
      server.signal("SIGTERM")
      expect((await server.exited).code).toBe(0)
      forget(server)
    } finally {
      listener.close()
    }
  })

  it("systemd notify: READY=1 once workers are ready, RELOADING=1 (with MONOTONIC_USEC) then READY=1 around an upgrade, STOPPING=1; MAINPID is the supervisor", async () => {
    const dir = removeLater(Fs.mkdtempSync(Path.join(Os.tmpdir(), "scoped-server-notify-")))
    const socket = Path.join(dir, "notify.sock")
    const receiver = spawn("python3", ["-u", "-c", notifyReceiver, socket], { stdio: ["ignore", "pipe", "inherit"] })
    helpers.add(receiver)
    const messages: Array<{ pid: number; text: string; monotonicUsec: number }> = []
    let buffer = ""
    receiver.stdout!.setEncoding("utf8").on("data", (chunk: string) => {
      buffer += chunk
      for (let index; (index = buffer.indexOf("\n")) >= 0; buffer = buffer.slice(index + 1)) {
        messages.push(JSON.parse(buffer.slice(0, index)))
      }
    })
    expect(await until(() => Fs.existsSync(socket), 5_000)).toBe(true)
    /** Each datagram but systemd-notify's barriers, as its assignments (their order is systemd-notify's). */
    const sent = () =>
      messages.filter((message) => message.text !== "BARRIER=1").map((message) => ({
        ...message,
        fields: Object.fromEntries(message.text.split("\n").map((line) => line.split("=", 2) as [string, string]))
      }))
    const kinds = () =>
      sent().map(({ fields }) => Object.keys(fields).filter((key) => key !== "MAINPID" && key !== "MONOTONIC_USEC"))

    const server = await start({ NOTIFY_SOCKET: socket })
    const pid = server.child.pid!
    expect(await until(() => sent().length >= 1, 5_000)).toBe(true)
    expect(kinds()).toEqual([["READY"]])

    server.signal("SIGUSR2")
    await upgradeDone(server, 1)
    expect(await until(() => sent().length >= 3, 5_000)).toBe(true)
    expect(kinds()).toEqual([["READY"], ["RELOADING"], ["READY"]])
    // CLOCK_MONOTONIC, as systemd reads it: the receiver's own monotonic clock at arrival is just after it.
    const reloading = sent()[1]!
    const lagUsec = reloading.monotonicUsec - Number(reloading.fields.MONOTONIC_USEC)
    expect(lagUsec).toBeGreaterThanOrEqual(0)
    expect(lagUsec).toBeLessThan(5_000_000)

    server.signal("SIGTERM")
    expect((await server.exited).code).toBe(0)
    forget(server)
    // systemd-notify returned only once the receiver had read it; its printout may still be on the way.
    expect(await until(() => sent().length >= 4, 5_000)).toBe(true)
    expect(kinds()).toEqual([["READY"], ["RELOADING"], ["READY"], ["STOPPING"]])
    for (const { fields } of sent()) expect(fields.MAINPID).toBe(String(pid))
    // As root (CAP_SYS_ADMIN), systemd-notify sends with the supervisor's pid as the sender; otherwise
    // the kernel refuses that and it falls back to its own pid (then the unit needs NotifyAccess=all).
    const senders = new Set(sent().map((message) => message.pid))
    if (process.getuid?.() === 0) expect([...senders]).toEqual([pid])
    else expect(senders.has(pid)).toBe(false)
  })

  // What a container gives it: the supervisor as PID 1 of its own pid namespace (as `docker run`
  // without --init, or a Kubernetes pod's container). PID 1 gets no default signal actions, and
  // every exited child must be reaped by it.
  it.skipIf(process.getuid?.() !== 0)(
    "as PID 1 of a pid namespace: a killed worker is reaped and replaced, and SIGTERM drains and exits 0",
    async () => {
      const server = await start({ RESTART_DELAY: "50ms" }, {
        shell: "exec unshare --pid --fork --mount-proc $NODE $MAIN"
      })
      const supervisor = Number(children(server.child.pid!)[0])
      expect(Fs.readFileSync(`/proc/${supervisor}/status`, "utf8")).toMatch(
        new RegExp(`^NSpid:\\s+${supervisor}\\s+1$`, "m")
      )
      const [victim] = children(supervisor).map(Number)
      process.kill(victim!, "SIGKILL")
      await server.waitForLine((line) => line.message === "worker replaced", 20_000)
      // Reaped, not left a zombie: its /proc entry is gone.
      expect(await until(() => !Fs.existsSync(`/proc/${victim}`), 5_000)).toBe(true)
      expect(children(supervisor)).toHaveLength(2)
      expect((await workersAnswering(server.port)).size).toBe(2)
      process.kill(supervisor, "SIGTERM")
      const exit = await server.exited
      forget(server)
      expect(exit.code).toBe(0)
      const stopped = server.lines.find((line) => line.message === "workers stopped")!
      expect((stopped.annotations.workers as Array<{ exit: string }>).map((worker) => worker.exit)).toEqual([
        "code 0",
        "code 0"
      ])
    }
  )

  it("a stopped worker (SIGSTOP) is logged as not taking connections and gets none while the other can; after SIGCONT it serves what it was handed and gets new ones again", async () => {
    // The heartbeat would kill the stopped worker after 5 s; this test continues it instead.
    const server = await start({ WORKER_HEARTBEAT_TIMEOUT: "1m" })
    const open: Array<Net.Socket> = []
    /** A connection of its own with one request, kept open afterwards, so each worker's load only grows. */
    const connect = (timeoutMs: number) =>
      new Promise<string>((resolve) => {
        const socket = Net.connect(server.port, "127.0.0.1")
        open.push(socket)
        let head = ""
        const timer = setTimeout(() => resolve("no answer"), timeoutMs)
        socket.on("data", (chunk) => {
          head += chunk
          const tag = /^x-worker: (\S+)\r$/im.exec(head)
          if (tag !== null && head.includes("\r\n\r\n")) {
            clearTimeout(timer)
            resolve(tag[1]!)
          }
        })
        socket.on("error", () => {})
        socket.write("GET /livez HTTP/1.1\r\nHost: stuck\r\n\r\n")
      })
    try {
      const workers = [...await workersAnswering(server.port)]
      expect(workers).toHaveLength(2)
      const [stuck, other] = workers as [string, string]
      process.kill(pidOf(stuck), "SIGSTOP")
      // Connections keep arriving until the supervisor says the stopped worker is stuck; some are
      // handed to it first (it cannot say it received them), and wait there.
      let seen = false
      const stuckLine = server.waitForLine(
        (line) => line.message === "worker not taking connections" && line.annotations.pid === pidOf(stuck),
        30_000
      ).finally(() => (seen = true))
      const handed: Array<Promise<string>> = []
      while (!seen) {
        handed.push(connect(60_000))
        await sleep(50)
      }
      await stuckLine
      // From then on every new connection goes to the other worker.
      const after: Array<string> = []
      for (let i = 0; i < 20; i++) after.push(await connect(30_000))
      expect(after).toEqual(after.map(() => other))
      process.kill(pidOf(stuck), "SIGCONT")
      // What it was handed while stopped is served now, not lost.
      const early = await Promise.all(handed)
      console.log(
        `while stopped: ${
          early.filter((worker) => worker === stuck).length
        } of ${early.length} connections waited for it`
      )
      expect(early).toContain(stuck)
      expect(early.filter((worker) => worker !== stuck && worker !== other)).toEqual([])
      await server.waitForLine(
        (line) => line.message === "worker taking connections again" && line.annotations.pid === pidOf(stuck),
        30_000
      )
      // It reads its backlog, reports it, and is the least loaded again.
      const again = new Set<string>()
      for (let i = 0; i < 40 && !again.has(stuck); i++) again.add(await connect(30_000))
      expect(again).toContain(stuck)
    } finally {
      open.forEach((socket) => socket.destroy())
    }
  })
})

/** Binds NOTIFY_SOCKET and prints each datagram, its sender's pid and CLOCK_MONOTONIC at arrival, as JSON lines. */
const notifyReceiver = `
import json, os, socket, struct, sys, time
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
s.bind(path)
while True:
    data, ancillary, flags, _ = s.recvmsg(4096, socket.CMSG_SPACE(struct.calcsize("3i")) + socket.CMSG_SPACE(16 * 4))
    now = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    pid = -1
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid = struct.unpack("3i", payload[:12])[0]
        elif level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            # systemd-notify's barrier: it waits until the receiver closes the fd it sent.
            for fd in struct.unpack("%di" % (len(payload) // 4), payload[: len(payload) - len(payload) % 4]):
                os.close(fd)
    print(json.dumps({"pid": pid, "text": data.decode().strip(), "monotonicUsec": now}), flush=True)
`
