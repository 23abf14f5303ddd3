/**
 * Who is calling: the peer address, or, when the peer is a trusted proxy, the right-most
 * X-Forwarded-For entry that is not one.
 */
import { Config } from "effect"
import { list } from "../Settings.ts"

export const ClientAddressConfig = Config.all({
  /** Comma-separated proxy addresses whose X-Forwarded-For is believed for the client address. */
  trustedProxies: list("TRUSTED_PROXIES")
})

/** `::ffff:10.0.0.1` is 10.0.0.1. */
const normalizeAddress = (address: string) => address.startsWith("::ffff:") ? address.slice(7) : address

/** TRUSTED_PROXIES as a set, built once, in the form clientAddress compares. */
export const trustedSet = (proxies: ReadonlyArray<string>): ReadonlySet<string> => new Set(proxies.map(normalizeAddress))

/**
 * The client's address: the peer, unless the peer is a trusted proxy, then the right-most
 * X-Forwarded-For entry that is not a trusted proxy (entries further left are the client's word).
 */
export const clientAddress = (
  peer: string | undefined,
  forwardedFor: string | undefined,
  trusted: ReadonlySet<string>
): string => {
  let address = peer === undefined ? "unknown" : normalizeAddress(peer)
  if (!trusted.has(address) || forwardedFor === undefined) return address
  const hops = forwardedFor.split(",").map((hop) => normalizeAddress(hop.trim())).filter((hop) => hop.length > 0)
  for (let i = hops.length - 1; i >= 0; i--) {
    address = hops[i]!
    if (!trusted.has(address)) break
  }
  return address
}

