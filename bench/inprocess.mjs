// npm run bench:inprocess — µs-level A/B comparisons this machine's socket runs cannot resolve.
// Two variants run at once, one per core, swapping cores each round; each is fed requests over
// in-memory sockets (bench/inprocess/hook.mjs), so no syscall, no load generator, no scheduler
// hand-off between processes sits in the figure: CPU µs per request, medians and per-round ratios.
//   node bench/inprocess.mjs A=dist/main.js B=/tmp/before/main.js [B:ENV=value,...]
// Env: BENCH_PATH (/livez), BENCH_AUTH (1: send a Bearer token for the items routes),
//      BENCH_ROUNDS (9), BENCH_REQUESTS (20000 per round), BENCH_CONNECTIONS (10),
//      BENCH_DATABASE_URL (as npm run bench), BENCH_ENV (KEY=value,... for every variant).
import { SignJWT } from "jose"
import { spawn, spawnSync } from "node:child_process"
import * as Os from "node:os"
import * as Path from "node:path"

const root = Path.resolve(import.meta.dirname, "..")
const rounds = Number(process.env.BENCH_ROUNDS ?? 9)
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

const samples = variants.map(() => [])
const stats = variants.map(() => ({}))
for (let round = 0; round < rounds; round++) {
  // Each variant on each core in turn: neither always gets the quieter core.
  const servers = variants.map((variant, i) => start(variant, (i + round) % 2))
  await Promise.all(servers.map((server, i) => ready(server, variants[i])))
  const results = await Promise.all(servers.map((server) => server.ask({ path, headers, count, connections })))
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
const ratios = samples[0].map((a, round) => a / samples[1][round]).sort((a, b) => a - b)
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
