/**
 * `/docs`: Scalar, served from this process (no CDN, no web fonts, nothing fetched elsewhere).
 * Its 3 MB script is loaded on the first visit, not at startup.
 */
import { Effect, Layer, Scope } from "effect"
import { HttpRouter } from "effect/http"
import { HttpApiScalar } from "effect/http-api"
import { Api } from "./items/Api.ts"

/** Paths served as HTML documents: the server gives them the document set of security headers. */
export const documentPaths = ["/docs"]

export const routes = Layer.effectDiscard(Effect.gen(function*() {
  const scope = yield* Effect.scope
  const page = yield* Effect.cached(
    HttpRouter.toHttpEffect(
      HttpApiScalar.layer(Api, { path: "/docs", scalar: { withDefaultFonts: false, defaultOpenAllTags: true, favicon: "data:," } })
    ).pipe(Scope.provide(scope))
  )
  const router = yield* HttpRouter.HttpRouter
  yield* router.add("GET", "/docs", Effect.flatten(page))
}))
