/**
 * CORS for the origins in CORS_ORIGINS (none: no cross-origin access). The response headers a
 * browser may read are the app's to name.
 */
import { Config, Effect, Layer } from "effect"
import { HttpRouter } from "effect/http"
import { list } from "../Settings.ts"

export const CorsConfig = Config.all({
  /** Comma-separated origins allowed by CORS; empty: no cross-origin access. `*` allows any. */
  origins: list("CORS_ORIGINS")
})

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
