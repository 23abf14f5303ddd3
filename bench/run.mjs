// npm run bench: scoped-server against its peers in one run, alternating, the server on core 0
// and the load generator on core 1; medians of several rounds and ratios taken within each round.
//   livez: the fast route, vs Effect's own default server, a bare node:http server, Fastify and,
//          when `go` is on the PATH, Go's net/http (built into a temporary directory first)
//   items: GET /api/v1/items?perPage=20 (cache off) on Postgres, vs Effect's HttpApi + sql-pg and
//          Fastify + pg, each running the same query
// The Effect peers are the floor of the stack scoped-server is built on: the same request path
// with nothing of ours on it.
// Env: BENCH_ROUNDS (7), BENCH_SECONDS (4), BENCH_CONNECTIONS (50), BENCH_SCENARIO (livez,items),
//      BENCH_LOAD (wrk when installed; "autocannon" forces it), BENCH_FIXED_RATE (5000, items),
//      BENCH_DATABASE_URL (postgres://postgres@127.0.0.1:5432/scoped_server_bench).
import { SignJWT } from "jose"
import { spawn, spawnSync } from "node:child_process"
import * as Fs from "node:fs"
import * as Http from "node:http"
import * as Os from "node:os"
import * as Path from "node:path"
import pg from "pg"

const root = Path.resolve(import.meta.dirname, "..")
const rounds = Number(process.env.BENCH_ROUNDS ?? 7)
const seconds = Number(process.env.BENCH_SECONDS ?? 4)
const connections = Number(process.env.BENCH_CONNECTIONS ?? 50)
// A rate every target sustains: CPU time per request at this rate is far steadier than peak req/s.
const fixedRate = Number(process.env.BENCH_FIXED_RATE ?? 5_000)
const hasTaskset = spawnSync("taskset", ["-c", "0", "true"]).status === 0
const pin = (
  core,
  command,
  args
) => (hasTaskset ? ["taskset", ["-c", String(core), command, ...args]] : [command, args])
const clockTicks = Number(spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).stdout.trim() || 100)

const goPeer = buildGoPeer()
process.on("exit", () => goPeer && Fs.rmSync(Path.dirname(goPeer), { recursive: true, force: true }))

const benchSecret = "bench-secret-0123456789abcdef0123456789"
const databaseUrl = process.env.BENCH_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/scoped_server_bench"
const serverEnv = {
  LOG_LEVEL: "Warn",
  ACCESS_LOG: "false",
  DATABASE_URL: databaseUrl,
  JWT_SECRET: benchSecret,
  CACHE_TTL: "0",
  RATE_LIMIT: "1000000000"
}
const token = await new SignJWT({}).setProtectedHeader({ alg: "HS256" }).setSubject("bench").setExpirationTime("1d")
  .sign(new TextEncoder().encode(benchSecret))

const scenarios = {
  livez: {
    path: "/livez",
    headers: {},
    // Ratios are against Fastify whichever peers join (Go's only when `go` is on the PATH).
    reference: "fastify",
    fixedRate: 20_000,
    targets: [
      { name: "scoped-server", script: "dist/main.js" },
      { name: "effect", script: "bench/peers/effect.mjs" },
      { name: "node:http", script: "bench/peers/node-http.mjs" },
      { name: "fastify", script: "bench/peers/fastify.mjs" },
      ...(goPeer ? [{ name: "go net/http", command: goPeer }] : [])
    ]
  },
  items: {
    path: "/api/v1/items?perPage=20",
    reference: "fastify+pg",
    headers: { authorization: `Bearer ${token}` },
    fixedRate,
    targets: [
      // The kit with its list cache off (CACHE_TTL=0 above): every target runs the query.
      { name: "scoped-server", script: "dist/main.js" },
      // The same server verifying the token on every request, as the jose peers do.
      { name: "(no JWT cache)", script: "dist/main.js", env: { JWT_CACHE_SIZE: "0" } },
      // As shipped: list pages served from the cache, so no query on most requests.
      { name: "(list cache)", script: "dist/main.js", env: { CACHE_TTL: "30s" } },
      { name: "effect+sql-pg", script: "bench/peers/effect-pg.mjs" },
      { name: "fastify+pg", script: "bench/peers/fastify-pg.mjs" },
      // Fastify as its users deploy it: @fastify/jwt (fast-jwt, synchronous, token cache on).
      { name: "fastify+jwt", script: "bench/peers/fastify-jwt-pg.mjs" }
    ],
    prepare: prepareDatabase
  }
}

// Below Linux's ephemeral range (32768+), where client sockets could already hold a port.
let nextPort = 20_000 + Math.floor(Math.random() * 10_000)
const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

