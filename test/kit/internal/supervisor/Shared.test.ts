/**
 * The workers' shared state in one process: a hub and several workers joined over channels the test
 * delivers by hand, so bursts, lag, restarts and races are played out exactly, with no clock.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber } from "effect"
import * as RateCounter from "../../../../src/kit/internal/RateCounter.ts"
import { makeHub, type Peer } from "../../../../src/kit/internal/supervisor/Hub.ts"
import type { SharedToWorker } from "../../../../src/kit/internal/supervisor/Protocol.ts"
import * as Shared from "../../../../src/kit/internal/supervisor/Shared.ts"

const windowMs = 60_000

/** Messages in flight, delivered when the test pumps; `now` is the only clock. */
const makeNet = (options: { barrierTimeoutMs?: number; onUnresponsive?: (peer: Peer) => void } = {}) => {
  const queue: Array<() => void> = []
  let now = 1_000_000
  const hub = makeHub({
    now: () => now,
    maxKeys: 10_000,
    barrierTimeoutMs: options.barrierTimeoutMs ?? 60_000,
    onUnresponsive: options.onUnresponsive ?? (() => {})
  })
  const pump = () => {
    while (queue.length > 0) queue.shift()!()
  }
  const connect = (workers: number) => {
    const handlers = new Set<(message: SharedToWorker) => void>()
    let stopped = false
    const peer: Peer = {
      send: (message) => void queue.push(() => stopped || handlers.forEach((handler) => handler(message)))
    }
    const transport: Shared.Transport = {
      send: (message) => {
        queue.push(() => hub.handle(peer, message))
        return true
      },
      listen: (handler) => {
        handlers.add(handler)
        return () => handlers.delete(handler)
      },
      onDisconnect: (handler) => void disconnects.push(handler)
    }
    const disconnects: Array<() => void> = []
    const fiber = Effect.runFork(Shared.join(transport, workers, { writeMs: 10_000, takeMs: 10_000 }))
    pump()
    const shared = Effect.runSync(Fiber.join(fiber))
    const limiter = Shared.makeLimiter(shared, {
      now: () => now,
      maxKeys: 10_000,
      onError: () => Effect.void,
      later: (report) => void queue.push(report)
    })
    return {
      shared,
      limiter,
      peer,
      /** The supervisor is gone: the channel closes. */
      disconnect: () => disconnects.forEach((handler) => handler()),
      /** SIGSTOP: it receives nothing and answers nothing from now on. */
      stop: () => (stopped = true),
      exit: () => hub.remove(peer)
    }
  }
  return {
    hub,
    pump,
    connect,
    advance: (ms: number) => (now += ms)
  }
}

type Worker = ReturnType<ReturnType<typeof makeNet>["connect"]>

/**
 * `count` requests of `key`, the i-th to worker i mod N; messages are delivered after every `lag`
 * requests (how many a worker takes in while a report travels). How many were admitted.
 */
const burst = (
  net: ReturnType<typeof makeNet>,
  workers: ReadonlyArray<Worker>,
  key: string,
  limit: number,
  count: number,
  lag: number
) => {
  const fibers: Array<Fiber.Fiber<{ readonly _tag: string }>> = []
  let admitted = 0
  for (let i = 0; i < count; i++) {
    const { limiter } = workers[i % workers.length]!
    const local = limiter.local(key, limit, windowMs)
    if (local === undefined) fibers.push(Effect.runFork(limiter.remote(key, limit, windowMs)))
    else if (local._tag === "Allowed") admitted++
    if ((i + 1) % lag === 0) net.pump()
  }
  net.pump()
  for (const fiber of fibers) {
    const exit = Effect.runSync(Effect.exit(Fiber.join(fiber)))
    if (Exit.isSuccess(exit) && exit.value._tag === "Allowed") admitted++
  }
  return admitted
}

