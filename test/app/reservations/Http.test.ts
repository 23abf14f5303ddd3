/**
 * The reservations API over real HTTP against a real database, written only with the kit's test
 * helpers: each caller's own holds, pagination and Link headers, expiry at read, the cascade
 * from items, and every bad input answered with a problem.
 */
import { assert, describe, it, layer } from "@effect/vitest"
import { Effect, Exit, Layer, Schema } from "effect"
import { Main } from "../../../src/app/App.ts"
import { ReservationPage } from "../../../src/app/reservations/Api.ts"
import * as Testing from "../../../src/kit/testing.ts"

const json = (response: Response) => Effect.promise(() => response.json() as Promise<any>)
const call = (path: string, init?: Parameters<Testing.TestServer["Service"]["fetch"]>[1]) =>
  Effect.gen(function*() {
    const server = yield* Testing.TestServer
    return yield* Effect.promise(() => server.fetch(path, init))
  })
const post = (path: string, token: string, body: unknown) =>
  call(path, { method: "POST", token, headers: { "content-type": "application/json" }, body: JSON.stringify(body) })
const token = (subject: string) => Effect.promise(() => Testing.mint({ subject }))
const newItem = (token: string) => post("/api/v1/items", token, { name: "lamp" }).pipe(Effect.flatMap(json))

const app = Testing.layerDatabase(Main, { JWT_SECRET: Testing.jwtSecret, RATE_LIMIT: "100000" })

