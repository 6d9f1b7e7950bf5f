// The `cookie` package Express 5 depends on (0.7, no bundled types): the one function the runtime uses.
declare module "cookie" {
  export function parse(header: string, options?: { decode?: (value: string) => string }): Record<string, string>;
}
