/**
 * The interactive docs in a real browser (Debian's Chromium via playwright-core): /docs loads
 * with no console errors, nothing fetched from elsewhere, and lists the items endpoints.
 */
import { assert, describe, layer } from "@effect/vitest"
import { Effect } from "effect"
import { chromium } from "playwright-core"
import { App, appLayer } from "../support/app.ts"
import { findChromium } from "../support/chromium.ts"

const chromiumFound = findChromium()
const executablePath = "path" in chromiumFound ? chromiumFound.path : undefined

describe("docs", () => {
  layer(appLayer(), { excludeTestServices: true, timeout: "120 seconds" })((it) => {
    it.effect("/docs renders in Chromium without console errors and lists the items endpoints", () =>
      Effect.gen(function*() {
        assert.isDefined(executablePath, "missing" in chromiumFound ? chromiumFound.missing : undefined)
        const app = yield* App
        const browser = yield* Effect.acquireRelease(
          Effect.promise(() =>
            chromium.launch({
              executablePath: executablePath!,
              args: [
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync"
              ]
            })
          ),
          (browser) => Effect.promise(() => browser.close())
        )
        const page = yield* Effect.promise(() => browser.newPage())
        const problems: Array<string> = []
        const foreign: Array<string> = []
        page.on("console", (message) => {
          if (message.type() === "error") problems.push(message.text())
        })
        page.on("pageerror", (error) => problems.push(error.message))
        page.on("response", (response) => {
          if (response.status() >= 400) problems.push(`${response.status()} ${response.url()}`)
        })
        page.on("request", (request) => {
          if (!request.url().startsWith(`http://127.0.0.1:${app.port}/`) && !request.url().startsWith("data:")) {
            foreign.push(request.url())
          }
        })
        const response = yield* Effect.promise(() =>
          page.goto(`http://127.0.0.1:${app.port}/docs`, { waitUntil: "networkidle" })
        )
        assert.strictEqual(response?.status(), 200)
        yield* Effect.promise(() => page.getByText("/api/v1/items/{id}").first().waitFor({ timeout: 20_000 }))
        const text = yield* Effect.promise(() => page.locator("body").innerText())
        for (const operation of ["/api/v1/items", "/api/v1/items/{id}"]) assert.include(text, operation)
        assert.match(text, /GET/)
        assert.match(text, /POST/)
        assert.match(text, /DEL/)
        if (process.env.DOCS_SCREENSHOT) {
          yield* Effect.promise(() => page.screenshot({ path: process.env.DOCS_SCREENSHOT!, fullPage: false }))
        }
        assert.deepStrictEqual(problems, [])
        assert.deepStrictEqual(foreign, [])
      }))
  })
})
