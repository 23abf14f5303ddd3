/**
 * The public face of client addresses: the settings, the trusted-proxy matcher, the address a
 * request came from and the key a limiter counts it under.
 */
export { clientAddress, ClientAddressConfig, limitKey, type Trusted, trusted } from "../http/ClientAddress.ts"
