// npm run bench:shutdown: what each server does to keep-alive clients across SIGTERM. Clients send
// back to back, each on its own keep-alive connection; SIGTERM arrives mid-load; every request ends
// answered, refused at connect (nothing was sent: safe to retry) or lost (sent, then reset or hung up).
// Targets: scoped-server, Effect's default server, node:http, Fastify, and Go's net/http when `go`
// is on the PATH, each with the graceful close its documentation gives.
// Env: BENCH_ROUNDS (5), BENCH_CLIENTS (20), BENCH_DATABASE_URL as for npm run bench.
import { spawn, spawnSync } from "node:child_process"
import * as Fs from "node:fs"
import * as Http from "node:http"
import * as Os from "node:os"
import * as Path from "node:path"
import pg from "pg"

const root = Path.resolve(import.meta.dirname, "..")
const rounds = Number(process.env.BENCH_ROUNDS ?? 5)
const clients = Number(process.env.BENCH_CLIENTS ?? 20)
const databaseUrl = process.env.BENCH_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/scoped_server_bench"
const hasTaskset = spawnSync("taskset", ["-c", "0", "true"]).status === 0
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** Go's peer built into a temporary directory, or undefined when `go` is not on the PATH. */
const buildGoPeer = () => {
  if (spawnSync("go", ["version"], { stdio: "ignore" }).status !== 0) {
    console.error("go is not on the PATH: the Go net/http peer is left out")
    return undefined
  }
  const binary = Path.join(Fs.mkdtempSync(Path.join(Os.tmpdir(), "scoped-server-bench-go-")), "go-nethttp")
  const result = spawnSync("go", ["build", "-o", binary, "."], {
    cwd: Path.join(root, "bench/peers/go-nethttp"),
    encoding: "utf8"
  })
  if (result.status !== 0) throw new Error(`go build of the net/http peer failed:\n${result.stderr}`)
  return binary
}
const goPeer = buildGoPeer()
process.on("exit", () => goPeer && Fs.rmSync(Path.dirname(goPeer), { recursive: true, force: true }))

const node = (script, env = {}) => ({ command: process.execPath, args: [Path.join(root, script)], env })
const targets = [
  {
    name: "scoped-server",
    ...node("dist/main.js", { LOG_LEVEL: "Warn", ACCESS_LOG: "false", DATABASE_URL: databaseUrl })
  },
  { name: "effect", ...node("bench/peers/effect.mjs") },
  { name: "node:http", ...node("bench/peers/node-http.mjs") },
  { name: "fastify", ...node("bench/peers/fastify.mjs") },
  ...(goPeer ? [{ name: "go net/http", command: goPeer, args: [], env: {} }] : [])
]

// scoped-server proves its database at startup: the bench database must exist (empty is enough).
const admin = new pg.Client({ connectionString: databaseUrl.replace(/\/[^/]*$/, "/postgres") })
await admin.connect()
const databaseName = new URL(databaseUrl).pathname.slice(1)
if ((await admin.query("SELECT 1 FROM pg_database WHERE datname = $1", [databaseName])).rowCount === 0) {
  await admin.query(`CREATE DATABASE ${databaseName}`)
}
await admin.end()

let nextPort = 20_000 + Math.floor(Math.random() * 10_000)

const get = (port) =>
  new Promise((resolve) => {
    const request = Http.get({ host: "127.0.0.1", port, path: "/livez", agent: false }, (response) => {
      response.resume()
      response.on("end", () => resolve(response.statusCode))
    })
    request.on("error", () => resolve(0))
  })

const start = async (target) => {
  const port = nextPort++
  const [command, args] = hasTaskset
    ? ["taskset", ["-c", "0", target.command, ...target.args]]
    : [target.command, target.args]
  const child = spawn(command, args, {
    env: { ...process.env, ...target.env, PORT: String(port), HOST: "127.0.0.1" },
    stdio: ["ignore", "ignore", "inherit"]
  })
  const exited = new Promise((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal, at: performance.now() }))
  )
  const started = performance.now()
  while ((await get(port)) !== 200) {
    if (performance.now() - started > 20_000) throw new Error(`${target.name} did not start`)
    await sleep(5)
  }
  return { child, port, exited }
}

