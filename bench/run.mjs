// npm run bench: scoped-server against its peers in one run, alternating, server on core 0 and
// the load generator on core 1; prints medians of several rounds and the ratios to Fastify.
import { spawn, spawnSync } from "node:child_process"
import * as Fs from "node:fs"
import * as Http from "node:http"
import * as Os from "node:os"
import * as Path from "node:path"

const root = Path.resolve(import.meta.dirname, "..")
const rounds = Number(process.env.BENCH_ROUNDS ?? 5)
const seconds = Number(process.env.BENCH_SECONDS ?? 5)
const connections = Number(process.env.BENCH_CONNECTIONS ?? 50)
// A rate every target sustains: CPU time per request at this rate is far steadier than peak req/s.
const fixedRate = Number(process.env.BENCH_FIXED_RATE ?? 20_000)
const clockTicks = Number(spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).stdout.trim() || 100)
const cpuSeconds = (pid) => {
  const fields = Fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ")
  return (Number(fields[11]) + Number(fields[12])) / clockTicks
}
const hasTaskset = spawnSync("taskset", ["-c", "0", "true"]).status === 0
const pin = (core, command, args) => (hasTaskset ? ["taskset", ["-c", String(core), command, ...args]] : [command, args])

const allTargets = [
  { name: "scoped-server", script: Path.join(root, "dist/main.js") },
  { name: "node:http", script: Path.join(root, "bench/peers/node-http.mjs") },
  { name: "fastify", script: Path.join(root, "bench/peers/fastify.mjs") }
]
const targets = process.env.BENCH_ONLY ? allTargets.filter((t) => process.env.BENCH_ONLY.split(",").includes(t.name)) : allTargets

let nextPort = 40_000 + Math.floor(Math.random() * 10_000)
const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

const get = (port, path) =>
  new Promise((resolve) => {
    const request = Http.get({ host: "127.0.0.1", port, path, agent: false }, (response) => {
      response.resume()
      response.on("end", () => resolve(response.statusCode))
    })
    request.on("error", () => resolve(0))
  })

const rssKiB = (pid) => {
  const status = Fs.readFileSync(`/proc/${pid}/status`, "utf8")
  return Number(/VmRSS:\s+(\d+)/.exec(status)[1])
}

const startServer = async (target) => {
  const port = nextPort++
  const [command, args] = pin(0, process.execPath, [target.script])
  const started = performance.now()
  const child = spawn(command, args, {
    env: { ...process.env, PORT: String(port), HOST: "127.0.0.1", LOG_LEVEL: "Warn" },
    stdio: ["ignore", "ignore", "inherit"]
  })
  for (;;) {
    if ((await get(port, "/livez")) === 200) break
    if (performance.now() - started > 10_000) throw new Error(`${target.name} did not start`)
    await sleep(2)
  }
  return { child, port, startupMs: performance.now() - started }
}

const stopServer = (child) =>
  new Promise((resolve) => {
    child.once("exit", resolve)
    child.kill("SIGTERM")
    setTimeout(() => child.kill("SIGKILL"), 5_000).unref()
  })

const autocannon = (port, duration, rate) => {
  const [command, args] = pin(1, process.execPath, [
    Path.join(root, "node_modules/autocannon/autocannon.js"),
    "-c", String(connections), "-d", String(duration), "-j", "--latency",
    ...(rate === undefined ? [] : ["-R", String(rate)]),
    `http://127.0.0.1:${port}/livez`
  ])
  const result = spawnSync(command, args, { encoding: "utf8", maxBuffer: 64 * 1024 * 1024 })
  if (result.status !== 0) throw new Error(result.stderr)
  const json = JSON.parse(result.stdout)
  return { rps: json.requests.average, total: json.requests.total, p99: json.latency.p99, errors: json.errors + json.non2xx }
}

const samples = Object.fromEntries(targets.map((t) => [t.name, { rps: [], p99: [], rss: [], startup: [], cpu: [], errors: 0 }]))
for (let round = 1; round <= rounds; round++) {
  // Alternate the order each round so no target always runs on a warmer machine.
  const order = round % 2 ? targets : [...targets].reverse()
  for (const target of order) {
    const { child, port, startupMs } = await startServer(target)
    autocannon(port, 1) // warm-up: JIT and connection pools
    const run = autocannon(port, seconds)
    const rss = rssKiB(child.pid)
    const cpuBefore = cpuSeconds(child.pid)
    const fixed = autocannon(port, Math.max(2, Math.floor(seconds / 2)), fixedRate)
    const cpuMicros = ((cpuSeconds(child.pid) - cpuBefore) * 1e6) / fixed.total
    await stopServer(child)
    const s = samples[target.name]
    s.rps.push(run.rps)
    s.p99.push(run.p99)
    s.rss.push(rss / 1024)
    s.startup.push(startupMs)
    s.cpu.push(cpuMicros)
    s.errors += run.errors + fixed.errors
    console.error(`round ${round} ${target.name}: ${Math.round(run.rps)} req/s, p99 ${run.p99} ms, rss ${(rss / 1024).toFixed(1)} MiB, startup ${startupMs.toFixed(0)} ms, ${cpuMicros.toFixed(1)} µs CPU/request at ${fixedRate} req/s`)
  }
}

// Ratios are taken within each round (same minutes, same machine state), then the median of
// those: this machine's throughput drifts by ±20% between minutes, the ratio much less.
const reference = samples.fastify ? "fastify" : targets[0].name
const pairedRatio = (name, key) => median(samples[name][key].map((value, round) => value / samples[reference][key][round]))
const rows = targets.map((t) => {
  const s = samples[t.name]
  return {
    name: t.name, rps: median(s.rps), p99: median(s.p99), rss: median(s.rss), startup: median(s.startup), cpu: median(s.cpu), errors: s.errors,
    rpsRatio: pairedRatio(t.name, "rps"), rssRatio: pairedRatio(t.name, "rss"), cpuRatio: pairedRatio(t.name, "cpu")
  }
})
console.log(`\nGET /livez, ${connections} keep-alive connections, ${seconds}s x ${rounds} rounds (medians), node ${process.version}, ${Os.cpus()[0].model}, ${hasTaskset ? "server on core 0, load on core 1" : "unpinned"}`)
console.log(`target          req/s      p99 ms   RSS MiB   startup ms   µs CPU/req @${fixedRate / 1000}k   vs ${reference} req/s   RSS   CPU/req   errors`)
for (const r of rows) {
  console.log(
    `${r.name.padEnd(14)} ${Math.round(r.rps).toString().padStart(7)} ${r.p99.toFixed(1).padStart(10)} ${r.rss.toFixed(1).padStart(9)} ${r.startup.toFixed(0).padStart(12)} ${r.cpu.toFixed(1).padStart(17)} ${r.rpsRatio.toFixed(2).padStart(18)} ${r.rssRatio.toFixed(2).padStart(5)} ${r.cpuRatio.toFixed(2).padStart(9)} ${String(r.errors).padStart(8)}`
  )
}
