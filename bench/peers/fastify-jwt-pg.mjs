// Peer for the items benchmark as Fastify users deploy it: Fastify + @fastify/jwt (fast-jwt,
// synchronous HS256 with its verified-token cache on) + pg (Pool of 10), the same single query.
import fastifyJwt from "@fastify/jwt"
import Fastify from "fastify"
import pg from "pg"

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 10 })
const app = Fastify({ logger: false })
// `cache: true` is fast-jwt's LRU of verified tokens (1000 entries), the option @fastify/jwt
// passes through; what users turn on when the same tokens come back.
await app.register(fastifyJwt, {
  secret: process.env.JWT_SECRET,
  verify: { algorithms: ["HS256"], cache: true }
})

app.get("/livez", async () => ({ status: "ok" }))
app.get("/api/v1/items", async (request, reply) => {
  try {
    await request.jwtVerify()
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
