/**
 * The items API over real HTTP against a real database: the walkthrough, pagination and Link
 * headers, caching and its invalidation, and every bad input answered with a problem.
 */
import { assert, describe, layer } from "@effect/vitest"
import { Effect, Schema } from "effect"
import { ItemPage } from "../../../src/app/items/Api.ts"
import * as Testing from "../../../src/kit/testing.ts"
import { App, appLayer } from "../../support/app.ts"

const json = (response: Response) => Effect.promise(() => response.json() as Promise<any>)
const call = (path: string, init?: Parameters<App["Service"]["fetch"]>[1]) =>
  Effect.gen(function*() {
    const app = yield* App
    return yield* Effect.promise(() => app.fetch(path, init))
  })
const create = (token: string, body: unknown) =>
  call("/api/v1/items", {
    method: "POST",
    token,
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body)
  })

describe("items API", () => {
  layer(appLayer(), { excludeTestServices: true, timeout: "60 seconds" })((it) => {
    it.effect("create, read, list and delete an item", () =>
      Effect.gen(function*() {
        const token = yield* Effect.promise(() => Testing.mint())
        const created = yield* create(token, { name: "kettle", description: "for tea" })
        assert.strictEqual(created.status, 201)
        const item = yield* json(created)
        assert.strictEqual(created.headers.get("location"), `/api/v1/items/${item.id}`)
        assert.deepInclude(item, { name: "kettle", description: "for tea" })
        assert.match(item.createdAt, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/)

        const read = yield* call(`/api/v1/items/${item.id}`, { token })
        assert.deepStrictEqual(yield* json(read), item)

        const listed = yield* call("/api/v1/items", { token })
        assert.strictEqual(listed.headers.get("content-type"), "application/json")
        // The list is serialized without the schema's encoder: its body must still be what the
        // schema (and so /openapi.json) promises, exactly, with nothing extra.
        const list = yield* json(listed)
        const decoded = Schema.decodeUnknownSync(ItemPage)(list, { onExcessProperty: "error" })
        assert.deepStrictEqual(Schema.encodeSync(ItemPage)(decoded), list)
        assert.deepInclude(list.items, item)

        assert.strictEqual((yield* call(`/api/v1/items/${item.id}`, { method: "DELETE", token })).status, 204)
        const gone = yield* call(`/api/v1/items/${item.id}`, { token })
        assert.strictEqual(gone.status, 404)
        assert.strictEqual(gone.headers.get("content-type"), "application/problem+json")
        assert.deepStrictEqual(yield* json(gone), {
          type: "/problems/item-not-found",
          title: "No such item",
          status: 404,
          detail: `no item with id ${item.id}`,
          requestId: gone.headers.get("x-request-id")
        })
        assert.strictEqual((yield* call(`/api/v1/items/${item.id}`, { method: "DELETE", token })).status, 404)
      }))

    it.effect("text that looks like SQL is stored and returned literally", () =>
      Effect.gen(function*() {
        const token = yield* Effect.promise(() => Testing.mint())
        const name = "Robert'); DROP TABLE items;--"
        const item = yield* json(yield* create(token, { name, description: "' OR 1=1 --" }))
        assert.deepInclude(yield* json(yield* call(`/api/v1/items/${item.id}`, { token })), {
          name,
          description: "' OR 1=1 --"
        })
      }))
  })

  layer(appLayer({ CACHE_TTL: "0" }), { excludeTestServices: true, timeout: "60 seconds" })((it) => {
    it.effect("pages in a stable order with totals and Link headers", () =>
      Effect.gen(function*() {
        const token = yield* Effect.promise(() => Testing.mint())
        const ids: Array<number> = []
        for (let i = 1; i <= 25; i++) ids.push((yield* json(yield* create(token, { name: `item ${i}` }))).id)
        const page2 = yield* call("/api/v1/items?page=2&perPage=10", { token })
        const body = yield* json(page2)
        assert.deepStrictEqual(body.pagination, { page: 2, perPage: 10, total: 25 })
        assert.deepStrictEqual(body.items.map((item: { id: number }) => item.id), ids.slice(10, 20))
        assert.strictEqual(
          page2.headers.get("link"),
          [
            `</api/v1/items?page=1&perPage=10>; rel="first"`,
            `</api/v1/items?page=1&perPage=10>; rel="prev"`,
            `</api/v1/items?page=3&perPage=10>; rel="next"`,
            `</api/v1/items?page=3&perPage=10>; rel="last"`
          ].join(", ")
        )
        const defaults = yield* json(yield* call("/api/v1/items", { token }))
        assert.deepStrictEqual(defaults.pagination, { page: 1, perPage: 20, total: 25 })
        const beyond = yield* json(yield* call("/api/v1/items?page=9&perPage=10", { token }))
        assert.deepStrictEqual(beyond, { items: [], pagination: { page: 9, perPage: 10, total: 25 } })
      }))
  })

  layer(appLayer({ CACHE_TTL: "1 minute" }), { excludeTestServices: true, timeout: "60 seconds" })((it) => {
    it.effect("list pages come from the cache until a write through the API invalidates them", () =>
      Effect.gen(function*() {
        const app = yield* App
        const token = yield* Effect.promise(() => Testing.mint())
        yield* create(token, { name: "first" })
        const before = yield* json(yield* call("/api/v1/items", { token }))
        // Written behind the API's back: the cached page does not know.
        yield* Testing.sql(app.env.DATABASE_URL!, "INSERT INTO items (name) VALUES ('sneaked in')")
        assert.deepStrictEqual(yield* json(yield* call("/api/v1/items", { token })), before)
        yield* create(token, { name: "second" })
        const after = yield* json(yield* call("/api/v1/items", { token }))
        assert.deepStrictEqual(after.items.map((item: { name: string }) => item.name), [
          "first",
          "sneaked in",
          "second"
        ])
      }))
  })
})

