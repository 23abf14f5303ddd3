/**
 * The schema, as PgMigrator migrations run at startup (in id order, each once).
 * Add a migration by adding an entry; never edit one that has shipped.
 */
import { Effect } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import type { Migrations } from "../kit/index.ts"

export const migrations: Migrations = {
  "0001_create_items": Effect.gen(function*() {
    const sql = yield* SqlClient
    yield* sql`
      CREATE TABLE items (
        id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        name text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
        description text NOT NULL DEFAULT '' CHECK (char_length(description) <= 2000),
        created_at timestamptz NOT NULL DEFAULT now()
      )
    `
  }),
  "0002_create_reservations": Effect.gen(function*() {
    const sql = yield* SqlClient
    yield* sql`
      CREATE TABLE reservations (
        id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        item_id integer NOT NULL REFERENCES items (id) ON DELETE CASCADE,
        holder text NOT NULL,
        quantity integer NOT NULL CHECK (quantity BETWEEN 1 AND 1000),
        created_at timestamptz NOT NULL DEFAULT now(),
        expires_at timestamptz NOT NULL
      )
    `
    // The holder's list, and the sweep's scan for what has run out.
    yield* sql`CREATE INDEX reservations_holder ON reservations (holder, id)`
    yield* sql`CREATE INDEX reservations_expires_at ON reservations (expires_at)`
    yield* sql`CREATE INDEX reservations_item_id ON reservations (item_id)`
  })
}