const get = (port, path, headers = {}) =>
  new Promise((resolve) => {
    const request = Http.get({ host: "127.0.0.1", port, path, headers, agent: false }, (response) => {
      response.resume()
      response.on("end", () => resolve(response.statusCode))
    })
    request.on("error", () => resolve(0))
  })

const rssMiB = (pid) => Number(/VmRSS:\s+(\d+)/.exec(Fs.readFileSync(`/proc/${pid}/status`, "utf8"))[1]) / 1024
const cpuSeconds = (pid) => {
  const fields = Fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ")
  return (Number(fields[11]) + Number(fields[12])) / clockTicks
}

const startServer = async (target, scenario) => {
  const port = nextPort++
  const [command, args] = target.command
    ? pin(0, target.command, [])
    : pin(0, process.execPath, [Path.join(root, target.script)])
  const started = performance.now()
  const child = spawn(command, args, {
    env: { ...process.env, ...serverEnv, ...target.env, PORT: String(port), HOST: "127.0.0.1" },
    stdio: ["ignore", "ignore", "inherit"]
  })
  for (;;) {
    if ((await get(port, scenario.path, scenario.headers)) === 200) break
    if (performance.now() - started > 20_000) throw new Error(`${target.name} did not start`)
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

const autocannon = (port, scenario, duration, rate) => {
  const headerArgs = Object.entries(scenario.headers).flatMap(([name, value]) => ["-H", `${name}=${value}`])
  const [command, args] = pin(1, process.execPath, [
    Path.join(root, "node_modules/autocannon/autocannon.js"),
    "-c",
    String(connections),
    "-d",
    String(duration),
    "-j",
    "--latency",
    ...headerArgs,
    ...(rate === undefined ? [] : ["-R", String(rate)]),
    `http://127.0.0.1:${port}${scenario.path}`
  ])
  const result = spawnSync(command, args, { encoding: "utf8", maxBuffer: 64 * 1024 * 1024 })
  if (result.status !== 0) throw new Error(result.stderr)
  const json = JSON.parse(result.stdout)
  return {
    rps: json.requests.average,
    total: json.requests.total,
    p99: json.latency.p99,
    errors: json.errors + json.non2xx
  }
}

/** Go's net/http peer built into a temporary directory, or undefined when `go` is not on the PATH. */
function buildGoPeer() {
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

// Saturation with wrk when installed: autocannon is Node and saturates near the peers' peak on
// one core, so it measures itself as much as the server. The fixed-rate part stays autocannon
// (wrk has no fixed rate); there the server's CPU per request is what is read, not the generator.
const hasWrk = spawnSync("wrk", ["--version"]).error === undefined && process.env.BENCH_LOAD !== "autocannon"
const wrkMillis = (text) => {
  const [, value, unit] = /([\d.]+)(us|ms|s)/.exec(text) ?? []
  return value === undefined ? NaN : Number(value) * (unit === "us" ? 1e-3 : unit === "s" ? 1e3 : 1)
}
const wrk = (port, scenario, duration) => {
  const headerArgs = Object.entries(scenario.headers).flatMap(([name, value]) => ["-H", `${name}: ${value}`])
  const [command, args] = pin(1, "wrk", [
    "-t1",
    "-c",
    String(connections),
    "-d",
    `${duration}s`,
    "--latency",
    ...headerArgs,
    `http://127.0.0.1:${port}${scenario.path}`
  ])
  const result = spawnSync(command, args, { encoding: "utf8" })
  if (result.status !== 0) throw new Error(result.stderr)
  const out = result.stdout
  const total = Number(/(\d+) requests in/.exec(out)?.[1] ?? 0)
  const socketErrors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out)
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0)
  return {
    rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? 0),
    total,
    p99: wrkMillis(/\s99%\s+(\S+)/.exec(out)?.[1] ?? ""),
    errors: non2xx + (socketErrors ? socketErrors.slice(1).reduce((sum, n) => sum + Number(n), 0) : 0)
  }
}
const saturate = (
  port,
  scenario,
  duration
) => (hasWrk ? wrk(port, scenario, duration) : autocannon(port, scenario, duration))