describe("bad input: a problem that says what was wrong, nothing stored", () => {
  layer(appLayer({ RATE_LIMIT: "3", MAX_BODY_SIZE: "64KiB" }), { excludeTestServices: true, timeout: "60 seconds" })(
    (it) => {
      const expectError = (response: Response, status: number, message?: RegExp) =>
        Effect.gen(function*() {
          assert.strictEqual(response.status, status)
          assert.strictEqual(response.headers.get("content-type"), "application/problem+json")
          const body = yield* json(response)
          assert.strictEqual(body.status, status)
          assert.isString(body.title)
          assert.strictEqual(body.requestId, response.headers.get("x-request-id"))
          if (message !== undefined) assert.match(body.detail ?? body.message, message)
          assert.notInclude(JSON.stringify(body), "    at ")
          return body
        })

      it.effect("each kind of bad request gets its status", () =>
        Effect.gen(function*() {
          const app = yield* App
          const token = yield* Effect.promise(() => Testing.mint({ subject: "bad-input" }))
          const post = (body: string, contentType = "application/json") =>
            call("/api/v1/items", { method: "POST", token, headers: { "content-type": contentType }, body })

          yield* expectError(yield* post("{\"name\":"), 400, /payload/)
          const violation = yield* expectError(yield* post(JSON.stringify({ name: "" })), 400, /payload\.name/)
          assert.deepStrictEqual(violation.issues[0].path, ["payload", "name"])
          // A fresh token per rate-limit budget; this subject has had its three.
          const token2 = yield* Effect.promise(() => Testing.mint({ subject: "bad-input-2" }))
          const post2 = (body: string | Uint8Array, contentType = "application/json") =>
            call("/api/v1/items", { method: "POST", token: token2, headers: { "content-type": contentType }, body })
          yield* expectError(yield* post2(new Uint8Array(200 * 1024).fill(97)), 413, /larger than 65536 bytes/)
          yield* expectError(yield* post2("name=x", "text/plain"), 415, /content-type/)
          const token3 = yield* Effect.promise(() => Testing.mint({ subject: "bad-input-3" }))
          yield* expectError(yield* call("/api/v1/items?page=-1", { token: token3 }), 400, /query\.page/)
          yield* expectError(yield* call("/api/v1/items?perPage=1000", { token: token3 }), 400, /query\.perPage/)
          yield* expectError(yield* call("/api/v1/items/abc", { token: token3 }), 400, /params\.id/)
          yield* expectError(yield* call("/api/v1/nothing-here"), 404, /no route/)
          const wrongMethod = yield* expectError(yield* call("/api/v1/items", { method: "PUT" }), 405)
          assert.strictEqual(wrongMethod.title, "Method Not Allowed")
          const rows = yield* Testing.sql(app.env.DATABASE_URL!, "SELECT count(*)::int AS n FROM items")
          assert.strictEqual(rows[0]!.n, 0)
        }))

      it.effect("missing, malformed, expired and forged tokens get 401 with WWW-Authenticate", () =>
        Effect.gen(function*() {
          const expired = yield* Effect.promise(() => Testing.mint({ expiresIn: Math.floor(Date.now() / 1000) - 60 }))
          const forged = yield* Effect.promise(() => Testing.mint({ secret: "not-the-server-secret-0123456789abcdef" }))
          const anonymous = yield* Effect.promise(() => Testing.mint({ subject: "" }))
          const cases: Array<[string | undefined, RegExp]> = [
            [undefined, /a bearer token is required/],
            ["not-a-jwt", /malformed/],
            [expired, /expired/],
            [forged, /signature/],
            [anonymous, /no sub claim/]
          ]
          for (const [token, message] of cases) {
            const response = yield* call("/api/v1/items", token === undefined ? {} : { token })
            yield* expectError(response, 401, message)
            assert.match(response.headers.get("www-authenticate") ?? "", /^Bearer realm="api"/)
          }
          // Public: health and docs.
          assert.strictEqual((yield* call("/livez")).status, 200)
          assert.strictEqual((yield* call("/openapi.json")).status, 200)
        }))

      it.effect("over the rate: 429 with Retry-After; under it, RateLimit-* headers", () =>
        Effect.gen(function*() {
          const token = yield* Effect.promise(() => Testing.mint({ subject: "eager" }))
          const responses = []
          for (let i = 0; i < 4; i++) responses.push(yield* call("/api/v1/items", { token }))
          assert.deepStrictEqual(responses.map((r) => r.status), [200, 200, 200, 429])
          assert.strictEqual(responses[0]!.headers.get("ratelimit-limit"), "3")
          assert.strictEqual(responses[0]!.headers.get("ratelimit-remaining"), "2")
          const limited = responses[3]!
          assert.isAtLeast(Number(limited.headers.get("retry-after")), 1)
          yield* expectError(limited, 429, /too many requests/)
          // Another subject has its own budget.
          const other = yield* Effect.promise(() => Testing.mint({ subject: "patient" }))
          assert.strictEqual((yield* call("/api/v1/items", { token: other })).status, 200)
        }))

      const generatedId = /^[A-Za-z0-9_-]{12}-[0-9a-z]+$/
      it.effect("every response carries a request id (echoed when valid) and the security headers for what it is", () =>
        Effect.gen(function*() {
          const echoed = yield* call("/livez", { headers: { "x-request-id": "req-42" } })
          assert.strictEqual(echoed.headers.get("x-request-id"), "req-42")
          const generated = yield* call("/livez", { headers: { "x-request-id": "bad id with spaces" } })
          assert.match(generated.headers.get("x-request-id") ?? "", generatedId)
          const next = yield* call("/livez")
          assert.match(next.headers.get("x-request-id") ?? "", generatedId)
          assert.notStrictEqual(next.headers.get("x-request-id"), generated.headers.get("x-request-id"))
          assert.strictEqual(generated.headers.get("x-content-type-options"), "nosniff")
          assert.strictEqual(
            generated.headers.get("content-security-policy"),
            "default-src 'none'; frame-ancestors 'none'"
          )
          assert.strictEqual(generated.headers.get("cross-origin-resource-policy"), "same-origin")
          const docs = yield* call("/docs")
          assert.strictEqual(docs.headers.get("x-frame-options"), "DENY")
          assert.strictEqual(docs.headers.get("referrer-policy"), "no-referrer")
          assert.strictEqual(docs.headers.get("cross-origin-opener-policy"), "same-origin")
          assert.match(docs.headers.get("content-security-policy") ?? "", /frame-ancestors 'none'/)
          const notFound = yield* call("/nope")
          assert.match(notFound.headers.get("x-request-id") ?? "", generatedId)
        }))
    }
  )
})
