// npm run bench:workers: the process model measured. Throughput and CPU per request of GET /livez
// with WORKERS unset, 1 and 2 against Fastify under Node's cluster; new connections per second (the
// supervisor hands each one over); startup time and the supervisor's RSS; requests per 100 ms across
// an upgrade under load, written to bench/upgrade-timeline.{svg,png}.
// The load generator runs on core 1 (taskset); the servers are not pinned, so with 2 workers they
// share core 1 with it: on a 2-core machine this shows the cost of the model, not its scaling.
// Then the two upgrade strategies side by side: memory peak, time to complete, throughput dip.
// Env: BENCH_ROUNDS (3), BENCH_SECONDS (4), BENCH_CONNECTIONS (50), BENCH_PG_DIR (a kept embedded
// PostgreSQL data directory under the temp dir), BENCH_WORKERS (1,2), BENCH_PARTS
// (throughput,timeline,strategies: which parts to run), BENCH_STRATEGY_WORKERS (2,4).
import { spawn, spawnSync } from "node:child_process"
import * as Fs from "node:fs"
import * as Http from "node:http"
import * as Os from "node:os"
import * as Path from "node:path"

const root = Path.resolve(import.meta.dirname, "..")

if (process.argv[2] === "load") {
  await loadChild(Number(process.argv[3]), Number(process.argv[4]), process.argv[5])
  process.exit(0)
}

const rounds = Number(process.env.BENCH_ROUNDS ?? 3)
const seconds = Number(process.env.BENCH_SECONDS ?? 4)
const connections = Number(process.env.BENCH_CONNECTIONS ?? 50)
const workerCounts = (process.env.BENCH_WORKERS ?? "1,2").split(",").map(Number)
const parts = new Set((process.env.BENCH_PARTS ?? "throughput,timeline,strategies").split(","))
const strategyWorkers = (process.env.BENCH_STRATEGY_WORKERS ?? "2,4").split(",").map(Number)
const pgDir = process.env.BENCH_PG_DIR ?? Path.join(Os.tmpdir(), "scoped-server-bench-workers-pg")
const hasTaskset = spawnSync("taskset", ["-c", "1", "true"]).status === 0
const onLoadCore = (command, args) => (hasTaskset ? ["taskset", ["-c", "1", command, ...args]] : [command, args])
const clockTicks = Number(spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).stdout.trim() || 100)
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]

const serverEnv = {
  PATH: process.env.PATH,
  LOG_LEVEL: "Info",
  ACCESS_LOG: "false",
  EMBEDDED_POSTGRES_DIR: pgDir,
  RATE_LIMIT: "1000000000"
}

/** The node processes of a tree (the embedded PostgreSQL is left out: it does nothing for /livez). */
const nodeTree = (pid) => {
  const out = [pid]
  for (let index = 0; index < out.length; index++) {
    for (const task of Fs.readdirSync(`/proc/${out[index]}/task`)) {
      const children = Fs.readFileSync(`/proc/${out[index]}/task/${task}/children`, "utf8").trim().split(/\s+/).filter(
        Boolean
      ).map(Number)
      for (const child of children) {
        // Node names its main thread MainThread; the embedded PostgreSQL is the one to leave out.
        if (Fs.readFileSync(`/proc/${child}/comm`, "utf8").trim() !== "postgres") out.push(child)
      }
    }
  }
  return out
}
const cpuSeconds = (pids) =>
  pids.reduce((sum, pid) => {
    try {
      const fields = Fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ")
      return sum + (Number(fields[11]) + Number(fields[12])) / clockTicks
    } catch {
      return sum
    }
  }, 0)
const rssMiB = (pid) => Number(/VmRSS:\s+(\d+)/.exec(Fs.readFileSync(`/proc/${pid}/status`, "utf8"))[1]) / 1024
/**
 * Memory of a process tree two ways: the sum of RSS (counts pages shared between processes once per
 * process: the figure a per-process limit sees) and of PSS (shared pages split among their sharers:
 * what the tree really takes from the host). A process that exits mid-read counts 0.
 */
