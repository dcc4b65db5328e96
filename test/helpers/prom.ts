// A small Prometheus text-format parser for tests: samples with their labels, and TYPE lines.

export interface Sample {
  readonly name: string;
  readonly labels: Record<string, string>;
  readonly value: number;
}

export interface Parsed {
  readonly samples: Sample[];
  readonly types: Map<string, string>;
}

export function parseProm(text: string): Parsed {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    if (line.startsWith('# TYPE ')) {
      const [, , name, type] = line.split(' ');
      types.set(name, type);
      continue;
    }
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`bad exposition line: ${line}`);
    const labels: Record<string, string> = {};
    if (m[3]) {
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?/g;
      for (let l = re.exec(m[3]); l; l = re.exec(m[3])) labels[l[1]] = l[2].replace(/\\"/g, '"').replace(/\\n/g, '\n').replace(/\\\\/g, '\\');
    }
    samples.push({ name: m[1], labels, value: Number(m[4]) });
  }
  return { samples, types };
}

/** Samples of `name` whose labels include every pair of `match`. */
export function find(p: Parsed, name: string, match: Record<string, string> = {}): Sample[] {
  return p.samples.filter((s) => s.name === name && Object.entries(match).every(([k, v]) => s.labels[k] === v));
}

export function sum(p: Parsed, name: string, match: Record<string, string> = {}): number {
  return find(p, name, match).reduce((a, s) => a + s.value, 0);
}
