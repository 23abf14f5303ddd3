// Loaded with `node --import` into a server under test: it records the HTTP servers the program
// creates and, on the parent's word, feeds them requests over in-memory sockets (no syscalls).
// CPU per request is this process's `process.cpuUsage()` delta over a batch, client side included
// (the same small client for every variant, so it cancels out of an A/B difference).
import { Duplex } from "node:stream"

const Net = process.getBuiltinModule("node:net")
const Http = process.getBuiltinModule("node:http")
const servers = []
const listen = Net.Server.prototype.listen
Net.Server.prototype.listen = function(...args) {
  if (this instanceof Http.Server) servers.push(this)
  return listen.apply(this, args)
}

/**
 * One end of an in-memory connection, with what Node's HTTP server and the kit read from a
 * net.Socket (address, timeouts, byte counts); writes reach the client as whole chunks.
 */
class MemorySocket extends Duplex {
  remoteAddress = "127.0.0.1"
  remotePort = 40000
  remoteFamily = "IPv4"
  localAddress = "127.0.0.1"
  localPort = 3000
  encrypted = false
  bytesRead = 0
  bytesWritten = 0
  connecting = false
  constructor(onData) {
    super({ allowHalfOpen: true })
    this.onData = onData
  }
  _read() {}
  _write(chunk, _encoding, callback) {
    this.bytesWritten += chunk.length
    this.onData(chunk)
    callback()
  }
  _writev(chunks, callback) {
    for (const { chunk } of chunks) this.bytesWritten += chunk.length
    this.onData(Buffer.concat(chunks.map(({ chunk }) => chunk)))
    callback()
  }
  feed(buffer) {
    this.bytesRead += buffer.length
    this.push(buffer)
  }
  setTimeout() {
    return this
  }
  setNoDelay() {
    return this
  }
  setKeepAlive() {
    return this
  }
  ref() {
    return this
  }
  unref() {
    return this
  }
  address() {
    return { address: this.localAddress, port: this.localPort, family: "IPv4" }
  }
}

/**
 * A keep-alive client on one in-memory socket: sends the next request when the previous answer
 * is complete (Content-Length or a chunked terminator), counting statuses.
 */
const connection = (server, request, onResponse) => {
  let pending = Buffer.alloc(0)
  const socket = new MemorySocket((chunk) => {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk])
    for (;;) {
      const headEnd = pending.indexOf("\r\n\r\n")
      if (headEnd === -1) return
      const head = pending.toString("latin1", 0, headEnd)
      const length = /\r\ncontent-length: *(\d+)/i.exec(head)
      let end
      if (length) end = headEnd + 4 + Number(length[1])
      else if (/\r\ntransfer-encoding: *chunked/i.test(head)) {
        const terminator = pending.indexOf("\r\n0\r\n\r\n", headEnd)
        if (terminator === -1) return
        end = terminator + 7
      } else end = headEnd + 4
      if (pending.length < end) return
      pending = pending.subarray(end)
      onResponse(Number(head.slice(9, 12)), socket)
    }
  })
  server.emit("connection", socket)
  return socket
}

/** Runs `count` requests over `connections` sockets; resolves with CPU µs and wall ms. */
const run = (server, { path, headers, count, connections }) =>
  new Promise((resolve) => {
    const extra = Object.entries(headers ?? {}).map(([name, value]) => `${name}: ${value}\r\n`).join("")
    const request = Buffer.from(`GET ${path} HTTP/1.1\r\nhost: bench\r\n${extra}\r\n`)
    let sent = 0
    let done = 0
    const statuses = {}
    const sockets = []
    const cpu = process.cpuUsage()
    const started = performance.now()
    const next = (socket) => {
      if (sent >= count) return
      sent++
      socket.feed(request)
    }
    for (let i = 0; i < connections; i++) {
      sockets.push(connection(server, request, (status, socket) => {
        statuses[status] = (statuses[status] ?? 0) + 1
        if (++done === count) {
          const used = process.cpuUsage(cpu)
          const wallMs = performance.now() - started
          for (const s of sockets) s.destroy()
          resolve({ cpuMicros: (used.user + used.system) / count, wallMs, statuses })
        } else next(socket)
      }))
    }
    for (const socket of sockets) next(socket)
  })

if (process.send) {
  process.on("message", async (message) => {
    if (message?.bench === undefined) return
    const server = servers[0]
    if (server === undefined) return process.send({ error: "no HTTP server was created" })
    const result = await run(server, message.bench)
    process.send({ result })
  })
}
