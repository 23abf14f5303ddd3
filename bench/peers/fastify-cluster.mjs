// Peer: Fastify under Node's cluster (round-robin scheduling, Node's default on Linux), WORKERS
// workers answering the same JSON as scoped-server's /livez; the primary forks and does nothing else.
import Fastify from "fastify"
import cluster from "node:cluster"

const workers = Number(process.env.WORKERS ?? 1)
if (cluster.isPrimary) {
  let ready = 0
  for (let i = 0; i < workers; i++) cluster.fork()
  cluster.on("listening", () => {
    if (++ready === workers) console.log(JSON.stringify({ message: "ready" }))
  })
  process.on("SIGTERM", () => {
    for (const worker of Object.values(cluster.workers)) worker.process.kill("SIGTERM")
    cluster.on("exit", () => Object.keys(cluster.workers).length === 0 && process.exit(0))
  })
} else {
  const app = Fastify({ logger: false })
  app.get("/livez", async () => ({ status: "ok" }))
  await app.listen({ port: Number(process.env.PORT), host: process.env.HOST ?? "127.0.0.1" })
  process.on("SIGTERM", () => app.close().then(() => process.exit(0)))
}
