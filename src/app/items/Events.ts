/**
 * Item changes as they commit, for live subscribers (the SSE route): one in-process PubSub, so a
 * subscriber hears the writes of the process that serves it (with WORKERS, of that worker only).
 */
import { Context, Effect, Layer, PubSub } from "effect"
import type { Item } from "./Api.ts"

export type ItemChange =
  | { readonly type: "created"; readonly item: Item }
  | { readonly type: "removed"; readonly id: number }

export class ItemEvents extends Context.Service<ItemEvents, PubSub.PubSub<ItemChange>>()("scoped-server/ItemEvents") {
  /**
   * Sliding: a subscriber that reads slower than items change loses the oldest changes, never
   * holds memory without bound, and never slows a write.
   */
  static readonly layer = Layer.effect(
    ItemEvents,
    Effect.acquireRelease(PubSub.sliding<ItemChange>(256), PubSub.shutdown)
  )
}
