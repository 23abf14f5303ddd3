/**
 * scoped-server's kit: what an application imports to run, extend and test itself. Everything
 * not exported here is internal and may change.
 */
export { BoundedMap, type BoundedMapOptions, entryOverheadBytes, stringBytes } from "./BoundedMap.ts"
export {
  Cache,
  CacheConfig,
  CacheError,
  type Generations as CacheGenerations,
  makeGenerations as makeCacheGenerations,
  makeMemoryStore as makeCacheMemoryStore,
  makeWorkerStore as makeCacheWorkerStore,
  type Store as CacheStore
} from "./Cache.ts"
export * as ClientAddress from "./ClientAddress.ts"
export * as Cors from "./Cors.ts"
export { EmbeddedPostgres, EmbeddedPostgresConfig, EmbeddedPostgresError } from "./EmbeddedPostgres.ts"
export { type CheckResult, type CheckStatus, Health, HealthConfig, type Report } from "./Health.ts"
export { HttpServer, HttpServerConfig, type HttpServerOptions, type HttpServerSettings } from "./HttpServer.ts"
export type { ContinueCheck } from "./internal/http/Continue.ts"
export { ListenError } from "./internal/http/Listener.ts"
export * as Job from "./Job.ts"
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
export * as LongLived from "./LongLived.ts"
export * as Metrics from "./Metrics.ts"
export * as Pagination from "./Pagination.ts"
export {
  describeUrl as describeDatabaseUrl,
  type Heard,
  migrationLockKey,
  type Migrations,
  Postgres,
  PostgresConfig,
  PostgresError,
  type PostgresOptions,
  type PostgresSettings
} from "./Postgres.ts"
export * as Problem from "./Problem.ts"
export {
  type Decision as RateLimitDecision,
  type Limit as RateLimitLimit,
  makeMemoryStore as makeRateLimitMemoryStore,
  RateLimit,
  RateLimitConfig
} from "./RateLimit.ts"
export * as Recoverer from "./Recoverer.ts"
export { Redis, RedisConfig, RedisError, throttledWarning } from "./Redis.ts"
export * as RequestId from "./RequestId.ts"
export * as Settings from "./Settings.ts"
export * as Tracing from "./Tracing.ts"
export { Validation } from "./Validation.ts"
