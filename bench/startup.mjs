// Startup of several builds, alternating: time from spawn to the first 200 on /livez, as
// `npm run bench` measures it (the server pinned to core 0). One start of each first fills Node's
// compile cache, so every measured start is a second start, as in production.
//   node bench/startup.mjs dist/main.js /tmp/before/main.js …   (the first is the reference)
// Env: BENCH_ROUNDS (11), BENCH_DATABASE_URL (required: a PostgreSQL of the run's own, so the
// database's own start-up is not measured; the database must exist).
import { spawn, spawnSync } from "node:child_process"
import * as Http from "node:http"

const variants = process.argv.slice(2)
const rounds = Number(process.env.BENCH_ROUNDS ?? 11)
const databaseUrl = process.env.BENCH_DATABASE_URL
if (variants.length === 0 || databaseUrl === undefined) {
  console.error("usage: BENCH_DATABASE_URL=postgres://… node bench/startup.mjs <main.js> [<main.js> …]")
  process.exit(2)
}
const hasTaskset = spawnSync("taskset", ["-c", "0", "true"]).status === 0
let nextPort = 20_000 + Math.floor(Math.random() * 10_000)

const livez = (port) =>
  new Promise((resolve) => {
    const request = Http.get({ host: "127.0.0.1", port, path: "/livez", agent: false }, (response) => {
      response.resume()
      response.on("end", () => resolve(response.statusCode))
    })
    request.on("error", () => resolve(0))
  })
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

const startupMs = async (script) => {
  const port = nextPort++
  const [command, args] = hasTaskset
    ? ["taskset", ["-c", "0", process.execPath, script]]
    : [process.execPath, [script]]
  const started = performance.now()
  const child = spawn(command, args, {
    env: {
      ...process.env,
      LOG_LEVEL: "Warn",
      ACCESS_LOG: "false",
      DATABASE_URL: databaseUrl,
      JWT_SECRET: "bench-secret-0123456789abcdef0123456789",
      PORT: String(port),
      HOST: "127.0.0.1"
    },
    stdio: ["ignore", "ignore", "inherit"]
  })
  for (;;) {
    if ((await livez(port)) === 200) break
    if (performance.now() - started > 20_000) throw new Error(`${script} did not start`)
    await sleep(2)
  }
  const elapsed = performance.now() - started
  await new Promise((resolve) => {
    child.once("exit", resolve)
    child.kill("SIGTERM")
  })
  return elapsed
}

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

const results = new Map(variants.map((variant) => [variant, []]))
for (const variant of variants) await startupMs(variant)
for (let round = 0; round < rounds; round++) {
  // Each round starts with the next variant, so none always runs right after another.
  for (let i = 0; i < variants.length; i++) {
    const variant = variants[(i + round) % variants.length]
    results.get(variant).push(await startupMs(variant))
  }
}
const reference = results.get(variants[0])
for (const [variant, times] of results) {
  const ratios = times.map((time, i) => time / reference[i])
  console.log(
    `${variant}: median ${median(times).toFixed(0)} ms (${Math.min(...times).toFixed(0)}–${
      Math.max(...times).toFixed(0)
    }), per-round ratio to ${variants[0]} ${median(ratios).toFixed(2)} (${Math.min(...ratios).toFixed(2)}–${
      Math.max(...ratios).toFixed(2)
    })`
  )
}
