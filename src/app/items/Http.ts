/**
 * The items handlers: list pages served from the cache until a write invalidates them, writes
 * and their invalidation in one uninterruptible step, every failure a declared error.
 */
import { Duration, Effect, Layer, Option } from "effect"
import { HttpServerResponse } from "effect/http"
import { HttpApiBuilder, HttpApiSchema } from "effect/http-api"
import { Cache, CacheConfig, makeCacheGenerations, Metrics, Pagination } from "../../kit/index.ts"
import { Api } from "../Api.ts"
import * as Endpoints from "../Endpoints.ts"
import { ItemNotFound, pageQuery } from "./Api.ts"
import { ItemsRepo } from "./Repo.ts"

const unavailable = Endpoints.unavailable("items")

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
          const { page, perPage } = Pagination.requested(query, pageQuery)
          const body = caching ? yield* cachedPage(page, perPage) : yield* listPage(page, perPage)
          const link = Pagination.linkHeader("/api/v1/items", body.pagination)
          // Serialized once, straight to JSON: walking the page through ItemPage's encoder cost
          // ~7 µs per request and can change nothing here (the rows are the schema's encoded form,
          // typed by the table). ItemPage still drives OpenAPI, and the tests decode this body with it.
          return HttpServerResponse.jsonUnsafe(body, { headers: { link } })
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
