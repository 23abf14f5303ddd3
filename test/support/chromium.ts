/**
 * Chromium for the docs test: found on the PATH or by CHROME_PATH, or installed with apt-get when
 * this user may (`npm test` runs this file first as its pretest), or one line saying what to do.
 */
import { spawnSync } from "node:child_process"
import * as Fs from "node:fs"
import * as Path from "node:path"

/** Names Debian, Ubuntu and Google's packages install the browser under, in order of preference. */
export const names = ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"] as const

export type Found = { readonly path: string } | { readonly missing: string }

const isExecutable = (path: string) => {
  try {
    Fs.accessSync(path, Fs.constants.X_OK)
    return Fs.statSync(path).isFile()
  } catch {
    return false
  }
}

export const missingMessage =
  "the docs test needs Chromium and none was found (looked for chromium, chromium-browser, google-chrome on the PATH): " +
  "install it (Debian: apt-get install chromium) or set CHROME_PATH to its executable"

/**
 * CHROME_PATH when set (and then only it: a wrong path is a mistake to report, not to paper over
 * with another browser), else the first of `names` on the PATH.
 */
export const findChromium = (env: NodeJS.ProcessEnv = process.env): Found => {
  const configured = env.CHROME_PATH
  if (configured !== undefined && configured !== "") {
    return isExecutable(configured)
      ? { path: configured }
      : { missing: `CHROME_PATH is ${configured}, which is not an executable file` }
  }
  for (const name of names) {
    for (const dir of (env.PATH ?? "").split(Path.delimiter)) {
      if (dir === "") continue
      const candidate = Path.join(dir, name)
      if (isExecutable(candidate)) return { path: candidate }
    }
  }
  return { missing: missingMessage }
}

/** Root runs apt-get itself; anyone else only through sudo that never asks for a password. */
const aptPrefix = (): ReadonlyArray<string> | undefined => {
  const hasApt = spawnSync("apt-get", ["--version"], { stdio: "ignore" }).status === 0
  if (!hasApt) return undefined
  if (process.getuid?.() === 0) return []
  return spawnSync("sudo", ["-n", "true"], { stdio: "ignore" }).status === 0 ? ["sudo", "-n"] : undefined
}

/**
 * Finds Chromium or installs Debian's. CI runs with no stdin and no one to answer a prompt:
 * `sudo -n` and `DEBIAN_FRONTEND=noninteractive` make every step either succeed or fail at once.
 */
export const ensureChromium = (): Found => {
  const found = findChromium()
  if ("path" in found || process.env.CHROME_PATH) return found
  const prefix = aptPrefix()
  if (prefix === undefined) return found
  console.error(
    "pretest: Chromium not found; installing Debian's chromium for the docs test (apt-get, about a minute, once)"
  )
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" }
  for (
    const args of [["apt-get", "update", "-qq"], [
      "apt-get",
      "install",
      "-y",
      "-qq",
      "--no-install-recommends",
      "chromium"
    ]]
  ) {
    const [command, ...rest] = [...prefix, ...args]
    const result = spawnSync(command!, rest, { env, stdio: ["ignore", "ignore", "inherit"], timeout: 600_000 })
    if (result.status !== 0) {
      return { missing: `${missingMessage}; \`${args.join(" ")}\` failed (exit ${result.status ?? result.signal})` }
    }
  }
  const installed = findChromium()
  return "path" in installed
    ? installed
    : { missing: `${missingMessage}; apt-get installed chromium, yet none is on the PATH` }
}

if (import.meta.main) {
  const found = ensureChromium()
  // The suite still runs: every other test reports, and the docs test fails with this same line,
  // so a machine without a browser can never pass `npm test` without the docs ever rendering.
  if ("missing" in found) console.error(`pretest: ${found.missing}`)
}
