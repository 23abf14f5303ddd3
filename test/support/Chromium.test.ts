/**
 * How the suite finds the docs test's browser: each name on the PATH, CHROME_PATH first and alone,
 * and a message that says what to do when there is none (never a file that cannot run).
 */
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import { findChromium, missingMessage } from "./chromium.ts"

const dirs: Array<string> = []
afterEach(() => {
  for (const dir of dirs.splice(0)) Fs.rmSync(dir, { recursive: true, force: true })
})

/** A directory holding the given files; `true` marks one executable. */
const binDir = (files: Record<string, boolean>) => {
  const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "scoped-server-chromium-"))
  dirs.push(dir)
  for (const [name, executable] of Object.entries(files)) {
    Fs.writeFileSync(Path.join(dir, name), "#!/bin/sh\n", { mode: executable ? 0o755 : 0o644 })
  }
  return dir
}

describe("findChromium", () => {
  it("finds each name Debian, Ubuntu and Google install under", () => {
    for (const name of ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"]) {
      const dir = binDir({ [name]: true })
      expect(findChromium({ PATH: `${binDir({})}:${dir}` })).toEqual({ path: Path.join(dir, name) })
    }
  })

  it("prefers chromium to the other names, wherever they sit on the PATH", () => {
    const chrome = binDir({ "google-chrome": true })
    const chromium = binDir({ chromium: true })
    expect(findChromium({ PATH: `${chrome}:${chromium}` })).toEqual({ path: Path.join(chromium, "chromium") })
  })

  it("skips a file that is not executable and a directory by that name", () => {
    const plain = binDir({ chromium: false })
    const withDir = binDir({})
    Fs.mkdirSync(Path.join(withDir, "chromium-browser"))
    expect(findChromium({ PATH: `${plain}:${withDir}` })).toEqual({ missing: missingMessage })
  })

  it("says what to install and which variable to set when there is none", () => {
    const found = findChromium({ PATH: binDir({}) })
    expect(found).toEqual({ missing: missingMessage })
    expect(missingMessage).toContain("apt-get install chromium")
    expect(missingMessage).toContain("CHROME_PATH")
  })

  it("takes CHROME_PATH over the PATH, and reports a wrong one instead of using another browser", () => {
    const custom = binDir({ "my-chrome": true, "not-runnable": false })
    const onPath = binDir({ chromium: true })
    expect(findChromium({ PATH: onPath, CHROME_PATH: Path.join(custom, "my-chrome") })).toEqual({
      path: Path.join(custom, "my-chrome")
    })
    const wrong = findChromium({ PATH: onPath, CHROME_PATH: Path.join(custom, "not-runnable") })
    expect(wrong).toEqual({
      missing: `CHROME_PATH is ${Path.join(custom, "not-runnable")}, which is not an executable file`
    })
  })
})