const treeMemoryMiB = (pids) =>
  pids.reduce((sum, pid) => {
    try {
      const rollup = Fs.readFileSync(`/proc/${pid}/smaps_rollup`, "utf8")
      return {
        rss: sum.rss + Number(/^Rss:\s+(\d+)/m.exec(rollup)[1]) / 1024,
        pss: sum.pss + Number(/^Pss:\s+(\d+)/m.exec(rollup)[1]) / 1024
      }
    } catch {
      return sum
    }
  }, { rss: 0, pss: 0 })

/** Starts a target; resolves when it logs that it is ready (the supervisor's own `ready`, not a worker's). */
const startServer = async (target, port) => {
  const startedAt = performance.now()
  const child = spawn(process.execPath, [Path.join(root, target.script)], {
    env: { ...serverEnv, ...target.env, PORT: String(port), HOST: "127.0.0.1" },
    stdio: ["ignore", "pipe", "inherit"]
  })
  const lines = []
  let buffer = ""
  const waiters = new Set()
  child.stdout.on("data", (chunk) => {
    buffer += chunk
    let newline
    while ((newline = buffer.indexOf("\n")) >= 0) {
      const text = buffer.slice(0, newline)
      buffer = buffer.slice(newline + 1)
      let line
      try {
        line = JSON.parse(text)
      } catch {
        continue
      }
      line.at = performance.now()
      lines.push(line)
      for (const waiter of waiters) waiter()
    }
  })
  const waitFor = (predicate, timeoutMs = 60_000) =>
    new Promise((resolve, reject) => {
      const check = () => {
        const found = lines.find(predicate)
        if (found === undefined) return
        waiters.delete(check)
        clearTimeout(timer)
        resolve(found)
      }
      const timer = setTimeout(() => {
        waiters.delete(check)
        reject(new Error(`${target.name}: timed out waiting for a log line`))
      }, timeoutMs)
      waiters.add(check)
      check()
    })
  const ready = await waitFor((line) => line.message === "ready" && line.annotations?.worker === undefined)
  return { child, lines, waitFor, startupMs: ready.at - startedAt }
}
const stopServer = (child) =>
  new Promise((resolve) => {
    if (child.exitCode !== null) return resolve()
    child.once("exit", resolve)
    child.kill("SIGTERM")
    setTimeout(() => child.kill("SIGKILL"), 15_000).unref()
  })

const autocannon = (port, duration) => {
  const [command, args] = onLoadCore(process.execPath, [
    Path.join(root, "node_modules/autocannon/autocannon.js"),
    "-j",
    "-c",
    String(connections),
    "-d",
    String(duration),
    `http://127.0.0.1:${port}/livez`
  ])
  const result = spawnSync(command, args, { encoding: "utf8", maxBuffer: 64 * 1024 * 1024 })
  const json = JSON.parse(result.stdout)
  return {
    rps: json.requests.average,
    total: json.requests.total,
    p99: json.latency.p99,
    errors: json.errors + json.non2xx
  }
}

/** The load child (on core 1): keep-alive or connection-per-request clients; prints requests per 100 ms. */
async function loadChild(port, durationMs, kind) {
  const bucketMs = 100
  const buckets = new Array(Math.ceil(durationMs / bucketMs)).fill(0)
  const failures = []
  const statuses = {}
  const start = performance.now()
  const agent = new Http.Agent({ keepAlive: true, maxSockets: 32 })
  const one = (fresh) =>
    new Promise((resolve) => {
      Http.get({ host: "127.0.0.1", port, path: "/livez", agent: fresh ? false : agent }, (res) => {
        res.resume()
        res.on("end", () => {
          statuses[res.statusCode] = (statuses[res.statusCode] ?? 0) + 1
          const bucket = Math.floor((performance.now() - start) / bucketMs)
          if (bucket < buckets.length) buckets[bucket]++
          resolve()
        })
      }).on("error", (error) => {
        failures.push(error.code ?? String(error))
        resolve()
      })
    })
  const clients = kind === "fresh"
    ? Array.from({ length: 16 }, () => ({ fresh: true }))
    : [...Array.from({ length: 32 }, () => ({ fresh: false })), ...Array.from({ length: 4 }, () => ({ fresh: true }))]
  await Promise.all(clients.map(async ({ fresh }) => {
    while (performance.now() - start < durationMs) await one(fresh)
  }))
  agent.destroy()
  console.log(JSON.stringify({ buckets, failures, statuses }))
}

