// Command-line flag walking shared by keel's commands: `--flag value`, `--flag=value`, `-f value`.
// Each command keeps its own switch over the flags; this only does the reading.

export class UsageError extends Error {}

export interface Flag {
  /** the flag as typed, without an inline `=value` */
  readonly flag: string;
  /** the whole argument */
  readonly arg: string;
  /** `--flag=value`'s value, else the next argument (consumed); UsageError when there is none */
  value(): string;
  /** the next argument without consuming it */
  peek(): string | undefined;
  /** consume the next argument (a tolerated flag's value) */
  skip(): void;
}

export function* eachFlag(argv: readonly string[]): Generator<Flag> {
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const eq = arg.startsWith('--') ? arg.indexOf('=') : -1;
    const flag = eq > 0 ? arg.slice(0, eq) : arg;
    const inline = eq > 0 ? arg.slice(eq + 1) : undefined;
    yield {
      flag,
      arg,
      value: () => {
        if (inline !== undefined) return inline;
        const v = argv[++i];
        if (v === undefined) throw new UsageError(`${flag} needs a value`);
        return v;
      },
      peek: () => (inline !== undefined ? undefined : argv[i + 1]),
      skip: () => {
        if (inline === undefined) i++;
      },
    };
  }
}
