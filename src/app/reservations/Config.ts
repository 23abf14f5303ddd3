/**
 * The reservations feature's settings: how long a hold lasts unless the client asks for less,
 * the longest it may ask for, and how often expired holds are swept from the table.
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
  })
}).pipe(Settings.check(({ maxTtl, ttl }) =>
  Duration.isGreaterThan(ttl, maxTtl)
    ? `RESERVATION_TTL (${Settings.formatDuration(ttl)}) is longer than RESERVATION_MAX_TTL (${
      Settings.formatDuration(maxTtl)
    }); lower one or raise the other`
    : undefined
))
