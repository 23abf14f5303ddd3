/**
 * Requests the API's schemas reject get 400 naming each offending field: `{error, status,
 * message, issues: [{path, message}]}`, each path prefixed by the part of the request it is in
 * (`query`, `params`, `payload`, `headers`). Apply it to an HttpApi group or API.
 */
import { Effect, type Layer, SchemaIssue } from "effect"
import { HttpServerResponse } from "effect/http"
import { type HttpApiError, HttpApiMiddleware } from "effect/http-api"

const formatIssues = SchemaIssue.makeFormatterStandardSchemaV1()

const pathSegment = (segment: PropertyKey | { readonly key: PropertyKey }): string | number => {
  const key = typeof segment === "object" ? segment.key : segment
  return typeof key === "number" ? key : String(key)
}

export const issuesOf = (error: HttpApiError.HttpApiSchemaError) => {
  const part = error.kind.toLowerCase()
  return formatIssues(error.cause.issue).issues.map((issue) => ({
    path: [part, ...(issue.path ?? []).map(pathSegment)],
    message: issue.message
  }))
}

export class Validation extends HttpApiMiddleware.Service<Validation>()("scoped-server/Validation") {
  static readonly layer: Layer.Layer<Validation> = HttpApiMiddleware.layerSchemaErrorTransform(Validation, (error) => {
    // Body and ResponseHeaders are our own answer failing its schema: a bug, left to the recoverer.
    if (error.kind === "Body" || error.kind === "ResponseHeaders") return Effect.fail(error)
    const issues = issuesOf(error)
    const message = issues.length === 1
      ? `${issues[0]!.path.join(".")}: ${issues[0]!.message}`
      : `the request's ${error.kind.toLowerCase()} is not valid`
    return Effect.succeed(
      HttpServerResponse.jsonUnsafe({ error: "Bad Request", status: 400, message, issues }, { status: 400 })
    )
  })
}
