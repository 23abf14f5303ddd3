/**
 * A Map bounded by the bytes its entries weigh, evicting the least recently used first, with
 * pinned keys that eviction never takes (the entries everything else is filed under).
 */

export interface BoundedMapOptions<V> {
  /** The total weight the map may hold; an entry heavier than this on its own is not stored. */
  readonly maxBytes: number
  /** At most this many unpinned entries, whatever they weigh (a guard against many tiny ones). */
  readonly maxEntries?: number | undefined
  /** What an entry costs: its key and value as stored, plus whatever bookkeeping it carries. */
  readonly weigh: (key: string, value: V) => number
}

/**
 * A JavaScript string is UTF-16 in memory: two bytes a code unit, plus a Map slot and object
 * header per entry. The overhead is an estimate, on the high side so the bound errs low.
 */
export const stringBytes = (text: string): number => text.length * 2
export const entryOverheadBytes = 96

export class BoundedMap<V> {
  private readonly entries = new Map<string, { value: V; bytes: number }>()
  private readonly pinned = new Map<string, { value: V; bytes: number }>()
  private total = 0
  readonly maxBytes: number
  readonly maxEntries: number
  private readonly weigh: (key: string, value: V) => number

  constructor(options: BoundedMapOptions<V>) {
    this.maxBytes = options.maxBytes
    this.maxEntries = options.maxEntries ?? Number.POSITIVE_INFINITY
    this.weigh = options.weigh
  }

  /** Bytes held, pinned entries included. */
  get bytes(): number {
    return this.total
  }

  get size(): number {
    return this.entries.size + this.pinned.size
  }

  /** Reading an entry makes it the most recently used. */
  get(key: string): V | undefined {
    const pinned = this.pinned.get(key)
    if (pinned !== undefined) return pinned.value
    const entry = this.entries.get(key)
    if (entry === undefined) return undefined
    // A Map iterates in insertion order: re-inserting moves the entry to the young end.
    this.entries.delete(key)
    this.entries.set(key, entry)
    return entry.value
  }

  /** The value without touching its recency (sweeps and diagnostics). */
  peek(key: string): V | undefined {
    return (this.pinned.get(key) ?? this.entries.get(key))?.value
  }

  /**
   * Stores `value` under `key`, evicting the least recently used entries until it fits. Returns
   * false (and drops any older value) when the entry alone outweighs the bound: serving the old
   * value after a write was refused would be serving something the writer meant to replace.
   */
  set(key: string, value: V, options?: { readonly pin?: boolean }): boolean {
    this.delete(key)
    const bytes = this.weigh(key, value)
    if (options?.pin === true) {
      // Pinned entries count toward the bound and push others out, but are never pushed out:
      // they are few and small by contract (a generation id, not a page).
      this.pinned.set(key, { value, bytes })
      this.total += bytes
      this.evict()
      return true
    }
    if (bytes > this.maxBytes) return false
    this.entries.set(key, { value, bytes })
    this.total += bytes
    this.evict()
    return this.entries.has(key)
  }

  delete(key: string): boolean {
    const entry = this.pinned.get(key) ?? this.entries.get(key)
    if (entry === undefined) return false
    this.pinned.delete(key)
    this.entries.delete(key)
    this.total -= entry.bytes
    return true
  }

  /** Drops every unpinned entry `predicate` accepts (expired ones, in a sweep). */
  deleteWhere(predicate: (value: V, key: string) => boolean): void {
    for (const [key, entry] of this.entries) if (predicate(entry.value, key)) this.delete(key)
    for (const [key, entry] of this.pinned) if (predicate(entry.value, key)) this.delete(key)
  }

  private evict(): void {
    while ((this.total > this.maxBytes || this.entries.size > this.maxEntries) && this.entries.size > 0) {
      this.delete(this.entries.keys().next().value!)
    }
  }
}
