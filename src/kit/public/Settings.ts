/**
 * The public face of the settings parsers: what a module needs to read its own `XConfig` block
 * the way the kit reads its own. How a refusal is rendered at startup stays internal.
 */
export {
  boolean,
  bytes,
  check,
  type ConfigError,
  conflict,
  duration,
  type DurationOptions,
  formatBytes,
  formatDuration,
  int,
  isLoopbackHost,
  list,
  literal,
  optionalDuration,
  optionalInt,
  parseBoolean,
  parseBytes,
  parsed,
  parseDuration,
  port,
  refuse
} from "../Settings.ts"
