/**
 * `/docs`: Scalar, served from this process as a static asset (no CDN, no web fonts): rendered
 * once on the first visit, kept identity, gzip and brotli, revalidated by ETag.
 */
import { Effect, Layer, Scope } from "effect"
import { HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import { HttpApiScalar } from "effect/http-api"
import * as Crypto from "node:crypto"
import * as Util from "node:util"
import * as Zlib from "node:zlib"
import { Api } from "./Api.ts"

/** Paths served as HTML documents: the server gives them the document set of security headers. */
export const documentPaths = ["/docs"]

type Encoding = "br" | "gzip" | "identity"

interface Variant {
  readonly body: Uint8Array
  readonly etag: string
}

/**
 * The page in each encoding. One shared buffer per encoding: a client that never reads its
 * response holds a reference to it, not a copy of 3 MB.
 */
export interface Asset {
  readonly variants: Readonly<Record<Encoding, Variant>>
  readonly contentType: string
}

const gzip = Util.promisify(Zlib.gzip)
const brotli = Util.promisify(Zlib.brotliCompress)

export const makeAsset = (page: Uint8Array, contentType: string): Effect.Effect<Asset> =>
  Effect.promise(async () => {
    const hash = Crypto.createHash("sha256").update(page).digest("base64url").slice(0, 27)
    // Quality 9: within 1% of 11 on this page at a tenth of the time, and it is done once.
    const [gz, br] = await Promise.all([
      gzip(page, { level: 9 }),
      brotli(page, {
        params: { [Zlib.constants.BROTLI_PARAM_QUALITY]: 9, [Zlib.constants.BROTLI_PARAM_SIZE_HINT]: page.byteLength }
      })
    ])
    return {
      contentType,
      // Each encoding is its own representation, so each has its own strong ETag.
      variants: {
        identity: { body: page, etag: `"${hash}"` },
        gzip: { body: gz, etag: `"${hash}-gz"` },
        br: { body: br, etag: `"${hash}-br"` }
      }
    }
  })

/** The best encoding the client accepts (`q=0` refuses one); brotli first, it is the smallest. */
export const negotiate = (acceptEncoding: string | undefined): Encoding => {
  if (acceptEncoding === undefined) return "identity"
  const accepted = new Map<string, number>()
  for (const part of acceptEncoding.split(",")) {
    const [name, ...params] = part.trim().toLowerCase().split(";")
    const q = params.map((param) => /^\s*q\s*=\s*([\d.]+)\s*$/.exec(param)).find((match) => match !== null)
    accepted.set(name!.trim(), q === undefined ? 1 : Number(q![1]))
  }
  const weight = (encoding: string) => accepted.get(encoding) ?? accepted.get("*") ?? 0
  if (weight("br") > 0) return "br"
  if (weight("gzip") > 0) return "gzip"
  return "identity"
}

/** Whether `If-None-Match` names any representation of this asset (weak comparison, RFC 9110 13.1.2). */
const matches = (ifNoneMatch: string, asset: Asset) => {
  if (ifNoneMatch.trim() === "*") return true
  const tags = new Set(Object.values(asset.variants).map((variant) => variant.etag))
  return ifNoneMatch.split(",").some((tag) => tags.has(tag.trim().replace(/^W\//, "")))
}

/** Revalidated on each use (ETag makes that a 304), so a deploy's new API shows at once. */
const cacheControl = "public, max-age=0, must-revalidate"

export const serveAsset = (asset: Asset, request: HttpServerRequest.HttpServerRequest) => {
  const encoding = negotiate(request.headers["accept-encoding"])
  const variant = asset.variants[encoding]
  const headers: Record<string, string> = { etag: variant.etag, "cache-control": cacheControl, vary: "accept-encoding" }
  const ifNoneMatch = request.headers["if-none-match"]
  if (ifNoneMatch !== undefined && matches(ifNoneMatch, asset)) {
    return HttpServerResponse.empty({ status: 304, headers })
  }
  if (encoding !== "identity") headers["content-encoding"] = encoding
  return HttpServerResponse.uint8Array(variant.body, { contentType: asset.contentType, headers })
}

const bodyOf = (response: HttpServerResponse.HttpServerResponse): Uint8Array => {
  const body = response.body
  if (body._tag === "Uint8Array") return body.body
  throw new Error(`the docs page rendered as a ${body._tag} body, not bytes`)
}

export const routes = Layer.effectDiscard(Effect.gen(function*() {
  const scope = yield* Effect.scope
  const asset = yield* Effect.cached(
    HttpRouter.toHttpEffect(
      HttpApiScalar.layer(Api, {
        path: "/docs",
        scalar: { withDefaultFonts: false, defaultOpenAllTags: true, favicon: "data:," }
      })
    ).pipe(
      Scope.provide(scope),
      Effect.flatten,
      // The Scalar handler reads nothing of the request but the route; any GET of /docs will do.
      Effect.provideService(
        HttpServerRequest.HttpServerRequest,
        HttpServerRequest.fromWeb(new Request("http://localhost/docs"))
      ),
      Effect.flatMap((page) =>
        makeAsset(
          bodyOf(page),
          (page.body._tag === "Uint8Array" ? page.body.contentType : undefined) ?? "text/html; charset=utf-8"
        )
      )
    )
  )
  const handler = Effect.flatMap(
    asset,
    (asset) => Effect.map(HttpServerRequest.HttpServerRequest, (request) => serveAsset(asset, request))
  )
  const router = yield* HttpRouter.HttpRouter
  // The router ignores a trailing slash: this serves `/docs/` too.
  yield* router.add("GET", "/docs", handler)
}))
