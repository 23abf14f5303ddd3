// Lint and format, as Effect's own repositories set them up: ESLint's and typescript-eslint's
// recommended rules, and dprint as an ESLint rule (`@effect/dprint`) so one command does both.
import * as effectEslint from "@effect/eslint-plugin"
import js from "@eslint/js"
import globals from "globals"
import tseslint from "typescript-eslint"

export default tseslint.config(
  { ignores: ["**/node_modules/", "**/dist/", "**/.data/", "**/scratch/", "**/*.md"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  // Turns off every stylistic core rule dprint owns, then adds `@effect/dprint`.
  ...effectEslint.configs.dprint,
  {
    files: ["**/*.ts", "**/*.mjs"],
    languageOptions: {
      ecmaVersion: "latest",
      sourceType: "module",
      // The bench and the scripts are plain .mjs run by Node; TypeScript does not check them.
      globals: globals.node
    },
    rules: {
      "@effect/dprint": ["error", {
        config: {
          indentWidth: 2,
          lineWidth: 120,
          semiColons: "asi",
          quoteStyle: "alwaysDouble",
          trailingCommas: "never",
          operatorPosition: "maintain",
          "arrowFunction.useParentheses": "force"
        }
      }],
      // The house style writes Array<A> and ReadonlyArray<A>, as Effect does.
      "@typescript-eslint/array-type": ["error", { default: "generic", readonly: "generic" }],
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "object-shorthand": "error",
      // tsc already refuses these (noFallthroughCasesInSwitch); Effect's config turns them off too.
      "no-fallthrough": "off",
      // Effect's signatures are written with `any` in type positions where variance needs it, and
      // its namespaces (`declare module`, `export declare namespace`) are part of the API shape.
      "@typescript-eslint/no-explicit-any": "off",
      "@typescript-eslint/no-namespace": "off",
      // `x!` after a check the compiler cannot follow is the house style's way to say so.
      "@typescript-eslint/no-non-null-assertion": "off",
      // A generator written `function*() {}` with no yield is Effect.gen's normal shape.
      "require-yield": "off"
    }
  }
)
