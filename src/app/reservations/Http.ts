/**
 * The reservations handlers: every operation is the caller's own (the token's subject holds the
 * reservation), every failure a declared error.
 */
import { Duration, Effect, Layer, Option } from "effect"
import { HttpServerResponse } from "effect/http"
import { HttpApiBuilder, HttpApiSchema } from "effect/http-api"
import { Pagination } from "../../kit/index.ts"
import { Api } from "../Api.ts"
import { CurrentUser } from "../Auth.ts"
import * as Endpoints from "../Endpoints.ts"
import { pageQuery, ReservationNotFound, TtlTooLong, UnknownItem } from "./Api.ts"
import { ReservationsConfig } from "./Config.ts"
import { ReservationsRepo } from "./Repo.ts"

const unavailable = Endpoints.unavailable("reservations")

export const ReservationsHttp = HttpApiBuilder.group(Api, "reservations", (handlers) =>
  Effect.gen(function*() {
    const repo = yield* ReservationsRepo
    const { maxTtl, ttl } = yield* ReservationsConfig
    const maxTtlSeconds = Math.floor(Duration.toSeconds(maxTtl))

    return handlers
      .handle("list", ({ query }) =>
        Effect.gen(function*() {
          const { subject } = yield* CurrentUser
          const { offset, page, perPage } = Pagination.requested(query, pageQuery)
          const { reservations, total } = yield* unavailable(repo.list(subject, { offset, perPage }))
          const pagination = { page, perPage, total }
          return HttpServerResponse.jsonUnsafe({ reservations, pagination }, {
            headers: { link: Pagination.linkHeader("/api/v1/reservations", pagination) }
          })
        }))
      .handle("get", ({ params }) =>
        Effect.gen(function*() {
          const { subject } = yield* CurrentUser
          const found = yield* unavailable(repo.get(subject, params.id))
          if (Option.isNone(found)) return yield* ReservationNotFound.of(params.id)
          return found.value
        }))
      .handle("create", ({ payload }) =>
        Effect.gen(function*() {
          const { subject } = yield* CurrentUser
          if (payload.ttlSeconds !== undefined && payload.ttlSeconds > maxTtlSeconds) {
            return yield* new TtlTooLong({
              detail: `ttlSeconds is ${payload.ttlSeconds}; at most ${maxTtlSeconds}`,
              maxTtlSeconds
            })
          }
          const ttlMs = payload.ttlSeconds === undefined ? Duration.toMillis(ttl) : payload.ttlSeconds * 1000
          const created = yield* unavailable(
            repo.create(subject, { itemId: payload.itemId, quantity: payload.quantity, ttlMs })
          )
          if (Option.isNone(created)) return yield* UnknownItem.of(payload.itemId)
          return HttpApiSchema.withHeaders({
            body: created.value,
            headers: { location: `/api/v1/reservations/${created.value.id}` }
          })
        }))
      .handle("remove", ({ params }) =>
        Effect.gen(function*() {
          const { subject } = yield* CurrentUser
          if (!(yield* unavailable(repo.remove(subject, params.id)))) return yield* ReservationNotFound.of(params.id)
        }))
  })).pipe(Layer.provide(ReservationsRepo.layer))
