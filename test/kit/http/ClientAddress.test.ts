/**
 * The client's address: X-Forwarded-For is believed only from trusted proxies, right to left.
 */
import { assert, describe, it } from "@effect/vitest"
import * as ClientAddress from "../../../src/kit/http/ClientAddress.ts"

describe("client address behind TRUSTED_PROXIES", () => {
  const proxies = ClientAddress.trustedSet(["10.0.0.1", "::ffff:10.0.0.2"])

  it("is the peer when the peer is not a trusted proxy, whatever X-Forwarded-For says", () => {
    assert.strictEqual(ClientAddress.clientAddress("203.0.113.9", "1.2.3.4", proxies), "203.0.113.9")
    assert.strictEqual(ClientAddress.clientAddress("::ffff:203.0.113.9", undefined, proxies), "203.0.113.9")
  })

  it("is the right-most forwarded address that is not a trusted proxy", () => {
    assert.strictEqual(ClientAddress.clientAddress("10.0.0.1", "198.51.100.7", proxies), "198.51.100.7")
    // The left-most entry is the client's own word: a spoofed hop before the real one is ignored.
    assert.strictEqual(ClientAddress.clientAddress("10.0.0.1", "6.6.6.6, 198.51.100.7, 10.0.0.2", proxies), "198.51.100.7")
  })

  it("is the trusted peer itself when nothing was forwarded", () => {
    assert.strictEqual(ClientAddress.clientAddress("::ffff:10.0.0.1", undefined, proxies), "10.0.0.1")
  })
})
