/**
 * The items API contract: endpoints, their inputs and outputs, and their errors, from which the
 * server decodes requests and `/openapi.json` and `/docs` are generated.
 */
import { Schema } from "effect"
import { HttpApi, HttpApiEndpoint, HttpApiError, HttpApiGroup, HttpApiSchema, OpenApi } from "effect/http-api"
import { Problem, Validation } from "../../kit/index.ts"
import { Authentication } from "../Auth.ts"
import { AddressRateLimited, RateLimited } from "../RateLimited.ts"

export const ItemId = Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 2_147_483_647 })).annotate({
  description: "The item's id, a positive integer"
})

export const Item = Schema.Struct({
  id: ItemId,
  name: Schema.String,
  description: Schema.String,
  createdAt: Schema.String.annotate({ description: "When the item was created (ISO 8601, UTC)" })
}).annotate({ identifier: "Item" })
export type Item = typeof Item.Type

export const NewItem = Schema.Struct({
  name: Schema.String.check(Schema.isTrimmed(), Schema.isMinLength(1), Schema.isMaxLength(200)).annotate({
    description: "1 to 200 characters, no leading or trailing spaces"
  }),
  description: Schema.optionalKey(
    Schema.String.check(Schema.isMaxLength(2000)).annotate({ description: "Up to 2000 characters" })
  )
})

export const Page = Schema.Struct({
  page: Schema.Int,
  perPage: Schema.Int,
  total: Schema.Int
})

export const ItemPage = Schema.Struct({
  items: Schema.Array(Item),
  pagination: Page
})

/** A well-formed id with no item: its own `type`, so clients can tell it from a path with no route (also 404). */
export class ItemNotFound extends HttpApiError.Problem<ItemNotFound>()("ItemNotFound", {
  type: Problem.typeUri("item-not-found"),
  status: 404,
  title: "No such item"
}, {
  requestId: Schema.optionalKey(Schema.String)
}) {
  static readonly of = (id: number) => new ItemNotFound({ detail: `no item with id ${id}` })
}

/**
 * The database (or another backing store, or the rate limiter's) cannot answer now; the client
 * should retry after `Retry-After`. Every 503 of the API has this shape.
 */
export class Unavailable extends HttpApiError.Problem<Unavailable>()("Unavailable", {
  type: Problem.blankType,
  status: 503,
  title: "Service Unavailable"
}, {
  requestId: Schema.optionalKey(Schema.String)
}) {
  static readonly of = (detail: string) => new Unavailable({ detail })
}

/**
 * What the middleware in front of every endpoint may answer (Authentication, RateLimited),
 * declared so `/openapi.json` shows those bodies too. The 400 comes with `Validation`.
 */
const guarded = [Problem.Unauthorized, Problem.TooManyRequests, Unavailable] as const

const PageQuery = Schema.Struct({
  page: Schema.optionalKey(
    Schema.NumberFromString.check(Schema.isInt(), Schema.isBetween({ minimum: 1, maximum: 1_000_000 })).annotate({
      description: "1-based page number (default 1)"
    })
  ),
  perPage: Schema.optionalKey(
    Schema.NumberFromString.check(Schema.isInt(), Schema.isBetween({ minimum: 1, maximum: 100 })).annotate({
      description: "Items per page, 1 to 100 (default 20)"
    })
  )
})

const IdParams = Schema.Struct({
  id: Schema.NumberFromString.check(Schema.isInt(), Schema.isBetween({ minimum: 1, maximum: 2_147_483_647 }))
})

export class ItemsGroup extends HttpApiGroup.make("items")
  .add(
    HttpApiEndpoint.get("list", "/items", {
      query: PageQuery,
      success: HttpApiSchema.WithHeaders(ItemPage, { link: Schema.optionalKey(Schema.String) }),
      error: guarded
    }),
    HttpApiEndpoint.get("get", "/items/:id", { params: IdParams, success: Item, error: [ItemNotFound, ...guarded] }),
    HttpApiEndpoint.post("create", "/items", {
      payload: NewItem,
      success: HttpApiSchema.WithHeaders(Item, { location: Schema.String }).pipe(HttpApiSchema.status(201)),
      error: [Problem.PayloadTooLarge, Problem.UnsupportedMediaType, ...guarded]
    }),
    HttpApiEndpoint.delete("remove", "/items/:id", { params: IdParams, error: [ItemNotFound, ...guarded] })
  )
  // The last one added runs first: address limit, then authentication, then the subject's limit.
  .middleware(Validation)
  .middleware(RateLimited)
  .middleware(Authentication)
  .middleware(AddressRateLimited)
  .prefix("/api/v1")
{}

export class Api extends HttpApi.make("scoped-server")
  .add(ItemsGroup)
  .annotate(OpenApi.Title, "scoped-server reference API")
  .annotate(OpenApi.Version, "1.0.0")
  .annotate(OpenApi.Description, "Items with pagination, Bearer JWT auth, rate limiting and caching.")
{}
