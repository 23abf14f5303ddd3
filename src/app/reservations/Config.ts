/**
 * The reservations feature's settings: how long a hold lasts unless the client asks for less,
 * the longest it may ask for, and how often (and in what batches) expired holds are swept from the table.
 */
import { Config, Duration } from "effect"
import { Settings } from "../../kit/index.ts"

export const ReservationsConfig = Config.all({
  /** A hold's life when the client does not say (`ttlSeconds`). */
  ttl: Settings.duration("RESERVATION_TTL", { default: "15 minutes", min: "1 second", max: "1 day" }),
  /** The longest hold a client may ask for. */
  maxTtl: Settings.duration("RESERVATION_MAX_TTL", { default: "1 day", min: "1 second", max: "30 days" }),
  /** How often the expiry job deletes the holds that have run out (reads never see them either way). */
  sweepInterval: Settings.duration("RESERVATION_SWEEP_INTERVAL", {
    default: "1 minute",
    min: "1 second",
    max: "1 day"
  }),
  /**
   * Holds deleted per statement. Each batch is one short transaction that a shutdown waits for
   * and never cuts; between batches the sweep can stop.
   */
  sweepBatch: Settings.int("RESERVATION_SWEEP_BATCH", { default: 1000, min: 1, max: 100_000 })
}).pipe(Settings.check(({ maxTtl, ttl }) =>
  Duration.isGreaterThan(ttl, maxTtl)
    ? `RESERVATION_TTL (${Settings.formatDuration(ttl)}) is longer than RESERVATION_MAX_TTL (${
      Settings.formatDuration(maxTtl)
    }); lower one or raise the other`
    : undefined
))
