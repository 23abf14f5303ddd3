// Peer: Fastify with its defaults, answering the same JSON as scoped-server's /livez.
import Fastify from "fastify"

const app = Fastify({ logger: false })
app.get("/livez", async () => ({ status: "ok" }))
await app.listen({ port: Number(process.env.PORT), host: process.env.HOST ?? "127.0.0.1" })
process.on("SIGTERM", () => app.close().then(() => process.exit(0)))
