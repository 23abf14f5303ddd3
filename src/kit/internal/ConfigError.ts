/**
 * How a refused setting is rendered at startup: one line per ConfigError, the variable first.
 * Internal: modules refuse with `Settings.refuse`/`conflict`; the startup line is the kit's.
 */
import { Schema, SchemaIssue } from "effect"
import type { ConfigError } from "../Settings.ts"

const formatter = SchemaIssue.makeFormatterStandardSchemaV1()

/**
 * One line for a ConfigError: `NAME: what is wrong`. Effect's own messages end in a multi-line
 * `at ["NAME"]`; the variable is what an operator looks for, so it goes first.
 */
export const describe = (error: ConfigError): string => {
  const cause = error.cause
  if (!Schema.isSchemaError(cause)) return oneLine(String((cause as { message?: unknown }).message ?? cause))
  return formatter(cause.issue).issues.map((issue) => {
    const path = (issue.path ?? []).map((key) => String(typeof key === "object" ? key.key : key)).join(".")
    return oneLine(path.length > 0 ? `${path}: ${issue.message}` : issue.message)
  }).join("; ")
}

const oneLine = (text: string) => text.replace(/\s*\n\s*/g, " ")
