/**
 * The supervisor's settings as an operator writes them: probation and heartbeat defaults and
 * ranges, and RESTART_DELAY_MAX below RESTART_DELAY refused in one line naming both.
 */
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Duration, Effect, Exit } from "effect"
import { SupervisorConfig } from "../../src/kit/internal/supervisor/Supervisor.ts"
import { describeCause } from "../../src/kit/Log.ts"

const load = (env: Record<string, string>) => SupervisorConfig.parse(ConfigProvider.fromEnv({ env }))

const refused = (env: Record<string, string>) =>
  Effect.map(Effect.exit(load(env)), (exit) => {
    assert.isTrue(Exit.isFailure(exit), `${JSON.stringify(env)} was accepted`)
    const line = Exit.isFailure(exit) ? describeCause(exit.cause) : ""
    assert.notInclude(line, "\n")
    return line
  })

describe("SupervisorConfig", () => {
  it.effect("probation 15 s and heartbeat 5 s by default; probation 0 allowed, heartbeat at least 500 ms", () =>
    Effect.gen(function*() {
      const defaults = yield* load({ WORKERS: "2" })
      assert.strictEqual(Duration.toMillis(defaults.upgradeProbation), 15_000)
      assert.strictEqual(Duration.toMillis(defaults.heartbeatTimeout), 5_000)
      assert.strictEqual(Duration.toMillis((yield* load({ WORKERS: "2", UPGRADE_PROBATION: "0" })).upgradeProbation), 0)
      assert.match(
        yield* refused({ WORKERS: "2", WORKER_HEARTBEAT_TIMEOUT: "100ms" }),
        /WORKER_HEARTBEAT_TIMEOUT: 100ms is out of range/
      )
      assert.match(yield* refused({ WORKERS: "2", UPGRADE_PROBATION: "30" }), /UPGRADE_PROBATION: .*did you mean 30s\?/)
    }))

  it.effect("RESTART_DELAY_MAX below RESTART_DELAY is refused, naming both; equal is fine", () =>
    Effect.gen(function*() {
      assert.strictEqual(
        yield* refused({ WORKERS: "2", RESTART_DELAY: "5s", RESTART_DELAY_MAX: "1s" }),
        "invalid configuration: RESTART_DELAY_MAX (1s) must not be shorter than RESTART_DELAY (5s): the cap would be below the first delay"
      )
      // The default cap (10 s) counts: a first delay above it alone is a conflict too.
      assert.match(
        yield* refused({ WORKERS: "2", RESTART_DELAY: "20s" }),
        /RESTART_DELAY_MAX \(10s\).*RESTART_DELAY \(20s\)/
      )
      const equal = yield* load({ WORKERS: "2", RESTART_DELAY: "2s", RESTART_DELAY_MAX: "2s" })
      assert.strictEqual(Duration.toMillis(equal.restartDelayMax), 2_000)
    }))
})
