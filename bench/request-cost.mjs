// CPU per request of what differs between builds or settings, on /livez, resolved on a noisy
// machine: every variant is a live dist/main.js pinned to core 0 with requests fed in-process
// (bench/inprocess/hook.mjs, the driver `npm run bench:inprocess` uses: 16 keep-alive connections), rounds alternate between variants, and the result is the median of the
// per-round µs/request with its spread (min–max of the middle half).
//   node bench/request-cost.mjs                    METRICS=true vs METRICS=false on dist/main.js
//   BENCH_BASELINE=/path/to/other/dist/main.js     adds that build (METRICS=true) as a third variant
// Env: BENCH_ROUNDS (21), BENCH_REQUESTS per round (20000).
import { spawn, spawnSync } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"

const root = Path.resolve(import.meta.dirname, "..")
const rounds = Number(process.env.BENCH_ROUNDS ?? 21)
const requests = Number(process.env.BENCH_REQUESTS ?? 20_000)
const hasTaskset = spawnSync("taskset", ["-c", "0", "true"]).status === 0
const hook = Path.join(root, "bench/inprocess/hook.mjs")

const variants = [
  { name: "metrics on", main: Path.join(root, "dist/main.js"), env: { METRICS: "true" } },
  { name: "METRICS=false", main: Path.join(root, "dist/main.js"), env: { METRICS: "false" } },
  ...(process.env.BENCH_BASELINE
    ? [{ name: "baseline build", main: process.env.BENCH_BASELINE, env: { METRICS: "true" } }]
    : [])
]

const start = (variant) =>
  new Promise((resolve, reject) => {
    const args = ["--import", hook, variant.main]
    const [command, argv] = hasTaskset ? ["taskset", ["-c", "0", process.execPath, ...args]] : [process.execPath, args]
    const child = spawn(command, argv, {
      cwd: Path.dirname(Path.dirname(variant.main)),
      env: {
        PATH: process.env.PATH,
        PORT: "0",
        HOST: "127.0.0.1",
        ACCESS_LOG: "false",
        // Each variant its own embedded database unless one is given.
        ...(process.env.BENCH_DATABASE_URL
          ? { DATABASE_URL: process.env.BENCH_DATABASE_URL }
          : {
            EMBEDDED_POSTGRES_DIR: Path.join(Os.tmpdir(), `request-cost-${process.pid}-${variants.indexOf(variant)}`)
          }),
        ...variant.env
      },
      stdio: ["ignore", "pipe", "inherit", "ipc"]
    })
    let out = ""
    child.stdout.setEncoding("utf8").on("data", (chunk) => {
      out += chunk
      if (process.env.BENCH_DEBUG) process.stderr.write(chunk)
      if (out.includes("\"message\":\"ready\"")) resolve(child)
    })
    child.once("exit", (code) => reject(new Error(`${variant.name} exited (${code}) before it was ready:\n${out}`)))
  })

/** `count` GET /livez on 16 keep-alive connections; CPU µs per request, every answer a 200. */
const ask = (child, count) =>
  new Promise((resolve, reject) => {
    child.once("message", (message) => {
      if (message.error) return reject(new Error(message.error))
      const statuses = Object.keys(message.result.statuses)
      if (statuses.length !== 1 || statuses[0] !== "200") {
        return reject(new Error(`answers other than 200: ${JSON.stringify(message.result.statuses)}`))
      }
      resolve(message.result)
    })
    child.send({ bench: { path: "/livez", count, connections: 16 } })
  })

const quartiles = (values) => {
  const sorted = [...values].sort((a, b) => a - b)
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * (sorted.length - 1) + 0.5))]
  return { median: at(0.5), q1: at(0.25), q3: at(0.75) }
}

const children = []
try {
  for (const variant of variants) children.push(await start(variant))
  // Warm up every variant (JIT, caches) before anything counts.
  for (const child of children) for (let i = 0; i < 3; i++) await ask(child, requests)
  const perRequest = variants.map(() => [])
  const differences = variants.map(() => [])
  for (let round = 0; round < rounds; round++) {
    // Alternating order each round, so drift (another tenant's load) falls on both sides alike.
    const order = round % 2 === 0 ? children.map((_, i) => i) : children.map((_, i) => children.length - 1 - i)
    const thisRound = []
    for (const index of order) {
      const result = await ask(children[index], requests)
      thisRound[index] = result.cpuMicros
      perRequest[index].push(thisRound[index])
    }
    for (let index = 0; index < children.length; index++) differences[index].push(thisRound[index] - thisRound[1])
  }
  const format = (n) => n.toFixed(2)
  console.log(
    `rounds ${rounds} × ${requests} GET /livez, in-process, ${hasTaskset ? "server pinned to core 0" : "unpinned"}`
  )
  for (let index = 0; index < variants.length; index++) {
    const all = quartiles(perRequest[index])
    const diff = quartiles(differences[index])
    console.log(
      `${variants[index].name.padEnd(16)} ${format(all.median)} µs/request (IQR ${format(all.q1)}–${format(all.q3)})` +
        (index === 1
          ? ""
          : `; vs METRICS=false, paired per round: ${format(diff.median)} µs (IQR ${format(diff.q1)}–${
            format(diff.q3)
          })`)
    )
  }
} finally {
  // SIGTERM: each stops its embedded database on the way out.
  await Promise.all(children.map((child) =>
    new Promise((resolve) => {
      child.once("exit", resolve)
      child.kill("SIGTERM")
    })
  ))
  if (!process.env.BENCH_DATABASE_URL) {
    variants.forEach((_, index) =>
      Fs.rmSync(Path.join(Os.tmpdir(), `request-cost-${process.pid}-${index}`), { recursive: true, force: true })
    )
  }
}
