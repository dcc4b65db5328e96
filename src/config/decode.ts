// A cursor over decoded JSON/YAML that reads Envoy's proto3-JSON shapes and records problems instead
// of throwing, so one pass reports every mistake in a configuration with its path.
//
// Proto3 JSON rules applied here:
// - a field may be spelled snake_case (the proto name) or lowerCamelCase (its JSON name); paths in
//   problems always use the snake_case name;
// - `null` means "not set";
// - wrapper types (UInt32Value, BoolValue, ...) are the plain value;
// - integers may be given as numbers or as decimal strings; enums as names or numbers;
// - Duration is a string such as "1.5s" (an object {seconds, nanos} is accepted too);
// - bytes are base64 strings;
// - unknown fields are errors, as in Envoy, except those a message's ignore list names (see
//   `IgnoredFields`): those produce a warning (or nothing) and are otherwise skipped.

import type { ConfigProblem } from './errors';

/** Per message: field (snake_case) -> warning text, or null to skip it silently. */
export type IgnoredFields = Readonly<Record<string, Readonly<Record<string, string | null>>>>;

/** Collects problems and warnings for one decode. */
export class Diagnostics {
  readonly problems: ConfigProblem[] = [];
  readonly warnings: string[] = [];
  constructor(readonly ignoredFields: IgnoredFields = {}) {}

  problem(path: string, message: string): void {
    this.problems.push({ path, message });
  }

  warn(path: string, message: string): void {
    this.warnings.push(path === '' ? message : `${path}: ${message}`);
  }
}

export function joinPath(base: string, field: string): string {
  return base === '' ? field : `${base}.${field}`;
}

export function indexPath(base: string, index: number): string {
  return `${base}[${index}]`;
}

export function keyPath(base: string, key: string): string {
  return `${base}[${JSON.stringify(key)}]`;
}

const camelCache = new Map<string, string>();

/** snake_case -> lowerCamelCase (memoized: field names are a small fixed set, read for every resource). */
export function camelCase(snake: string): string {
  let c = camelCache.get(snake);
  if (c === undefined) {
    c = snake.replace(/_([a-z0-9])/g, (_m, ch: string) => ch.toUpperCase());
    if (camelCache.size < 10_000) camelCache.set(snake, c);
  }
  return c;
}

