/**
 * Every error the server answers is an RFC 9457 problem over real HTTP: routing, validation, auth,
 * rate limit, limits, Node's own client errors, not-ready, store and database outages, defects.
 */
import { assert, describe, layer } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import * as Http from "node:http"
import * as Net from "node:net"
import { notReady } from "../../src/kit/internal/http/ErrorBodies.ts"
import { makeServerResponse } from "../../src/kit/internal/http/Response.ts"
import { errorResponse } from "../../src/kit/Problem.ts"
import * as Testing from "../../src/kit/testing.ts"
import { App, appLayer } from "../support/app.ts"
import { privateRedis } from "../support/redis.ts"

interface Answer {
  readonly status: number
  readonly headers: Headers
  readonly text: string
}

const call = (path: string, init?: Parameters<App["Service"]["fetch"]>[1]) =>
  Effect.gen(function*() {
    const app = yield* App
    return yield* Effect.promise(async (): Promise<Answer> => {
      const response = await app.fetch(path, { ...init, signal: AbortSignal.timeout(10_000) })
      return { status: response.status, headers: response.headers, text: await response.text() }
    })
  })

/** The checks every problem passes; returns the body for the case's own checks. */
const problemOf = (
  answer: {
    readonly status: number
    readonly text: string
    readonly contentType: string | null
    readonly requestId: string | null
  }
) => {
  assert.strictEqual(
    answer.contentType,
    "application/problem+json",
    `content type of a ${answer.status}: ${answer.text}`
  )
  assert.notInclude(answer.text, "    at ")
  const body = JSON.parse(answer.text) as Record<string, unknown>
  assert.strictEqual(body.status, answer.status)
  assert.isString(body.type)
  assert.isString(body.title)
  assert.isString(body.detail)
  assert.isString(body.requestId)
  assert.strictEqual(body.requestId, answer.requestId)
  for (const legacy of ["error", "message"]) assert.notProperty(body, legacy)
  return body
}

const expectProblem = (answer: Answer, status: number, detail?: RegExp) => {
  assert.strictEqual(answer.status, status, answer.text)
  const body = problemOf({
    status: answer.status,
    text: answer.text,
    contentType: answer.headers.get("content-type"),
    requestId: answer.headers.get("x-request-id")
  })
  if (detail !== undefined) assert.match(String(body.detail), detail)
  if (status === 503) assert.isAtLeast(Number(answer.headers.get("retry-after")), 1)
  return body
}

/**
 * One raw exchange: `bytes` written (then `later`, once the first answer has arrived), everything
 * read until the server closes (or `timeoutMs`).
 */
const raw = (port: number, bytes: string | Buffer, timeoutMs = 5_000, later?: string) =>
  new Promise<{ readonly received: string; readonly closed: boolean }>((resolve) => {
    const socket = Net.connect(port, "127.0.0.1")
    let received = ""
    const timer = setTimeout(() => {
      socket.destroy()
      resolve({ received, closed: false })
    }, timeoutMs)
    socket.setEncoding("latin1").on("data", (chunk: string) => {
      received += chunk
      if (later !== undefined && /\r\n\r\n/.test(received)) {
        socket.write(later)
        later = undefined
      }
    })
    socket.on("error", () => undefined)
    socket.once("close", () => {
      clearTimeout(timer)
      resolve({ received, closed: true })
    })
    socket.write(bytes)
  })

/** A raw HTTP/1.1 answer split into its parts (the first one, if several). */
const parseRaw = (received: string) => {
  const [head = "", ...rest] = received.split("\r\n\r\n")
  const lines = head.split("\r\n")
  const status = Number(/^HTTP\/1\.1 (\d{3}) /.exec(lines[0] ?? "")?.[1] ?? NaN)
  const headers = new Map(
    lines.slice(1).map((line) => {
      const colon = line.indexOf(":")
      return [line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim()] as const
    })
  )
  const length = Number(headers.get("content-length") ?? 0)
  return { status, headers, text: Buffer.from(rest.join("\r\n\r\n"), "latin1").subarray(0, length).toString("utf8") }
}