describe("reservations API", () => {
  layer(app, { excludeTestServices: true, timeout: "60 seconds" })((it) => {
    it.effect("hold, read, list and release; the hold is the caller's alone", () =>
      Effect.gen(function*() {
        const alice = yield* token("alice")
        const bob = yield* token("bob")
        const item = yield* newItem(alice)
        const created = yield* post("/api/v1/reservations", alice, { itemId: item.id, quantity: 2, ttlSeconds: 600 })
        assert.strictEqual(created.status, 201)
        const reservation = yield* json(created)
        assert.strictEqual(created.headers.get("location"), `/api/v1/reservations/${reservation.id}`)
        assert.deepInclude(reservation, { itemId: item.id, quantity: 2 })
        const life = Date.parse(reservation.expiresAt) - Date.parse(reservation.createdAt)
        assert.isTrue(Math.abs(life - 600_000) < 1_000, `a 600 s hold lasts ${life} ms`)

        assert.deepStrictEqual(
          yield* json(yield* call(`/api/v1/reservations/${reservation.id}`, { token: alice })),
          reservation
        )
        const list = yield* json(yield* call("/api/v1/reservations", { token: alice }))
        Schema.decodeUnknownSync(ReservationPage)(list, { onExcessProperty: "error" })
        assert.deepInclude(list.reservations, reservation)

        // Bob sees nothing of Alice's, and cannot release it.
        assert.strictEqual((yield* call(`/api/v1/reservations/${reservation.id}`, { token: bob })).status, 404)
        assert.deepStrictEqual((yield* json(yield* call("/api/v1/reservations", { token: bob }))).reservations, [])
        const foreign = yield* call(`/api/v1/reservations/${reservation.id}`, { method: "DELETE", token: bob })
        assert.strictEqual(foreign.status, 404)
        assert.deepStrictEqual(yield* json(foreign), {
          type: "/problems/reservation-not-found",
          title: "No such reservation",
          status: 404,
          detail: `no live reservation with id ${reservation.id} held by you`,
          requestId: foreign.headers.get("x-request-id")
        })

        const released = yield* call(`/api/v1/reservations/${reservation.id}`, { method: "DELETE", token: alice })
        assert.strictEqual(released.status, 204)
        assert.strictEqual((yield* call(`/api/v1/reservations/${reservation.id}`, { token: alice })).status, 404)
      }))

    it.effect("the default hold is RESERVATION_TTL (15 minutes)", () =>
      Effect.gen(function*() {
        const carol = yield* token("carol")
        const item = yield* newItem(carol)
        const reservation = yield* json(yield* post("/api/v1/reservations", carol, { itemId: item.id, quantity: 1 }))
        const life = Date.parse(reservation.expiresAt) - Date.parse(reservation.createdAt)
        assert.isTrue(Math.abs(life - 15 * 60_000) < 1_000, `the default hold lasts ${life} ms`)
      }))

    it.effect("pages of the caller's holds with Link headers", () =>
      Effect.gen(function*() {
        const dave = yield* token("dave")
        const item = yield* newItem(dave)
        for (let i = 0; i < 5; i++) yield* post("/api/v1/reservations", dave, { itemId: item.id, quantity: i + 1 })
        const second = yield* call("/api/v1/reservations?page=2&perPage=2", { token: dave })
        const body = yield* json(second)
        assert.deepStrictEqual(body.pagination, { page: 2, perPage: 2, total: 5 })
        assert.deepStrictEqual(body.reservations.map((r: any) => r.quantity), [3, 4])
        assert.strictEqual(
          second.headers.get("link"),
          "</api/v1/reservations?page=1&perPage=2>; rel=\"first\", </api/v1/reservations?page=1&perPage=2>; rel=\"prev\", " +
            "</api/v1/reservations?page=3&perPage=2>; rel=\"next\", </api/v1/reservations?page=3&perPage=2>; rel=\"last\""
        )
      }))

    it.effect("a hold that has run out is gone at once, whatever the sweep's cadence", () =>
      Effect.gen(function*() {
        const server = yield* Testing.TestServer
        const erin = yield* token("erin")
        const item = yield* newItem(erin)
        const reservation = yield* json(yield* post("/api/v1/reservations", erin, { itemId: item.id, quantity: 1 }))
        yield* Testing.sql(
          server.env.DATABASE_URL!,
          `UPDATE reservations SET expires_at = now() - interval '1 second' WHERE id = ${reservation.id}`
        )
        assert.strictEqual((yield* call(`/api/v1/reservations/${reservation.id}`, { token: erin })).status, 404)
        assert.deepStrictEqual((yield* json(yield* call("/api/v1/reservations", { token: erin }))).reservations, [])
        const release = yield* call(`/api/v1/reservations/${reservation.id}`, { method: "DELETE", token: erin })
        assert.strictEqual(release.status, 404)
      }))

    it.effect("deleting an item releases its holds", () =>
      Effect.gen(function*() {
        const frank = yield* token("frank")
        const item = yield* newItem(frank)
        const reservation = yield* json(yield* post("/api/v1/reservations", frank, { itemId: item.id, quantity: 1 }))
        assert.strictEqual((yield* call(`/api/v1/items/${item.id}`, { method: "DELETE", token: frank })).status, 204)
        assert.strictEqual((yield* call(`/api/v1/reservations/${reservation.id}`, { token: frank })).status, 404)
      }))

    it.effect("bad holds are problems: an unknown item, too long, a bad quantity, no token", () =>
      Effect.gen(function*() {
        const grace = yield* token("grace")
        const unknown = yield* post("/api/v1/reservations", grace, { itemId: 2_000_000_000, quantity: 1 })
        assert.strictEqual(unknown.status, 422)
        assert.deepInclude(yield* json(unknown), {
          type: "/problems/unknown-item",
          status: 422,
          detail: "no item with id 2000000000"
        })

        const item = yield* newItem(grace)
        const long = yield* post("/api/v1/reservations", grace, { itemId: item.id, quantity: 1, ttlSeconds: 86_401 })
        assert.strictEqual(long.status, 422)
        assert.deepInclude(yield* json(long), { type: "/problems/reservation-ttl-too-long", maxTtlSeconds: 86_400 })

        for (const quantity of [0, 1001, 1.5, "2"]) {
          const bad = yield* post("/api/v1/reservations", grace, { itemId: item.id, quantity })
          assert.strictEqual(bad.status, 400, `quantity ${JSON.stringify(quantity)}`)
          const problem = yield* json(bad)
          assert.strictEqual(problem.type, "/problems/validation")
          assert.deepStrictEqual(problem.issues.map((issue: any) => issue.path), [["payload", "quantity"]])
        }
        assert.strictEqual((yield* call("/api/v1/reservations")).status, 401)
        assert.strictEqual((yield* call("/api/v1/reservations/abc", { token: grace })).status, 400)
      }))
  })
})

describe("reservations settings", () => {
  const build = (env: Record<string, string>) =>
    Effect.scoped(Layer.build(Testing.layer(Main, { JWT_SECRET: Testing.jwtSecret, ...env }))).pipe(Effect.exit)

  it.live("an app setting is refused before any resource starts", () =>
    Effect.gen(function*() {
      // A database that would take a minute to give up on: refused first, it is never tried.
      const exit = yield* build({
        RESERVATION_TTL: "abc",
        DATABASE_URL: "postgres://postgres@10.255.255.1:5432/none",
        DB_CONNECT_TIMEOUT: "1 minute"
      }).pipe(Effect.timeout("20 seconds"))
      assert.isTrue(Exit.isFailure(exit))
      assert.match(String(Exit.isFailure(exit) ? exit.cause : ""), /RESERVATION_TTL/)
    }))

  it.live("a default hold longer than the longest allowed names both settings", () =>
    Effect.gen(function*() {
      const exit = yield* build({ RESERVATION_TTL: "2 hours", RESERVATION_MAX_TTL: "1 hour" })
      assert.match(String(Exit.isFailure(exit) ? exit.cause : ""), /RESERVATION_TTL .* RESERVATION_MAX_TTL/)
    }))
})
