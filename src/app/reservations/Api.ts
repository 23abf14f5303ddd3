/**
 * The reservations group of the API contract: a caller holds a quantity of an item for a while;
 * a hold that has run out is gone (never listed or returned), and the expiry job deletes it.
 */
import { Schema } from "effect"
import { HttpApiEndpoint, HttpApiError, HttpApiGroup, HttpApiSchema } from "effect/http-api"
import { Pagination, Problem, Validation } from "../../kit/index.ts"
import { Authentication } from "../Auth.ts"
import { guarded, Id, IdParams } from "../Endpoints.ts"
import { AddressRateLimited, RateLimited } from "../RateLimited.ts"

const instant = Schema.String.annotate({ description: "ISO 8601, UTC" })

export const Reservation = Schema.Struct({
  id: Id.annotate({ description: "The reservation's id" }),
  itemId: Id.annotate({ description: "The item held" }),
  quantity: Schema.Int,
  createdAt: instant,
  expiresAt: instant
}).annotate({ identifier: "Reservation" })
export type Reservation = typeof Reservation.Type

export const NewReservation = Schema.Struct({
  itemId: Id,
  quantity: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 1000 })).annotate({
    description: "1 to 1000"
  }),
  ttlSeconds: Schema.optionalKey(
    Schema.Int.check(Schema.isGreaterThanOrEqualTo(1)).annotate({
      description: "How long to hold, in seconds (default RESERVATION_TTL, at most RESERVATION_MAX_TTL)"
    })
  )
})

export const ReservationPage = Schema.Struct({
  reservations: Schema.Array(Reservation),
  pagination: Pagination.Page
})

export class ReservationNotFound extends HttpApiError.Problem<ReservationNotFound>()("ReservationNotFound", {
  type: Problem.typeUri("reservation-not-found"),
  status: 404,
  title: "No such reservation"
}, {
  requestId: Schema.optionalKey(Schema.String)
}) {
  static readonly of = (id: number) =>
    new ReservationNotFound({ detail: `no live reservation with id ${id} held by you` })
}

/** The payload names an item that does not exist (or was deleted meanwhile). */
export class UnknownItem extends HttpApiError.Problem<UnknownItem>()("UnknownItem", {
  type: Problem.typeUri("unknown-item"),
  status: 422,
  title: "No such item to reserve"
}, {
  requestId: Schema.optionalKey(Schema.String)
}) {
  static readonly of = (itemId: number) => new UnknownItem({ detail: `no item with id ${itemId}` })
}

/** A hold longer than the server allows. */
export class TtlTooLong extends HttpApiError.Problem<TtlTooLong>()("TtlTooLong", {
  type: Problem.typeUri("reservation-ttl-too-long"),
  status: 422,
  title: "Reservation too long"
}, {
  requestId: Schema.optionalKey(Schema.String),
  maxTtlSeconds: Schema.Int
}) {}

export const pageQuery = { maxPerPage: 100, defaultPerPage: 20 } as const

export class ReservationsGroup extends HttpApiGroup.make("reservations")
  .add(
    HttpApiEndpoint.get("list", "/reservations", {
      query: Pagination.PageQuery(pageQuery),
      success: HttpApiSchema.WithHeaders(ReservationPage, { link: Schema.optionalKey(Schema.String) }),
      error: guarded
    }),
    HttpApiEndpoint.get("get", "/reservations/:id", {
      params: IdParams,
      success: Reservation,
      error: [ReservationNotFound, ...guarded]
    }),
    HttpApiEndpoint.post("create", "/reservations", {
      payload: NewReservation,
      success: HttpApiSchema.WithHeaders(Reservation, { location: Schema.String }).pipe(HttpApiSchema.status(201)),
      error: [UnknownItem, TtlTooLong, Problem.PayloadTooLarge, Problem.UnsupportedMediaType, ...guarded]
    }),
    HttpApiEndpoint.delete("remove", "/reservations/:id", {
      params: IdParams,
      error: [ReservationNotFound, ...guarded]
    })
  )
  // As items: address limit, then authentication, then the subject's limit.
  .middleware(Validation)
  .middleware(RateLimited)
  .middleware(Authentication)
  .middleware(AddressRateLimited)
  .prefix("/api/v1")
{}