const runLoad = (port, durationMs, kind) => {
  const [command, args] = onLoadCore(process.execPath, [
    import.meta.filename,
    "load",
    String(port),
    String(durationMs),
    kind
  ])
  const child = spawn(command, args, { stdio: ["ignore", "pipe", "inherit"] })
  let out = ""
  child.stdout.on("data", (chunk) => (out += chunk))
  return new Promise((resolve) => child.on("exit", () => resolve(JSON.parse(out))))
}

let nextPort = 31_000 + Math.floor(Math.random() * 2_000)
const targets = [
  { name: "scoped-server (one process)", script: "dist/main.js", env: {}, supervised: false },
  ...workerCounts.flatMap((n) => [
    { name: `scoped-server WORKERS=${n}`, script: "dist/main.js", env: { WORKERS: String(n) }, supervised: true },
    {
      name: `fastify cluster ${n}`,
      script: "bench/peers/fastify-cluster.mjs",
      env: { WORKERS: String(n) },
      supervised: false
    }
  ])
]

console.error(
  `node ${process.version}, ${Os.cpus().length} cores (${Os.cpus()[0].model}), load ${
    hasTaskset ? "on core 1" : "unpinned"
  }`
)
const samples = Object.fromEntries(
  targets.map((t) => [t.name, { rps: [], p99: [], cpu: [], fresh: [], startup: [], rss: [], errors: 0 }])
)
for (let round = 1; round <= (parts.has("throughput") ? rounds : 0); round++) {
  for (const target of targets) {
    const port = nextPort++
    const server = await startServer(target, port)
    await sleep(300)
    autocannon(port, 1)
    const pids = nodeTree(server.child.pid)
    const cpuBefore = cpuSeconds(pids)
    const run = autocannon(port, seconds)
    const cpuMicros = ((cpuSeconds(pids) - cpuBefore) * 1e6) / run.total
    const fresh = await runLoad(port, 3_000, "fresh")
    const s = samples[target.name]
    s.rps.push(run.rps)
    s.p99.push(run.p99)
    s.cpu.push(cpuMicros)
    s.fresh.push(fresh.buckets.reduce((a, b) => a + b, 0) / 3)
    s.startup.push(server.startupMs)
    s.rss.push(rssMiB(server.child.pid))
    s.errors += run.errors + fresh.failures.length
    console.error(
      `round ${round} ${target.name}: ${Math.round(run.rps)} req/s, ${cpuMicros.toFixed(1)} µs CPU/request, ${
        Math.round(s.fresh.at(-1))
      } new connections/s, startup ${server.startupMs.toFixed(0)} ms, top process RSS ${s.rss.at(-1).toFixed(1)} MiB`
    )
    await stopServer(server.child)
  }
}

if (parts.has("throughput")) {
  console.log(
    `\nGET /livez, ${connections} keep-alive connections, ${seconds}s x ${rounds} rounds (medians); new connections: 16 clients, one connection per request, 3 s`
  )
  console.log("target                         req/s   p99 ms  µs CPU/req  new conn/s  startup ms  top RSS MiB  errors")
  for (const t of targets) {
    const s = samples[t.name]
    console.log(
      `${t.name.padEnd(29)} ${Math.round(median(s.rps)).toString().padStart(6)} ${
        median(s.p99).toFixed(1).padStart(8)
      } ${median(s.cpu).toFixed(1).padStart(11)} ${Math.round(median(s.fresh)).toString().padStart(11)} ${
        median(s.startup).toFixed(0).padStart(11)
      } ${median(s.rss).toFixed(1).padStart(12)} ${String(s.errors).padStart(7)}`
    )
  }
}

