/**
 * The supervisor seen from outside, for the process tests: start dist/main.js with WORKERS=2, ask
 * which worker answers, put it under keep-alive and connection-per-request load, wait for upgrades.
 */
import * as Fs from "node:fs"
import * as Http from "node:http"
import * as Os from "node:os"
import * as Path from "node:path"
import { expect } from "vitest"
import { keepAliveLoad, type LoadResult } from "./load.ts"
import { mainJs, type ServerProcess, spawnServer } from "./process.ts"

const running = new Set<ServerProcess>()
const temporary: Array<string> = []

/** For `afterEach`: SIGKILLs every server `start` started (and still tracked), removes `removeLater` dirs. */
export const cleanup = () => {
  for (const server of running) server.child.kill("SIGKILL")
  running.clear()
  for (const dir of temporary.splice(0)) Fs.rmSync(dir, { recursive: true, force: true })
}

/** A directory `cleanup` removes. */
export const removeLater = (dir: string) => {
  temporary.push(dir)
  return dir
}

/**
 * A copy of dist/ that a test may break, removed by `cleanup`: `<tmp>/dist/` beside a
 * `<tmp>/node_modules` link to the project's, as dist/ is deployed (its CommonJS dependencies load
 * from `../node_modules`). Returns the copy's directory (holding `main.js`).
 */
export const distCopy = () => {
  const root = removeLater(Fs.mkdtempSync(Path.join(Os.tmpdir(), "scoped-server-dist-")))
  const dir = Path.join(root, "dist")
  Fs.cpSync(Path.dirname(mainJs), dir, { recursive: true })
  Fs.symlinkSync(Path.resolve(mainJs, "../../node_modules"), Path.join(root, "node_modules"))
  return dir
}

/** The test has waited for this one's exit itself: `cleanup` leaves it alone. */
export const forget = (server: ServerProcess) => running.delete(server)

export interface StartOptions {
  /** Wrap the command (`$NODE`, `$MAIN`), e.g. to run another build or set LISTEN_PID=$$. */
  readonly shell?: string
  /** Inherited fds from 3 on (a listening socket for socket activation). */
  readonly extraStdio?: ReadonlyArray<number>
}

/**
 * dist/main.js with WORKERS=2 (unless `env` says otherwise), once its workers are ready. Upgrades
 * keep the old generation on probation for 300 ms, not 15 s: every upgrade goes through it, and a
 * test of ten upgrades still takes seconds; the probation tests set their own.
 */
export const start = async (env: Record<string, string | undefined> = {}, options: StartOptions = {}) => {
  const server = await spawnServer({
    env: { WORKERS: "2", ACCESS_LOG: "false", UPGRADE_PROBATION: "300ms", ...env },
    ...(options.shell === undefined ? {} : { shell: options.shell }),
    ...(options.extraStdio === undefined ? {} : { extraStdio: options.extraStdio })
  })
  running.add(server)
  await server.waitForLine((line) => line.message === "workers ready", 30_000)
  return server
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** One request on a connection of its own; resolves with the worker that answered ("gen.pid"). */
export const ask = (port: number, path = "/livez", timeoutMs = 10_000) =>
  new Promise<{ status: number; worker: string; body: string }>((resolve, reject) => {
    const request = Http.get({ host: "127.0.0.1", port, path, agent: false }, (res) => {
      let body = ""
      res.setEncoding("utf8").on("data", (chunk: string) => (body += chunk))
      res.on("end", () => resolve({ status: res.statusCode!, worker: String(res.headers["x-worker"]), body }))
    }).on("error", reject)
    request.setTimeout(timeoutMs, () => request.destroy(new Error("timeout")))
  })

/** The pid in a worker tag ("gen.pid"). */
export const pidOf = (worker: string) => Number(worker.split(".")[1])

/** Asks until every one of `count` workers has answered (at most `tries` times); their tags. */
export const workersAnswering = async (port: number, count = 2, tries = 40) => {
  const workers = new Set<string>()
  for (let i = 0; i < tries && workers.size < count; i++) workers.add((await ask(port)).worker)
  return workers
}

export interface NewConnectionResult {
  readonly answered: number
  readonly statuses: Record<number, number>
  readonly lost: Array<string>
}

/** A client that opens a new connection for every request, until `stop`. */
export const newConnectionLoad = async (
  port: number,
  stop: Promise<unknown>,
  clients = 4
): Promise<NewConnectionResult> => {
  let stopped = false
  void stop.then(() => (stopped = true))
  const lost: Array<string> = []
  const statuses: Record<number, number> = {}
  let answered = 0
  await Promise.all(Array.from({ length: clients }, async () => {
    while (!stopped) {
      try {
        const { status } = await ask(port)
        statuses[status] = (statuses[status] ?? 0) + 1
        answered++
      } catch (error) {
        lost.push((error as NodeJS.ErrnoException).code ?? String(error))
      }
    }
  }))
  return { answered, statuses, lost }
}

/** Both kinds of load at once, until `stop` resolves. */
export const load = (port: number, stop: Promise<unknown>) => {
  let warm!: () => void
  const warmed = new Promise<void>((resolve) => (warm = resolve))
  const keepAlive = keepAliveLoad({ port, path: "/livez", clients: 10, stop, onWarm: warm })
  const fresh = newConnectionLoad(port, stop)
  return { warmed, done: Promise.all([keepAlive, fresh]) }
}

/** A promise and the function that resolves it, for `stop`. */
export const stopper = () => {
  let stop!: () => void
  const stopped = new Promise<void>((resolve) => (stop = resolve))
  return { stop, stopped }
}

export const expectNoFailure = ([keepAlive, fresh]: [LoadResult, NewConnectionResult]) => {
  expect(keepAlive.lost).toEqual([])
  expect(keepAlive.refused).toBe(0)
  expect(Object.keys(keepAlive.statuses)).toEqual(["200"])
  expect(fresh.lost).toEqual([])
  expect(Object.keys(fresh.statuses)).toEqual(["200"])
  expect(keepAlive.answered + fresh.answered).toBeGreaterThan(100)
}

export const upgradeLines = (server: ServerProcess) => server.lines.filter((line) => line.message === "upgrade")

const finished = (server: ServerProcess) =>
  upgradeLines(server).filter((line) => line.annotations.step === "completed" || line.annotations.step === "failed")

/** The `count`th upgrade's last line (`completed` or `failed`), once it is written. */
export const upgradeDone = (server: ServerProcess, count: number) =>
  server.waitForLine(() => finished(server).length >= count, 30_000).then(() => finished(server)[count - 1]!)

export const openFds = (pid: number) => Fs.readdirSync(`/proc/${pid}/fd`).length

/** The pids of `pid`'s child processes. */
export const children = (pid: number) =>
  Fs.readdirSync(`/proc/${pid}/task`).flatMap((task) =>
    Fs.readFileSync(`/proc/${pid}/task/${task}/children`, "utf8").trim().split(/\s+/)
  ).filter((pid) => pid !== "")

/** Whether a process with this pid exists (a zombie counts as gone: it runs nothing). */
export const alive = (pid: number) => {
  try {
    return !/^\S+ \(.*\) Z/.test(Fs.readFileSync(`/proc/${pid}/stat`, "utf8"))
  } catch {
    return false
  }
}
