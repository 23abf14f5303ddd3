/**
 * Who is calling: the peer address, or, when the peer is a trusted proxy, the right-most
 * X-Forwarded-For entry that is not one. TRUSTED_PROXIES takes addresses and CIDRs, v4 and v6.
 */
import { Config, Schema } from "effect"
import * as Net from "node:net"

/** `::ffff:10.0.0.1` is 10.0.0.1: a dual-stack socket reports IPv4 peers in that form. */
const normalizeAddress = (address: string) =>
  address.startsWith("::ffff:") && Net.isIPv4(address.slice(7)) ? address.slice(7) : address

/** One TRUSTED_PROXIES entry (`10.0.0.1`, `10.0.0.0/8`, `fd00::/8`), or why it is not one. */
const parseEntry = (entry: string): { readonly address: string; readonly prefix: number | undefined } | string => {
  const slash = entry.indexOf("/")
  const address = normalizeAddress(slash === -1 ? entry : entry.slice(0, slash))
  const family = Net.isIP(address)
  if (family === 0) return `${entry} is not an IP address or CIDR`
  if (slash === -1) return { address, prefix: undefined }
  const text = entry.slice(slash + 1)
  const prefix = Number(text)
  if (!/^\d{1,3}$/.test(text) || prefix > (family === 4 ? 32 : 128)) return `${entry} has no valid prefix length`
  return { address, prefix }
}

const ProxyList = Schema.String.check(Schema.makeFilter((value: string) => {
  for (const entry of splitList(value)) {
    const parsed = parseEntry(entry)
    if (typeof parsed === "string") return parsed
  }
  return undefined
}))

const splitList = (value: string) => value.split(",").map((item) => item.trim()).filter((item) => item.length > 0)

export const ClientAddressConfig = Config.all({
  /**
   * Proxies whose X-Forwarded-For is believed, comma-separated: addresses and CIDRs, IPv4 and
   * IPv6 (`10.0.0.0/8, fd00::/8, 192.0.2.7`). A malformed entry stops startup.
   */
  trustedProxies: Config.schema(ProxyList, "TRUSTED_PROXIES").pipe(Config.withDefault(""), Config.map(splitList))
})

/** The set of trusted proxies, built once: `has` answers for a normalized address. */
export interface Trusted {
  readonly has: (address: string) => boolean
  readonly size: number
}

/**
 * TRUSTED_PROXIES as a matcher, built once. Node's BlockList does the CIDR matching (v4 and v6)
 * so that no hand-written prefix arithmetic decides whom to believe. Entries that do not parse
 * were refused by the config already; here they are skipped.
 */
export const trusted = (proxies: ReadonlyArray<string>): Trusted => {
  const list = new Net.BlockList()
  let size = 0
  for (const entry of proxies) {
    const parsed = parseEntry(entry)
    if (typeof parsed === "string") continue
    const family = Net.isIPv4(parsed.address) ? "ipv4" : "ipv6"
    if (parsed.prefix === undefined) list.addAddress(parsed.address, family)
    else list.addSubnet(parsed.address, parsed.prefix, family)
    size++
  }
  if (size === 0) return { has: () => false, size }
  return {
    has: (address) => {
      const family = Net.isIP(address)
      return family !== 0 && list.check(address, family === 4 ? "ipv4" : "ipv6")
    },
    size
  }
}

/** An X-Forwarded-For hop as an address: proxies may add a port (`1.2.3.4:80`, `[::1]:80`). */
const hopAddress = (hop: string): string | undefined => {
  let address = hop.trim()
  if (address.startsWith("[")) {
    const end = address.indexOf("]")
    address = end === -1 ? address : address.slice(1, end)
  } else if (address.indexOf(":") !== -1 && address.indexOf(":") === address.lastIndexOf(":")) {
    address = address.slice(0, address.indexOf(":"))
  }
  address = normalizeAddress(address)
  return Net.isIP(address) === 0 ? undefined : address
}

/**
 * The client's address: the peer, unless the peer is a trusted proxy, then the right-most
 * X-Forwarded-For entry that is not a trusted proxy (entries further left are the client's word).
 * A hop that is not an address (a broken proxy) stops the walk at the last trusted hop: nobody
 * gets to choose their own key by writing garbage.
 */
export const clientAddress = (
  peer: string | undefined,
  forwardedFor: string | undefined,
  trusted: Trusted
): string => {
  let address = peer === undefined ? "unknown" : normalizeAddress(peer)
  if (forwardedFor === undefined || !trusted.has(address)) return address
  const hops = forwardedFor.split(",")
  for (let i = hops.length - 1; i >= 0; i--) {
    if (hops[i]!.trim().length === 0) continue
    const hop = hopAddress(hops[i]!)
    if (hop === undefined) return address
    address = hop
    if (!trusted.has(address)) break
  }
  return address
}

/**
 * The key a client address is rate limited by. An IPv6 host is typically given a whole /64, so
 * one client could otherwise rotate through 2^64 keys (and evict everyone else's counts).
 */
export const limitKey = (address: string): string => {
  // Every IPv6 form has a colon and no IPv4 one does: a dotted address (the common case) is its
  // own key without Node's IPv6 regular expression running on every request.
  if (address.indexOf(":") === -1 || !Net.isIPv6(address)) return address
  const [head = "", tail] = address.split("::")
  const left = head === "" ? [] : head.split(":")
  const right = tail === undefined || tail === "" ? [] : tail.split(":")
  const groups = tail === undefined
    ? left
    : [...left, ...Array(Math.max(0, 8 - left.length - right.length)).fill("0"), ...right]
  return `${groups.slice(0, 4).map((group) => (Number.parseInt(group, 16) || 0).toString(16)).join(":")}::/64`
}
