// The worker-side cost of a rate-limit decision with WORKERS (supervisor/Shared.ts) against the one-process
// memory store, in one process, alternating rounds: `node bench/shared-limits.mjs` (Node ≥ 23: it imports the
// TypeScript sources). The channel serializes every message as Node's IPC does (JSON), so the reports' cost is paid.
import { Effect } from "effect"
import * as RateCounter from "../src/kit/internal/RateCounter.ts"
import { makeHub } from "../src/kit/internal/supervisor/Hub.ts"
import * as Shared from "../src/kit/internal/supervisor/Shared.ts"

const rounds = Number(process.env.ROUNDS ?? 9)
const perRound = Number(process.env.REQUESTS ?? 200_000)
const windowMs = 60_000

/** Today's one-process store: the take of RateLimit.makeMemoryStore, on the same counters. */
const memoryTake = () => {
  const counters = RateCounter.makeCounters(100_000)
  return (key, limit) => {
    const now = Date.now()
    const counter = counters.at(key, now)
    if (!RateCounter.fits(counter, limit)) return { _tag: "Exceeded", limit, retryAfterMs: counter.expiresAt - now }
    RateCounter.add(counter, 1, limit, windowMs)
    return { _tag: "Allowed", limit, remaining: limit - counter.count, resetAfterMs: counter.expiresAt - now }
  }
}

/** A worker joined to a hub over a JSON channel delivered on the next turn, as a pipe would. */
const sharedTake = async (workers) => {
  const hub = makeHub({ now: Date.now, maxKeys: 100_000, barrierTimeoutMs: 5_000, onUnresponsive: () => {} })
  let handler
  const peer = { send: (message) => setImmediate(() => handler(JSON.parse(JSON.stringify(message)))) }
  const transport = {
    send: (message) => {
      const text = JSON.stringify(message)
      setImmediate(() => hub.handle(peer, JSON.parse(text)))
      return true
    },
    listen: (h) => {
      handler = h
      return () => {}
    }
  }
  const shared = await Effect.runPromise(Shared.join(transport, workers))
  const limiter = Shared.makeLimiter(shared, { now: Date.now, maxKeys: 100_000, onError: () => Effect.void })
  return { limiter, remote: (key, limit) => Effect.runPromise(limiter.remote(key, limit, windowMs)) }
}

/** CPU µs per decision over `perRound` decisions in batches of 100 (each batch yields to the event loop). */
const measure = async (decide, keys, limit) => {
  const start = process.cpuUsage()
  for (let i = 0; i < perRound; i += 100) {
    for (let j = 0; j < 100; j++) await decide(keys[(i + j) % keys.length], limit)
    await new Promise((resolve) => setImmediate(resolve))
  }
  const used = process.cpuUsage(start)
  return (used.user + used.system) / perRound
}

const scenarios = [
  { name: "one subject, RATE_LIMIT=1e9", keys: ["sub:bench"], limit: 1e9 },
  {
    name: "1000 addresses, limit 1000",
    keys: Array.from({ length: 1000 }, (_, i) => `addr:10.0.${i >> 8}.${i & 255}`),
    limit: 1000
  }
]

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]

for (const workers of [2, 4]) {
  for (const scenario of scenarios) {
    const deltas = []
    const base = []
    const shared = []
    for (let round = 0; round < rounds; round++) {
      const take = memoryTake()
      const { limiter, remote } = await sharedTake(workers)
      // Every key seen once (a worker's first request of a key is the supervisor's).
      for (const key of scenario.keys) await remote(key, scenario.limit)
      const decideShared = (key, limit) => {
        const local = limiter.local(key, limit, windowMs)
        return local === undefined ? remote(key, limit) : local
      }
      const order = round % 2 === 0 ? ["memory", "shared"] : ["shared", "memory"]
      const result = {}
      for (const which of order) {
        result[which] = await measure(which === "memory" ? take : decideShared, scenario.keys, scenario.limit)
      }
      base.push(result.memory)
      shared.push(result.shared)
      deltas.push(result.shared - result.memory)
    }
    const sorted = [...deltas].sort((a, b) => a - b)
    console.log(
      `WORKERS=${workers} ${scenario.name}: memory ${median(base).toFixed(3)} µs, shared ${
        median(shared).toFixed(3)
      } µs, difference median ${median(deltas).toFixed(3)} µs (rounds ${sorted[0].toFixed(3)}…${
        sorted.at(-1).toFixed(3)
      })`
    )
  }
}
