/**
 * The client's address: X-Forwarded-For is believed only from trusted proxies (addresses and
 * CIDRs, IPv4 and IPv6), right to left; TRUSTED_PROXIES that do not parse stop startup.
 */
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Effect, Exit } from "effect"
import * as ClientAddress from "../../src/kit/ClientAddress.ts"

describe("client address behind TRUSTED_PROXIES", () => {
  const proxies = ClientAddress.trusted(["10.0.0.1", "::ffff:10.0.0.2"])

  it("is the peer when the peer is not a trusted proxy, whatever X-Forwarded-For says", () => {
    assert.strictEqual(ClientAddress.clientAddress("203.0.113.9", "1.2.3.4", proxies), "203.0.113.9")
    assert.strictEqual(ClientAddress.clientAddress("::ffff:203.0.113.9", undefined, proxies), "203.0.113.9")
  })

  it("is the right-most forwarded address that is not a trusted proxy", () => {
    assert.strictEqual(ClientAddress.clientAddress("10.0.0.1", "198.51.100.7", proxies), "198.51.100.7")
    // The left-most entry is the client's own word: a spoofed hop before the real one is ignored.
    assert.strictEqual(
      ClientAddress.clientAddress("10.0.0.1", "6.6.6.6, 198.51.100.7, 10.0.0.2", proxies),
      "198.51.100.7"
    )
  })

  it("is the trusted peer itself when nothing was forwarded", () => {
    assert.strictEqual(ClientAddress.clientAddress("::ffff:10.0.0.1", undefined, proxies), "10.0.0.1")
  })

  it("matches CIDRs, IPv4 and IPv6, including IPv4-mapped peers", () => {
    const cidrs = ClientAddress.trusted(["10.0.0.0/8", "fd00::/8"])
    assert.strictEqual(ClientAddress.clientAddress("::ffff:10.200.3.4", "198.51.100.7", cidrs), "198.51.100.7")
    assert.strictEqual(ClientAddress.clientAddress("fd12:3456::1", "2001:db8::7", cidrs), "2001:db8::7")
    // Just outside each range: the proxy's word is not taken.
    assert.strictEqual(ClientAddress.clientAddress("11.0.0.1", "198.51.100.7", cidrs), "11.0.0.1")
    assert.strictEqual(ClientAddress.clientAddress("fe00::1", "198.51.100.7", cidrs), "fe00::1")
    // A chain of trusted hops is walked through to the first untrusted one.
    assert.strictEqual(
      ClientAddress.clientAddress("10.0.0.9", "198.51.100.7, fd00::5, 10.9.9.9", cidrs),
      "198.51.100.7"
    )
  })

  it("strips ports from hops and stops at garbage rather than keying by it", () => {
    const cidrs = ClientAddress.trusted(["10.0.0.0/8"])
    assert.strictEqual(ClientAddress.clientAddress("10.0.0.1", "198.51.100.7:4711", cidrs), "198.51.100.7")
    assert.strictEqual(ClientAddress.clientAddress("10.0.0.1", "[2001:db8::1]:443", cidrs), "2001:db8::1")
    assert.strictEqual(ClientAddress.clientAddress("10.0.0.1", "198.51.100.7, not-an-address", cidrs), "10.0.0.1")
  })

  it("keys an IPv6 client by its /64, an IPv4 client by its address", () => {
    assert.strictEqual(ClientAddress.limitKey("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64")
    assert.strictEqual(ClientAddress.limitKey("2001:db8:1:2:bbbb:cccc:dddd:eeee"), "2001:db8:1:2::/64")
    assert.strictEqual(ClientAddress.limitKey("2001:db8::1"), "2001:db8:0:0::/64")
    assert.strictEqual(ClientAddress.limitKey("::1"), "0:0:0:0::/64")
    assert.strictEqual(ClientAddress.limitKey("198.51.100.7"), "198.51.100.7")
  })

  it.effect("TRUSTED_PROXIES with a malformed entry is refused, naming the entry", () =>
    Effect.gen(function*() {
      const parse = (value: string) =>
        ClientAddress.ClientAddressConfig.parse(ConfigProvider.fromUnknown({ TRUSTED_PROXIES: value }))
      assert.deepStrictEqual(
        (yield* parse(" 10.0.0.0/8 , fd00::/8,192.0.2.7")).trustedProxies,
        ["10.0.0.0/8", "fd00::/8", "192.0.2.7"]
      )
      for (const bad of ["10.0.0.0/33", "proxy.internal", "fd00::/129", "10.0.0.0/x"]) {
        const exit = yield* Effect.exit(parse(`10.0.0.1, ${bad}`))
        assert.isTrue(Exit.isFailure(exit), bad)
        assert.include(String(Exit.isFailure(exit) ? exit.cause : ""), bad.split("/")[0])
      }
    }))
})
