/**
 * The rate-limit counter's arithmetic alone (Effect's Redis "fixed-window" script), shared by the
 * one-process memory store, the supervisor's counters for its workers, and each worker's copy of them.
 */

export interface Counter {
  count: number
  expiresAt: number
}

/** A counter whose expiry has passed starts over: at 0, expiring now. */
export const current = (counter: Counter | undefined, now: number): Counter =>
  counter === undefined || counter.expiresAt <= now ? { count: 0, expiresAt: now } : counter

/** Whether one more request fits. */
export const fits = (counter: Counter, limit: number): boolean => counter.count + 1 <= limit

/** Counts `n` requests: each moves the expiry out by window / limit. */
export const add = (counter: Counter, n: number, limit: number, windowMs: number): void => {
  counter.count += n
  counter.expiresAt += n * windowMs / limit
}

/**
 * Counters in insertion order, at most `maxKeys`: a key that starts over moves to the end, and when
 * full the oldest goes (that client's count restarts). `sweep` drops the expired ones.
 */
export const makeCounters = (maxKeys: number) => {
  const counters = new Map<string, Counter>()
  /** The live counter for `key` at `now`, created (or started over) if need be. */
  const at = (key: string, now: number): Counter => {
    const existing = counters.get(key)
    if (existing !== undefined && existing.expiresAt > now) return existing
    const fresh = current(undefined, now)
    counters.delete(key)
    counters.set(key, fresh)
    if (counters.size > maxKeys) counters.delete(counters.keys().next().value!)
    return fresh
  }
  return {
    at,
    get: (key: string) => counters.get(key),
    delete: (key: string) => counters.delete(key),
    sweep: (now: number) => {
      for (const [key, counter] of counters) if (counter.expiresAt <= now) counters.delete(key)
    },
    size: () => counters.size
  }
}
