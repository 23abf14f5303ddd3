/**
 * WORKERS=auto's CPU count from cgroup files as they appear on real hosts: v2 cpu.max (nested),
 * v1 cfs quota under the cpu controller in any order, container views, and no quota at all.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Os from "node:os"
import { availableCpus, cgroupCpus, parseCpuMax } from "../../src/kit/internal/supervisor/Cpus.ts"

const files = (entries: Record<string, string>) => (path: string) => entries[path]

const v1Mountinfo = [
  "25 30 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755",
  "31 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,cpu,cpuacct",
  "32 25 0:28 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,cpuset"
].join("\n")

describe("cgroup CPU quota", () => {
  it("cpu.max: a quota over its period, rounded up; max is none", () => {
    assert.strictEqual(parseCpuMax("200000 100000\n"), 2)
    assert.strictEqual(parseCpuMax("150000 100000"), 2)
    assert.strictEqual(parseCpuMax("50000 100000"), 1)
    assert.strictEqual(parseCpuMax("max 100000\n"), undefined)
    assert.strictEqual(parseCpuMax("garbage"), undefined)
  })

  it("v2: the process's cgroup and its parents, the smallest quota wins", () => {
    const read = files({
      "/proc/self/cgroup": "0::/system.slice/app.service\n",
      "/sys/fs/cgroup/system.slice/app.service/cpu.max": "max 100000\n",
      "/sys/fs/cgroup/system.slice/cpu.max": "300000 100000\n",
      "/sys/fs/cgroup/cpu.max": undefined as unknown as string
    })
    assert.strictEqual(cgroupCpus(read), 3)
  })

  it("v2 in a container (cgroup namespace): 0::/ and cpu.max at the root", () => {
    assert.strictEqual(
      cgroupCpus(files({ "/proc/self/cgroup": "0::/\n", "/sys/fs/cgroup/cpu.max": "100000 100000\n" })),
      1
    )
  })

  it("v1: the cpu controller listed as cpu,cpuacct or cpuacct,cpu (libuv reads only the first), under its mount", () => {
    for (const controllers of ["cpu,cpuacct", "cpuacct,cpu"]) {
      const read = files({
        "/proc/self/cgroup": `12:cpuset:/docker/abc\n4:${controllers}:/docker/abc\n1:name=systemd:/docker/abc\n`,
        "/proc/self/mountinfo": v1Mountinfo,
        "/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "150000\n",
        "/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
        "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
        "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n"
      })
      assert.strictEqual(cgroupCpus(read), 2, controllers)
    }
  })

  it("v1 in a container: the mount's root is the container's own cgroup", () => {
    const read = files({
      "/proc/self/cgroup": "4:cpu,cpuacct:/docker/abc\n",
      "/proc/self/mountinfo":
        "31 25 0:27 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro,nosuid - cgroup cgroup rw,cpu,cpuacct\n",
      "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "100000\n",
      "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n"
    })
    assert.strictEqual(cgroupCpus(read), 1)
  })

  it("no quota (v1 -1, v2 max, no cgroup file): the cores decide", () => {
    assert.strictEqual(cgroupCpus(files({})), undefined)
    assert.strictEqual(
      cgroupCpus(files({
        "/proc/self/cgroup": "4:cpu,cpuacct:/\n",
        "/proc/self/mountinfo": v1Mountinfo,
        "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
        "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n"
      })),
      undefined
    )
    assert.strictEqual(availableCpus(files({})), Os.availableParallelism())
  })

  it("the quota caps the cores, never raises them", () => {
    const quota = (cpus: number) =>
      files({ "/proc/self/cgroup": "0::/\n", "/sys/fs/cgroup/cpu.max": `${cpus * 100000} 100000\n` })
    assert.strictEqual(availableCpus(quota(1)), 1)
    assert.strictEqual(availableCpus(quota(1024)), Os.availableParallelism())
  })
})
