/**
 * scoped-server's kit: what an application imports to run, extend and test itself. Everything
 * not exported here is internal and may change.
 */
export { BoundedMap } from "./BoundedMap.ts"
export {
  Cache,
  CacheConfig,
  CacheError,
  type Generations as CacheGenerations,
  makeGenerations as makeCacheGenerations,
  type Store as CacheStore
} from "./Cache.ts"
export { EmbeddedPostgres, EmbeddedPostgresConfig, EmbeddedPostgresError } from "./EmbeddedPostgres.ts"
export { type CheckResult, type CheckStatus, Health, HealthConfig, type Report } from "./Health.ts"
export type { ContinueCheck } from "./http/Continue.ts"
export * as Cors from "./http/Cors.ts"
export { ListenError } from "./http/Listener.ts"
export * as LongLived from "./http/LongLived.ts"
export * as Recoverer from "./http/Recoverer.ts"
export * as RequestId from "./http/RequestId.ts"
export { Validation } from "./http/Validation.ts"
export { HttpServer, HttpServerConfig, type HttpServerOptions, type HttpServerSettings } from "./HttpServer.ts"
export {
  acquireRelease,
  type Crash,
  Lifecycle,
  LifecycleConfig,
  type LifecycleSettings,
  Os,
  type Outcome,
  type Phase,
  resource,
  run,
  runEffect,
  type Signal,
  stopSignals,
  type Totals
} from "./Lifecycle.ts"
export * as Log from "./Log.ts"
export * as Metrics from "./Metrics.ts"
export {
  describeUrl as describeDatabaseUrl,
  type Heard,
  type Migrations,
  Postgres,
  PostgresConfig,
  PostgresError,
  type PostgresOptions,
  type PostgresSettings
} from "./Postgres.ts"
export * as ClientAddress from "./public/ClientAddress.ts"
export * as Problem from "./public/Problem.ts"
export * as Settings from "./public/Settings.ts"
export { type Decision as RateLimitDecision, RateLimit, RateLimitConfig } from "./RateLimit.ts"
export { Redis, RedisConfig, RedisError, throttledWarning } from "./Redis.ts"
export * as Tracing from "./Tracing.ts"
