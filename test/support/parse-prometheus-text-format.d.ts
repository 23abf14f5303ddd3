/**
 * Types for parse-prometheus-text-format (it ships none): the metric families of one
 * exposition, as the tests read them.
 */
declare module "parse-prometheus-text-format" {
  const parse: (text: string) => ReadonlyArray<unknown>
  export default parse
}
