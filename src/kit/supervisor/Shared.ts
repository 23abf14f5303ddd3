/**
 * A worker's end of the state the supervisor's workers share (supervisor/Hub.ts keeps it): entries
 * written through a barrier, and rate limits that hold for the whole service at a local map's cost.
 */
import { Effect, Schema } from "effect"
import * as RateCounter from "../internal/RateCounter.ts"
import { isSharedToWorker, type SharedToSupervisor, type SharedToWorker, workersEnv } from "./Protocol.ts"

export class SharedError extends Schema.TaggedError<SharedError>()("SharedError", {
  reason: Schema.Literals(["Disconnected", "Timeout"]),
  message: Schema.String
}) {}

/** The channel to the supervisor, or a stand-in for one in tests. */
export interface Transport {
  /** False when the channel is gone. */
  readonly send: (message: SharedToSupervisor) => boolean
  /** Calls `handler` with every shared-state message; the result stops it. */
  readonly listen: (handler: (message: SharedToWorker) => void) => () => void
}

/** A write the supervisor has not confirmed within this fails: the caller fails closed (skips its cache). */
export const writeTimeoutMs = 10_000
/** The supervisor answers a join at once; none within this is a startup failure. */
export const joinTimeoutMs = 10_000

export interface Shared {
  /** How many workers the supervisor runs (an upgrade runs up to twice as many for a moment). */
  readonly workers: number
  /** An entry as every worker holds it. */
  readonly get: (key: string) => string | undefined
  /** Sets (or with `null` removes) `key` on every live worker; succeeds once all have applied it. */
  readonly write: (key: string, value: string | null) => Effect.Effect<void, SharedError>
  /** Called, in the supervisor's order, for every write applied here (this worker's own included). */
  readonly onApply: (handler: (key: string, value: string | null) => void) => void
  /** One request counted by the supervisor itself; `counters` as they stand after it. */
  readonly take: (
    key: string,
    limit: number,
    windowMs: number
  ) => Effect.Effect<{ readonly allowed: boolean; readonly count: number; readonly expiresAt: number }, SharedError>
  /** Requests admitted here, per key; `onState` gets each counter as the supervisor then holds it. */
  readonly report: (
    entries: ReadonlyArray<readonly [string, number, number, number, number]>,
    onState: (counters: ReadonlyArray<readonly [string, number, number]>) => void
  ) => boolean
}

/** Joins the supervisor's shared state over `transport`: succeeds once it has sent the entries as they stand. */
export const join = (transport: Transport, workers: number): Effect.Effect<Shared, SharedError> =>
  Effect.callback<Shared, SharedError>((resume) => {
    const entries = new Map<string, string>()
    const handlers: Array<(key: string, value: string | null) => void> = []
    const waiting = new Map<number, (message: SharedToWorker) => void>()
    let nextId = 0
    let welcomed = false

    const request = (message: SharedToSupervisor & { readonly id: number }, onAnswer: (m: SharedToWorker) => void) => {
      waiting.set(message.id, onAnswer)
      if (transport.send(message)) return true
      waiting.delete(message.id)
      return false
    }
    const awaitAnswer = <A>(
      build: (id: number) => SharedToSupervisor & { readonly id: number },
      read: (message: SharedToWorker) => A,
      what: string
    ) =>
      Effect.callback<A, SharedError>((resumeAnswer) => {
        const id = ++nextId
        const timer = setTimeout(() => {
          waiting.delete(id)
          resumeAnswer(
            Effect.fail(new SharedError({ reason: "Timeout", message: `the supervisor did not confirm ${what}` }))
          )
        }, writeTimeoutMs)
        const sent = request(build(id), (message) => {
          clearTimeout(timer)
          resumeAnswer(Effect.succeed(read(message)))
        })
        if (!sent) {
          clearTimeout(timer)
          resumeAnswer(Effect.fail(new SharedError({ reason: "Disconnected", message: "the supervisor is gone" })))
        }
        return Effect.sync(() => {
          clearTimeout(timer)
          waiting.delete(id)
        })
      })

    const shared: Shared = {
      workers,
      get: (key) => entries.get(key),
      write: (key, value) =>
        awaitAnswer((id) => ({ type: "shared-write", id, key, value }), () => undefined, `a write of ${key}`),
      onApply: (handler) => void handlers.push(handler),
      take: (key, limit, windowMs) =>
        awaitAnswer((id) => ({ type: "limit-take", id, key, limit, windowMs }), (message) => {
          const [, count, expiresAt] = message.type === "limit-state" ? message.counters[0]! : ["", 0, 0]
          return { allowed: message.type === "limit-state" && message.allowed === true, count, expiresAt }
        }, "a rate-limit count"),
      report: (reported, onState) =>
        request({ type: "limit-report", id: ++nextId, entries: reported }, (message) => {
          if (message.type === "limit-state") onState(message.counters)
        })
    }

    const timer = setTimeout(() => {
      stop()
      resume(Effect.fail(new SharedError({ reason: "Timeout", message: "the supervisor did not answer a join" })))
    }, joinTimeoutMs)
    const stop = transport.listen((message) => {
      switch (message.type) {
        case "shared-welcome": {
          if (welcomed) return
          welcomed = true
          for (const [key, value] of message.entries) entries.set(key, value)
          clearTimeout(timer)
          resume(Effect.succeed(shared))
          return
        }
        case "shared-apply": {
          if (message.value === null) entries.delete(message.key)
          else entries.set(message.key, message.value)
          for (const handler of handlers) handler(message.key, message.value)
          transport.send({ type: "shared-ack", id: message.id })
          return
        }
        case "shared-done":
        case "limit-state": {
          const answer = waiting.get(message.id)
          waiting.delete(message.id)
          answer?.(message)
        }
      }
    })
    if (!transport.send({ type: "shared-join" })) {
      clearTimeout(timer)
      stop()
      resume(Effect.fail(new SharedError({ reason: "Disconnected", message: "the supervisor is gone" })))
    }
    return Effect.sync(() => {
      clearTimeout(timer)
      stop()
    })
  })