export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'an object';
  if (typeof v === 'string') return `the string ${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}...` : v)}`;
  return `${typeof v} ${String(v)}`;
}

const DECIMAL_RE = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;
const INTEGER_RE = /^[+-]?\d+$/;
const DURATION_RE = /^(-)?(\d+)(?:\.(\d{1,9}))?s$/;
/** google.protobuf.Duration's range: +-10,000 years. */
const MAX_DURATION_SECONDS = 315_576_000_000;

export interface NumberOptions {
  readonly min?: number;
  readonly max?: number;
  /** exclusive lower bound */
  readonly gt?: number;
}

export interface DurationOptions {
  /** Envoy's `duration.gt: {}`: zero is rejected too. */
  readonly positive?: boolean;
  /** lowest accepted value, ms */
  readonly minMs?: number;
}

/** Decoded google.protobuf.Any: the message type (no type.googleapis.com/ prefix) and a reader over its fields. */
export interface TypedConfig {
  readonly typeName: string;
  readonly reader: Reader;
}

const TYPED_STRUCT_TYPES = new Set(['udpa.type.v1.TypedStruct', 'xds.type.v3.TypedStruct']);

export function stripTypeUrl(url: string): string {
  const slash = url.lastIndexOf('/');
  return slash >= 0 ? url.slice(slash + 1) : url;
}

/**
 * Reads one JSON object (one proto message). Every accessor takes the snake_case field name, accepts
 * the lowerCamelCase spelling too, marks the field as read, and records a problem (returning the
 * default) when the value has the wrong shape. `done()` reports the fields nobody read.
 */
export class Reader {
  private readonly seen = new Set<string>();
  private finished = false;

  constructor(
    readonly diag: Diagnostics,
    readonly path: string,
    readonly raw: Readonly<Record<string, unknown>>,
    /** message name, the key into the diagnostics' ignore table */
    readonly message: string,
  ) {}

  /** A reader over `value`, or undefined (with a problem) when it is not an object. */
  static of(diag: Diagnostics, path: string, value: unknown, message: string): Reader | undefined {
    if (!isObject(value)) {
      diag.problem(path, `expected an object, got ${describe(value)}`);
      return undefined;
    }
    return new Reader(diag, path, value, message);
  }

  at(field: string): string {
    return joinPath(this.path, field);
  }

  problem(message: string, field?: string): void {
    this.diag.problem(field === undefined ? this.path : this.at(field), message);
  }

  warn(message: string, field?: string): void {
    this.diag.warn(field === undefined ? this.path : this.at(field), message);
  }

  /** The raw value, or undefined when absent or null; marks the field read. */
  get(field: string): unknown {
    const camel = camelCase(field);
    const hasSnake = Object.prototype.hasOwnProperty.call(this.raw, field);
    const hasCamel = camel !== field && Object.prototype.hasOwnProperty.call(this.raw, camel);
    if (hasSnake) this.seen.add(field);
    if (hasCamel) this.seen.add(camel);
    if (hasSnake && hasCamel) {
      this.problem(`field is set twice, as '${field}' and as '${camel}'`, field);
    }
    const v = hasSnake ? this.raw[field] : hasCamel ? this.raw[camel] : undefined;
    return v === null ? undefined : v;
  }

  has(field: string): boolean {
    return this.get(field) !== undefined;
  }

  /** Records a problem when a field Envoy knows but keel does not implement is set (an empty list is unset). */
  unsupported(field: string, what?: string): void {
    const v = this.get(field);
    if (v === undefined || (Array.isArray(v) && v.length === 0)) return;
    this.problem(`${what ?? field} is not supported by keel`, field);
  }

  /** A fresh reader over the same object under another message name (for its ignore list). */
  retype(message: string): Reader {
    return new Reader(this.diag, this.path, this.raw, message);
  }

  str(field: string, def = ''): string {
    return this.optStr(field) ?? def;
  }

  optStr(field: string): string | undefined {
    const v = this.get(field);
    if (v === undefined) return undefined;
    if (typeof v !== 'string') {
      this.problem(`expected a string, got ${describe(v)}`, field);
      return undefined;
    }
    return v;
  }

  /** A string that must be present and non-empty. */
  requiredStr(field: string): string {
    const v = this.optStr(field);
    if (v === undefined || v === '') {
      if (v === '' || !this.has(field)) this.problem(`${field} is required`, field);
      return '';
    }
    return v;
  }

  bool(field: string, def: boolean): boolean {
    return this.optBool(field) ?? def;
  }

  optBool(field: string): boolean | undefined {
    const v = this.get(field);
    if (v === undefined) return undefined;
    if (typeof v !== 'boolean') {
      this.problem(`expected true or false, got ${describe(v)}`, field);
      return undefined;
    }
    return v;
  }

  /** A double (proto `double`/`float`/DoubleValue). */
  num(field: string, def: number, opts: NumberOptions = {}): number {
    return this.optNum(field, opts) ?? def;
  }

  optNum(field: string, opts: NumberOptions = {}): number | undefined {
    const v = this.get(field);
    if (v === undefined) return undefined;
    let n: number | undefined;
    if (typeof v === 'number' && Number.isFinite(v)) n = v;
    else if (typeof v === 'string' && DECIMAL_RE.test(v.trim())) n = Number(v);
    if (n === undefined) {
      this.problem(`expected a number, got ${describe(v)}`, field);
      return undefined;
    }
    return this.checkRange(field, n, opts) ? n : undefined;
  }

  uint32(field: string, def: number, opts: NumberOptions = {}): number {
    return this.optUint32(field, opts) ?? def;
  }

  optUint32(field: string, opts: NumberOptions = {}): number | undefined {
    return this.optInteger(field, 0, 4_294_967_295, opts);
  }

  int64(field: string, def: number, opts: NumberOptions = {}): number {
    return this.optInt64(field, opts) ?? def;
  }

  optInt64(field: string, opts: NumberOptions = {}): number | undefined {
    return this.optInteger(field, Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER, opts);
  }

  private optInteger(field: string, lo: number, hi: number, opts: NumberOptions): number | undefined {
    const v = this.get(field);
    if (v === undefined) return undefined;
    const n = toInteger(v);
    if (n === undefined) {
      this.problem(`expected ${lo === 0 ? 'a non-negative integer' : 'an integer'}, got ${describe(v)}`, field);
      return undefined;
    }
    if (n < lo || n > hi) {
      this.problem(`${n} is out of range (${lo}..${hi})`, field);
      return undefined;
    }
    return this.checkRange(field, n, opts, lo === 0 ? 0 : undefined, hi === 4_294_967_295 ? hi : undefined) ? n : undefined;
  }

  /** Checks `opts`; `lo`/`hi` are the type's own bounds, shown when `opts` leaves a side open. */
  private checkRange(field: string, n: number, opts: NumberOptions, lo?: number, hi?: number): boolean {
    if (opts.gt !== undefined && !(n > opts.gt)) {
      this.problem(`must be greater than ${opts.gt}, got ${n}`, field);
      return false;
    }
    if ((opts.min !== undefined && n < opts.min) || (opts.max !== undefined && n > opts.max)) {
      const from = opts.min ?? (opts.gt !== undefined ? undefined : lo);
      const to = opts.max ?? hi;
      if (from !== undefined && to !== undefined) this.problem(`${n} is out of range (${from}..${to})`, field);
      else if (to !== undefined) this.problem(`must be at most ${to}, got ${n}`, field);
      else this.problem(`must be at least ${from}, got ${n}`, field);
      return false;
    }
    return true;
  }

  /** google.protobuf.Duration -> milliseconds. */
  duration(field: string, defMs: number, opts: DurationOptions = {}): number {
    return this.optDuration(field, opts) ?? defMs;
  }

  optDuration(field: string, opts: DurationOptions = {}): number | undefined {
    const v = this.get(field);
    if (v === undefined) return undefined;
    const parsed = parseDuration(v);
    if (typeof parsed === 'string') {
      this.problem(parsed, field);
      return undefined;
    }
    if (parsed < 0) {
      this.problem(`must not be negative, got ${formatValue(v)}`, field);
      return undefined;
    }
    if (opts.positive && parsed === 0) {
      this.problem('must be greater than 0s', field);
      return undefined;
    }
    if (opts.minMs !== undefined && parsed < opts.minMs) {
      this.problem(`must be at least ${opts.minMs}ms, got ${formatValue(v)}`, field);
      return undefined;
    }
    return parsed;
  }

  /**
   * An enum: `values` is Envoy's enum in number order ('' for unused numbers); `supported` the names
   * keel implements (default: all). Accepts the name or the number.
   */
  enum<const T extends string, S extends T>(field: string, values: readonly T[], def: S, supported: readonly S[]): S;
  enum<const T extends string>(field: string, values: readonly T[], def: NoInfer<T>): T;
  enum(field: string, values: readonly string[], def: string, supported?: readonly string[]): string {
    const v = this.get(field);
    if (v === undefined) return def;
    let name: string | undefined;
    if (typeof v === 'string') name = v;
    else if (typeof v === 'number' && Number.isInteger(v)) name = values[v] === '' ? undefined : values[v];
    if (name === undefined || name === '' || !values.includes(name)) {
      this.problem(`unknown value ${formatValue(v)} (expected one of ${values.filter((x) => x !== '').join(', ')})`, field);
      return def;
    }
    if (supported !== undefined && !supported.includes(name)) {
      this.problem(`${name} is not supported by keel (supported: ${supported.join(', ')})`, field);
      return def;
    }
    return name;
  }

  /** A repeated field: the items with their paths; a problem if the value is not a list. */
  list(field: string): { value: unknown; path: string }[] {
    const v = this.get(field);
    if (v === undefined) return [];
    if (!Array.isArray(v)) {
      this.problem(`expected a list, got ${describe(v)}`, field);
      return [];
    }
    const base = this.at(field);
    return v.map((value, i) => ({ value, path: indexPath(base, i) }));
  }

  strList(field: string): string[] {
    const out: string[] = [];
    for (const item of this.list(field)) {
      if (typeof item.value !== 'string') this.diag.problem(item.path, `expected a string, got ${describe(item.value)}`);
      else out.push(item.value);
    }
    return out;
  }

  uint32List(field: string, opts: NumberOptions = {}): number[] {
    const out: number[] = [];
    for (const item of this.list(field)) {
      const n = toInteger(item.value);
      if (n === undefined || n < 0 || n > 4_294_967_295) {
        this.diag.problem(item.path, `expected a non-negative integer, got ${describe(item.value)}`);
      } else if ((opts.min !== undefined && n < opts.min) || (opts.max !== undefined && n > opts.max)) {
        this.diag.problem(item.path, `${n} is out of range (${opts.min ?? 0}..${opts.max ?? ''})`);
      } else out.push(n);
    }
    return out;
  }

  /** A repeated message field; each item is decoded by `fn` and then checked for unknown fields. */
  objects<T>(field: string, message: string, fn: (r: Reader, index: number) => T | undefined): T[] {
    const out: T[] = [];
    this.list(field).forEach((item, i) => {
      const r = Reader.of(this.diag, item.path, item.value, message);
      if (r === undefined) return;
      const t = fn(r, i);
      r.done();
      if (t !== undefined) out.push(t);
    });
    return out;
  }

  /** A reader over a message field (undefined when absent). Call `done()` on it when finished. */
  obj(field: string, message: string): Reader | undefined {
    const v = this.get(field);
    if (v === undefined) return undefined;
    return Reader.of(this.diag, this.at(field), v, message);
  }

  /** Decodes a message field with `fn` and checks it for unknown fields; undefined when absent. */
  sub<T>(field: string, message: string, fn: (r: Reader) => T): T | undefined {
    const r = this.obj(field, message);
    if (r === undefined) return undefined;
    const t = fn(r);
    r.done();
    return t;
  }

  /** A map field (proto map<string, V>): entries with their paths. */
  map(field: string): { key: string; value: unknown; path: string }[] {
    const v = this.get(field);
    if (v === undefined) return [];
    if (!isObject(v)) {
      this.problem(`expected an object (a map), got ${describe(v)}`, field);
      return [];
    }
    const base = this.at(field);
    return Object.keys(v).map((key) => ({ key, value: v[key], path: keyPath(base, key) }));
  }

  /** google.protobuf.Struct (opaque JSON object). */
  struct(field: string): Record<string, unknown> {
    const v = this.get(field);
    if (v === undefined) return {};
    if (!isObject(v)) {
      this.problem(`expected an object, got ${describe(v)}`, field);
      return {};
    }
    return v;
  }

  /** base64 `bytes` decoded as UTF-8. */
  optBytes(field: string): string | undefined {
    const v = this.optStr(field);
    if (v === undefined) return undefined;
    const compact = v.replace(/\s+/g, '');
    if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(compact) || compact.replace(/=+$/, '').length % 4 === 1) {
      this.problem('expected base64-encoded bytes', field);
      return undefined;
    }
    return Buffer.from(compact, compact.includes('-') || compact.includes('_') ? 'base64url' : 'base64').toString('utf8');
  }

  /**
   * A proto oneof: which of `fields` is set. More than one set is always a problem (and gives
   * undefined); none set is a problem when `required`. The message lists the members in order.
   */
  oneof(fields: readonly string[], required: boolean): string | undefined {
    const set = fields.filter((f) => this.has(f));
    if (set.length > 1 || (required && set.length === 0)) {
      this.problem(`exactly one of ${fields.join(', ')} must be set`);
    }
    return set.length === 1 ? set[0] : undefined;
  }

  /** google.protobuf.Any in field `field`; TypedStruct wrappers are unwrapped. */
  typed(field: string): TypedConfig | undefined {
    const v = this.get(field);
    if (v === undefined) return undefined;
    return readAny(this.diag, this.at(field), v);
  }

  /** Reports fields nobody read: problems, or warnings for the message's ignore list. Idempotent. */
  done(): void {
    if (this.finished) return;
    this.finished = true;
    const ignored = this.diag.ignoredFields[this.message] ?? {};
    for (const key of Object.keys(this.raw)) {
      if (this.seen.has(key)) continue;
      const snake = key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
      const entry = Object.prototype.hasOwnProperty.call(ignored, key)
        ? ignored[key]
        : Object.prototype.hasOwnProperty.call(ignored, snake)
          ? ignored[snake]
          : undefined;
      if (entry === undefined) {
        this.problem(`unknown field '${key}'`);
      } else if (entry !== null && this.raw[key] !== null) {
        this.diag.warn(this.at(snake), `ignored: ${entry}`);
      }
    }
  }
}

/** Decodes a google.protobuf.Any value at `path`. */
export function readAny(diag: Diagnostics, path: string, value: unknown): TypedConfig | undefined {
  if (!isObject(value)) {
    diag.problem(path, `expected an object with '@type', got ${describe(value)}`);
    return undefined;
  }
  const url = value['@type'];
  if (typeof url !== 'string' || url === '') {
    diag.problem(path, `missing '@type'`);
    return undefined;
  }
  const typeName = stripTypeUrl(url);
  const rest: Record<string, unknown> = {};
  for (const k of Object.keys(value)) if (k !== '@type') rest[k] = value[k];
  if (TYPED_STRUCT_TYPES.has(typeName)) {
    const r = new Reader(diag, path, rest, 'TypedStruct');
    const inner = r.str('type_url');
    const body = r.get('value') ?? {};
    r.done();
    if (inner === '') {
      diag.problem(joinPath(path, 'type_url'), `${typeName} needs a type_url`);
      return undefined;
    }
    if (!isObject(body)) {
      diag.problem(joinPath(path, 'value'), `expected an object, got ${describe(body)}`);
      return undefined;
    }
    return { typeName: stripTypeUrl(inner), reader: new Reader(diag, joinPath(path, 'value'), body, stripTypeUrl(inner)) };
  }
  return { typeName, reader: new Reader(diag, path, rest, typeName) };
}

function toInteger(v: unknown): number | undefined {
  if (typeof v === 'number') return Number.isSafeInteger(v) ? v : undefined;
  if (typeof v === 'string' && INTEGER_RE.test(v.trim())) {
    const n = Number(v);
    return Number.isSafeInteger(n) ? n : undefined;
  }
  return undefined;
}

function formatValue(v: unknown): string {
  return typeof v === 'string' ? `'${v}'` : JSON.stringify(v) ?? String(v);
}

/** A proto3-JSON Duration ("1.5s", or {seconds, nanos}) in milliseconds, or an error message. */
export function parseDuration(v: unknown): number | string {
  if (typeof v === 'string') {
    const m = DURATION_RE.exec(v.trim());
    if (!m) return `expected a duration such as "1.5s", got ${describe(v)}`;
    const seconds = Number(m[2]);
    if (seconds > MAX_DURATION_SECONDS) return `duration ${v} is out of range`;
    const nanos = m[3] === undefined ? 0 : Number(m[3].padEnd(9, '0'));
    const ms = seconds * 1000 + nanos / 1e6;
    return m[1] === '-' ? -ms : ms;
  }
  if (isObject(v)) {
    const keys = Object.keys(v).filter((k) => k !== 'seconds' && k !== 'nanos');
    if (keys.length > 0) return `unknown field '${keys[0]}' in duration (expected seconds, nanos)`;
    const seconds = v.seconds === undefined || v.seconds === null ? 0 : toInteger(v.seconds);
    const nanos = v.nanos === undefined || v.nanos === null ? 0 : toInteger(v.nanos);
    if (seconds === undefined || nanos === undefined) return 'duration seconds and nanos must be integers';
    if (Math.abs(seconds) > MAX_DURATION_SECONDS) return 'duration is out of range';
    if (Math.abs(nanos) > 999_999_999) return 'duration nanos must be within -999999999..999999999';
    if ((seconds > 0 && nanos < 0) || (seconds < 0 && nanos > 0)) return 'duration seconds and nanos must have the same sign';
    return seconds * 1000 + nanos / 1e6;
  }
  return `expected a duration such as "1.5s", got ${describe(v)}`;
}
