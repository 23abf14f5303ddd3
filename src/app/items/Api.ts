/**
 * The items group of the API contract: endpoints, their inputs and outputs, and their errors,
 * from which the server decodes requests and `/openapi.json` and `/docs` are generated.
 */
import { Schema } from "effect"
import { HttpApiEndpoint, HttpApiError, HttpApiGroup, HttpApiSchema } from "effect/http-api"
import { Pagination, Problem, Validation } from "../../kit/index.ts"
import { Authentication } from "../Auth.ts"
import { guarded, Id, IdParams } from "../Endpoints.ts"
import { AddressRateLimited, RateLimited } from "../RateLimited.ts"

export const ItemId = Id.annotate({ description: "The item's id, a positive integer" })

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

export const ItemPage = Schema.Struct({
  items: Schema.Array(Item),
  pagination: Pagination.Page
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

/** The list's query: `page` from 1, `perPage` up to 100 (default 20). */
export const pageQuery = { maxPerPage: 100, defaultPerPage: 20 } as const

export class ItemsGroup extends HttpApiGroup.make("items")
  .add(
    HttpApiEndpoint.get("list", "/items", {
      query: Pagination.PageQuery(pageQuery),
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
