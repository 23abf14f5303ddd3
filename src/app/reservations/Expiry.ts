/**
 * The expiry job: deletes the holds that have run out, every RESERVATION_SWEEP_INTERVAL, in
 * batches of RESERVATION_SWEEP_BATCH. Reads already ignore an expired hold; the sweep keeps the
 * table (and the stock it holds back) from growing without end.
 *
 * Each batch is one short DELETE, uninterruptible, so a shutdown waits for at most one and never
 * leaves a connection mid-statement; between batches the job stops at its release bound (the
 * lifecycle's RELEASE_TIMEOUT), which leaves the pool free to close in its own. Workers and
 * replicas sweep side by side: `FOR UPDATE SKIP LOCKED` gives each batch rows no other holds.
 */
import { Effect, Layer, Schedule } from "effect"
import { Job } from "../../kit/index.ts"
import { ReservationsConfig } from "./Config.ts"
import { ReservationsRepo } from "./Repo.ts"

export const ExpiryJob = Layer.unwrap(Effect.gen(function*() {
  const { sweepBatch, sweepInterval } = yield* ReservationsConfig
  return Job.layer({
    name: "expire-reservations",
    schedule: Schedule.spaced(sweepInterval),
    run: Effect.gen(function*() {
      const repo = yield* ReservationsRepo
      const deleted = yield* Job.batches(repo.deleteExpired(sweepBatch), {
        until: (processed) => processed < sweepBatch
      })
      if (deleted > 0) yield* Effect.logInfo("expired reservations deleted").pipe(Effect.annotateLogs({ deleted }))
    })
  })
})).pipe(Layer.provide(ReservationsRepo.layer))
