// npm run bench:inprocess — µs-level A/B comparisons this machine's socket runs cannot resolve.
// Two variants run at once, one per core, swapping cores each round; each is fed requests over
// in-memory sockets (bench/inprocess/hook.mjs), so no syscall, no load generator, no scheduler
// hand-off between processes sits in the figure: CPU µs per request, medians and per-round ratios.
//   node bench/inprocess.mjs A=dist/main.js B=/tmp/before/main.js [B:ENV=value,...]
// Env: BENCH_PATH (/livez), BENCH_AUTH (1: send a Bearer token for the items routes),
//      BENCH_ROUNDS (10; even, so every round has its core-swapped partner),
//      BENCH_REQUESTS (20000 per round), BENCH_CONNECTIONS (10),
//      BENCH_DATABASE_URL (as npm run bench), BENCH_ENV (KEY=value,... for every variant),
//      BENCH_INTERLEAVE (a batch size: both variants on one core, answering batches in turn).
import { SignJWT } from "jose"
import { spawn, spawnSync } from "node:child_process"
import * as Os from "node:os"
import * as Path from "node:path"

const root = Path.resolve(import.meta.dirname, "..")
const rounds = Number(process.env.BENCH_ROUNDS ?? 10)
const count = Number(process.env.BENCH_REQUESTS ?? 20_000)
const connections = Number(process.env.BENCH_CONNECTIONS ?? 10)
const path = process.env.BENCH_PATH ?? "/livez"
const benchSecret = "bench-secret-0123456789abcdef0123456789"
const token = await new SignJWT({}).setProtectedHeader({ alg: "HS256" }).setSubject("bench").setExpirationTime("1d")
  .sign(new TextEncoder().encode(benchSecret))
const headers = process.env.BENCH_AUTH === "1" ? { authorization: `Bearer ${token}` } : {}
const parseEnv = (text) =>
  Object.fromEntries((text ?? "").split(",").filter(Boolean).map((kv) => kv.split(/=(.*)/s).slice(0, 2)))
const baseEnv = {
  LOG_LEVEL: "Warn",
  ACCESS_LOG: "false",
  DATABASE_URL: process.env.BENCH_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/scoped_server_bench",
  JWT_SECRET: benchSecret,
  CACHE_TTL: "0",
  RATE_LIMIT: "1000000000",
  HOST: "127.0.0.1",
  ...parseEnv(process.env.BENCH_ENV)
}

// `NAME=script` or `NAME=script:KEY=value,KEY=value`
const variants = process.argv.slice(2).map((arg) => {
  const [name, rest] = arg.split(/=(.*)/s)
  const colon = rest.indexOf(":")
  return colon === -1
    ? { name, script: rest, env: {} }
    : { name, script: rest.slice(0, colon), env: parseEnv(rest.slice(colon + 1)) }
})
if (variants.length !== 2) {
  console.error("usage: node bench/inprocess.mjs A=script[:ENV=v,...] B=script[:ENV=v,...]")
  process.exit(2)
}
const interleave = Number(process.env.BENCH_INTERLEAVE ?? 0)
const hasTaskset = spawnSync("taskset", ["-c", "0", "true"]).status === 0
let nextPort = 30_000 + Math.floor(Math.random() * 2_000)