/** One client: its own keep-alive connection, requests back to back until refused or the server is gone. */
const client = async (port, gone, tally) => {
  const agent = new Http.Agent({ keepAlive: true, maxSockets: 1 })
  let warm = false
  try {
    while (!tally.exited) {
      const outcome = await new Promise((resolve) => {
        const request = Http.request({ host: "127.0.0.1", port, path: "/livez", agent }, (response) => {
          response.resume()
          response.on("end", () => resolve("answered"))
          response.on("error", (error) => resolve(error.code ?? error.message))
        })
        request.setTimeout(10_000, () => request.destroy(new Error("timeout")))
        request.on("error", (error) => resolve(error.code === "ECONNREFUSED" ? "refused" : error.code ?? error.message))
        request.end()
      })
      if (outcome === "answered") {
        tally.answered++
        if (!warm) {
          warm = true
          tally.warm++
        }
      } else if (outcome === "refused") {
        tally.refused++
        break
      } else {
        tally.lost.push(outcome)
        // After a reset the client opens a new connection: a server that still accepts may still serve it.
      }
    }
  } finally {
    agent.destroy()
  }
  await gone
}

const round = async (target) => {
  const { child, exited, port } = await start(target)
  const tally = { answered: 0, refused: 0, lost: [], warm: 0, exited: false }
  void exited.then(() => (tally.exited = true))
  const load = Promise.all(Array.from({ length: clients }, () => client(port, exited, tally)))
  while (tally.warm < clients) await sleep(5)
  await sleep(500)
  const answeredBefore = tally.answered
  const signalled = performance.now()
  child.kill("SIGTERM")
  const killer = setTimeout(() => child.kill("SIGKILL"), 30_000)
  const exit = await exited
  clearTimeout(killer)
  await load
  return {
    ...tally,
    answeredAfter: tally.answered - answeredBefore,
    exitCode: exit.code ?? exit.signal,
    stopMs: exit.at - signalled
  }
}

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

const describeLost = (lost) => {
  const kinds = {}
  for (const kind of lost) kinds[kind] = (kinds[kind] ?? 0) + 1
  const text = Object.entries(kinds).map(([kind, n]) => `${kind} ${n}`).join(", ")
  return text === "" ? "" : ` (${text})`
}

const results = Object.fromEntries(targets.map((target) => [target.name, []]))
for (let r = 1; r <= rounds; r++) {
  for (const target of r % 2 ? targets : [...targets].reverse()) {
    const result = await round(target)
    results[target.name].push(result)
    console.error(
      `round ${r} ${target.name}: ${result.answeredAfter} answered after SIGTERM, ${result.refused} refused at connect, ${result.lost.length} lost${
        describeLost(result.lost)
      }, exit ${result.exitCode} after ${result.stopMs.toFixed(0)} ms`
    )
  }
}

console.log(
  `\nshutdown: GET /livez from ${clients} keep-alive clients back to back, SIGTERM after 0.5 s of load, ${rounds} rounds, node ${process.version}, ${
    Os.cpus()[0].model
  }`
)
console.log(
  "target          lost/round (median)   lost in all rounds   how lost              answered after SIGTERM (median)   exit codes   stop ms (median)"
)
for (const target of targets) {
  const runs = results[target.name]
  const lost = runs.map((run) => run.lost.length)
  console.log(
    `${target.name.padEnd(15)} ${String(median(lost)).padStart(19)} ${
      String(lost.reduce((a, b) => a + b, 0)).padStart(20)
    }   ${(describeLost(runs.flatMap((run) => run.lost)).slice(2, -1) || "-").padEnd(21)} ${
      String(median(runs.map((run) => run.answeredAfter))).padStart(31)
    }   ${[...new Set(runs.map((run) => run.exitCode))].join(",").padStart(10)} ${
      median(runs.map((run) => run.stopMs)).toFixed(0).padStart(18)
    }`
  )
}
