// Peer for the items benchmark: Fastify + pg (Pool of 10) answering GET /api/v1/items with the
// same single query scoped-server runs, behind the same HS256 JWT check (jose, key imported once).
import Fastify from "fastify"
import { jwtVerify } from "jose"
import pg from "pg"

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 10 })
const secret = await crypto.subtle.importKey(
  "raw",
  new TextEncoder().encode(process.env.JWT_SECRET),
  { name: "HMAC", hash: "SHA-256" },
  false,
  ["verify"]
)
const app = Fastify({ logger: false })

app.get("/livez", async () => ({ status: "ok" }))
app.get("/api/v1/items", async (request, reply) => {
  const header = request.headers.authorization ?? ""
  try {
    await jwtVerify(header.slice(7), secret, { algorithms: ["HS256"] })
  } catch {
    reply.code(401)
    return { error: "Unauthorized", status: 401 }
  }
  const page = Number(request.query.page ?? 1)
  const perPage = Number(request.query.perPage ?? 20)
  const { rows } = await pool.query(
    `SELECT (SELECT count(*)::int FROM items) AS total,
            COALESCE((SELECT json_agg(p) FROM (
              SELECT id, name, description, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS "createdAt"
              FROM items ORDER BY id LIMIT $1 OFFSET $2
            ) p), '[]'::json) AS items`,
    [perPage, (page - 1) * perPage]
  )
  return { items: rows[0].items, pagination: { page, perPage, total: rows[0].total } }
})
await app.listen({ port: Number(process.env.PORT), host: process.env.HOST ?? "127.0.0.1" })
process.on("SIGTERM", () => app.close().then(() => pool.end()).then(() => process.exit(0)))