// An upgrade under load: 32 keep-alive clients and 4 connection-per-request clients for 8 s,
// SIGUSR2 at 2 s; requests answered per 100 ms.
if (parts.has("timeline")) {
  const port = nextPort
  const server = await startServer({ name: "timeline", script: "dist/main.js", env: { WORKERS: "2" } }, port)
  await sleep(300)
  const loadStart = performance.now()
  const load = runLoad(port, 8_000, "mixed")
  await sleep(2_000)
  const signalledAt = performance.now() - loadStart
  server.child.kill("SIGUSR2")
  const done = await server.waitFor((line) =>
    line.message === "upgrade" && (line.annotations.step === "completed" || line.annotations.step === "failed")
  )
  const result = await load
  const rss = rssMiB(server.child.pid)
  await stopServer(server.child)
  const readyLine = server.lines.find((line) => line.message === "upgrade" && line.annotations.step === "ready")
  const toOffset = (line) => line.at - (server.lines.find((l) => l.message === "upgrade").at - signalledAt)
  const buckets = result.buckets
  const total = buckets.reduce((a, b) => a + b, 0)
  console.log(
    `\nupgrade under load (WORKERS=2): outcome ${done.annotations.outcome}, ${done.annotations.durationMs} ms; ${total} requests, ${result.failures.length} failed, statuses ${
      JSON.stringify(result.statuses)
    }; min per 100 ms after the clients' first 300 ms ${Math.min(...buckets.slice(3))}, median ${
      median(buckets)
    }; per 100 ms: ${buckets.join(" ")}; supervisor RSS ${rss.toFixed(1)} MiB`
  )
  writePlot(
    buckets,
    signalledAt,
    readyLine === undefined ? undefined : toOffset(readyLine),
    toOffset(done),
    result.failures.length
  )
}

// The two upgrade strategies, alternating, under the same mixed load: the memory of the whole node
// tree sampled every 20 ms from SIGUSR2 to the last old worker's exit (peak over the steady state
// just before), how long the upgrade took, and the lowest throughput per 100 ms while it ran.
if (parts.has("strategies")) {
  const strategies = ["all-at-once", "one-at-a-time"]
  const results = Object.fromEntries(
    strategyWorkers.flatMap((n) =>
      strategies.map((
        strategy
      ) => [`${strategy} ${n}`, { rss: [], pss: [], peakRss: [], peakPss: [], ms: [], dip: [], failed: 0 }])
    )
  )
  for (let round = 1; round <= rounds; round++) {
    for (const n of strategyWorkers) {
      for (const strategy of round % 2 === 1 ? strategies : [...strategies].reverse()) {
        const port = nextPort++
        const server = await startServer(
          { name: strategy, script: "dist/main.js", env: { WORKERS: String(n), UPGRADE_STRATEGY: strategy } },
          port
        )
        await sleep(500)
        const loadStart = performance.now()
        const load = runLoad(port, 12_000, "mixed")
        await sleep(1_500)
        const steady = treeMemoryMiB(nodeTree(server.child.pid))
        let peak = { rss: 0, pss: 0 }
        let sampling = true
        const sampler = (async () => {
          while (sampling) {
            const now = treeMemoryMiB(nodeTree(server.child.pid))
            peak = { rss: Math.max(peak.rss, now.rss), pss: Math.max(peak.pss, now.pss) }
            await sleep(20)
          }
        })()
        const signalledAt = performance.now()
        server.child.kill("SIGUSR2")
        const done = await server.waitFor((line) =>
          line.message === "upgrade" && (line.annotations.step === "completed" || line.annotations.step === "failed")
        )
        const doneAt = performance.now()
        sampling = false
        await sampler
        const result = await load
        await stopServer(server.child)
        const from = Math.floor((signalledAt - loadStart) / 100)
        const to = Math.ceil((doneAt - loadStart) / 100)
        const r = results[`${strategy} ${n}`]
        r.rss.push(steady.rss)
        r.pss.push(steady.pss)
        r.peakRss.push(peak.rss)
        r.peakPss.push(peak.pss)
        r.ms.push(done.annotations.durationMs)
        r.dip.push(Math.min(...result.buckets.slice(from, Math.min(to, result.buckets.length))))
        r.failed += result.failures.length
        console.error(
          `round ${round} ${strategy} WORKERS=${n}: ${done.annotations.outcome} in ${done.annotations.durationMs} ms; RSS sum ${
            steady.rss.toFixed(0)
          } -> peak ${peak.rss.toFixed(0)} MiB, PSS sum ${steady.pss.toFixed(0)} -> peak ${
            peak.pss.toFixed(0)
          } MiB; lowest 100 ms during the upgrade ${r.dip.at(-1)}; failed ${result.failures.length}`
        )
      }
    }
  }
  console.log(
    `\nupgrade strategies (GET /livez, 32 keep-alive + 4 new-connection clients; ${rounds} rounds, medians; memory = node processes, sums)`
  )
  console.log(
    "strategy       workers  steady RSS  peak RSS  steady PSS  peak PSS  PSS peak/steady  upgrade ms  lowest req/100ms  failed"
  )
  for (const [key, r] of Object.entries(results)) {
    const [strategy, n] = key.split(" ")
    console.log(
      `${strategy.padEnd(14)} ${n.padStart(7)} ${median(r.rss).toFixed(0).padStart(11)} ${
        median(r.peakRss).toFixed(0).padStart(9)
      } ${median(r.pss).toFixed(0).padStart(11)} ${median(r.peakPss).toFixed(0).padStart(9)} ${
        median(r.peakPss.map((peak, i) => peak / r.pss[i])).toFixed(2).padStart(16)
      } ${String(median(r.ms)).padStart(11)} ${String(median(r.dip)).padStart(17)} ${String(r.failed).padStart(7)}`
    )
  }
}

