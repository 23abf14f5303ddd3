/**
 * A worker's end of the state the supervisor's workers share (supervisor/Hub.ts keeps it): entries
 * written through a barrier, and rate limits that hold for the whole service at a local map's cost.
 */
import { Effect, Schema } from "effect"
import * as RateCounter from "../RateCounter.ts"
import {
  barrierTimeoutEnv,
  isSharedToWorker,
  type SharedToSupervisor,
  type SharedToWorker,
  workersEnv
} from "./Protocol.ts"

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
  /** Calls `handler` once the channel is gone for good (the supervisor exited or was killed). */
  readonly onDisconnect: (handler: () => void) => void
}

export interface Timeouts {
  /**
   * A write not confirmed within this fails, and the caller fails closed (skips its cache). Longer
   * than the supervisor's own bound on a barrier (WORKER_HEARTBEAT_TIMEOUT, then a kill).
   */
  readonly writeMs: number
  /** A count the supervisor has not answered within this is made by this worker alone. */
  readonly takeMs: number
}

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
  /**
   * Requests admitted here, per key; `onState` gets each counter as the supervisor then holds it,
   * or `onLost` is called (no answer within the write timeout, or the channel gone), never both.
   */
  readonly report: (
    entries: ReadonlyArray<readonly [string, number, number, number, number]>,
    onState: (counters: ReadonlyArray<readonly [string, number, number]>) => void,
    onLost: () => void
  ) => void
}

interface Waiting {
  readonly answer: (message: SharedToWorker) => void
  readonly lost: (error: SharedError) => void
}

const gone = () => new SharedError({ reason: "Disconnected", message: "the supervisor is gone" })

