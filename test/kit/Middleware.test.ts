/**
 * The cross-cutting middleware over real HTTP: a defect becomes a 500 with the request id and no
 * stack, CORS answers preflights for configured origins only, and the access log has one line.
 */
import { assert, describe, layer } from "@effect/vitest"
import { Effect } from "effect"
import { App, appLayer } from "../support/app.ts"

const call = (path: string, init?: RequestInit) =>
  Effect.gen(function*() {
    const app = yield* App
    return yield* Effect.promise(() => app.fetch(path, init))
  })

describe("Middleware", () => {
  layer(appLayer({ DEBUG_ROUTES: "true", CORS_ORIGINS: "https://app.example.com" }), {
    excludeTestServices: true,
    timeout: "60 seconds"
  })((it) => {
    it.effect("a defect is answered 500 with the request id and no stack trace", () =>
      Effect.gen(function*() {
        const response = yield* call("/debug/defect", { headers: { "x-request-id": "defect-1" } })
        assert.strictEqual(response.status, 500)
        const body = yield* Effect.promise(() => response.json() as Promise<Record<string, unknown>>)
        assert.strictEqual(response.headers.get("content-type"), "application/problem+json")
        assert.deepStrictEqual(body, {
          type: "about:blank",
          title: "Internal Server Error",
          status: 500,
          detail: "an unexpected error occurred",
          requestId: "defect-1"
        })
        assert.strictEqual(response.headers.get("x-request-id"), "defect-1")
      }))

    it.effect("CORS: a configured origin gets its preflight answered, another does not", () =>
      Effect.gen(function*() {
        const preflight = (origin: string) =>
          call("/api/v1/items", {
            method: "OPTIONS",
            headers: {
              origin,
              "access-control-request-method": "POST",
              "access-control-request-headers": "authorization,content-type"
            }
          })
        const allowed = yield* preflight("https://app.example.com")
        assert.strictEqual(allowed.headers.get("access-control-allow-origin"), "https://app.example.com")
        assert.match(allowed.headers.get("access-control-allow-headers") ?? "", /authorization/)
        // Never granted to the asking origin (a single configured origin is sent as is; browsers compare).
        const other = yield* preflight("https://evil.example.com")
        assert.notStrictEqual(other.headers.get("access-control-allow-origin"), "https://evil.example.com")
        assert.notStrictEqual(other.headers.get("access-control-allow-origin"), "*")
      }))
  })

  layer(appLayer(), { excludeTestServices: true, timeout: "60 seconds" })((it) => {
    it.effect("without CORS_ORIGINS no cross-origin access is granted", () =>
      Effect.gen(function*() {
        const response = yield* call("/livez", { headers: { origin: "https://app.example.com" } })
        assert.isNull(response.headers.get("access-control-allow-origin"))
      }))
  })
})
