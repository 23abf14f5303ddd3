/**
 * A keep-alive load generator for shutdown tests: N clients, each on its own keep-alive
 * connection, sending back to back. Every request ends as answered, refused at connect, or lost.
 */
import * as Http from "node:http"

export interface LoadResult {
  readonly answered: number
  readonly statuses: Record<number, number>
  /** Connections refused at connect: the listener was closed, nothing was sent. */
  readonly refused: number
  /** Requests sent and never answered (resets, hang-ups, timeouts): must be zero. */
  readonly lost: Array<string>
  /** Answers that carried `Connection: close`. */
  readonly closeHeaders: number
}

export interface LoadOptions {
  readonly port: number
  readonly path: string
  readonly clients: number
  /** Clients stop when this resolves (after their request in flight finishes). */
  readonly stop: Promise<unknown>
  /** Per-request timeout: a request unanswered this long counts as lost. */
  readonly timeoutMs?: number
  /** Called once each client has completed its first answered request. */
  readonly onWarm?: () => void
}

export const keepAliveLoad = async (options: LoadOptions): Promise<LoadResult> => {
  const statuses: Record<number, number> = {}
  const lost: Array<string> = []
  let answered = 0
  let refused = 0
  let closeHeaders = 0
  let stopped = false
  void options.stop.then(() => {
    stopped = true
  })
  let warm = 0

  const request = (agent: Http.Agent) =>
    new Promise<"ok" | "refused" | "lost">((resolve) => {
      const req = Http.request({ host: "127.0.0.1", port: options.port, path: options.path, agent }, (res) => {
        res.resume()
        res.on("end", () => {
          answered++
          statuses[res.statusCode!] = (statuses[res.statusCode!] ?? 0) + 1
          if (res.headers.connection === "close") closeHeaders++
          resolve("ok")
        })
        res.on("error", (error) => {
          lost.push(`response: ${(error as NodeJS.ErrnoException).code ?? error.message}`)
          resolve("lost")
        })
      })
      req.setTimeout(options.timeoutMs ?? 10_000, () => req.destroy(new Error("timeout")))
      req.on("error", (error: NodeJS.ErrnoException) => {
        if (error.code === "ECONNREFUSED") {
          refused++
          resolve("refused")
        } else {
          lost.push(error.code ?? error.message)
          resolve("lost")
        }
      })
      req.end()
    })

  const client = async () => {
    const agent = new Http.Agent({ keepAlive: true, maxSockets: 1 })
    let first = true
    try {
      while (!stopped) {
        const outcome = await request(agent)
        if (outcome === "ok" && first) {
          first = false
          if (++warm === options.clients) options.onWarm?.()
        }
        if (outcome !== "ok") break
      }
    } finally {
      agent.destroy()
    }
  }
  await Promise.all(Array.from({ length: options.clients }, client))
  return { answered, statuses, refused, lost, closeHeaders }
}