const start = (variant, core) => {
  const args = ["--import", Path.join(root, "bench/inprocess/hook.mjs"), Path.resolve(root, variant.script)]
  const child = spawn(
    hasTaskset ? "taskset" : process.execPath,
    hasTaskset ? ["-c", String(core), process.execPath, ...args] : args,
    {
      env: { ...process.env, ...baseEnv, ...variant.env, PORT: String(nextPort++) },
      stdio: ["ignore", "ignore", "inherit", "ipc"]
    }
  )
  const ask = (bench) =>
    new Promise((resolve, reject) => {
      child.once("message", (message) => (message.error ? reject(new Error(message.error)) : resolve(message.result)))
      child.send({ bench })
    })
  return { child, ask }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

/** Started, answering 200 on the path, and warmed up (JIT, pools) before the first measured batch. */
const ready = async (server, variant) => {
  const started = performance.now()
  for (;;) {
    const result = await server.ask({ path, headers, count: 1, connections: 1 }).catch(() => undefined)
    if (result?.statuses[200] === 1) break
    if (performance.now() - started > 20_000) throw new Error(`${variant.name} did not answer 200 on ${path}`)
    await sleep(20)
  }
  await server.ask({ path, headers, count: Math.min(count, 5_000), connections })
}

/**
 * One round of BENCH_INTERLEAVE: the variants answer batches in turn (A B, B A, ...), so the two
 * halves of each pair ran within milliseconds of each other under the same outside load.
 */
const batchRatios = []
const takeTurns = async (servers, round) => {
  const totals = servers.map(() => ({ cpu: 0, requests: 0, statuses: {} }))
  for (let batch = 0; batch * interleave < count; batch++) {
    const order = (batch + round) % 2 === 0 ? [0, 1] : [1, 0]
    const cpu = [0, 0]
    for (const i of order) {
      const result = await servers[i].ask({ path, headers, count: interleave, connections })
      cpu[i] = result.cpuMicros
      totals[i].cpu += result.cpuMicros * interleave
      totals[i].requests += interleave
      for (const [status, n] of Object.entries(result.statuses)) {
        totals[i].statuses[status] = (totals[i].statuses[status] ?? 0) + n
      }
    }
    batchRatios.push(cpu[0] / cpu[1])
  }
  return totals.map(({ cpu, requests, statuses }) => ({ cpuMicros: cpu / requests, statuses }))
}

const samples = variants.map(() => [])
const stats = variants.map(() => ({}))
for (let round = 0; round < rounds; round++) {
  // Each variant on each core in turn: neither always gets the quieter core.
  // Interleaved: both on one core (alternating per round), taking turns batch by batch.
  const servers = variants.map((variant, i) => start(variant, interleave ? round % 2 : (i + round) % 2))
  await Promise.all(servers.map((server, i) => ready(server, variants[i])))
  const results = interleave
    ? await takeTurns(servers, round)
    : await Promise.all(servers.map((server) => server.ask({ path, headers, count, connections })))
  results.forEach((result, i) => {
    samples[i].push(result.cpuMicros)
    for (const [status, n] of Object.entries(result.statuses)) stats[i][status] = (stats[i][status] ?? 0) + n
  })
  await Promise.all(servers.map(({ child }) =>
    new Promise((resolve) => {
      child.once("exit", resolve)
      child.kill("SIGTERM")
      setTimeout(() => child.kill("SIGKILL"), 5_000).unref()
    })
  ))
  console.error(
    `round ${round + 1}: ${variants.map((v, i) => `${v.name} ${results[i].cpuMicros.toFixed(2)} µs`).join(", ")}`
  )
}
const roundRatios = samples[0].map((a, round) => a / samples[1][round])
const ratios = [...roundRatios].sort((a, b) => a - b)
// The two cores of a shared VM need not be equally fast (here one ran ~1.5x slower for hours):
// a round's ratio then carries the core factor. Rounds 2k and 2k+1 swap cores, so the geometric
// mean of their ratios cancels it: (A0/B1 * A1/B0) = (A0/B0) * (A1/B1).
const pairRatios = []
for (let round = 0; round + 1 < roundRatios.length; round += 2) {
  pairRatios.push(Math.sqrt(roundRatios[round] * roundRatios[round + 1]))
}
pairRatios.sort((a, b) => a - b)
const onCore = (i, core) => samples[i].filter((_, round) => (i + round) % 2 === core)
console.log(
  `\nin-process GET ${path}: ${count} requests x ${rounds} rounds over ${connections} in-memory connections, node ${process.version}, ${
    Os.cpus()[0].model
  }`
)
variants.forEach((v, i) => {
  console.log(
    `${v.name.padEnd(12)} median ${median(samples[i]).toFixed(2)} µs CPU/request (min ${
      Math.min(...samples[i]).toFixed(2)
    }, max ${Math.max(...samples[i]).toFixed(2)}), statuses ${JSON.stringify(stats[i])}`
  )
})
console.log(
  `${variants[0].name}/${variants[1].name}: median ${median(ratios).toFixed(3)}, per-round ratios ${
    ratios[0].toFixed(3)
  }–${ratios[ratios.length - 1].toFixed(3)}; difference ${(median(samples[0]) - median(samples[1])).toFixed(2)} µs`
)
if (interleave) {
  batchRatios.sort((a, b) => a - b)
  const at = (q) => batchRatios[Math.min(batchRatios.length - 1, Math.floor(q * batchRatios.length))]
  console.log(
    `interleaved batches of ${interleave}: per-batch ratio median ${median(batchRatios).toFixed(3)}, IQR ${
      at(0.25).toFixed(3)
    }–${at(0.75).toFixed(3)} over ${batchRatios.length} batch pairs`
  )
} else if (pairRatios.length > 0) {
  console.log(
    `core-paired (rounds 2k, 2k+1): median ${median(pairRatios).toFixed(3)}, range ${pairRatios[0].toFixed(3)}–${
      pairRatios[pairRatios.length - 1].toFixed(3)
    } over ${pairRatios.length} pairs; per core, medians ${
      [0, 1].map((core) =>
        `core ${core}: ${variants.map((v, i) => `${v.name} ${median(onCore(i, core)).toFixed(2)}`).join(" / ")}`
      ).join(", ")
    } µs`
  )
}