function writePlot(buckets, signalledAt, readyAt, doneAt, failures) {
  const width = 900
  const height = 360
  const left = 60
  const bottom = 40
  const top = 40
  const max = Math.max(...buckets) * 1.1
  const x = (ms) => left + (ms / (buckets.length * 100)) * (width - left - 20)
  const y = (count) => height - bottom - (count / max) * (height - bottom - top)
  const bars = buckets.map((count, index) =>
    `<rect x="${x(index * 100).toFixed(1)}" y="${y(count).toFixed(1)}" width="${
      (x(100) - x(0) - 1).toFixed(1)
    }" height="${(height - bottom - y(count)).toFixed(1)}" fill="#3b82f6"/>`
  ).join("")
  const marker = (ms, label, color, row) =>
    ms === undefined
      ? ""
      : `<line x1="${x(ms)}" y1="${top}" x2="${x(ms)}" y2="${
        height - bottom
      }" stroke="${color}" stroke-width="2" stroke-dasharray="5,3"/><text x="${x(ms) + 4}" y="${
        top + 14 + row * 16
      }" font-size="12" fill="${color}">${label}</text>`
  const ticks = Array.from(
    { length: buckets.length / 10 + 1 },
    (_, s) => `<text x="${x(s * 1000)}" y="${height - bottom + 16}" font-size="11" text-anchor="middle">${s}s</text>`
  ).join("")
  const yTicks = [0, 0.5, 1].map((f) => Math.round(f * max / 1.1)).map((v) =>
    `<text x="${left - 6}" y="${y(v) + 4}" font-size="11" text-anchor="end">${v}</text>`
  ).join("")
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="${left}" y="22" font-size="14">Requests answered per 100 ms across a SIGUSR2 upgrade (WORKERS=2, 32 keep-alive + 4 new-connection clients); failed: ${failures}</text>
${bars}
<line x1="${left}" y1="${height - bottom}" x2="${width - 20}" y2="${height - bottom}" stroke="black"/>
<line x1="${left}" y1="${top}" x2="${left}" y2="${height - bottom}" stroke="black"/>
${ticks}${yTicks}
${marker(signalledAt, "SIGUSR2", "#dc2626", 0)}${marker(readyAt, "new generation ready", "#16a34a", 0)}${
    marker(doneAt, "old generation drained, exited 0", "#9333ea", 1)
  }
</svg>`
  const svgPath = Path.join(root, "bench/upgrade-timeline.svg")
  Fs.writeFileSync(svgPath, svg)
  // Rendered by a headless Chromium when there is one (Debian's `chromium`); the SVG stays either way.
  const converted = spawnSync("chromium", [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--hide-scrollbars",
    `--screenshot=${Path.join(root, "bench/upgrade-timeline.png")}`,
    `--window-size=${width},${height}`,
    `file://${svgPath}`
  ], { encoding: "utf8", timeout: 60_000 })
  console.log(
    converted.status === 0
      ? "plot: bench/upgrade-timeline.png"
      : `plot: bench/upgrade-timeline.svg only (chromium: ${converted.error ?? converted.status})`
  )
}
