/**
 * The whole API contract: each feature's group, added here. From it the server decodes requests,
 * and `/openapi.json` and `/docs` are generated; the recoverer answers its undeclared errors.
 */
import { HttpApi, OpenApi } from "effect/http-api"
import { ItemsGroup } from "./items/Api.ts"
import { ReservationsGroup } from "./reservations/Api.ts"

export class Api extends HttpApi.make("scoped-server")
  .add(ItemsGroup)
  .add(ReservationsGroup)
  .annotate(OpenApi.Title, "scoped-server reference API")
  .annotate(OpenApi.Version, "1.0.0")
  .annotate(
    OpenApi.Description,
    "Items and their reservations, with pagination, Bearer JWT auth, rate limiting and caching."
  )
{}
