/** The kit's globalSetup: one PostgreSQL for the run, started when a test first asks for it. */
export { globalSetup as default } from "../../src/kit/testing.ts"
