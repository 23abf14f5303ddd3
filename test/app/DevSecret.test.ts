/**
 * The development secret file as a second local user would attack it: a file they planted (theirs,
 * world-readable, 1 byte), one we own but others can read, one too short to be a key, a symbolic
 * link in its place, a directory; and the file we make ourselves, which is private and whole.
 */
import { execFileSync, spawnSync } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import { devSecret, DevSecretRefused } from "../../src/app/DevSecret.ts"

const nobody = 65534
const isRoot = process.getuid?.() === 0
const dirs: Array<string> = []
afterEach(() => {
  for (const dir of dirs.splice(0)) Fs.rmSync(dir, { recursive: true, force: true })
})

/** A fresh directory, shared like /tmp (sticky, everyone may create files) when `shared`. */
const directory = (shared = false) => {
  const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "scoped-server-devsecret-"))
  dirs.push(dir)
  if (shared) Fs.chmodSync(dir, 0o1777)
  return dir
}

const good = "k".repeat(43)
const token = Path.resolve(import.meta.dirname, "../../scripts/token.mjs")

/** The one line `devSecret` refuses `file` with, or "accepted: <secret>". */
const outcome = (file: string) => {
  try {
    return `accepted: ${new TextDecoder().decode(devSecret(file))}`
  } catch (error) {
    if (error instanceof DevSecretRefused) return error.message
    throw error
  }
}

const refusal = (file: string, rule: string) =>
  `the development secret ${file} is refused: ${rule}; remove it to have a new one made, or set JWT_SECRET`

