/**
 * How the kit's metrics enter Effect's registry: gauges read at scrape time from state that
 * already exists, counters kept by the code that counts. One registry per process.
 */
import { Effect, Metric } from "effect"

/**
 * A gauge (or counter) read when scraped rather than kept up to date: the state lives where it
 * already is (the lifecycle's totals, the pool's counters, Node's own gauges). Removed with the scope.
 */
export const observe = (
  name: string,
  description: string,
  read: () => number,
  options: { readonly attributes?: Record<string, string>; readonly counter?: boolean } = {}
) =>
  Effect.gen(function*() {
    const context = yield* Effect.context<never>()
    const base = options.counter === true
      ? Metric.counter(name, { description, attributes: options.attributes })
      : Metric.gauge(name, { description, attributes: options.attributes })
    const registration = Metric.registerUnsafe(base as Metric.Metric<number, any>, context, {
      get: () => (options.counter === true ? { count: read(), incremental: true } : { value: read() }),
      update: () => {},
      modify: () => {}
    })
    yield* Effect.addFinalizer(() => Effect.sync(() => registration.remove()))
  })

/** Counters kept by the code that counts (cache, rate limit, Redis, JWT). */
export const counter = (name: string, description: string, attributes?: Record<string, string>) =>
  Metric.counter(name, { description, attributes, incremental: true })
