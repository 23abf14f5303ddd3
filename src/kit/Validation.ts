/**
 * Requests the API's schemas reject get a 400 problem naming each offending field in `issues`,
 * each path prefixed by the part of the request it is in (`query`, `params`, `payload`, `headers`).
 */
import { Effect, type Layer, SchemaIssue } from "effect"
import { HttpServerRespondable } from "effect/http"
import { type HttpApiError, HttpApiMiddleware } from "effect/http-api"
import { ValidationProblem } from "./Problem.ts"

const formatIssues = SchemaIssue.makeFormatterStandardSchemaV1()

const pathSegment = (segment: PropertyKey | { readonly key: PropertyKey }): string | number => {
  const key = typeof segment === "object" ? segment.key : segment
  return typeof key === "number" ? key : String(key)
}

const issuesOf = (error: HttpApiError.HttpApiSchemaError) => {
  const part = error.kind.toLowerCase()
  return formatIssues(error.cause.issue).issues.map((issue) => ({
    path: [part, ...(issue.path ?? []).map(pathSegment)],
    message: issue.message
  }))
}

/**
 * Apply it to an HttpApi group or API. It declares `ValidationProblem`, so the OpenAPI document
 * shows the 400 body of every endpoint under it. Effect's own `layerProblemDetails` is the same
 * idea, but its detail is generic and its `errors` all-or-nothing; this one names the field.
 */
export class Validation extends HttpApiMiddleware.Service<Validation>()("scoped-server/Validation", {
  error: ValidationProblem
}) {
  static readonly layer: Layer.Layer<Validation> = HttpApiMiddleware.layerSchemaErrorTransform(Validation, (error) => {
    // Body and ResponseHeaders are our own answer failing its schema: a bug, left to the recoverer.
    if (error.kind === "Body" || error.kind === "ResponseHeaders") return Effect.fail(error)
    const issues = issuesOf(error)
    const detail = issues.length === 1
      ? `${issues[0]!.path.join(".")}: ${issues[0]!.message}`
      : `the request's ${error.kind.toLowerCase()} is not valid`
    // Answered here rather than failed, so the middleware around it (rate-limit headers) still applies.
    return HttpServerRespondable.toResponse(new ValidationProblem({ detail, issues }))
  })
}
