/**
 * The supervisor's side of the state its workers share (supervisor/Shared.ts is a worker's): entries
 * written through a barrier every live worker acknowledges, and the rate-limit counters they draw on.
 */
import * as RateCounter from "../RateCounter.ts"
import { isSharedToSupervisor, type SharedToWorker } from "./Protocol.ts"

/** A worker as the hub sees it: a channel that may already be gone. */
export interface Peer {
  readonly send: (message: SharedToWorker) => void
}

export interface HubOptions {
  readonly now: () => number
  /** Counters held at most (RATE_LIMIT_MAX_KEYS); when full the oldest key starts over. */
  readonly maxKeys: number
  /** A worker that has not applied a write this long after it was sent is reported unresponsive. */
  readonly barrierTimeoutMs: number
  /**
   * Told of a worker that holds up a barrier: it must be made to exit (the barrier completes when
   * it does), since an answer sent before it applied the write would let it serve what was removed.
   */
  readonly onUnresponsive: (peer: Peer) => void
}

interface Barrier {
  readonly origin: Peer
  readonly originId: number
  readonly waiting: Set<Peer>
  readonly timer: ReturnType<typeof setTimeout>
}

export const makeHub = (options: HubOptions) => {
  const entries = new Map<string, string>()
  const joined = new Set<Peer>()
  const barriers = new Map<number, Barrier>()
  const counters = RateCounter.makeCounters(options.maxKeys)
  let nextId = 0

  const settle = (id: number, barrier: Barrier) => {
    if (barrier.waiting.size > 0) return
    clearTimeout(barrier.timer)
    barriers.delete(id)
    barrier.origin.send({ type: "shared-done", id: barrier.originId })
  }

  const write = (origin: Peer, originId: number, key: string, value: string | null) => {
    if (value === null) entries.delete(key)
    else entries.set(key, value)
    const id = ++nextId
    // The writer applies it from this message too: every worker sees writes in the hub's order,
    // so two writes of one key racing from two workers leave every copy with the same value.
    const waiting = new Set(joined)
    const timer = setTimeout(() => {
      for (const peer of waiting) options.onUnresponsive(peer)
    }, options.barrierTimeoutMs)
    const barrier: Barrier = { origin, originId, waiting, timer }
    barriers.set(id, barrier)
    for (const peer of waiting) peer.send({ type: "shared-apply", id, key, value })
    settle(id, barrier)
  }

  const counterState = (key: string, counter: RateCounter.Counter) => [key, counter.count, counter.expiresAt] as const

  return {
    /** Handles a shared-state message from `peer`; false for any other message. */
    handle: (peer: Peer, message: unknown): boolean => {
      if (!isSharedToSupervisor(message)) return false
      switch (message.type) {
        case "shared-join": {
          joined.add(peer)
          peer.send({ type: "shared-welcome", entries: [...entries] })
          break
        }
        case "shared-write": {
          write(peer, message.id, message.key, message.value)
          break
        }
        case "shared-ack": {
          const barrier = barriers.get(message.id)
          if (barrier !== undefined && barrier.waiting.delete(peer)) settle(message.id, barrier)
          break
        }
        case "limit-take": {
          const counter = counters.at(message.key, options.now())
          const allowed = RateCounter.fits(counter, message.limit)
          if (allowed) RateCounter.add(counter, 1, message.limit, message.windowMs)
          peer.send({ type: "limit-state", id: message.id, allowed, counters: [counterState(message.key, counter)] })
          break
        }
        case "limit-report": {
          // Admitted already: counted as they happened, even past the limit (the allowance's bound).
          const states = message.entries.map(([key, count, at, limit, windowMs]) => {
            const counter = counters.at(key, at)
            RateCounter.add(counter, count, limit, windowMs)
            return counterState(key, counter)
          })
          peer.send({ type: "limit-state", id: message.id, counters: states })
          break
        }
      }
      return true
    },
    /** The worker exited: it holds up no barrier, and hears no more. */
    remove: (peer: Peer) => {
      joined.delete(peer)
      for (const [id, barrier] of barriers) if (barrier.waiting.delete(peer)) settle(id, barrier)
    },
    /** Drops expired counters (the memory store's sweep). */
    sweep: () => counters.sweep(options.now()),
    counters: () => counters.size(),
    entries: () => entries.size
  }
}