describe("rate limits shared by a supervisor's workers", () => {
  for (const workers of [2, 4, 16]) {
    for (const lag of [1, 7, 50]) {
      it(`a burst over ${workers} workers (${lag} requests per round trip) is admitted at most limit + limit/10`, () => {
        for (const limit of [5, 100, 1000]) {
          const net = makeNet()
          const connected = Array.from({ length: workers }, () => net.connect(workers))
          // Every worker has seen the key before (the copies are what lets them decide alone).
          const seeded = connected.map((worker) => Effect.runFork(worker.limiter.remote("k", limit, windowMs)))
          net.pump()
          const admitted = seeded.filter((fiber) => Effect.runSync(Fiber.join(fiber))._tag === "Allowed").length +
            burst(net, connected, "k", limit, limit * 3, lag)
          const bound = workers * Shared.allowance(limit, workers)
          assert.isAtMost(bound, limit / 10 / 2, "the allowance leaves room for a second generation")
          assert.isAtLeast(admitted, limit, `limit ${limit}`)
          assert.isAtMost(admitted, limit + bound, `limit ${limit}`)
          if (Shared.allowance(limit, workers) === 0) assert.strictEqual(admitted, limit)
        }
      })
    }
  }

  it("a sustained flood, its reports answered late and unevenly, admits per window what one process would, plus the allowances", () => {
    const workers = 4
    const limit = 1000
    const net = makeNet()
    const connected = Array.from({ length: workers }, () => net.connect(workers))
    const counters = RateCounter.makeCounters(10)
    const perWindow = new Map<number, { alone: number; shared: number }>()
    const window = (at: number) => {
      const bucket = Math.floor(at / 1000)
      let entry = perWindow.get(bucket)
      if (entry === undefined) perWindow.set(bucket, entry = { alone: 0, shared: 0 })
      return entry
    }
    const lags = [1, 40, 3, 200, 17, 90]
    let sinceDelivery = 0
    let lagIndex = 0
    // One request every 0.1 ms for 5 s: 10 per millisecond against 1 per millisecond allowed.
    for (let i = 0; i < 50_000; i++) {
      const now = net.advance(0.1)
      const counter = counters.at("k", now)
      if (RateCounter.fits(counter, limit)) {
        RateCounter.add(counter, 1, limit, 1000)
        window(now).alone++
      }
      const { limiter } = connected[i % workers]!
      const local = limiter.local("k", limit, 1000)
      if (local === undefined) {
        const fiber = Effect.runFork(limiter.remote("k", limit, 1000))
        fiber.addObserver((exit) => {
          if (Exit.isSuccess(exit) && exit.value._tag === "Allowed") window(now).shared++
        })
      } else if (local._tag === "Allowed") window(now).shared++
      if (++sinceDelivery >= lags[lagIndex % lags.length]!) {
        net.pump()
        sinceDelivery = 0
        lagIndex++
      }
    }
    net.pump()
    const bound = workers * Shared.allowance(limit, workers)
    for (const [bucket, { alone, shared }] of perWindow) {
      assert.isAtMost(shared, alone + bound, `window ${bucket}`)
    }
  })

  it("without its copy of a key, a worker asks: a small limit is exact", () => {
    const net = makeNet()
    const workers = [net.connect(2), net.connect(2)]
    assert.strictEqual(burst(net, workers, "addr", 5, 8, 1), 5)
  })

  it("a client that keeps to the limit is never refused, whichever worker it reaches", () => {
    const net = makeNet()
    const workers = [net.connect(2), net.connect(2)]
    const limit = 100
    // A full burst, then one request per window/limit for ten windows, alternating workers.
    assert.strictEqual(burst(net, workers, "steady", limit, limit, 10), limit)
    net.advance(windowMs)
    for (let i = 0; i < limit * 10; i++) {
      assert.strictEqual(burst(net, [workers[i % 2]!], "steady", limit, 1, 1), 1, `request ${i}`)
      net.advance(windowMs / limit)
    }
  })

  it("a worker that starts (restart, upgrade) starts from the service's count, not from zero", () => {
    const net = makeNet()
    const old = [net.connect(2), net.connect(2)]
    assert.strictEqual(burst(net, old, "k", 100, 300, 5) <= 110, true)
    old.forEach((worker) => worker.exit())
    const fresh = [net.connect(2), net.connect(2)]
    assert.strictEqual(burst(net, fresh, "k", 100, 50, 1), 0)
    net.advance(windowMs * 2)
    assert.strictEqual(burst(net, fresh, "k", 100, 100, 1), 100)
  })

  it("a refusal a worker decides alone carries the retry it knows of", () => {
    const net = makeNet()
    const [worker] = [net.connect(1)]
    burst(net, [worker!], "k", 2, 2, 1)
    const refused = worker!.limiter.local("k", 2, windowMs)
    assert.deepStrictEqual(refused, { _tag: "Exceeded", limit: 2, retryAfterMs: windowMs })
  })
  it.effect("a count waiting on a supervisor that goes away is decided at once by the worker alone", () =>
    Effect.gen(function*() {
      const net = makeNet()
      const worker = net.connect(2)
      const waiting = yield* Effect.forkChild(worker.limiter.remote("k", 5, windowMs), { startImmediately: true })
      worker.disconnect()
      const decision = yield* Fiber.join(waiting)
      assert.strictEqual(decision._tag, "Allowed")
    }))
})

describe("entries written through the supervisor", () => {
  it.effect("a write answers only once every live worker has applied it", () =>
    Effect.gen(function*() {
      const net = makeNet()
      const [a, b, c] = [net.connect(3), net.connect(3), net.connect(3)]
      const applied: Array<string> = []
      b!.shared.onApply((key, value) => applied.push(`b ${key}=${value}`))
      c!.shared.onApply((key, value) => applied.push(`c ${key}=${value}`))
      const write = yield* Effect.forkChild(a!.shared.write("items:generation", "g2"), { startImmediately: true })
      net.pump()
      yield* Fiber.join(write)
      assert.deepStrictEqual(applied.sort(), ["b items:generation=g2", "c items:generation=g2"])
      assert.strictEqual(a!.shared.get("items:generation"), "g2")
      // A worker that joins later starts from the entries as they stand.
      assert.strictEqual(net.connect(3).shared.get("items:generation"), "g2")
    }))

  it.effect("two racing writes of one key leave every worker with the same value", () =>
    Effect.gen(function*() {
      const net = makeNet()
      const [a, b] = [net.connect(2), net.connect(2)]
      const first = yield* Effect.forkChild(a!.shared.write("k", "from-a"), { startImmediately: true })
      const second = yield* Effect.forkChild(b!.shared.write("k", "from-b"), { startImmediately: true })
      net.pump()
      yield* Fiber.join(first)
      yield* Fiber.join(second)
      assert.strictEqual(a!.shared.get("k"), b!.shared.get("k"))
    }))

  it.effect("a worker that does not apply a write is reported; the write answers once it has exited", () =>
    Effect.gen(function*() {
      let reported: Peer | undefined
      const net = makeNet({ barrierTimeoutMs: 1, onUnresponsive: (peer) => (reported = peer) })
      const [a, b] = [net.connect(2), net.connect(2)]
      b!.stop()
      const write = yield* Effect.forkChild(a!.shared.write("k", "v"), { startImmediately: true })
      net.pump()
      yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 5)))
      assert.strictEqual(reported, b!.peer)
      assert.isUndefined(write.pollUnsafe())
      b!.exit()
      net.pump()
      yield* Fiber.join(write)
    }))
})
