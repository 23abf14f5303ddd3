/**
 * The items handlers: list pages served from the cache until a write invalidates them, writes
 * and their invalidation in one uninterruptible step, every failure a declared error.
 */
import { Duration, Effect, Layer, Option } from "effect"
import { HttpServerResponse } from "effect/http"
import { HttpApiBuilder, HttpApiSchema } from "effect/http-api"
import { Cache, CacheConfig, Log, makeCacheGenerations, Metrics } from "../../kit/index.ts"
import { Api, ItemNotFound, Unavailable } from "./Api.ts"
import { ItemsRepo } from "./Repo.ts"

const defaultPerPage = 20

/** RFC 8288 links to the neighbouring pages, relative to this API. */
const linkHeader = (page: number, perPage: number, total: number): string | undefined => {
  const last = Math.max(1, Math.ceil(total / perPage))
  const link = (to: number, rel: string) => `</api/v1/items?page=${to}&perPage=${perPage}>; rel="${rel}"`
  const links = [link(1, "first")]
  if (page > 1) links.push(link(Math.min(page - 1, last), "prev"))
  if (page < last) links.push(link(page + 1, "next"))
  links.push(link(last, "last"))
  return links.join(", ")
}

/** Whatever the store said, the client hears "unavailable, retry"; the details go to the log. */
const unavailable = <A, R>(effect: Effect.Effect<A, unknown, R>) =>
  effect.pipe(
    Effect.tapError((error) =>
      Effect.logWarning("items: backing store failed").pipe(Effect.annotateLogs({ error: Log.describeError(error) }))
    ),
    Effect.mapError(() => Unavailable.of("the database is unavailable; try again"))
  )

export const ItemsHttp = HttpApiBuilder.group(Api, "items", (handlers) =>
  Effect.gen(function*() {
    const repo = yield* ItemsRepo
    const cache = yield* Cache
    const { ttl } = yield* CacheConfig
    const caching = Duration.toMillis(ttl) > 0

    // Every list page is filed under the current generation; a write starts a new one, so no
    // page from before the write is served after it (and none at all until the new one lands).
    const pages = makeCacheGenerations(cache, "items", ttl)
    yield* Metrics.observeCache(pages)
    const newGeneration = pages.invalidate

    const listPage = (page: number, perPage: number) =>
      unavailable(repo.list(page, perPage)).pipe(
        Effect.map(({ items, total }) => ({ items, pagination: { page, perPage, total } }))
      )

    const cachedPage = (page: number, perPage: number) => pages.through(`${page}:${perPage}`, listPage(page, perPage))

    return handlers
      .handle("list", ({ query }) =>
        Effect.gen(function*() {
          const page = query.page ?? 1
          const perPage = query.perPage ?? defaultPerPage
          const body = caching ? yield* cachedPage(page, perPage) : yield* listPage(page, perPage)
          const link = linkHeader(page, perPage, body.pagination.total)
          // Serialized once, straight to JSON: walking the page through ItemPage's encoder cost
          // ~7 µs per request and can change nothing here (the rows are the schema's encoded form,
          // typed by the table). ItemPage still drives OpenAPI, and the tests decode this body with it.
          return HttpServerResponse.jsonUnsafe(body, { headers: link === undefined ? {} : { link } })
        }))
      .handle("get", ({ params }) =>
        unavailable(repo.get(params.id)).pipe(
          Effect.flatMap(Option.match({
            onNone: () => Effect.fail(ItemNotFound.of(params.id)),
            onSome: Effect.succeed
          }))
        ))
      .handle("create", ({ payload }) =>
        Effect.gen(function*() {
          // The insert commits and the cache moves on together, or neither: shutdown waits.
          // Subscribers hear of it through the database (ItemsRepo notifies, ItemEvents listens).
          const item = yield* Effect.uninterruptible(
            Effect.tap(unavailable(repo.create(payload)), () => caching ? newGeneration : Effect.void)
          )
          return HttpApiSchema.withHeaders({ body: item, headers: { location: `/api/v1/items/${item.id}` } })
        }))
      .handle("remove", ({ params }) =>
        Effect.gen(function*() {
          const removed = yield* Effect.uninterruptible(
            Effect.tap(
              unavailable(repo.remove(params.id)),
              (removed) => removed && caching ? newGeneration : Effect.void
            )
          )
          if (!removed) return yield* ItemNotFound.of(params.id)
        }))
  })).pipe(Layer.provide(ItemsRepo.layer))