const expectRawProblem = (received: string, status: number) => {
  const answer = parseRaw(received)
  assert.strictEqual(answer.status, status, received)
  assert.strictEqual(answer.headers.get("connection"), "close")
  return problemOf({
    status,
    text: answer.text,
    contentType: answer.headers.get("content-type") ?? null,
    requestId: answer.headers.get("x-request-id") ?? null
  })
}

const env = {
  RATE_LIMIT: "3",
  MAX_BODY_SIZE: "1KiB",
  MAX_HEADER_SIZE: "4KiB",
  HEADERS_TIMEOUT: "1s",
  DEBUG_ROUTES: "true"
}

describe("Problem: every error class over real HTTP", () => {
  layer(appLayer(env), { excludeTestServices: true, timeout: "60 seconds" })((it) => {
    it.effect("routing: 404 for a path with no route, 405 with Allow for a wrong method", () =>
      Effect.gen(function*() {
        const missing = expectProblem(
          yield* call("/nowhere?x=1", { headers: { "x-request-id": "route-404" } }),
          404,
          /no route for GET \/nowhere$/
        )
        assert.strictEqual(missing.requestId, "route-404")
        assert.strictEqual(missing.type, "about:blank")
        assert.strictEqual(missing.title, "Not Found")
        const wrong = yield* call("/api/v1/items", { method: "PUT" })
        const body = expectProblem(wrong, 405, /PUT is not allowed on \/api\/v1\/items; use GET, POST/)
        assert.strictEqual(body.title, "Method Not Allowed")
        assert.strictEqual(wrong.headers.get("allow"), "GET, POST")
      }))

    it.effect("validation: 400 with issues naming each field by its path", () =>
      Effect.gen(function*() {
        const token = yield* Effect.promise(() => Testing.mint({ subject: "validation" }))
        const query = expectProblem(yield* call("/api/v1/items?perPage=1000", { token }), 400, /^query\.perPage: /)
        assert.strictEqual(query.type, "/problems/validation")
        const issues = query.issues as Array<{ path: Array<string | number>; message: string }>
        assert.deepStrictEqual(issues.map((issue) => issue.path), [["query", "perPage"]])
        assert.isString(issues[0]!.message)
        const payload = expectProblem(
          yield* call("/api/v1/items", {
            method: "POST",
            token,
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ name: "", description: 7 })
          }),
          400
        )
        assert.deepInclude((payload.issues as Array<{ path: Array<string> }>).map((issue) => issue.path), [
          "payload",
          "name"
        ])
        const params = expectProblem(yield* call("/api/v1/items/abc", { token }), 400, /^params\.id: /)
        assert.deepStrictEqual((params.issues as Array<{ path: Array<string> }>)[0]!.path, ["params", "id"])
      }))

    it.effect("auth: 401 with WWW-Authenticate", () =>
      Effect.gen(function*() {
        const anonymous = yield* call("/api/v1/items")
        expectProblem(anonymous, 401, /bearer token is required/)
        assert.match(anonymous.headers.get("www-authenticate") ?? "", /^Bearer /)
        expectProblem(yield* call("/api/v1/items", { token: "not-a-jwt" }), 401, /malformed/)
      }))

    it.effect("rate limit: 429 with Retry-After", () =>
      Effect.gen(function*() {
        const token = yield* Effect.promise(() => Testing.mint({ subject: "hasty" }))
        for (let i = 0; i < 3; i++) assert.strictEqual((yield* call("/api/v1/items", { token })).status, 200)
        const limited = yield* call("/api/v1/items", { token })
        expectProblem(limited, 429, /too many requests/)
        assert.isAtLeast(Number(limited.headers.get("retry-after")), 1)
      }))

    it.effect("limits: 413 for a body over MAX_BODY_SIZE, 415 for a media type the endpoint does not read", () =>
      Effect.gen(function*() {
        const token = yield* Effect.promise(() => Testing.mint({ subject: "limits" }))
        expectProblem(
          yield* call("/api/v1/items", {
            method: "POST",
            token,
            headers: { "content-type": "application/json" },
            body: "x".repeat(4096)
          }),
          413,
          /larger than 1024 bytes/
        )
        expectProblem(
          yield* call("/api/v1/items", {
            method: "POST",
            token,
            headers: { "content-type": "text/plain" },
            body: "name=x"
          }),
          415
        )
      }))

    it.effect("an item that does not exist: 404 with its own type, told apart from a path with no route", () =>
      Effect.gen(function*() {
        const token = yield* Effect.promise(() => Testing.mint({ subject: "reader" }))
        const body = expectProblem(
          yield* call("/api/v1/items/2147483647", { token }),
          404,
          /no item with id 2147483647/
        )
        assert.strictEqual(body.type, "/problems/item-not-found")
      }))

    it.effect("a defect: 500 with the request id and no stack", () =>
      Effect.gen(function*() {
        const body = expectProblem(yield* call("/debug/defect", { headers: { "x-request-id": "defect-9" } }), 500)
        assert.strictEqual(body.requestId, "defect-9")
        assert.strictEqual(body.detail, "an unexpected error occurred")
        assert.notInclude(JSON.stringify(body), "deliberate")
      }))

    it.effect("client errors Node rejects: 400, 431 and 408 on the raw socket, each with an id and a close", () =>
      Effect.gen(function*() {
        const { port } = yield* App
        const garbage = yield* Effect.promise(() => raw(port, "HELLO\r\n\r\n"))
        assert.isTrue(garbage.closed)
        expectRawProblem(garbage.received, 400)
        const big = yield* Effect.promise(() =>
          raw(port, `GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(8_000)}\r\n\r\n`)
        )
        expectRawProblem(big.received, 431)
        // Headers that never finish: answered at HEADERS_TIMEOUT (1s), not left hanging.
        const slow = yield* Effect.promise(() => raw(port, "GET /livez HTTP/1.1\r\nHost: x\r\n"))
        assert.isTrue(slow.closed)
        expectRawProblem(slow.received, 408)
      }))

    it.effect("garbage after an answered keep-alive request: a 400 problem, and the server keeps serving", () =>
      Effect.gen(function*() {
        const { port } = yield* App
        const { received, closed } = yield* Effect.promise(() =>
          raw(port, "GET /livez HTTP/1.1\r\nHost: x\r\n\r\n", 5_000, "\u0001\u0002 NOT HTTP\r\n\r\n")
        )
        assert.isTrue(closed)
        const second = received.slice(received.indexOf("HTTP/1.1", 1))
        assert.match(received, /^HTTP\/1\.1 200 /)
        expectRawProblem(second, 400)
        assert.strictEqual((yield* call("/livez")).status, 200)
      }))

    it.effect("garbage pipelined behind a request still being answered: that answer, then a close", () =>
      Effect.gen(function*() {
        const { port } = yield* App
        const { received, closed } = yield* Effect.promise(() =>
          raw(port, "GET /debug/sleep?ms=300 HTTP/1.1\r\nHost: x\r\n\r\n\u0001\u0002 NOT HTTP\r\n\r\n")
        )
        assert.isTrue(closed)
        assert.strictEqual(received.match(/HTTP\/1\.1 \d{3}/g)?.length, 1, received)
        const answer = parseRaw(received)
        assert.strictEqual(answer.status, 200)
        assert.deepStrictEqual(JSON.parse(answer.text), { sleptMs: 300 })
        assert.strictEqual(answer.headers.get("connection"), "close")
      }))

    it.effect("the OpenAPI document declares the problem body of each error the API answers", () =>
      Effect.gen(function*() {
        const document = JSON.parse((yield* call("/openapi.json")).text)
        const responses = (path: string, method: string) =>
          document.paths[path][method].responses as Record<string, any>
        const declared = (path: string, method: string) =>
          Object.entries(responses(path, method))
            .filter(([status, response]) =>
              Number(status) >= 400 && response.content?.["application/problem+json"] !== undefined
            )
            .map(([status]) => status)
            .sort()
        assert.deepStrictEqual(declared("/api/v1/items", "get"), ["400", "401", "429", "503"])
        assert.deepStrictEqual(declared("/api/v1/items/{id}", "get"), ["400", "401", "404", "429", "503"])
        assert.deepStrictEqual(declared("/api/v1/items", "post"), ["400", "401", "413", "415", "429", "503"])
        // The schema is a problem: the members every problem has, and `issues` for validation.
        const resolve = (schema: any): any =>
          schema.$ref === undefined ? schema : resolve(document.components.schemas[schema.$ref.split("/").pop()])
        const schemaOf = (status: string) => {
          const schema = resolve(
            responses("/api/v1/items/{id}", "get")[status].content["application/problem+json"].schema
          )
          return schema.anyOf === undefined ? schema : resolve(schema.anyOf[0])
        }
        for (const status of ["400", "401", "404", "429", "503"]) {
          const schema = schemaOf(status)
          for (const member of ["type", "title", "status", "detail", "requestId"]) {
            assert.property(schema.properties, member, `${status} declares ${member}`)
          }
        }
        assert.property(schemaOf("400").properties, "issues")
        assert.strictEqual(schemaOf("404").properties.type.enum?.[0], "/problems/item-not-found")
      }))

    it.effect("errorResponse: the 503 it writes carries Retry-After unless the caller set one", () =>
      Effect.sync(() => {
        assert.strictEqual(errorResponse(503, "x").headers["retry-after"], "1")
        assert.strictEqual(errorResponse(503, "x", { "Retry-After": "7" }).headers["retry-after"], "7")
        assert.isUndefined(errorResponse(404, "x").headers["retry-after"])
      }))
  })
})

