// Self time of a .cpuprofile by layer (node:http, streams, Effect runtime, router, kit, GC, ...),
// counted from the first request the in-process hook sends, idle excluded. Bundled frames (dist/)
// are mapped to their sources through the .js.map beside them.
//   node bench/cpuprofile-layers.mjs <file.cpuprofile> [layer prefix: its top functions]
import { originalPositionFor, TraceMap } from "@jridgewell/trace-mapping"
import * as Fs from "node:fs"
import { fileURLToPath } from "node:url"

const [file, detail] = process.argv.slice(2)
const profile = JSON.parse(Fs.readFileSync(file, "utf8"))
const byId = new Map(profile.nodes.map((node) => [node.id, node]))
const parent = new Map()
for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id)

const maps = new Map()
const source = (frame) => {
  if (!frame.url.startsWith("file://")) return frame.url
  let map = maps.get(frame.url)
  if (map === undefined) {
    const path = fileURLToPath(frame.url) + ".map"
    map = Fs.existsSync(path) ? new TraceMap(Fs.readFileSync(path, "utf8")) : null
    maps.set(frame.url, map)
  }
  if (map === null) return frame.url
  const mapped = originalPositionFor(map, { line: frame.lineNumber + 1, column: frame.columnNumber }).source
  // A package's own maps (effect/dist/*.js.map) name sources relative to the file: resolved, they
  // fall in the same layers as the bundled frames of dist/.
  return mapped == null ? frame.url : mapped.startsWith(".") ? new URL(mapped, frame.url).pathname : mapped
}

const layer = (frame) => {
  if (frame.functionName === "(garbage collector)") return "GC"
  if (frame.functionName === "(idle)") return "idle"
  if (frame.functionName === "(program)") return "(program)"
  const s = source(frame)
  if (s === "") return "V8 builtins (no script)"
  if (s.includes("bench/inprocess")) return "in-process client"
  if (/^node:(_http|http)/.test(s)) return "node:http"
  if (/^node:(internal\/streams|stream)/.test(s)) return "node: streams"
  if (/^node:/.test(s)) return "node: other"
  if (/effect\/(src|dist)\/(internal\/(effect|core)|Effect|Fiber|Scheduler|Exit|Cause|Context|Scope)\b/.test(s)) {
    return "Effect runtime"
  }
  if (/effect\/(src|dist)\/http\/(HttpRouter|internal\/router|FindMyWay)|find-my-way/.test(s)) return "router"
  if (/effect\/(src|dist)\/http|platform-node/.test(s)) return "Effect http + platform-node"
  if (/effect\/(src|dist)\//.test(s)) return `Effect ${s.replace(/.*effect\/(src|dist)\//, "")}`
  if (/src\/kit\//.test(s)) return `kit ${s.replace(/.*src\/kit\//, "")}`
  if (/src\/app\//.test(s)) return "app"
  if (/fastify/.test(s)) return "fastify"
  return s.replace(/.*node_modules\//, "").split("/").slice(0, 2).join("/")
}

// A sample belongs to the load once the client's request loop is on a stack.
const fromClient = (id) => {
  for (let n = id; n !== undefined; n = parent.get(n)) {
    const frame = byId.get(n).callFrame
    if (frame.url.includes("bench/inprocess") && ["run", "next", "feed"].includes(frame.functionName)) return true
  }
  return false
}

const totals = new Map()
const functions = new Map()
let total = 0
let started = false
profile.samples.forEach((id, i) => {
  started ||= fromClient(id)
  const node = byId.get(id)
  const name = layer(node.callFrame)
  if (!started || name === "idle") return
  const dt = profile.timeDeltas[i] ?? 0
  totals.set(name, (totals.get(name) ?? 0) + dt)
  total += dt
  if (detail !== undefined && name.startsWith(detail)) {
    const key = `${node.callFrame.functionName || "(anonymous)"} ${
      source(node.callFrame).replace(/.*node_modules\//, "")
    }`
    functions.set(key, (functions.get(key) ?? 0) + dt)
  }
})
for (const [name, t] of [...totals].sort((a, b) => b[1] - a[1])) {
  console.log(`${((100 * t) / total).toFixed(1).padStart(5)}%  ${(t / 1000).toFixed(0).padStart(6)} ms  ${name}`)
}
console.log(`total ${(total / 1000).toFixed(0)} ms`)
for (const [key, t] of [...functions].sort((a, b) => b[1] - a[1]).slice(0, 20)) {
  console.log(`  ${(t / 1000).toFixed(0).padStart(6)} ms  ${key}`)
}
