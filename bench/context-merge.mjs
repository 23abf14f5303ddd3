// What HttpApiBuilder's per-request `Effect.provideContext(groupContext)` costs, in the Effect
// runtime alone (no server): a "request" adds its own services to a server context, then runs a
// handler under the group's context. Group contexts of 28 services (what the reference app's items
// group captured), 5 (only its middleware) and 0 (no merge at all), and 5 applied as overlays
// (`Context.add` per key), the candidate upstream fix. Interleaved rounds, medians, paired spreads.
//   taskset -c 0 node bench/context-merge.mjs
import { Context, Effect } from "effect"

const key = (name) => Context.Service(name)
const serverKeys = Array.from({ length: 24 }, (_, i) => key(`server/${i}`))
const requestKeys = Array.from({ length: 3 }, (_, i) => key(`request/${i}`))
const middlewareKeys = Array.from({ length: 4 }, (_, i) => key(`middleware/${i}`))
const flat = (keys) => {
  let context = Context.empty()
  for (const k of keys) context = Context.add(context, k, { k })
  return Context.makeUnsafe(new Map(context.mapUnsafe))
}
// The server's built context: 28 services, flat, as the request fiber starts with it.
const server = flat([...serverKeys, ...middlewareKeys])

const merged = (group) => (effect) => Effect.provideContext(effect, group)
const overlaid = (group) => {
  const entries = [...group.mapUnsafe]
  return (effect) =>
    Effect.updateContext(effect, (context) => {
      for (const [k, value] of entries) context = Context.add(context, { key: k }, value)
      return context
    })
}
const variants = {
  "whole (28)": merged(flat([...serverKeys, ...middlewareKeys])),
  "middleware only (5)": merged(flat([...middlewareKeys, key("memo-map")])),
  "none (0)": merged(Context.empty()),
  "5 as overlays": overlaid(flat([...middlewareKeys, key("memo-map")]))
}

const handler = Effect.map(Effect.context(), (context) => Context.getUnsafe(context, requestKeys[0]))
const request = (apply) =>
  Effect.suspend(() => {
    let context = server
    for (const k of requestKeys) context = Context.add(context, k, { k })
    return Effect.provideContext(apply(handler), context)
  })

const N = 100_000
const time = (apply) => {
  const loop = Effect.gen(function*() {
    for (let i = 0; i < N; i++) yield* request(apply)
  })
  const before = process.cpuUsage()
  Effect.runSync(loop)
  const used = process.cpuUsage(before)
  return ((used.user + used.system) / N) * 1000
}

const names = Object.keys(variants)
for (const name of names) time(variants[name])
const samples = Object.fromEntries(names.map((name) => [name, []]))
const rounds = Number(process.env.BENCH_ROUNDS ?? 9)
for (let round = 0; round < rounds; round++) {
  for (const name of round % 2 ? [...names].reverse() : names) samples[name].push(time(variants[name]))
}
const median = (values) => [...values].sort((a, b) => a - b)[values.length >> 1]
for (const name of names) {
  const values = samples[name]
  console.log(
    `${name.padEnd(20)} ${median(values).toFixed(0)} ns/request (min ${Math.min(...values).toFixed(0)}, max ${
      Math.max(...values).toFixed(0)
    })`
  )
}
const none = samples["none (0)"]
for (const name of names.filter((name) => name !== "none (0)")) {
  const diffs = samples[name].map((value, round) => value - none[round]).sort((a, b) => a - b)
  console.log(
    `${name} − none: median ${median(diffs).toFixed(0)} ns, per-round ${diffs[0].toFixed(0)}..${
      diffs[diffs.length - 1].toFixed(0)
    }`
  )
}
