/**
 * The development JWT secret (`JWT_DEV_SECRET_FILE`, used when neither `JWT_SECRET` nor `JWKS_URL`
 * is set), shared by the server and `npm run token` (which imports this file as is: Node strips
 * its types, so it uses nothing but `node:` modules and erasable syntax).
 *
 * Whoever can write the file can mint tokens the server accepts, so a file found on disk is used
 * only if this process's user owns it, nobody else may read or write it (mode 0600 or stricter),
 * it is a regular file reached without a symbolic link, and it holds at least 32 bytes. Anything
 * else is refused with one line naming the file, the rule and the way out; it is never "fixed" in
 * place, since a file another user planted may already have been read by them. A missing file is
 * made whole before it appears: written to a private temporary file, then hard-linked into place,
 * so a reader racing the writer (the server and `npm run token` started together) never sees it
 * half-written and exactly one of two writers wins.
 */
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Path from "node:path"

/** The fewest bytes a development secret may hold (HS256 wants a key of at least its hash size). */
export const minimumBytes = 32

/** A development secret file that exists but breaks a rule; `message` is the one line to show. */
export class DevSecretRefused extends Error {
  constructor(message: string) {
    super(message)
    this.name = "DevSecretRefused"
  }
}

const refuse = (file: string, rule: string) =>
  new DevSecretRefused(
    `the development secret ${file} is refused: ${rule}; remove it to have a new one made, or set JWT_SECRET`
  )

/**
 * The secret in `file`, created (0600, 32 random bytes, base64url) if missing. Throws
 * `DevSecretRefused` for a file that breaks a rule, and Node's own error (with its `code`) when the
 * file cannot be read or created at all.
 */
export const devSecret = (file: string): Uint8Array => {
  const found = read(file)
  if (found !== undefined) return found
  create(file)
  return read(file) ?? (() => {
    throw refuse(file, "it vanished as it was created")
  })()
}

/** Blocks this thread for `ms` (startup and a CLI only: never on a request). */
const pause = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms)

/**
 * The checked contents of `file`, or undefined when there is no such file. A file with a second
 * name (a hard link) is ours only for the instant our own creation links it into place; longer, it
 * may be a file of ours another user linked there (where protected_hardlinks is off), so it is
 * looked at again a few times before it is refused.
 */
const read = (file: string): Uint8Array | undefined => {
  for (let attempt = 1;; attempt++) {
    const found = readOnce(file, attempt >= 10)
    if (found !== "linked") return found
    pause(20)
  }
}

const readOnce = (file: string, last: boolean): Uint8Array | undefined | "linked" => {
  let fd: number
  try {
    // O_NOFOLLOW: a symbolic link in the file's place is refused by the kernel (ELOOP), not followed.
    fd = Fs.openSync(file, Fs.constants.O_RDONLY | Fs.constants.O_NOFOLLOW | Fs.constants.O_NONBLOCK)
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    if (code === "ENOENT") return undefined
    if (code === "ELOOP") throw refuse(file, "it is a symbolic link")
    throw error
  }
  try {
    // Checked on the descriptor that is read: a rename between a check and the read cannot slip in.
    const stat = Fs.fstatSync(fd)
    if (!stat.isFile()) throw refuse(file, "it is not a regular file")
    const uid = process.getuid?.()
    if (uid !== undefined && stat.uid !== uid) {
      throw refuse(file, `it is owned by uid ${stat.uid}, not by this process's uid ${uid}`)
    }
    if (stat.nlink !== 1) {
      if (!last) return "linked"
      throw refuse(file, `it has ${stat.nlink} names (hard links), so another user may have put a file of ours there`)
    }
    // Windows reports no such bits (every file reads 0666 or 0444): its ACLs are not checked here.
    if (process.platform !== "win32" && (stat.mode & 0o077) !== 0) {
      throw refuse(
        file,
        `its mode is 0${(stat.mode & 0o777).toString(8)}; group and others must have no access (0600)`
      )
    }
    let secret: string
    try {
      secret = new TextDecoder("utf-8", { fatal: true }).decode(Fs.readFileSync(fd)).trim()
    } catch {
      // Decoded leniently, invalid bytes would each count as three and all become one character.
      throw refuse(file, "it is not UTF-8 text")
    }
    const bytes = new TextEncoder().encode(secret)
    if (bytes.length < minimumBytes) {
      throw refuse(file, `it holds ${bytes.length} bytes, fewer than ${minimumBytes}`)
    }
    return bytes
  } finally {
    Fs.closeSync(fd)
  }
}

const create = (file: string) => {
  Fs.mkdirSync(Path.dirname(file), { recursive: true, mode: 0o700 })
  const temporary = `${file}.${process.pid}.${Crypto.randomBytes(6).toString("hex")}.tmp`
  const secret = Crypto.randomBytes(32).toString("base64url")
  try {
    Fs.writeFileSync(temporary, secret, { mode: 0o600, flag: "wx" })
    Fs.linkSync(temporary, file)
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    // Another process made it first: theirs is read (and checked) like any file found on disk.
    if (code === "EEXIST") return
    // A file system without hard links (some FUSE, SMB and VM shares): created in place, still
    // exclusive; a reader racing the write sees it short and refuses it rather than using it.
    if (code !== "EPERM" && code !== "ENOTSUP" && code !== "EOPNOTSUPP" && code !== "ENOSYS") throw error
    try {
      Fs.writeFileSync(file, secret, { mode: 0o600, flag: "wx" })
    } catch (inPlace) {
      if ((inPlace as NodeJS.ErrnoException).code !== "EEXIST") throw inPlace
    }
  } finally {
    Fs.rmSync(temporary, { force: true })
  }
}
