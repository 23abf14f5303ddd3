/**
 * The security headers every response carries, by what it is (data or a document): a leaf
 * module, so the error bodies, the response setup and the drain share them without a cycle.
 */
/**
 * What protects a response that is not a page (every JSON answer): no MIME sniffing, never run
 * or framed as a document (CSP, whose frame-ancestors supersedes X-Frame-Options), not loadable
 * cross-origin except through CORS. Headers that only mean something for an HTML document are
 * left off data (OWASP's REST guidance); every header costs the server and each client per response.
 */
export const dataHeaders: Readonly<Record<string, string>> = {
  "x-content-type-options": "nosniff",
  "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
  "cross-origin-resource-policy": "same-origin"
}

/** A document (an HTML page such as API docs): the rest of the set too, and a CSP that lets its own scripts run. */
export const documentHeaders: Readonly<Record<string, string>> = {
  ...dataHeaders,
  "x-frame-options": "DENY",
  "referrer-policy": "no-referrer",
  "cross-origin-opener-policy": "same-origin",
  "content-security-policy":
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; connect-src 'self'; frame-ancestors 'none'"
}