/** Node's IPC channel to the supervisor. */
const processTransport: Transport = {
  send: (message) => {
    if (process.connected !== true || process.send === undefined) return false
    process.send(message, undefined, {}, () => {})
    return true
  },
  listen: (handler) => {
    const onMessage = (message: unknown) => {
      if (isSharedToWorker(message)) handler(message)
    }
    process.on("message", onMessage)
    return () => process.off("message", onMessage)
  }
}

let joined: Effect.Effect<Shared, SharedError> | undefined

/**
 * This worker's shared state, joined once for the process (the cache and the rate limits share it);
 * undefined when not running under a supervisor.
 */
export const forProcess = (): Effect.Effect<Shared, SharedError> | undefined => {
  const workers = Number(process.env[workersEnv])
  if (!(workers >= 1) || typeof process.send !== "function") return undefined
  joined ??= Effect.cached(join(processTransport, workers)).pipe(Effect.runSync)
  return joined
}

/** The local allowance: requests one worker may admit of a key before the supervisor has counted them. */
export const allowance = (limit: number, workers: number) => Math.floor(limit / (20 * workers))

/** How often a worker reports what it admitted, unless a key's allowance is half spent first. */
export const reportIntervalMs = 20

/**
 * Rate limits counted for the whole service by the supervisor, decided here at a map lookup's cost.
 *
 * Each worker keeps a copy of every counter it has seen. A request is admitted here, without asking,
 * only while the copy says it fits and this worker has fewer than `allowance(limit, workers)` of the
 * key's requests that the supervisor has not yet counted; they are reported in batches. Otherwise
 * (a key this worker has not seen since it started, or its allowance spent) the supervisor counts it
 * and decides. A refusal is decided here: the copy is a lower bound of the counter (other workers
 * only add to it, and it cannot have started over before the copy's expiry), so a request the copy
 * refuses, the supervisor would refuse too.
 *
 * So at most (live workers) × allowance requests are admitted beyond what one process would admit:
 * with the allowance at limit / (20 × WORKERS), at most limit / 10 even while an upgrade runs two
 * generations; below 20 × WORKERS the allowance is 0 and every admission is the supervisor's.
 */
