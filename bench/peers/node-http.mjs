// Peer: a bare node:http server answering the same JSON as scoped-server's /livez.
import * as Http from "node:http"

const body = JSON.stringify({ status: "ok" })
const server = Http.createServer((request, response) => {
  if (request.url === "/livez") {
    response.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) })
    response.end(body)
  } else {
    response.writeHead(404)
    response.end()
  }
})
server.listen(Number(process.env.PORT), process.env.HOST ?? "127.0.0.1")
process.on("SIGTERM", () => server.close(() => process.exit(0)))
