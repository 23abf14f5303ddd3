/**
 * What a supervisor and its workers say to each other over Node's IPC channel, and the environment
 * a worker is started with. Plain data only: both sides import this and nothing else of each other.
 */

/** Set in a worker's environment: the generation it belongs to (1 for the first start). */
export const generationEnv = "SCOPED_SERVER_GENERATION"

/** The fds a worker finds its listening sockets at (systemd's convention: from 3). */
export const mainFd = 3
export const adminFd = 4

export type ToSupervisor =
  /** Every resource of the worker proved itself; it is serving. */
  | { readonly type: "ready"; readonly pid: number }
  /** Someone sent the worker SIGUSR2 or SIGHUP: it asks the supervisor for an upgrade. */
  | { readonly type: "upgrade"; readonly pid: number; readonly signal: string }

export type ToWorker =
  /** Drain and exit, exactly as on SIGTERM; a second one forces, as a second signal does. */
  { readonly type: "drain" }

export const isToSupervisor = (message: unknown): message is ToSupervisor =>
  typeof message === "object" && message !== null &&
  ((message as { type?: unknown }).type === "ready" || (message as { type?: unknown }).type === "upgrade")

export const isToWorker = (message: unknown): message is ToWorker =>
  typeof message === "object" && message !== null && (message as { type?: unknown }).type === "drain"

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
