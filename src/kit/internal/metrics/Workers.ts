/**
 * One scrape for every worker: workers share the listening sockets, so whichever accepts a scrape
 * asks the supervisor, which collects each worker's registry over IPC and merges them under a `worker` label.
 */
import { Context, Effect } from "effect"
import { PrometheusMetrics } from "effect/observability"
import type { ChildProcess } from "node:child_process"
import { isMetricsMessage, type MetricsMessage } from "../supervisor/Protocol.ts"

/** A worker that has not answered within this is left out of the scrape (and named in it). */
export const collectTimeoutMs = 1_000
/** What a worker waits for the supervisor's merged answer before answering 503. */
export const scrapeTimeoutMs = 3_000

/** This process's registry as Prometheus text (the registry is process-wide). */
export const formatLocal = (): string => PrometheusMetrics.formatUnsafe(Context.empty())

/** `worker="…",generation="…"` added first to every sample's labels. */
const labelled = (text: string, labels: string): ReadonlyArray<string> =>
  text.split("\n").filter((line) => line !== "").map((line) => {
    if (line.startsWith("#")) return line
    const space = line.indexOf(" ")
    const brace = line.indexOf("{")
    if (brace !== -1 && brace < space) {
      return `${line.slice(0, brace + 1)}${labels}${line[brace + 1] === "}" ? "" : ","}${line.slice(brace + 1)}`
    }
    return `${line.slice(0, space)}{${labels}}${line.slice(space)}`
  })

/**
 * Several expositions as one: each family's HELP and TYPE once, then every part's samples of it
 * (Prometheus refuses a family split in two, or declared twice). Families keep their first order.
 */
export const merge = (
  parts: ReadonlyArray<{ readonly text: string; readonly labels?: Record<string, string> }>
): string => {
  const families = new Map<string, { help?: string; type?: string; samples: Array<string> }>()
  const familyOf = (name: string) => {
    let family = families.get(name)
    if (family === undefined) families.set(name, family = { samples: [] })
    return family
  }
  for (const part of parts) {
    const labels = Object.entries(part.labels ?? {}).map(([key, value]) => `${key}="${value}"`).join(",")
    let current = familyOf("")
    for (
      const line of labels === ""
        ? part.text.split("\n").filter((line) => line !== "")
        : labelled(part.text, labels)
    ) {
      const meta = /^# (HELP|TYPE) (\S+)/.exec(line)
      if (meta !== null) {
        current = familyOf(meta[2]!)
        if (meta[1] === "HELP") current.help ??= line
        else current.type ??= line
      } else if (!line.startsWith("#")) {
        current.samples.push(line)
      }
    }
  }
  const lines: Array<string> = []
  for (const family of families.values()) {
    if (family.help !== undefined) lines.push(family.help)
    if (family.type !== undefined) lines.push(family.type)
    lines.push(...family.samples)
  }
  return lines.join("\n") + "\n"
}

/** Over an IPC channel that may already be gone (the other side exited): then nothing is sent. */
const send = (
  target: {
    readonly connected?: boolean
    readonly send?: (message: MetricsMessage, handle: undefined, options: object, callback: () => void) => unknown
  },
  message: MetricsMessage
) => {
  if (target.connected === true && target.send !== undefined) target.send(message, undefined, {}, () => {})
}

/**
 * The worker's side: answers the supervisor's `collect` with this registry, for as long as the
 * scope that called it (the HTTP server's, with METRICS on).
 */
export const answerCollects = Effect.acquireRelease(
  Effect.sync(() => {
    const onMessage = (message: unknown) => {
      if (isMetricsMessage(message) && message.type === "collect") {
        send(process as never, { type: "metrics", id: message.id, text: formatLocal() })
      }
    }
    process.on("message", onMessage)
    return onMessage
  }),
  (onMessage) => Effect.sync(() => process.off("message", onMessage))
)

let nextScrape = 0

/**
 * The worker's side of a scrape: every worker's series, through the supervisor; undefined when it
 * does not answer within `scrapeTimeoutMs` (gone, or stopped), which the route answers with 503.
 */
export const scrapeAll: Effect.Effect<string | undefined> = Effect.callback<string | undefined>((resume) => {
  if (process.connected !== true) return resume(Effect.succeed(undefined))
  const id = ++nextScrape
  const done = (text: string | undefined) => {
    clearTimeout(timer)
    process.off("message", onMessage)
    resume(Effect.succeed(text))
  }
  const onMessage = (message: unknown) => {
    if (isMetricsMessage(message) && message.type === "scraped" && message.id === id) done(message.text)
  }
  const timer = setTimeout(() => done(undefined), scrapeTimeoutMs)
  process.on("message", onMessage)
  send(process as never, { type: "scrape", id })
  return Effect.sync(() => {
    clearTimeout(timer)
    process.off("message", onMessage)
  })
})

export interface GatheredWorker {
  readonly child: ChildProcess
  readonly generation: number
}

/**
 * The supervisor's side: answers a worker's `scrape` with every connected worker's registry
 * (labelled `worker` = pid and `generation`) and its own. A worker that does not answer within
 * `collectTimeoutMs` (stopped, busy) is left out, and counted in `scoped_server_scrape_workers_missing`.
 */
export const makeGatherer = () => {
  const workers = new Map<number, GatheredWorker>()
  const pending = new Map<number, (pid: number, text: string) => void>()
  let nextCollect = 0
  let missing = 0

  const gather = (from: ChildProcess, scrapeId: number) => {
    const id = ++nextCollect
    const asked = [...workers.values()].filter((worker) => worker.child.connected)
    const answers = new Map<number, string>()
    const finish = () => {
      clearTimeout(timer)
      pending.delete(id)
      missing = asked.length - answers.size
      const parts = asked.flatMap((worker) => {
        const text = answers.get(worker.child.pid!)
        return text === undefined
          ? []
          : [{ text, labels: { worker: String(worker.child.pid), generation: String(worker.generation) } }]
      })
      send(from as never, { type: "scraped", id: scrapeId, text: merge([...parts, { text: formatLocal() }]) })
    }
    const timer = setTimeout(finish, collectTimeoutMs)
    pending.set(id, (pid, text) => {
      answers.set(pid, text)
      if (answers.size === asked.length) finish()
    })
    for (const worker of asked) send(worker.child as never, { type: "collect", id })
    if (asked.length === 0) finish()
  }

  return {
    /** Tracks `child` until it exits. */
    add: (child: ChildProcess, generation: number) => {
      const pid = child.pid
      if (pid === undefined) return
      workers.set(pid, { child, generation })
      child.once("exit", () => workers.delete(pid))
    },
    /** Handles a metrics message from `child`; false for any other message. */
    handle: (child: ChildProcess, message: unknown): boolean => {
      if (!isMetricsMessage(message)) return false
      if (message.type === "scrape") gather(child, message.id)
      else if (message.type === "metrics") pending.get(message.id)?.(child.pid!, message.text)
      return true
    },
    /** Workers left out of the last scrape for not answering in time. */
    missing: () => missing
  }
}