export const makeLimiter = (
  shared: Shared,
  options: {
    readonly now: () => number
    readonly maxKeys: number
    readonly onError: (error: SharedError) => Effect.Effect<void>
    /** Runs the next batched report (default: `reportIntervalMs` from now). */
    readonly later?: (report: () => void) => void
  }
) => {
  const later = options.later ?? ((report: () => void) => void setTimeout(report, reportIntervalMs).unref())
  /** This worker's copy of each counter, its own uncounted requests included. */
  const copies = RateCounter.makeCounters(options.maxKeys)
  /** Admitted here, not yet reported: key → [count, first at, limit, windowMs]. */
  let buffered = new Map<string, [number, number, number, number]>()
  /** Reported, not yet answered (one report in flight at a time). */
  let inFlight = new Map<string, number>()
  let reportsSent = 0
  let scheduled = false

  const pending = (key: string) => (buffered.get(key)?.[0] ?? 0) + (inFlight.get(key) ?? 0)

  /** Sets the copy to the supervisor's counter plus what it has not counted yet. */
  const adopt = (key: string, count: number, expiresAt: number, uncounted: number, limit: number, windowMs: number) => {
    const copy = copies.at(key, options.now())
    copy.count = count
    copy.expiresAt = expiresAt
    if (uncounted > 0) RateCounter.add(copy, uncounted, limit, windowMs)
  }

  /** Set when a key's allowance is half spent while a report is in flight: the next goes at once. */
  let urgent = false
  const flush = () => {
    scheduled = false
    if (inFlight.size > 0) {
      urgent = true
      return
    }
    urgent = false
    if (buffered.size === 0) return
    const sent = buffered
    buffered = new Map()
    inFlight = new Map([...sent].map(([key, [count]]) => [key, count]))
    const report = ++reportsSent
    const answered = () => {
      if (reportsSent !== report || inFlight.size === 0) return false
      clearTimeout(lost)
      inFlight = new Map()
      if (urgent) flush()
      else if (buffered.size > 0) schedule()
      return true
    }
    // Unanswered (the supervisor is stuck or gone): the keys must not wait on it for ever.
    const lost = setTimeout(answered, writeTimeoutMs).unref()
    const ok = shared.report(
      [...sent].map(([key, [count, at, limit, windowMs]]) => [key, count, at, limit, windowMs] as const),
      (counters) => {
        for (const [key, count, expiresAt] of counters) {
          const entry = sent.get(key)!
          adopt(key, count, expiresAt, buffered.get(key)?.[0] ?? 0, entry[2], entry[3])
        }
        answered()
      }
    )
    // The supervisor is gone (this worker drains): what was admitted stays counted here only.
    if (!ok) answered()
  }
  const schedule = () => {
    if (scheduled) return
    scheduled = true
    later(() => {
      if (scheduled) flush()
    })
  }

  const decide = (copy: RateCounter.Counter, limit: number, now: number) =>
    ({
      _tag: "Allowed",
      limit,
      remaining: Math.max(0, limit - copy.count),
      resetAfterMs: copy.expiresAt - now
    }) as const

  return {
    /** The decision when this worker can make it alone; undefined when the supervisor must. */
    local: (key: string, limit: number, windowMs: number) => {
      const now = options.now()
      const known = copies.get(key)
      if (known === undefined) return undefined
      const copy = RateCounter.current(known, now)
      if (!RateCounter.fits(copy, limit)) {
        return { _tag: "Exceeded", limit, retryAfterMs: copy.expiresAt - now } as const
      }
      const allowed = allowance(limit, shared.workers)
      const uncounted = pending(key)
      if (uncounted >= allowed) return undefined
      if (copy !== known) {
        known.count = 0
        known.expiresAt = now
      }
      RateCounter.add(known, 1, limit, windowMs)
      const entry = buffered.get(key)
      if (entry === undefined) buffered.set(key, [1, now, limit, windowMs])
      else entry[0]++
      // Half the allowance spent: report now, so the rest is there while the answer travels.
      if (uncounted + 1 >= Math.ceil(allowed / 2)) flush()
      else schedule()
      return decide(known, limit, now)
    },
    /** The supervisor counts and decides; without it, this worker decides alone. */
    remote: (key: string, limit: number, windowMs: number) => {
      const sentAfter = reportsSent
      return shared.take(key, limit, windowMs).pipe(
        Effect.map((answer) => {
          // A report sent before the take is counted in the answer; one sent after it is not yet.
          const uncounted = (buffered.get(key)?.[0] ?? 0) + (reportsSent > sentAfter ? inFlight.get(key) ?? 0 : 0)
          adopt(key, answer.count, answer.expiresAt, uncounted, limit, windowMs)
          const now = options.now()
          return answer.allowed
            ? decide(copies.get(key)!, limit, now)
            : ({ _tag: "Exceeded", limit, retryAfterMs: Math.max(0, answer.expiresAt - now) } as const)
        }),
        Effect.catch((error) =>
          Effect.map(options.onError(error), () => {
            const now = options.now()
            const copy = copies.at(key, now)
            if (!RateCounter.fits(copy, limit)) {
              return { _tag: "Exceeded", limit, retryAfterMs: copy.expiresAt - now } as const
            }
            RateCounter.add(copy, 1, limit, windowMs)
            return decide(copy, limit, now)
          })
        )
      )
    },
    sweep: () => copies.sweep(options.now()),
    size: copies.size
  }
}
