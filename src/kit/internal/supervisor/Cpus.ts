/**
 * How many CPUs this process may use: the cores it may run on, capped by its cgroup's CPU quota
 * (v2 `cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`), read here rather than trusted to libuv.
 */
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"

/** Reads a file's text, or undefined when it cannot (absent, not a cgroup file system, no permission). */
export type ReadFile = (path: string) => string | undefined

const readFile: ReadFile = (path) => {
  try {
    return Fs.readFileSync(path, "utf8")
  } catch {
    return undefined
  }
}

/**
 * CPUs granted by a quota over a period, rounded up: 1.5 CPUs run two workers at 0.75 each rather
 * than leave half a CPU idle; undefined when there is no quota ("max", -1) or the text is not one.
 */
const fromQuota = (quota: number, period: number) =>
  Number.isFinite(quota) && Number.isFinite(period) && quota > 0 && period > 0
    ? Math.max(1, Math.ceil(quota / period))
    : undefined

/** `cpu.max`: "<quota> <period>" or "max <period>". */
export const parseCpuMax = (text: string): number | undefined => {
  const [quota, period] = text.trim().split(/\s+/)
  if (quota === undefined || quota === "max") return undefined
  return fromQuota(Number(quota), Number(period ?? "100000"))
}

const min = (values: ReadonlyArray<number | undefined>) => {
  const known = values.filter((value): value is number => value !== undefined)
  return known.length === 0 ? undefined : Math.min(...known)
}

/** From `dir` up to `root` inclusive: a parent's quota limits every cgroup below it. */
const upTo = (root: string, dir: string) => {
  const dirs: Array<string> = []
  for (let at = dir; at.startsWith(root); at = Path.dirname(at)) {
    dirs.push(at)
    if (at === root || at === Path.dirname(at)) break
  }
  return dirs
}

interface Mount {
  readonly root: string
  readonly point: string
}

/** cgroup v1 hierarchies that carry the `cpu` controller, from /proc/self/mountinfo. */
const cpuMounts = (mountinfo: string): Array<Mount> =>
  mountinfo.split("\n").flatMap((line) => {
    // "id parent major:minor root mountpoint options [optional...] - fstype source superoptions"
    const [left, right] = line.split(" - ")
    if (left === undefined || right === undefined) return []
    const [fsType, , superOptions] = right.split(" ")
    if (fsType !== "cgroup" || !(superOptions ?? "").split(",").includes("cpu")) return []
    const fields = left.split(" ")
    return fields[3] !== undefined && fields[4] !== undefined ? [{ root: fields[3], point: fields[4] }] : []
  })

/**
 * The quota on this process's cgroup, in CPUs, or undefined when none applies. v2: the unified
 * hierarchy's `0::<path>` line and `cpu.max` there and in every parent. v1: the hierarchy whose
 * controllers include `cpu` (in any order: `cpu,cpuacct`, `cpuacct,cpu`, `cpu` alone), mounted
 * where mountinfo says, with the process's path made relative to the mount's root (a container
 * sees its own cgroup as the mount's root).
 */
export const cgroupCpus = (read: ReadFile = readFile): number | undefined => {
  const own = read("/proc/self/cgroup")
  if (own === undefined) return undefined
  const lines = own.split("\n").map((line) => {
    const first = line.indexOf(":")
    const second = line.indexOf(":", first + 1)
    return { controllers: line.slice(first + 1, second).split(","), path: line.slice(second + 1).trim() }
  }).filter((line) => line.path.startsWith("/"))
  const found: Array<number | undefined> = []
  const unified = lines.find((line) => line.controllers.length === 1 && line.controllers[0] === "")
  if (unified !== undefined) {
    const root = "/sys/fs/cgroup"
    const dir = Path.join(root, unified.path)
    for (const at of upTo(root, dir)) {
      const text = read(Path.join(at, "cpu.max"))
      if (text !== undefined) found.push(parseCpuMax(text))
    }
  }
  const v1 = lines.find((line) => line.controllers.includes("cpu"))
  if (v1 !== undefined) {
    for (const mount of cpuMounts(read("/proc/self/mountinfo") ?? "")) {
      const relative = mount.root !== "/" && v1.path.startsWith(mount.root)
        ? v1.path.slice(mount.root.length)
        : mount.root === "/"
        ? v1.path
        : "/"
      for (const at of upTo(mount.point, Path.join(mount.point, relative))) {
        const quota = read(Path.join(at, "cpu.cfs_quota_us"))
        const period = read(Path.join(at, "cpu.cfs_period_us"))
        if (quota !== undefined && period !== undefined) found.push(fromQuota(Number(quota), Number(period)))
      }
    }
  }
  return min(found)
}

/** `WORKERS=auto`: the cores this process may run on, capped by its cgroup's CPU quota. */
export const availableCpus = (read: ReadFile = readFile): number =>
  Math.max(1, Math.min(Os.availableParallelism(), cgroupCpus(read) ?? Number.POSITIVE_INFINITY))
