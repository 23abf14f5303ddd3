/**
 * Item changes as they commit, for live subscribers (the SSE route): every write NOTIFYs in its own
 * statement (ItemsRepo), and each process LISTENs once and fans the changes out to its subscribers.
 */
import { Context, Effect, Layer, Option, PubSub, Schema, Stream } from "effect"
import { type Heard, Log, Postgres } from "../../kit/index.ts"
import { Item } from "./Api.ts"
import { channel, ItemsRepo } from "./Repo.ts"

export type ItemChange =
  | { readonly type: "created"; readonly item: Item }
  | { readonly type: "removed"; readonly id: number }

/** A change, or word that changes may have been missed (the database connection was lost): re-read. */
export type ItemEvent = ItemChange | { readonly type: "resync" }

/** What a write sends (ItemsRepo builds it in SQL). */
const Payload = Schema.fromJsonString(Schema.Union([
  Schema.Struct({ type: Schema.Literal("created"), item: Item }),
  Schema.Struct({ type: Schema.Literal("created"), id: Schema.Int }),
  Schema.Struct({ type: Schema.Literal("removed"), id: Schema.Int })
]))
const decodePayload = Schema.decodeUnknownOption(Payload)

export class ItemEvents extends Context.Service<ItemEvents, PubSub.PubSub<ItemEvent>>()("scoped-server/ItemEvents") {
  /**
   * Sliding: a subscriber that reads slower than items change loses the oldest changes, never
   * holds memory without bound, and never slows a write. Changes are handled one at a time, so
   * subscribers hear them in commit order even when one must be read back.
   */
  static readonly layer = Layer.effect(
    ItemEvents,
    Effect.gen(function*() {
      const events = yield* Effect.acquireRelease(PubSub.sliding<ItemEvent>(256), PubSub.shutdown)
      const repo = yield* ItemsRepo
      const { listen } = yield* Postgres
      const toEvent = (heard: Heard): Effect.Effect<Option.Option<ItemEvent>> => {
        if (heard._tag === "Resumed") return Effect.succeedSome({ type: "resync" })
        const payload = decodePayload(heard.payload)
        if (Option.isNone(payload)) {
          return Effect.logWarning(`items: ignored a notification on ${channel} that no write of ours sent`).pipe(
            Effect.annotateLogs({ payload: heard.payload.slice(0, 200) }),
            Effect.as(Option.none())
          )
        }
        const change = payload.value
        if (change.type === "removed" || "item" in change) return Effect.succeedSome(change)
        // Gone already: its removal is the next change about it, and a created event is not owed.
        return repo.get(change.id).pipe(
          Effect.map(Option.map((item): ItemEvent => ({ type: "created", item }))),
          Effect.catch((error) =>
            Effect.logWarning("items: could not read back a created item; subscribers are told to resync").pipe(
              Effect.annotateLogs({ id: change.id, error: Log.describeError(error) }),
              Effect.as(Option.some<ItemEvent>({ type: "resync" }))
            )
          )
        )
      }
      const heard = yield* listen(channel)
      yield* heard.pipe(
        Stream.mapEffect(toEvent),
        Stream.runForEach((event) => Option.isSome(event) ? PubSub.publish(events, event.value) : Effect.void),
        Effect.forkScoped
      )
      return events
    })
  ).pipe(Layer.provide(ItemsRepo.layer))
}
