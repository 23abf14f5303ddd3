/**
 * Page-numbered lists as an API shows them: the query (`page`, `perPage`), the `pagination`
 * member of a page, and the RFC 8288 `Link` header to the first, previous, next and last pages.
 */
import { Schema } from "effect"

export interface PageQueryOptions {
  /** The most items a client may ask for in one page (default 100). */
  readonly maxPerPage?: number
  /** Items per page when the client does not say (default 20). */
  readonly defaultPerPage?: number
}

/** The highest page number accepted: beyond it a page is empty, and OFFSET stays a safe integer. */
const maxPage = 1_000_000

/** The `?page=&perPage=` query of a list endpoint, both optional, range-checked (a 400 names the field). */
export const PageQuery = (options: PageQueryOptions = {}) => {
  const maxPerPage = options.maxPerPage ?? 100
  const defaultPerPage = options.defaultPerPage ?? 20
  return Schema.Struct({
    page: Schema.optionalKey(
      Schema.NumberFromString.check(Schema.isInt(), Schema.isBetween({ minimum: 1, maximum: maxPage })).annotate({
        description: "1-based page number (default 1)"
      })
    ),
    perPage: Schema.optionalKey(
      Schema.NumberFromString.check(Schema.isInt(), Schema.isBetween({ minimum: 1, maximum: maxPerPage })).annotate({
        description: `Items per page, 1 to ${maxPerPage} (default ${defaultPerPage})`
      })
    )
  })
}

/** The page a query asks for, with the defaults applied. */
export const requested = (
  query: { readonly page?: number | undefined; readonly perPage?: number | undefined },
  options: PageQueryOptions = {}
): { readonly page: number; readonly perPage: number; readonly offset: number } => {
  const page = query.page ?? 1
  const perPage = query.perPage ?? options.defaultPerPage ?? 20
  return { page, perPage, offset: (page - 1) * perPage }
}

/** The `pagination` member of a page. */
export const Page = Schema.Struct({
  page: Schema.Int,
  perPage: Schema.Int,
  total: Schema.Int
}).annotate({ identifier: "Page" })
export type Page = typeof Page.Type

/**
 * RFC 8288 links to the neighbouring pages of `path` (the list's path as the client called it,
 * e.g. `/api/v1/items`): first and last always, prev and next where they exist.
 */
export const linkHeader = (path: string, page: Page): string => {
  const last = Math.max(1, Math.ceil(page.total / page.perPage))
  const link = (to: number, rel: string) => `<${path}?page=${to}&perPage=${page.perPage}>; rel="${rel}"`
  let links = link(1, "first")
  if (page.page > 1) links += ", " + link(Math.min(page.page - 1, last), "prev")
  if (page.page < last) links += ", " + link(page.page + 1, "next")
  return links + ", " + link(last, "last")
}