describe("the development secret file", () => {
  it("is made when missing: private (0600, in a 0700 directory), 43 characters of 32 random bytes, the same on every read", () => {
    const file = Path.join(directory(), ".data", "jwt-secret")
    const first = outcome(file)
    expect(first).toMatch(/^accepted: [\w-]{43}$/)
    expect(outcome(file)).toBe(first)
    expect((Fs.statSync(file).mode & 0o777).toString(8)).toBe("600")
    expect((Fs.statSync(Path.dirname(file)).mode & 0o777).toString(8)).toBe("700")
    // No temporary file is left beside it.
    expect(Fs.readdirSync(Path.dirname(file))).toEqual(["jwt-secret"])
  })

  it("is used when it is ours, 0600 or stricter, and at least 32 bytes", () => {
    const file = Path.join(directory(), "jwt-secret")
    Fs.writeFileSync(file, `${good}\n`, { mode: 0o600 })
    expect(outcome(file)).toBe(`accepted: ${good}`)
    Fs.chmodSync(file, 0o400)
    expect(outcome(file)).toBe(`accepted: ${good}`)
  })

  it.skipIf(!isRoot)(
    "planted by another local user (theirs, 0644, 1 byte) is refused for its owner, never used",
    () => {
      const dir = directory(true)
      const file = Path.join(dir, "jwt-secret")
      // The other user writes it as they would: their own process, their umask.
      const planted = spawnSync("/bin/sh", ["-c", `umask 022; printf x > '${file}'`], { uid: nobody, gid: nobody })
      expect(planted.status).toBe(0)
      expect(Fs.statSync(file).uid).toBe(nobody)
      expect(outcome(file)).toBe(refusal(file, `it is owned by uid ${nobody}, not by this process's uid 0`))
      // Even made private and long enough, it stays theirs: they know what it holds.
      Fs.writeFileSync(file, good)
      Fs.chmodSync(file, 0o600)
      expect(outcome(file)).toBe(refusal(file, `it is owned by uid ${nobody}, not by this process's uid 0`))
    }
  )

  it.skipIf(!isRoot)("a symbolic link another user put in its place is refused, not followed", () => {
    const dir = directory(true)
    const target = Path.join(directory(), "ours")
    Fs.writeFileSync(target, good, { mode: 0o600 })
    const file = Path.join(dir, "jwt-secret")
    expect(spawnSync("/bin/ln", ["-s", target, file], { uid: nobody, gid: nobody }).status).toBe(0)
    expect(outcome(file)).toBe(refusal(file, "it is a symbolic link"))
  })

  it("a symbolic link is refused even when it points at a good file of ours", () => {
    const dir = directory()
    Fs.writeFileSync(Path.join(dir, "real"), good, { mode: 0o600 })
    const file = Path.join(dir, "jwt-secret")
    Fs.symlinkSync(Path.join(dir, "real"), file)
    expect(outcome(file)).toBe(refusal(file, "it is a symbolic link"))
  })

  it("ours but readable or writable by group or others (0644, 0640, 0602) is refused, and left as it is", () => {
    const file = Path.join(directory(), "jwt-secret")
    Fs.writeFileSync(file, good)
    for (const mode of [0o644, 0o640, 0o602]) {
      Fs.chmodSync(file, mode)
      expect(outcome(file)).toBe(
        refusal(file, `its mode is 0${mode.toString(8)}; group and others must have no access (0600)`)
      )
      expect(Fs.statSync(file).mode & 0o777).toBe(mode)
    }
  })

  it("shorter than 32 bytes (after trimming) is refused", () => {
    const file = Path.join(directory(), "jwt-secret")
    Fs.writeFileSync(file, `${"k".repeat(31)}\n\n`, { mode: 0o600 })
    expect(outcome(file)).toBe(refusal(file, "it holds 31 bytes, fewer than 32"))
    Fs.writeFileSync(file, "")
    expect(outcome(file)).toBe(refusal(file, "it holds 0 bytes, fewer than 32"))
  })

  it("a second name for a file of ours (a hard link another user could have made) is refused", () => {
    const dir = directory()
    const ours = Path.join(dir, "ours")
    Fs.writeFileSync(ours, good, { mode: 0o600 })
    const file = Path.join(dir, "jwt-secret")
    Fs.linkSync(ours, file)
    expect(outcome(file)).toBe(
      refusal(file, "it has 2 names (hard links), so another user may have put a file of ours there")
    )
    // With the other name gone it is an ordinary private file again.
    Fs.rmSync(ours)
    expect(outcome(file)).toBe(`accepted: ${good}`)
  })

  it("bytes that are not UTF-8 are refused, not counted as replacement characters", () => {
    const file = Path.join(directory(), "jwt-secret")
    // Eleven 0xFF bytes would decode leniently to eleven U+FFFD, 33 bytes, all the same key.
    Fs.writeFileSync(file, Buffer.alloc(11, 0xff), { mode: 0o600 })
    expect(outcome(file)).toBe(refusal(file, "it is not UTF-8 text"))
  })

  it("a directory or a FIFO in its place is refused without hanging", () => {
    const dir = directory()
    const file = Path.join(dir, "jwt-secret")
    Fs.mkdirSync(file, { mode: 0o700 })
    expect(outcome(file)).toBe(refusal(file, "it is not a regular file"))
    const fifo = Path.join(dir, "fifo")
    expect(spawnSync("/usr/bin/mkfifo", ["-m", "600", fifo]).status).toBe(0)
    expect(outcome(fifo)).toBe(refusal(fifo, "it is not a regular file"))
  })

  it("npm run token refuses the same file with the same line on stderr and exit 1, minting nothing", () => {
    const file = Path.join(directory(), "jwt-secret")
    Fs.writeFileSync(file, good, { mode: 0o644 })
    const { JWT_SECRET: _, ...env } = process.env
    const run = spawnSync(process.execPath, [token], {
      env: { ...env, JWT_DEV_SECRET_FILE: file },
      encoding: "utf8"
    })
    expect(run.stdout).toBe("")
    expect(run.stderr).toBe(
      `npm run token: ${refusal(file, "its mode is 0644; group and others must have no access (0600)")}\n`
    )
    expect(run.status).toBe(1)
    // And with a good file it mints.
    Fs.chmodSync(file, 0o600)
    expect(
      execFileSync(process.execPath, [token], {
        env: { ...env, JWT_DEV_SECRET_FILE: file },
        encoding: "utf8"
      })
    ).toMatch(/^ey[\w-]+\.[\w-]+\.[\w-]+\n$/)
  })
})