/** The bench database: created if missing, migrated by one start of the server, 1000 items. */
async function prepareDatabase(scenario) {
  const admin = new pg.Client({ connectionString: databaseUrl.replace(/\/[^/]*$/, "/postgres") })
  await admin.connect()
  const name = new URL(databaseUrl).pathname.slice(1)
  const exists = await admin.query("SELECT 1 FROM pg_database WHERE datname = $1", [name])
  if (exists.rowCount === 0) await admin.query(`CREATE DATABASE ${name}`)
  await admin.end()
  const { child } = await startServer(scenario.targets[0], scenario)
  await stopServer(child)
  const client = new pg.Client({ connectionString: databaseUrl })
  await client.connect()
  const { rows } = await client.query("SELECT count(*)::int AS n FROM items")
  if (rows[0].n < 1000) {
    await client.query(
      "INSERT INTO items (name, description) SELECT 'item ' || g, 'seeded for the benchmark' FROM generate_series(1, $1) g",
      [1000 - rows[0].n]
    )
  }
  await client.end()
}

const runScenario = async (name, scenario) => {
  if (scenario.prepare) await scenario.prepare(scenario)
  const targets = scenario.targets
  const samples = Object.fromEntries(
    targets.map((t) => [t.name, { rps: [], p99: [], rss: [], startup: [], cpu: [], errors: 0 }])
  )
  for (let round = 1; round <= rounds; round++) {
    // Alternate the order each round so no target always runs on a warmer machine.
    const order = round % 2 ? targets : [...targets].reverse()
    for (const target of order) {
      const { child, port, startupMs } = await startServer(target, scenario)
      saturate(port, scenario, 1) // warm-up: JIT and connection pools
      const run = saturate(port, scenario, seconds)
      const rss = rssMiB(child.pid)
      const cpuBefore = cpuSeconds(child.pid)
      const fixed = autocannon(port, scenario, Math.max(2, Math.floor(seconds / 2)), scenario.fixedRate)
      const cpuMicros = ((cpuSeconds(child.pid) - cpuBefore) * 1e6) / fixed.total
      await stopServer(child)
      const s = samples[target.name]
      s.rps.push(run.rps)
      s.p99.push(run.p99)
      s.rss.push(rss)
      s.startup.push(startupMs)
      s.cpu.push(cpuMicros)
      s.errors += run.errors + fixed.errors
      console.error(
        `${name} round ${round} ${target.name}: ${Math.round(run.rps)} req/s, p99 ${run.p99} ms, rss ${
          rss.toFixed(1)
        } MiB, startup ${startupMs.toFixed(0)} ms, ${
          cpuMicros.toFixed(1)
        } µs CPU/request at ${scenario.fixedRate} req/s`
      )
    }
  }
  // Ratios are taken within each round (same minutes, same machine state), then the median:
  // this machine's throughput drifts by ±20% between minutes, the ratio much less.
  const reference = scenario.reference
  const ratios = (target, key) => samples[target][key].map((value, round) => value / samples[reference][key][round])
  const ratio = (target, key) => median(ratios(target, key))
  const spread = (target, key) =>
    `${Math.min(...ratios(target, key)).toFixed(2)}–${Math.max(...ratios(target, key)).toFixed(2)}`
  console.log(
    `\n${name}: GET ${scenario.path}, load ${
      hasWrk ? "wrk" : "autocannon"
    } (fixed rate: autocannon), ${connections} keep-alive connections, ${seconds}s x ${rounds} rounds (medians), node ${process.version}, ${
      Os.cpus()[0].model
    }, ${hasTaskset ? "server on core 0, load on core 1" : "unpinned"}`
  )
  console.log(
    `target          req/s      p99 ms   RSS MiB   startup ms   µs CPU/req @${
      scenario.fixedRate / 1000
    }k   req/s vs ${reference}   p99    RSS   CPU/req   errors`
  )
  for (const t of targets) {
    const s = samples[t.name]
    console.log(
      `${t.name.padEnd(14)} ${Math.round(median(s.rps)).toString().padStart(7)} ${
        median(s.p99).toFixed(1).padStart(10)
      } ${median(s.rss).toFixed(1).padStart(9)} ${median(s.startup).toFixed(0).padStart(12)} ${
        median(s.cpu).toFixed(1).padStart(16)
      } ${ratio(t.name, "rps").toFixed(2).padStart(17)} ${ratio(t.name, "p99").toFixed(2).padStart(6)} ${
        ratio(t.name, "rss").toFixed(2).padStart(6)
      } ${ratio(t.name, "cpu").toFixed(2).padStart(9)} ${String(s.errors).padStart(8)}`
    )
  }
  console.log(`per-round ratio spread (min–max) vs ${reference}:`)
  for (const t of targets) {
    console.log(
      `${t.name.padEnd(14)} req/s ${spread(t.name, "rps")}   CPU/req ${spread(t.name, "cpu")}   p99 ${
        spread(t.name, "p99")
      }`
    )
  }
}

for (const name of process.env.BENCH_SCENARIO?.split(",") ?? Object.keys(scenarios)) {
  await runScenario(name, scenarios[name])
}
