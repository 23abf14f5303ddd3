/**
 * Arbitrary JSON bodies, query strings and path segments thrown at the items API: every answer is
 * a documented status with a JSON body (a problem for an error), never a 500 and never a hang.
 */
import { assert, describe, layer } from "@effect/vitest"
import { Effect, Schema } from "effect"
import * as Testing from "../../../src/kit/testing.ts"
import { App, appLayer } from "../../support/app.ts"

const request = (path: string, init: Parameters<App["Service"]["fetch"]>[1]) =>
  Effect.gen(function*() {
    const app = yield* App
    const response = yield* Effect.promise(() => app.fetch(path, { ...init, signal: AbortSignal.timeout(5_000) }))
    const text = yield* Effect.promise(() => response.text())
    return { status: response.status, text, contentType: response.headers.get("content-type") ?? "" }
  })

const assertAnswered = (
  answer: { status: number; text: string; contentType: string },
  allowed: ReadonlyArray<number>
) => {
  assert.include(allowed, answer.status, answer.text)
  if (answer.status !== 204) {
    // An answer is JSON; an error is a problem (RFC 9457).
    assert.match(answer.contentType, answer.status >= 400 ? /^application\/problem\+json$/ : /^application\/json/)
    const body = JSON.parse(answer.text)
    if (answer.status >= 400) assert.strictEqual(body.status, answer.status)
  }
}

describe("items API under arbitrary input", () => {
  layer(appLayer({ RATE_LIMIT: "1000000" }), { excludeTestServices: true, timeout: "120 seconds" })((it) => {
    const token = Testing.mint({ subject: "fuzzer" })

    it.effect.prop(
      "any JSON body to POST /items is created (201) or refused (400)",
      [Schema.Json],
      ([body]) =>
        Effect.gen(function*() {
          const answer = yield* request("/api/v1/items", {
            method: "POST",
            token: yield* Effect.promise(() => token),
            headers: { "content-type": "application/json" },
            body: JSON.stringify(body)
          })
          assertAnswered(answer, [201, 400])
        }),
      { timeout: 60_000 }
    )

    it.effect.prop(
      "any page and perPage give a page (200) or a 400",
      [Schema.String, Schema.String],
      ([page, perPage]) =>
        Effect.gen(function*() {
          const query = new URLSearchParams({ page, perPage }).toString()
          const answer = yield* request(`/api/v1/items?${query}`, { token: yield* Effect.promise(() => token) })
          assertAnswered(answer, [200, 400])
        }),
      { timeout: 60_000 }
    )

    it.effect.prop("any id segment gives an item, a 404 or a 400", [Schema.String], ([id]) =>
      Effect.gen(function*() {
        // An empty segment is the list itself.
        const answer = yield* request(`/api/v1/items/${encodeURIComponent(id.toWellFormed())}`, {
          token: yield* Effect.promise(() => token)
        })
        assertAnswered(answer, [200, 400, 404])
      }), { timeout: 60_000 })

    it.effect("malformed percent-encoding in the path or the query is a 400 or 404, not a 500", () =>
      Effect.gen(function*() {
        const auth = yield* Effect.promise(() => token)
        for (const path of ["/api/v1/items/%E0%A4%A", "/api/v1/items?page=%ZZ", "/api/v1/items/%00", "/api/v1/%"]) {
          assertAnswered(yield* request(path, { token: auth }), [400, 404])
        }
      }))
  })
})
