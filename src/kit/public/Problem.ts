/**
 * The public face of the error bodies: what a route or middleware needs to answer a problem and
 * declare it. The Node-level hooks (`errorBodies`, `notReady`, `onClientError`) stay internal.
 */
export {
  blankType,
  contentType,
  errorResponse,
  InternalError,
  type Issue,
  make,
  PayloadTooLarge,
  type Problem,
  ServiceUnavailable,
  TooManyRequests,
  typeUri,
  Unauthorized,
  UnsupportedMediaType,
  ValidationProblem,
  validationType
} from "../http/Problem.ts"