/** Joins the supervisor's shared state over `transport`: succeeds once it has sent the entries as they stand. */
export const join = (transport: Transport, workers: number, timeouts: Timeouts): Effect.Effect<Shared, SharedError> =>
  Effect.callback<Shared, SharedError>((resume) => {
    const entries = new Map<string, string>()
    const handlers: Array<(key: string, value: string | null) => void> = []
    const waiting = new Map<number, Waiting>()
    let nextId = 0
    let welcomed = false
    let disconnected = false

    /** Sends `message` and waits for its answer, or for `lost` after `timeoutMs` (or at once: no channel). */
    const request = (
      build: (id: number) => SharedToSupervisor,
      timeoutMs: number,
      what: string,
      answer: (message: SharedToWorker) => void,
      lost: (error: SharedError) => void
    ) => {
      const id = ++nextId
      const timer = setTimeout(() => {
        if (!waiting.delete(id)) return
        lost(new SharedError({ reason: "Timeout", message: `the supervisor did not answer ${what} in ${timeoutMs}ms` }))
      }, timeoutMs)
      timer.unref?.()
      waiting.set(id, {
        answer: (message) => {
          clearTimeout(timer)
          answer(message)
        },
        lost: (error) => {
          clearTimeout(timer)
          lost(error)
        }
      })
      if (disconnected || !transport.send(build(id))) {
        waiting.delete(id)
        clearTimeout(timer)
        lost(gone())
      }
      return id
    }
    const awaitAnswer = <A>(
      build: (id: number) => SharedToSupervisor,
      read: (message: SharedToWorker) => A,
      timeoutMs: number,
      what: string
    ) =>
      Effect.callback<A, SharedError>((resumeAnswer) => {
        const id = request(
          build,
          timeoutMs,
          what,
          (message) => resumeAnswer(Effect.succeed(read(message))),
          (error) => resumeAnswer(Effect.fail(error))
        )
        return Effect.sync(() => waiting.delete(id))
      })

    const shared: Shared = {
      workers,
      get: (key) => entries.get(key),
      write: (key, value) =>
        awaitAnswer(
          (id) => ({ type: "shared-write", id, key, value }),
          () => undefined,
          timeouts.writeMs,
          `a write of ${key}`
        ),
      onApply: (handler) => void handlers.push(handler),
      take: (key, limit, windowMs) =>
        awaitAnswer(
          (id) => ({ type: "limit-take", id, key, limit, windowMs }),
          (message) => {
            const [, count, expiresAt] = message.type === "limit-state" ? message.counters[0]! : ["", 0, 0]
            return { allowed: message.type === "limit-state" && message.allowed === true, count, expiresAt }
          },
          timeouts.takeMs,
          "a rate-limit count"
        ),
      report: (reported, onState, onLost) =>
        void request(
          (id) => ({ type: "limit-report", id, entries: reported }),
          timeouts.writeMs,
          "a report",
          (message) => {
            if (message.type === "limit-state") onState(message.counters)
          },
          onLost
        )
    }

    // Whatever waits on a channel that is gone ends now, not at its timeout: the worker is draining.
    transport.onDisconnect(() => {
      disconnected = true
      const pending = [...waiting.values()]
      waiting.clear()
      for (const entry of pending) entry.lost(gone())
    })
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
          const entry = waiting.get(message.id)
          waiting.delete(message.id)
          entry?.answer(message)
        }
      }
    })
    if (!transport.send({ type: "shared-join" })) {
      clearTimeout(timer)
      stop()
      resume(Effect.fail(gone()))
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
  },
  onDisconnect: (handler) => {
    if (process.connected !== true) handler()
    else process.once("disconnect", handler)
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
  const barrierMs = Number(process.env[barrierTimeoutEnv])
  // The supervisor answers a barrier within its own bound (then kills whoever holds it up).
  const writeMs = (barrierMs > 0 ? barrierMs : 5_000) + 5_000
  joined ??= Effect.cached(join(processTransport, workers, { writeMs, takeMs: 2_000 })).pipe(Effect.runSync)
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
 * only while the copy has not expired, says it fits, and this worker has fewer than
 * `allowance(limit, workers)` of the key's requests that the supervisor has not yet counted; they
 * are reported in batches. Otherwise (a key not seen since this worker started, its allowance
 * spent, or its copy expired: other workers move the counter's expiry later than the copy's) the
 * supervisor counts it and decides. A refusal while the copy has not expired is decided here: the
 * copy is a lower bound of the counter, count and expiry, so the supervisor would refuse too.
 *
 * So each worker admits at most `allowance` requests beyond what one process would, per counter
 * lifetime: with the allowance at limit / (20 × WORKERS), at most limit / 10 over even while an
 * upgrade runs two generations; below 20 × WORKERS the allowance is 0 and every admission is the
 * supervisor's (docs/auth-and-rate-limits.md).
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
      if (reportsSent !== report) return
      inFlight = new Map()
      if (urgent) flush()
      else if (buffered.size > 0) schedule()
    }
    shared.report(
      [...sent].map(([key, [count, at, limit, windowMs]]) => [key, count, at, limit, windowMs] as const),
      (counters) => {
        for (const [key, count, expiresAt] of counters) {
          const entry = sent.get(key)!
          adopt(key, count, expiresAt, buffered.get(key)?.[0] ?? 0, entry[2], entry[3])
        }
        answered()
      },
      // Unanswered (the supervisor stuck or gone): counted here only, and the keys must not wait on it.
      answered
    )
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
      // Expired here is not expired there: other workers' requests move the counter's expiry
      // later than this copy's, so a counter starting over is the supervisor's to decide.
      if (known === undefined || known.expiresAt <= now) return undefined
      if (!RateCounter.fits(known, limit)) {
        return { _tag: "Exceeded", limit, retryAfterMs: known.expiresAt - now } as const
      }
      const allowed = allowance(limit, shared.workers)
      const uncounted = pending(key)
      if (uncounted >= allowed) return undefined
      RateCounter.add(known, 1, limit, windowMs)
      const entry = buffered.get(key)
      if (entry === undefined) buffered.set(key, [1, now, limit, windowMs])
      else entry[0]++
      // A hot key with half its allowance spent is reported now, so the rest is there while the
      // answer travels; otherwise reports go in one batch per interval (a message costs ~15 µs).
      if (allowed >= 4 && uncounted + 1 >= allowed / 2) flush()
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
    /** Reports what is still unreported now (a worker about to exit loses nothing it can send). */
    flush,
    sweep: () => copies.sweep(options.now()),
    size: copies.size
  }
}
