/**
 * What a supervisor and its workers say to each other over Node's IPC channel, and the environment
 * a worker is started with. Plain data only: both sides import this and nothing else of each other.
 */

/** Set in a worker's environment: the generation it belongs to (1 for the first start). */
export const generationEnv = "SCOPED_SERVER_GENERATION"

/**
 * Set in a worker's environment: the main socket's address as the supervisor bound it (JSON of
 * `getsockname`). Its presence means the supervisor accepts and hands each connection over.
 */
export const mainAddressEnv = "SCOPED_SERVER_MAIN_ADDRESS"

/** The fds a worker finds its inherited listening sockets at (systemd's convention: from 3). */
export const mainFd = 3
export const adminFd = 4

/** What a worker has served so far; sent whenever it changes, at most every `countersIntervalMs`. */
export interface Counters {
  /** Connections handed to it that are still open. */
  readonly open: number
  /** Connections it has received from the supervisor, ever (the supervisor subtracts what is in transit). */
  readonly received: number
  /** Requests answered (responses closed), ever. */
  readonly requests: number
  readonly inFlight: number
}

export const countersIntervalMs = 20

export type ToSupervisor =
  /** Every resource of the worker proved itself; it is serving. */
  | { readonly type: "ready"; readonly pid: number }
  /** Someone sent the worker SIGUSR2 or SIGHUP: it asks the supervisor for an upgrade. */
  | { readonly type: "upgrade"; readonly pid: number; readonly signal: string }
  | ({ readonly type: "counters"; readonly pid: number } & Counters)
  /** The worker's drain stopped accepting: hand it no more connections. */
  | { readonly type: "closed"; readonly pid: number }
  /** The answer to `ping`, from the worker's event loop: it is not stopped or blocked. */
  | { readonly type: "pong"; readonly pid: number; readonly id: number }

export type ToWorker =
  /** Drain and exit, exactly as on SIGTERM; a second one forces, as a second signal does. */
  | { readonly type: "drain" }
  /** Comes with an accepted connection's handle, to serve as if this worker had accepted it. */
  | { readonly type: "connection" }
  /** The supervisor's heartbeat: answer `pong` with the same id. */
  | { readonly type: "ping"; readonly id: number }
  /**
   * The answer to `closed`: no connection is handed to this worker from now on, and at shutdown
   * the main socket is closed. Only then does its drain tell clients `Connection: close`, so a
   * client reconnecting at once finds the socket refusing, not a listener about to drop it.
   */
  | { readonly type: "unlisted" }

const typeOf = (message: unknown) =>
  typeof message === "object" && message !== null ? (message as { type?: unknown }).type : undefined

export const isToSupervisor = (message: unknown): message is ToSupervisor => {
  const type = typeOf(message)
  return type === "ready" || type === "upgrade" || type === "counters" || type === "closed" || type === "pong"
}

export const isToWorker = (message: unknown): message is ToWorker => {
  const type = typeOf(message)
  return type === "drain" || type === "connection" || type === "ping" || type === "unlisted"
}

/** Which of the three ways this process runs; WORKERS unset or empty keeps the single process. */
export const mode = (env: NodeJS.ProcessEnv): "single" | "supervisor" | "worker" =>
  env[generationEnv] !== undefined && env[generationEnv] !== ""
    ? "worker"
    : env.WORKERS !== undefined && env.WORKERS.trim() !== ""
    ? "supervisor"
    : "single"

/**
 * The metrics exchange: a worker that receives a scrape asks the supervisor (`scrape`), which asks
 * every worker for its own registry (`collect` / `metrics`) and answers with the merged text (`scraped`).
 */
export type MetricsMessage =
  | { readonly type: "scrape"; readonly id: number }
  | { readonly type: "collect"; readonly id: number }
  | { readonly type: "metrics"; readonly id: number; readonly text: string }
  | { readonly type: "scraped"; readonly id: number; readonly text: string }

export const isMetricsMessage = (message: unknown): message is MetricsMessage => {
  if (typeof message !== "object" || message === null) return false
  const { id, type } = message as { type?: unknown; id?: unknown }
  if (typeof id !== "number") return false
  if (type === "scrape" || type === "collect") return true
  return (type === "metrics" || type === "scraped") && typeof (message as { text?: unknown }).text === "string"
}

/**
 * State the workers of one supervisor share (supervisor/Hub.ts keeps it, supervisor/Shared.ts is a
 * worker's end): entries every worker holds alike (pinned cache entries, removals), written through
 * a barrier that answers only once every live worker has applied them, and the rate-limit counters.
 */
export type SharedToSupervisor =
  /** First word from a worker's shared state: answered with `welcome` and then every broadcast. */
  | { readonly type: "shared-join" }
  /** Set (`value` a string) or remove (`value` null) `key` on every worker; answered with `shared-done`. */
  | { readonly type: "shared-write"; readonly id: number; readonly key: string; readonly value: string | null }
  /** The worker has applied broadcast `id`. */
  | { readonly type: "shared-ack"; readonly id: number }
  /** Count one request of `key` centrally and say whether it may proceed; answered with `limit-state`. */
  | {
    readonly type: "limit-take"
    readonly id: number
    readonly key: string
    readonly limit: number
    readonly windowMs: number
  }
  /** Requests a worker admitted on its own, per key: `[key, count, first admitted at (ms), limit, windowMs]`. */
  | {
    readonly type: "limit-report"
    readonly id: number
    readonly entries: ReadonlyArray<readonly [string, number, number, number, number]>
  }

export type SharedToWorker =
  | {
    readonly type: "shared-welcome"
    /** The entries as they stand; broadcasts from here on come in the order the supervisor applied them. */
    readonly entries: ReadonlyArray<readonly [string, string]>
  }
  /** Apply, then acknowledge with `shared-ack` and this id. */
  | { readonly type: "shared-apply"; readonly id: number; readonly key: string; readonly value: string | null }
  /** Every live worker has applied write `id`. */
  | { readonly type: "shared-done"; readonly id: number }
  /** A counter as it stands after a take or a report: `[key, count, expiresAt (ms)]`; `allowed` for a take. */
  | {
    readonly type: "limit-state"
    readonly id: number
    readonly allowed?: boolean
    readonly counters: ReadonlyArray<readonly [string, number, number]>
  }

const sharedToSupervisor = new Set(["shared-join", "shared-write", "shared-ack", "limit-take", "limit-report"])
const sharedToWorker = new Set(["shared-welcome", "shared-apply", "shared-done", "limit-state"])

export const isSharedToSupervisor = (message: unknown): message is SharedToSupervisor =>
  sharedToSupervisor.has(typeOf(message) as string)

export const isSharedToWorker = (message: unknown): message is SharedToWorker =>
  sharedToWorker.has(typeOf(message) as string)

/** Set in a worker's environment: how many workers the supervisor runs (the rate limits' local allowance). */
export const workersEnv = "SCOPED_SERVER_WORKERS"

/** Set in a worker's environment: how long the supervisor waits for a worker to apply a shared write (ms). */
export const barrierTimeoutEnv = "SCOPED_SERVER_BARRIER_TIMEOUT"
