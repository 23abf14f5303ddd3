/**
 * Spawns the built dist/main.js as a real process and reads its JSON log lines, so
 * lifecycle tests see exactly what an operator sees: signals, timing, exit codes.
 */
import { Effect } from "effect"
import { type ChildProcess, spawn, type StdioOptions } from "node:child_process"
import * as Path from "node:path"
import * as Testing from "../../src/kit/testing.ts"

export const mainJs = Path.resolve(import.meta.dirname, "../../dist/main.js")

export interface LogLine {
  readonly message: unknown
  readonly level: string
  readonly timestamp: string
  readonly annotations: Record<string, unknown>
}

export interface ServerProcess {
  readonly child: ChildProcess
  readonly lines: Array<LogLine>
  /** Everything the process wrote to stderr (it should write nothing). */
  readonly stderr: () => string
  readonly port: number
  readonly adminPort: number | undefined
  /** Resolves with the exit code and the time of exit (performance.now()). */
  readonly exited: Promise<
    { readonly code: number | null; readonly signal: NodeJS.Signals | null; readonly at: number }
  >
  readonly signal: (signal: NodeJS.Signals) => number
  readonly waitForLine: (predicate: (line: LogLine) => boolean, timeoutMs?: number) => Promise<LogLine>
}

export interface SpawnOptions {
  /** The script to run instead of dist/main.js (e.g. a test's own entry, bundled as dist is). */
  readonly main?: string
  /** Added to the defaults; `undefined` removes a default (e.g. DATABASE_URL, for the embedded server). */
  readonly env?: Record<string, string | undefined>
  /** Extra stdio entries (e.g. a listening fd to inherit as fd 3). */
  readonly extraStdio?: ReadonlyArray<number>
  /** Wrap the command (e.g. to set LISTEN_PID to the child's own pid). */
  readonly shell?: string
  /** Wait for the "ready" line (default true). */
  readonly waitReady?: boolean
  /** Its own process group, as a terminal job is, so a test can signal the group (Ctrl+C). */
  readonly detached?: boolean
}

const nodeBinary = process.execPath

export const spawnServer = async (options: SpawnOptions = {}): Promise<ServerProcess> => {
  const merged: Record<string, string | undefined> = {
    PATH: process.env.PATH ?? "",
    PORT: "0",
    HOST: "127.0.0.1",
    // The run's PostgreSQL, started only for tests that do not name a database of their own.
    ...(options.env !== undefined && "DATABASE_URL" in options.env
      ? {}
      : { DATABASE_URL: await Effect.runPromise(Testing.databaseServer) }),
    ...options.env
  }
  const env = Object.fromEntries(
    Object.entries(merged).filter((entry): entry is [string, string] => entry[1] !== undefined)
  )
  const stdio: StdioOptions = ["ignore", "pipe", "pipe", ...(options.extraStdio ?? [])]
  const main = options.main ?? mainJs
  const child = options.shell === undefined
    ? spawn(nodeBinary, [main], { env, stdio, detached: options.detached ?? false })
    : spawn("/bin/sh", ["-c", options.shell.replace("$NODE", nodeBinary).replace("$MAIN", main)], { env, stdio })
  const lines: Array<LogLine> = []
  const waiters = new Set<() => void>()
  let stderr = ""
  let buffer = ""
  child.stdout!.setEncoding("utf8").on("data", (chunk: string) => {
    buffer += chunk
    let index: number
    while ((index = buffer.indexOf("\n")) >= 0) {
      const text = buffer.slice(0, index)
      buffer = buffer.slice(index + 1)
      try {
        lines.push(JSON.parse(text) as LogLine)
      } catch {
        lines.push({ message: text, level: "RAW", timestamp: "", annotations: {} })
      }
      for (const waiter of waiters) waiter()
    }
  })
  child.stderr!.setEncoding("utf8").on("data", (chunk: string) => {
    stderr += chunk
  })
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((resolve) => {
    child.once("exit", (code, signal) => {
      const at = performance.now()
      // Let the last stdout chunk arrive before anyone reads `lines`.
      child.stdout!.once("close", () => resolve({ code, signal, at }))
      if (child.stdout!.closed) resolve({ code, signal, at })
    })
  })
  let exitedNow = false
  void exited.then(() => {
    exitedNow = true
    for (const waiter of waiters) waiter()
  })

  const waitForLine = (predicate: (line: LogLine) => boolean, timeoutMs = 10_000) =>
    new Promise<LogLine>((resolve, reject) => {
      const check = () => {
        const found = lines.find(predicate)
        if (found !== undefined) {
          cleanup()
          resolve(found)
        } else if (exitedNow) {
          cleanup()
          reject(
            new Error(
              `process exited without the expected line; log:\n${
                lines.map((l) => JSON.stringify(l)).join("\n")
              }\n${stderr}`
            )
          )
        }
      }
      const timer = setTimeout(() => {
        cleanup()
        reject(
          new Error(
            `timed out waiting for a log line; log:\n${lines.map((l) => JSON.stringify(l)).join("\n")}\n${stderr}`
          )
        )
      }, timeoutMs)
      const cleanup = () => {
        clearTimeout(timer)
        waiters.delete(check)
      }
      waiters.add(check)
      check()
    })

  let port = 0
  let adminPort: number | undefined
  if (options.waitReady !== false) {
    const listening = await waitForLine((line) => line.message === "listening")
    const servers = listening.annotations.servers as Array<{ name: string; address: string }>
    const portOf = (name: string) => {
      const server = servers.find((s) => s.name === name)
      return server === undefined ? undefined : Number(new URL(server.address).port)
    }
    port = portOf("main")!
    adminPort = portOf("admin")
    await waitForLine((line) => line.message === "ready")
  }
  return {
    child,
    lines,
    stderr: () => stderr,
    port,
    adminPort,
    exited,
    signal: (signal) => {
      child.kill(signal)
      return performance.now()
    },
    waitForLine
  }
}

/** Phase lines in the order they were written. */
export const phases = (lines: ReadonlyArray<LogLine>) =>
  lines.filter((line) => line.message === "phase").map((line) =>
    line.annotations as
      & { phase: string; durationMs: number; outcome?: string; resource?: string }
      & Record<string, unknown>
  )
