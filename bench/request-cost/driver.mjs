// Preloaded into dist/main.js (`node --import ./bench/request-cost/driver.mjs dist/main.js`) by
// bench/request-cost.mjs: feeds requests to the real HTTP server over in-memory sockets, no kernel.
// On the parent's `{ round: n }` it sends n GET /livez on 16 keep-alive connections and answers
// with process.cpuUsage()'s delta, so a round's CPU is the server's request path and this driver only.
import * as Http from "node:http"
import * as Net from "node:net"
import { Duplex } from "node:stream"

let server
const listen = Net.Server.prototype.listen
Net.Server.prototype.listen = function(...args) {
  // The main server is the first HTTP server to listen (the admin server, if any, comes after).
  // eslint-disable-next-line @typescript-eslint/no-this-alias -- the hook's whole point is to keep the server it patches
  if (this instanceof Http.Server) server ??= this
  return listen.apply(this, args)
}

/** An in-memory pair: `client` writes reach the server's socket and back, with what http.Server touches of a net.Socket. */
const socketPair = () => {
  let serverSide
  const client = new Duplex({
    read() {},
    write(chunk, _encoding, callback) {
      serverSide.bytesRead += chunk.length
      serverSide.push(chunk)
      callback()
    }
  })
  serverSide = new Duplex({
    read() {},
    write(chunk, _encoding, callback) {
      client.push(chunk)
      callback()
    },
    final(callback) {
      client.push(null)
      callback()
    }
  })
  Object.assign(serverSide, {
    bytesRead: 0,
    remoteAddress: "127.0.0.1",
    remotePort: 40000,
    remoteFamily: "IPv4",
    localAddress: "127.0.0.1",
    localPort: 3000,
    encrypted: false,
    setTimeout() {
      return this
    },
    setNoDelay() {
      return this
    },
    setKeepAlive() {
      return this
    }
  })
  return { client, serverSide }
}

const request = Buffer.from("GET /livez HTTP/1.1\r\nHost: bench\r\n\r\n")

/** One keep-alive connection sending `count` requests one after another. */
const connection = (count) =>
  new Promise((resolve, reject) => {
    const { client, serverSide } = socketPair()
    let buffer = ""
    let left = count
    client.setEncoding("latin1")
    client.on("data", (chunk) => {
      buffer += chunk
      for (;;) {
        const head = buffer.indexOf("\r\n\r\n")
        if (head === -1) return
        const length = Number(/content-length: (\d+)/i.exec(buffer.slice(0, head))?.[1] ?? 0)
        if (buffer.length < head + 4 + length) return
        if (!buffer.startsWith("HTTP/1.1 200")) return reject(new Error(buffer.slice(0, 200)))
        buffer = buffer.slice(head + 4 + length)
        if (--left === 0) {
          client.end()
          serverSide.destroy()
          return resolve()
        }
        client.write(request)
      }
    })
    server.emit("connection", serverSide)
    client.write(request)
  })

const round = async (count) => {
  const connections = 16
  const start = process.cpuUsage()
  const started = performance.now()
  await Promise.all(Array.from({ length: connections }, () => connection(Math.ceil(count / connections))))
  const cpu = process.cpuUsage(start)
  return {
    cpuMicros: cpu.user + cpu.system,
    wallMs: performance.now() - started,
    requests: Math.ceil(count / connections) * connections
  }
}

process.on("message", (message) => {
  if (typeof message?.round !== "number") return
  round(message.round).then(
    (result) => process.send({ result }),
    (error) => process.send({ error: String(error?.stack ?? error) })
  )
})
