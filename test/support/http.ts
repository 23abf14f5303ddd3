/**
 * Small HTTP helpers for process tests: one request on its own connection, body read whole.
 */
import * as Http from "node:http"

export interface Answer {
  readonly status: number
  readonly body: string
  readonly headers: Http.IncomingHttpHeaders
}

export const request = (
  port: number,
  path: string,
  options: {
    readonly method?: string
    readonly body?: string | Buffer
    readonly agent?: Http.Agent | false
    readonly headers?: Http.OutgoingHttpHeaders
  } = {}
) =>
  new Promise<Answer>((resolve, reject) => {
    const req = Http.request(
      {
        host: "127.0.0.1",
        port,
        path,
        method: options.method ?? "GET",
        agent: options.agent ?? false,
        headers: options.headers
      },
      (response) => {
        let body = ""
        response.setEncoding("utf8").on("data", (chunk: string) => (body += chunk))
        response.on("end", () => resolve({ status: response.statusCode!, body, headers: response.headers }))
        response.on("error", reject)
      }
    )
    req.on("error", reject)
    req.end(options.body)
  })

export const json = (answer: Answer) => JSON.parse(answer.body) as any
