/**
 * CORS for the origins in CORS_ORIGINS (none: no cross-origin access). The response headers a
 * browser may read are the app's to name.
 */
import { Config, Effect, Layer } from "effect"
import { HttpRouter } from "effect/http"
import { check, list } from "./Settings.ts"

/**
 * Why `entry` can never equal a browser's `Origin` header (`scheme://host[:port]`, nothing
 * after it), or undefined when it can. A browser never sends a path, so such an entry would
 * silently allow nothing.
 */
export const invalidOrigin = (entry: string): string | undefined => {
  if (entry === "*") return undefined
  let url: URL
  try {
    url = new URL(entry)
  } catch {
    return "is not a URL; write scheme://host[:port]"
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") return "is not an http or https origin"
  if (url.username !== "" || url.password !== "") return "has credentials; an origin is scheme://host[:port]"
  if (url.pathname !== "/" || url.search !== "" || url.hash !== "" || entry.endsWith("/")) {
    return `has a path; an origin is scheme://host[:port], e.g. ${url.origin}`
  }
  return undefined
}

export const CorsConfig = Config.all({
  /** Comma-separated origins allowed by CORS; empty: no cross-origin access. `*` allows any. */
  origins: list("CORS_ORIGINS")
}).pipe(
  check(({ origins }) => {
    if (
      origins.includes("*") && origins.length > 1
    ) return "CORS_ORIGINS: * allows any origin; list origins or use * alone"
    for (const origin of origins) {
      const problem = invalidOrigin(origin)
      if (problem !== undefined) return `CORS_ORIGINS: ${JSON.stringify(origin)} ${problem}`
    }
    return undefined
  }),
  Config.map(({ origins }) => ({
    // As a browser spells it (lower-case host, no default port), so the exact match used by CORS holds.
    origins: origins.map((origin) => origin === "*" ? origin : new URL(origin).origin)
  }))
)

export interface CorsOptions {
  /** Request headers a browser may send beyond the simple ones. */
  readonly allowedHeaders?: ReadonlyArray<string>
  /** Response headers a browser script may read (`x-request-id` and `retry-after` always). */
  readonly exposedHeaders?: ReadonlyArray<string>
}

/** CORS for `origins`; an empty list is no CORS at all. */
export const layer = (origins: ReadonlyArray<string>, options: CorsOptions = {}) =>
  origins.length === 0 ? Layer.empty : HttpRouter.cors({
    allowedOrigins: origins,
    allowedHeaders: ["authorization", "content-type", "x-request-id", ...(options.allowedHeaders ?? [])],
    exposedHeaders: ["x-request-id", "retry-after", ...(options.exposedHeaders ?? [])],
    maxAge: 600
  })

/** `layer` with the origins from CORS_ORIGINS. */
export const layerConfig = (options: CorsOptions = {}) =>
  Layer.unwrap(Effect.map(CorsConfig, ({ origins }) => layer(origins, options)))
