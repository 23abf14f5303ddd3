/**
 * `/docs` as a static asset over the wire: one rendering, brotli and gzip by Accept-Encoding,
 * a strong ETag per encoding, 304 on revalidation, and the document headers on `/docs/` too.
 */
import * as Zlib from "node:zlib"
import { afterEach, describe, expect, it } from "vitest"
import { request } from "../support/http.ts"
import { type ServerProcess, spawnServer } from "../support/process.ts"

const running = new Set<ServerProcess>()
afterEach(() => {
  for (const server of running) server.child.kill("SIGKILL")
  running.clear()
})

const raw = (port: number, path: string, headers: Record<string, string>) =>
  new Promise<{ status: number; headers: Record<string, unknown>; body: Buffer }>((resolve, reject) => {
    import("node:http").then((Http) => {
      const req = Http.request({ host: "127.0.0.1", port, path, headers, agent: false }, (response) => {
        const chunks: Array<Buffer> = []
        response.on("data", (chunk: Buffer) => chunks.push(chunk))
        response.on(
          "end",
          () => resolve({ status: response.statusCode!, headers: response.headers, body: Buffer.concat(chunks) })
        )
      })
      req.on("error", reject)
      req.end()
    }, reject)
  })

describe("/docs", () => {
  it("is served precompressed with an ETag per encoding, revalidates to 304, and /docs/ is the same document", async () => {
    const server = await spawnServer({ env: {} })
    running.add(server)
    const plain = await raw(server.port, "/docs", {})
    expect(plain.status).toBe(200)
    expect(plain.headers["content-encoding"]).toBeUndefined()
    expect(plain.headers["cache-control"]).toBe("public, max-age=0, must-revalidate")
    expect(plain.headers.vary).toMatch(/accept-encoding/i)
    expect(plain.body.toString("utf8")).toMatch(/<html/i)

    const br = await raw(server.port, "/docs", { "accept-encoding": "gzip, deflate, br" })
    expect(br.headers["content-encoding"]).toBe("br")
    expect(Zlib.brotliDecompressSync(br.body).equals(plain.body)).toBe(true)
    expect(br.body.length).toBeLessThan(plain.body.length / 3)
    const gz = await raw(server.port, "/docs", { "accept-encoding": "gzip, br;q=0" })
    expect(gz.headers["content-encoding"]).toBe("gzip")
    expect(Zlib.gunzipSync(gz.body).equals(plain.body)).toBe(true)
    expect(new Set([plain.headers.etag, br.headers.etag, gz.headers.etag]).size).toBe(3)

    const again = await raw(server.port, "/docs", { "accept-encoding": "br", "if-none-match": String(br.headers.etag) })
    expect(again.status).toBe(304)
    expect(again.body.length).toBe(0)
    expect(again.headers.etag).toBe(br.headers.etag)
    expect((await raw(server.port, "/docs", { "if-none-match": "\"something-else\"" })).status).toBe(200)

    const slash = await request(server.port, "/docs/")
    expect(slash.status).toBe(200)
    expect(slash.headers["x-frame-options"]).toBe("DENY")
    expect(slash.headers.etag).toBe(plain.headers.etag)
  })
})
