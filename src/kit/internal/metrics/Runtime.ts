/**
 * The lifecycle and the Node runtime as metrics, read on a scrape from what the lifecycle and
 * Node already keep; registered for as long as the scope that collects them.
 */
import { Effect, Metric } from "effect"
import * as PerfHooks from "node:perf_hooks"
import type { Lifecycle } from "../../Lifecycle.ts"
import * as Worker from "../supervisor/Worker.ts"
import { observe } from "./Registry.ts"
import { answerCollects } from "./Workers.ts"

const phases = ["starting", "ready", "draining", "closing", "releasing", "stopped"] as const

/** The lifecycle as gauges and counters: phase, readiness, drain totals, the shutdown's progress. */
const lifecycleMetrics = Effect.fnUntraced(function*(lifecycle: Lifecycle["Service"]) {
  const phaseNow = () => lifecycle.currentPhase().split(" ")[0]
  for (const phase of phases) {
    yield* observe(
      "scoped_server_phase",
      "The lifecycle phase the process is in (1 for the current one).",
      () => phaseNow() === phase ? 1 : 0,
      { attributes: { phase } }
    )
  }
  yield* observe(
    "scoped_server_ready",
    "1 while started and not stopping (the lifecycle's half of /readyz).",
    () => phaseNow() === "ready" && !lifecycle.isStopping() ? 1 : 0
  )
  const totals = lifecycle.totals
  yield* observe(
    "scoped_server_drain_requests_total",
    "Requests completed after the drain began.",
    () => totals.requestsDuringDrain,
    { counter: true }
  )
  yield* observe(
    "scoped_server_drain_sockets_closed_total",
    "Keep-alive sockets closed by the drain.",
    () => totals.socketsClosedIdle,
    { counter: true, attributes: { reason: "idle" } }
  )
  yield* observe(
    "scoped_server_drain_sockets_closed_total",
    "Keep-alive sockets closed by the drain.",
    () => totals.socketsClosedRaced,
    { counter: true, attributes: { reason: "raced" } }
  )
  yield* observe(
    "scoped_server_drain_sockets_closed_total",
    "Keep-alive sockets closed by the drain.",
    () => totals.socketsDestroyed,
    { counter: true, attributes: { reason: "destroyed" } }
  )
  yield* observe(
    "scoped_server_drain_requests_not_run_total",
    "Requests parsed on a closing socket and never run (pipelined or late; the client may retry them).",
    () => totals.requestsNotRun,
    { counter: true }
  )
  yield* observe(
    "scoped_server_responses_cut_total",
    "Responses cut at WRITE_TIMEOUT because their client read nothing.",
    () => totals.responsesCut,
    { counter: true }
  )
  yield* observe(
    "scoped_server_shutdowns_total",
    "Shutdowns begun (a signal received).",
    () => lifecycle.stoppedAt() === undefined ? 0 : 1,
    { counter: true }
  )
  yield* observe(
    "scoped_server_shutdown_duration_seconds",
    "Time since the shutdown began (0 while serving).",
    () => {
      const at = lifecycle.stoppedAt()
      return at === undefined ? 0 : (Date.now() - at) / 1000
    }
  )
})

/** Node's runtime, sampled by Node itself and read on a scrape (nothing runs between scrapes). */
const runtimeMetrics = Effect.gen(function*() {
  const delay = yield* Effect.acquireRelease(
    Effect.sync(() => {
      const histogram = PerfHooks.monitorEventLoopDelay({ resolution: 10 })
      histogram.enable()
      return histogram
    }),
    (histogram) => Effect.sync(() => histogram.disable())
  )
  // Percentiles over the last scrape interval: reset after each read of the max.
  const nanos = (value: number) => (Number.isFinite(value) ? value / 1e9 : 0)
  yield* observe(
    "nodejs_eventloop_delay_p50_seconds",
    "Event-loop delay, median since the last scrape.",
    () => nanos(delay.percentile(50))
  )
  yield* observe(
    "nodejs_eventloop_delay_p99_seconds",
    "Event-loop delay, 99th percentile since the last scrape.",
    () => nanos(delay.percentile(99))
  )
  yield* observe("nodejs_eventloop_delay_max_seconds", "Event-loop delay, maximum since the last scrape.", () => {
    const max = nanos(delay.max)
    delay.reset()
    return max
  })
  let lastElu = PerfHooks.performance.eventLoopUtilization()
  yield* observe("nodejs_eventloop_utilization_ratio", "Event-loop utilization since the last scrape (0..1).", () => {
    const now = PerfHooks.performance.eventLoopUtilization()
    const utilization = PerfHooks.performance.eventLoopUtilization(now, lastElu).utilization
    lastElu = now
    return utilization
  })

  const gc = Metric.histogram("v8js_gc_duration_seconds", {
    description: "Garbage-collection pauses (v8js.gc.duration).",
    boundaries: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1]
  })
  const context = yield* Effect.context<never>()
  yield* Effect.acquireRelease(
    Effect.sync(() => {
      const observer = new PerfHooks.PerformanceObserver((list) => {
        for (const entry of list.getEntries()) gc.updateUnsafe(entry.duration / 1000, context)
      })
      observer.observe({ entryTypes: ["gc"] })
      return observer
    }),
    (observer) => Effect.sync(() => observer.disconnect())
  )

  yield* observe("v8js_memory_heap_used_bytes", "V8 heap in use.", () => process.memoryUsage().heapUsed)
  yield* observe("v8js_memory_heap_limit_bytes", "V8 heap size.", () => process.memoryUsage().heapTotal)
  yield* observe(
    "process_memory_usage_bytes",
    "Resident set size (process.memory.usage).",
    () => process.memoryUsage.rss()
  )
  yield* observe(
    "process_cpu_time_seconds_total",
    "CPU time (process.cpu.time).",
    () => process.cpuUsage().user / 1e6,
    { counter: true, attributes: { cpu_mode: "user" } }
  )
  yield* observe(
    "process_cpu_time_seconds_total",
    "CPU time (process.cpu.time).",
    () => process.cpuUsage().system / 1e6,
    { counter: true, attributes: { cpu_mode: "system" } }
  )
  yield* observe(
    "process_open_handles",
    "Handles and requests keeping the event loop alive.",
    () => process.getActiveResourcesInfo().length
  )
})

/** Registers both for the current scope; a supervisor's worker also answers its collects. */
export const collect = (lifecycle: Lifecycle["Service"]) =>
  Effect.andThen(
    lifecycleMetrics(lifecycle),
    Worker.identity === undefined ? runtimeMetrics : Effect.andThen(runtimeMetrics, answerCollects)
  )