// A seeded generator: a failure names its seed and case, and reruns the same way.
const seed = Number(process.env.PROBLEM_SEED ?? Date.now() % 1_000_000)
const random = (() => {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
})()
const pick = <A>(choices: ReadonlyArray<A>): A => choices[Math.floor(random() * choices.length)]!
const junk = (max: number) => {
  const alphabet = "abc/.%?&=#-_~:;'\"<>{}[]\\ \t\u00e9\u2603\u0000\u007f0123456789"
  let text = ""
  const length = Math.floor(random() * max)
  for (let i = 0; i < length; i++) text += pick([...alphabet])
  return text
}

describe("Problem: random bad input never gets a non-problem error", () => {
  layer(appLayer({ ...env, RATE_LIMIT: "100000" }), { excludeTestServices: true, timeout: "120 seconds" })((it) => {
    it.effect(`requests with random methods, paths, queries, headers and bodies (seed ${seed})`, () =>
      Effect.gen(function*() {
        const { port } = yield* App
        const token = yield* Effect.promise(() => Testing.mint({ subject: "fuzzer" }))
        const statuses = new Map<number, number>()
        for (let n = 0; n < 300; n++) {
          // The first case is always an oversized body, so every seed reaches the 413 class.
          const oversized = n === 0
          const method = oversized
            ? "POST"
            : pick(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PROPFIND", "HEAD"])
          const path = oversized ? "/debug/echo" : pick([
            "/api/v1/items",
            "/api/v1/items",
            "/api/v1/items/",
            `/api/v1/items/${pick(["1", "0", "-1", "1e3", "99999999999", "%00", "abc", junk(8)])}`,
            `/api/v1/${junk(12)}`,
            `/${junk(20)}`,
            "/debug/echo",
            "/debug/sleep"
          ]).replace(/[^\x21-\x7e]/g, (c) => encodeURIComponent(c))
          const query = random() < 0.5
            ? ""
            : `?${encodeURIComponent(pick(["page", "perPage", "ms", junk(5)]))}=${encodeURIComponent(junk(10))}`
          const headers: Record<string, string> = {
            "x-request-id": `fuzz-${n}`,
            "content-type": pick([
              "application/json",
              "text/plain",
              "application/x-www-form-urlencoded",
              "multipart/form-data",
              junk(10)
            ])
              .replace(/[^\x20-\x7e]/g, "")
          }
          if (random() < 0.7) {
            headers.authorization = `Bearer ${random() < 0.8 ? token : junk(30).replace(/[^\x20-\x7e]/g, "")}`
          }
          const body = oversized
            ? "x".repeat(5000)
            : method === "GET" || method === "HEAD"
            ? undefined
            : pick([
              JSON.stringify({ name: junk(30), description: junk(50) }),
              JSON.stringify({ name: random() < 0.5 ? 5 : null }),
              junk(100),
              "x".repeat(pick([10, 1023, 1025, 5000])),
              "x".repeat(4096),
              "{\"name\":"
            ])
          // Framed, so each case is one request (Node's client sends a DELETE body unframed).
          if (body !== undefined) headers["content-length"] = String(Buffer.byteLength(body))
          const answer = yield* Effect.promise(() =>
            new Promise<{ status: number; headers: Http.IncomingHttpHeaders; text: string }>((resolve, reject) => {
              const request = Http.request({
                host: "127.0.0.1",
                port,
                method,
                path: path + query,
                headers,
                agent: false,
                timeout: 10_000
              }, (response) => {
                let text = ""
                response.setEncoding("utf8").on("data", (chunk: string) => (text += chunk))
                response.on("end", () => resolve({ status: response.statusCode!, headers: response.headers, text }))
              })
              request.on("timeout", () => reject(new Error(`case ${n} (seed ${seed}): ${method} ${path}${query} hung`)))
              request.on(
                "error",
                (error) => reject(new Error(`case ${n} (seed ${seed}): ${method} ${path}${query}: ${error.message}`))
              )
              request.end(body)
            })
          )
          statuses.set(answer.status, (statuses.get(answer.status) ?? 0) + 1)
          if (answer.status < 400 || method === "HEAD") continue
          try {
            problemOf({
              status: answer.status,
              text: answer.text,
              contentType: answer.headers["content-type"] ?? null,
              requestId: String(answer.headers["x-request-id"])
            })
            assert.strictEqual(answer.headers["x-request-id"], `fuzz-${n}`)
          } catch (error) {
            throw new Error(
              `case ${n} (seed ${seed}): ${method} ${path}${query} → ${answer.status} ${answer.text}\n${error}`,
              {
                cause: error
              }
            )
          }
        }
        // The generator reaches the error classes it is meant to: not a run of 200s.
        for (const status of [400, 401, 404, 405, 413]) {
          assert.isAbove(statuses.get(status) ?? 0, 0, `no ${status} in ${[...statuses]}`)
        }
      }))

    it.effect(`random bytes on a raw socket get a problem or nothing, and a closed socket (seed ${seed})`, () =>
      Effect.gen(function*() {
        const { port } = yield* App
        for (let n = 0; n < 40; n++) {
          const prefix = pick([
            "",
            "GET / HTTP/1.1\r\n",
            "POST /api/v1/items HTTP/1.1\r\nHost: x\r\n",
            "GET /livez HTTP/1.1\r\nHost: x\r\nContent-Length: "
          ])
          const bytes = Buffer.concat([
            Buffer.from(prefix),
            Buffer.from(Array.from({ length: 1 + Math.floor(random() * 200) }, () => Math.floor(random() * 256))),
            Buffer.from(random() < 0.5 ? "\r\n\r\n" : "")
          ])
          const { received, closed } = yield* Effect.promise(() => raw(port, bytes, 4_000))
          // A request that is still incomplete is closed at HEADERS_TIMEOUT (1s) with a 408.
          assert.isTrue(closed, `case ${n} (seed ${seed}): the socket was left open`)
          if (received.length === 0) continue
          const answer = parseRaw(received)
          if (answer.status < 400) continue
          try {
            problemOf({
              status: answer.status,
              text: answer.text,
              contentType: answer.headers.get("content-type") ?? null,
              requestId: answer.headers.get("x-request-id") ?? null
            })
          } catch (error) {
            throw new Error(
              `case ${n} (seed ${seed}): ${JSON.stringify(bytes.toString("latin1"))} → ${received}\n${error}`,
              {
                cause: error
              }
            )
          }
        }
      }))
  })
})

class Store extends Context.Service<Store, Effect.Success<typeof privateRedis>>()("test/ProblemRedis") {
  static readonly layer = Layer.effect(Store, privateRedis)
}

describe("Problem: outages answer 503 problems with Retry-After", () => {
  layer(Store.layer, { excludeTestServices: true, timeout: "60 seconds" })((it) => {
    it.effect("the rate limiter's store down (fail closed), then the database refusing connections", () =>
      Effect.gen(function*() {
        const redis = yield* Store
        yield* Effect.gen(function*() {
          const app = yield* App
          const token = yield* Effect.promise(() => Testing.mint({ subject: "outage" }))
          assert.strictEqual((yield* call("/api/v1/items", { token })).status, 200)
          yield* redis.signal("SIGSTOP")
          expectProblem(yield* call("/api/v1/items", { token }), 503, /rate limiting is unavailable/)
          yield* redis.signal("SIGCONT")
          let back = yield* call("/api/v1/items", { token })
          for (let attempt = 0; attempt < 50 && back.status !== 200; attempt++) {
            yield* Effect.sleep(100)
            back = yield* call("/api/v1/items", { token })
          }
          assert.strictEqual(back.status, 200)
          // The operator closes the database to connections and drops the pool's.
          const name = new URL(app.env.DATABASE_URL!).pathname.slice(1)
          // Only the path names the database; the query carries the server's socket directory.
          const admin = new URL(app.env.DATABASE_URL!)
          admin.pathname = "/postgres"
          yield* Testing.sql(admin.toString(), `ALTER DATABASE ${name} ALLOW_CONNECTIONS false`)
          yield* Testing.sql(
            admin.toString(),
            `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '${name}'`
          )
          const down = expectProblem(yield* call("/api/v1/items", { token }), 503, /the database is unavailable/)
          assert.strictEqual(down.type, "about:blank")
          yield* Testing.sql(admin.toString(), `ALTER DATABASE ${name} ALLOW_CONNECTIONS true`)
        }).pipe(
          Effect.provide(appLayer({
            REDIS_URL: redis.url,
            REDIS_COMMAND_TIMEOUT: "300ms",
            RATE_LIMIT_ON_STORE_ERROR: "closed",
            CACHE_TTL: "0"
          }))
        )
      }))
  })
})

describe("Problem: before the routes are mounted", () => {
  layer(Layer.empty)((it) => {
    it.effect("a request is answered 503 with Retry-After and the id it was given", () =>
      Effect.acquireUseRelease(
        Effect.callback<Http.Server>((resume) => {
          const server = Http.createServer({
            ServerResponse: makeServerResponse({ documentPaths: [], accessLog: undefined })
          }, notReady)
          server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
        }),
        (server) =>
          Effect.promise(async () => {
            const { port } = server.address() as Net.AddressInfo
            const response = await fetch(`http://127.0.0.1:${port}/api/v1/items`, {
              headers: { "x-request-id": "early-1" }
            })
            return { status: response.status, headers: response.headers, text: await response.text() }
          }).pipe(Effect.map((answer) => {
            const body = expectProblem(answer, 503, /starting/)
            assert.strictEqual(body.requestId, "early-1")
          })),
        (server) => Effect.callback<void>((resume) => void server.close(() => resume(Effect.void)))
      ))
  })
})
