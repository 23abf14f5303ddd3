/**
 * Request ids: the client's when plain, read from the raw header list; otherwise one made here,
 * never the same twice in a process.
 */
import { assert, describe, it } from "@effect/vitest"
import type * as Http from "node:http"
import * as RequestId from "../../src/kit/RequestId.ts"

const request = (rawHeaders: Array<string>) => ({ rawHeaders }) as unknown as Http.IncomingMessage
const generated = /^[A-Za-z0-9_-]{12}-[0-9a-z]+$/

describe("RequestId", () => {
  it("keeps a plain client id, whatever the header's case", () => {
    assert.strictEqual(RequestId.assign(request(["Host", "x", "X-Request-ID", "trace-7:a.b_c"])), "trace-7:a.b_c")
  })

  it("replaces an id that is not plain, too long, or sent twice", () => {
    for (
      const raw of [
        ["x-request-id", "has space"],
        ["x-request-id", "a".repeat(129)],
        ["x-request-id", "<script>"],
        ["x-request-id", "one", "X-Request-Id", "two"]
      ]
    ) {
      assert.match(RequestId.assign(request(raw)), generated, raw.join(" "))
    }
  })

  it("assigns once: the same request keeps its id", () => {
    const incoming = request([])
    assert.strictEqual(RequestId.assign(incoming), RequestId.assign(incoming))
  })

  it("makes a new id for every request", () => {
    const ids = new Set(Array.from({ length: 1000 }, () => RequestId.assign(request([]))))
    assert.strictEqual(ids.size, 1000)
  })
})
