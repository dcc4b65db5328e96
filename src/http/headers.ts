// A header block as a flat array [name0, value0, name1, value1, ...] with lower-case names, the shape
// both codecs produce without copying (HTTP/1 parser output, decoded HTTP/2 header blocks). Lookups scan:
// requests carry a dozen headers, and a scan beats building a Map per request. Must not allocate on
// reads beyond the joined value of a repeated header.

export class HeaderMap {
  /** name, value pairs; names are lower-case. Exposed for codecs that serialise it. */
  readonly raw: string[];

  constructor(raw?: string[]) {
    this.raw = raw ?? [];
  }

  get size(): number {
    return this.raw.length >>> 1;
  }

  /** The value, with repeated headers joined by ',' as Envoy does for matching; undefined if absent. */
  get(name: string): string | undefined {
    const raw = this.raw;
    let found: string | undefined;
    for (let i = 0; i < raw.length; i += 2) {
      if (raw[i] === name) {
        found = found === undefined ? raw[i + 1] : found + ',' + raw[i + 1];
      }
    }
    return found;
  }

  /** The first value only. */
  first(name: string): string | undefined {
    const raw = this.raw;
    for (let i = 0; i < raw.length; i += 2) if (raw[i] === name) return raw[i + 1];
    return undefined;
  }

  has(name: string): boolean {
    const raw = this.raw;
    for (let i = 0; i < raw.length; i += 2) if (raw[i] === name) return true;
    return false;
  }

  add(name: string, value: string): void {
    this.raw.push(name, value);
  }

  /** Replaces every value of `name` with one value, keeping the first one's position. */
  set(name: string, value: string): void {
    const raw = this.raw;
    let i = 0;
    while (i < raw.length && raw[i] !== name) i += 2;
    if (i >= raw.length) {
      raw.push(name, value);
      return;
    }
    raw[i + 1] = value;
    let w = i + 2;
    for (i += 2; i < raw.length; i += 2) {
      if (raw[i] !== name) {
        raw[w] = raw[i];
        raw[w + 1] = raw[i + 1];
        w += 2;
      }
    }
    raw.length = w;
  }

  remove(name: string): boolean {
    const raw = this.raw;
    let w = 0;
    for (let i = 0; i < raw.length; i += 2) {
      if (raw[i] !== name) {
        if (w !== i) {
          raw[w] = raw[i];
          raw[w + 1] = raw[i + 1];
        }
        w += 2;
      }
    }
    const removed = w !== raw.length;
    raw.length = w;
    return removed;
  }
}
