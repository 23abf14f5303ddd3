/**
 * Item events through the database: two app instances on one database each hear every write, in
 * commit order; a change too large for a NOTIFY still arrives whole; a lost LISTEN says resync.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, Redacted } from "effect"
import * as Testing from "../../../src/kit/testing.ts"
import { App, appLayer } from "../../support/app.ts"
import { privatePostgres } from "../../support/postgres.ts"
import { changesOf, subscribe, type Subscription } from "../../support/sse.ts"

const json = (response: Response) => Effect.promise(() => response.json() as Promise<any>)
const app = (env: Record<string, string>) => Layer.build(appLayer(env)).pipe(Effect.map(Context.get(App)))
const listen = (server: App["Service"], token: string) =>
  Effect.acquireRelease(Effect.promise(() => subscribe(server.port, token)), (s) => Effect.sync(s.close))
const create = (server: App["Service"], token: string, body: unknown) =>
  Effect.promise(() =>
    server.fetch("/api/v1/items", {
      method: "POST",
      token,
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body)
    })
  )
const remove = (server: App["Service"], token: string, id: number) =>
  Effect.promise(() => server.fetch(`/api/v1/items/${id}`, { method: "DELETE", token }))
const removed = (id: number) => (event: { event: string; data: string }) =>
  event.event === "removed" && event.data === JSON.stringify({ type: "removed", id })
const createdWith = (name: string) => (event: { event: string; data: string }) =>
  event.event === "created" && (JSON.parse(event.data) as { item: { name: string } }).item.name === name
const waitFor = (subscription: Subscription, test: Parameters<Subscription["waitFor"]>[0], timeoutMs?: number) =>
  Effect.promise(() => subscription.waitFor(test, timeoutMs))

describe("item events", () => {
  it.live(
    "a write on either of two instances sharing a database reaches the subscribers of both, created before removed",
    () =>
      Effect.gen(function*() {
        const databaseUrl = yield* Testing.freshDatabase
        const [a, b] = [yield* app({ DATABASE_URL: databaseUrl }), yield* app({ DATABASE_URL: databaseUrl })]
        const token = yield* Effect.promise(() => Testing.mint())
        const onA = yield* listen(a, token)
        const onB = yield* listen(b, token)
        for (const [writer, remover] of [[a, b], [b, a]] as const) {
          const name = `shared ${writer.port}`
          const created = yield* create(writer, token, { name, description: "seen everywhere" })
          assert.strictEqual(created.status, 201)
          const item = yield* json(created)
          assert.strictEqual((yield* remove(remover, token, item.id)).status, 204)
          for (const subscription of [onA, onB]) {
            yield* waitFor(subscription, removed(item.id))
            assert.deepStrictEqual(changesOf(subscription, item.id), [
              { event: "created", data: JSON.stringify({ type: "created", item }) },
              { event: "removed", data: JSON.stringify({ type: "removed", id: item.id }) }
            ])
          }
        }
      }).pipe(Effect.scoped),
    60_000
  )

  it.live(
    "a change over NOTIFY's 8000 bytes arrives whole, read back by each listener; one that fits is sent whole",
    () =>
      Effect.gen(function*() {
        const databaseUrl = yield* Testing.freshDatabase
        const [a, b] = [yield* app({ DATABASE_URL: databaseUrl }), yield* app({ DATABASE_URL: databaseUrl })]
        const token = yield* Effect.promise(() => Testing.mint())
        const onA = yield* listen(a, token)
        const onB = yield* listen(b, token)
        // 2000 control characters are 12000 bytes of JSON; 2000 CJK characters are 6000 bytes.
        const bodies = [
          { name: "large", description: "\u0001".repeat(2000) },
          { name: "中".repeat(200), description: "文".repeat(2000) }
        ]
        for (const body of bodies) {
          const created = yield* create(a, token, body)
          assert.strictEqual(created.status, 201)
          const item = yield* json(created)
          assert.deepInclude(item, body)
          for (const subscription of [onA, onB]) {
            const event = yield* waitFor(subscription, createdWith(body.name))
            assert.deepStrictEqual(JSON.parse(event.data), { type: "created", item })
          }
        }
      }).pipe(Effect.scoped),
    60_000
  )

  it.live(
    "the database killed and restarted: subscribers get a resync event, then hear writes again",
    () =>
      Effect.gen(function*() {
        const postgres = yield* privatePostgres
        const server = yield* app({ DATABASE_URL: Redacted.value(postgres.url) })
        const token = yield* Effect.promise(() => Testing.mint())
        const subscription = yield* listen(server, token)
        assert.strictEqual((yield* create(server, token, { name: "before" })).status, 201)
        yield* waitFor(subscription, createdWith("before"))
        yield* postgres.kill
        yield* postgres.restart
        yield* waitFor(subscription, (event) => event.event === "resync", 30_000)
        assert.deepStrictEqual(subscription.events.at(-1), {
          event: "resync",
          data: JSON.stringify({ type: "resync" })
        })
        // The pool may need a moment to notice its connections are gone: retry the write.
        let status = 0
        for (let attempt = 0; attempt < 20 && status !== 201; attempt++) {
          status = (yield* create(server, token, { name: "after" })).status
          if (status !== 201) yield* Effect.sleep("100 millis")
        }
        assert.strictEqual(status, 201)
        yield* waitFor(subscription, createdWith("after"))
      }).pipe(Effect.scoped),
    120_000
  )
})
