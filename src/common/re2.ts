// RE2-syntax regular expressions (Envoy's `safe_regex`) run on V8's linear-time regexp engine.
//
// At config time a pattern is parsed as RE2 syntax, checked against RE2's own limits, translated
// into a JS pattern built only from constructs V8's experimental linear engine accepts (no `i`/`u`
// flags: case folding, Unicode classes and astral code points are expanded here into explicit
// UTF-16 classes; counted repetitions above the engine's replication limit are unrolled), and
// compiled with the `l` flag. Matching then costs time linear in the input, whatever the pattern.
//
// Must not: run a configured pattern on V8's backtracking engine (every RegExp built from one
// has the `l` flag; the only other regexps are fixed internal ones, run at config time), throw
// from the compile functions (failures come back as `{ error }`), or parse, translate or
// allocate on the per-request path beyond the result (`fullMatch` and `applySubstitution` only
// run the prebuilt RegExp with the precompiled substitution parts).

import * as v8 from 'node:v8';

v8.setFlagsFromString('--enable-experimental-regexp-engine');

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

export interface Re2Options {
  /** Case-insensitive matching, as if the pattern started with `(?i)`. */
  readonly ignoreCase?: boolean;
  /** Give the search-form RegExp the `g` flag (needed by `applySubstitution`). */
  readonly global?: boolean;
  /**
   * Largest `programSize` accepted (default DEFAULT_MAX_PROGRAM_SIZE): the linear engine's work
   * per input character grows with it, so this bounds the worst-case cost of one match.
   */
  readonly maxProgramSize?: number;
}

/**
 * Default `maxProgramSize`. Envoy refuses RE2 programs over 100 (runtime key
 * re2.max_program_size.error_level); this is looser, but still refuses e.g. `\p{L}`.
 */
export const DEFAULT_MAX_PROGRAM_SIZE = 1000;

export interface Re2Compiled {
  /** A RegExp with the `l` flag (plus `g` when asked for, `m` for `(?m)` anchors). */
  readonly re: RegExp;
  /** Number of capture groups in `re` (what `\1`..`\9` may refer to); 0 for the full-match form. */
  readonly groupCount: number;
  /** RE2 group names by group number (index 0, the whole match, is always undefined). */
  readonly groupNames: ReadonlyArray<string | undefined>;
  /**
   * Character-range tests in the translated program once repetitions are unrolled: the most
   * work matching can do per input character (about 0.1 us each on V8's linear engine). Same
   * spirit as RE2's ProgramSize (Envoy's max_program_size), not the same numbers.
   */
  readonly programSize: number;
}

export type Re2Result = Re2Compiled | { readonly error: string };

/**
 * Compiles an RE2 pattern for searching (a match anywhere in the input, as RE2's
 * PartialMatch / GlobalReplace). Never throws.
 */
export function compileRe2(pattern: string, opts?: Re2Options): Re2Result {
  return compile(pattern, opts?.ignoreCase === true, opts?.global === true, false, opts?.maxProgramSize);
}

/**
 * Compiles an RE2 pattern anchored at both ends (`^(?:...)$`), so `re.test(s)` is RE2's
 * FullMatch. The RegExp has no capture groups and never the `g` flag. Never throws.
 */
export function compileRe2Full(pattern: string, opts?: Omit<Re2Options, 'global'>): Re2Result {
  return compile(pattern, opts?.ignoreCase === true, false, true, opts?.maxProgramSize);
}

/** True when `re` (from `compileRe2Full`) matches the whole of `s`. */
export function fullMatch(re: RegExp, s: string): boolean {
  if (re.global || re.sticky) re.lastIndex = 0;
  return re.test(s);
}

/** A substitution split at config time into literal text and capture-group references. */
export type SubstitutionPart = string | number;

export interface CompiledSubstitution {
  readonly parts: readonly SubstitutionPart[];
}

/**
 * Precompiles an RE2 rewrite string: `\0`..`\9` are capture groups (`\0` the whole match),
 * `\\` is a backslash, everything else (including `$`) is literal. Never throws.
 */
export function compileSubstitution(substitution: string, groupCount: number): CompiledSubstitution | { readonly error: string } {
  const parts: SubstitutionPart[] = [];
  let lit = '';
  for (let i = 0; i < substitution.length; i++) {
    const c = substitution.charCodeAt(i);
    if (c !== 0x5c) {
      lit += substitution[i];
      continue;
    }
    if (i + 1 >= substitution.length) return subError(substitution, 'ends with a lone backslash');
    const n = substitution.charCodeAt(++i);
    if (n === 0x5c) {
      lit += '\\';
    } else if (n >= 0x30 && n <= 0x39) {
      const group = n - 0x30;
      if (group > groupCount) {
        return subError(substitution, `\\${group} refers to a capture group the regex does not have (it has ${groupCount})`);
      }
      if (lit !== '') parts.push(lit);
      lit = '';
      parts.push(group);
    } else {
      return subError(substitution, `invalid escape "\\${substitution[i]}" (only \\0-\\9 and \\\\ are allowed)`);
    }
  }
  if (lit !== '') parts.push(lit);
  return { parts };
}

/**
 * Replaces every non-overlapping match of `re` (which must have the `g` flag) in `input`,
 * with RE2 GlobalReplace semantics: an empty match directly after the previous match is
 * skipped. Returns `input` itself when nothing matched.
 */
export function applySubstitution(re: RegExp, input: string, compiled: CompiledSubstitution): string {
  if (!re.global) throw new TypeError('applySubstitution needs a RegExp with the g flag');
  const parts = compiled.parts;
  const n = input.length;
  let out = '';
  let copied = 0;
  let from = 0;
  let lastEnd = -1;
  let count = 0;
  while (from <= n) {
    re.lastIndex = from;
    const m = re.exec(input);
    if (m === null) break;
    const start = m.index;
    const end = start + m[0].length;
    if (start === end && start === lastEnd) {
      // RE2 does not allow an empty match right where the previous match ended: step over
      // one code point (copied later with the surrounding text) and search again.
      if (start >= n) break;
      from = start + codePointLength(input, start);
      continue;
    }
    if (start > copied) out += input.slice(copied, start);
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i];
      out += typeof p === 'string' ? p : (m[p] ?? '');
    }
    copied = end;
    lastEnd = end;
    from = end;
    count++;
  }
  re.lastIndex = 0;
  if (count === 0) return input;
  return copied < n ? out + input.slice(copied) : out;
}

/**
 * Convenience form of `compileSubstitution` + `applySubstitution`. The compiled substitution is
 * cached per RegExp, so only the first call for a (regex, substitution) pair parses. Throws
 * when the substitution is invalid (config code should use `compileSubstitution` instead).
 */
export function re2Substitute(re: RegExp, input: string, substitution: string): string {
  let perRe = substitutionCache.get(re);
  if (perRe === undefined) {
    perRe = new Map();
    substitutionCache.set(re, perRe);
  }
  let compiled = perRe.get(substitution);
  if (compiled === undefined) {
    const c = compileSubstitution(substitution, regexGroupCount(re));
    if ('error' in c) throw new Error(c.error);
    compiled = c;
    perRe.set(substitution, compiled);
  }
  return applySubstitution(re, input, compiled);
}

// ---------------------------------------------------------------------------------------------
// Where results can differ from RE2 (all checked against libre2 while writing this):
// - Refused here, accepted by RE2: \C; (?m) anchors in the full-match form, or mixed with
//   \A, \z, ^ or $ outside (?m) in one pattern (JS has no text anchor under the m flag);
//   programs over maxProgramSize.
// - Accepted here, refused by RE2 2022: (?<name>re) (newer RE2 takes it), \p{Grek}-style
//   script aliases.
// - Under (?m), ^ and $ also treat \r, U+2028 and U+2029 as line ends (the JS m flag).
// - Submatches (never whether a string matches): JS clears the groups inside a repeated group
//   at each iteration, RE2 keeps their last value; for a loop body that prefers an empty
//   match, e.g. (a??)* or (|b)*, RE2 stops looping where V8 skips the empty iteration; and an
//   unrolled x{n,m} (m > 16) with groups inside may split an ambiguous x differently.
// - Lone surrogates in the input match nothing; RE2 never sees them (its input is UTF-8), and
//   it can report empty matches inside a multi-byte character, which cannot happen here.
// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// Internals shared by the API
// ---------------------------------------------------------------------------------------------

const substitutionCache = new WeakMap<RegExp, Map<string, CompiledSubstitution>>();
const groupCounts = new WeakMap<RegExp, number>();

function regexGroupCount(re: RegExp): number {
  const known = groupCounts.get(re);
  if (known !== undefined) return known;
  // Any regexp that can match the empty string reveals its group count through exec's result.
  const probe = new RegExp(`${re.source}|`, re.flags.replace(/[gy]/g, ''));
  const m = probe.exec('');
  return m === null ? 0 : m.length - 1;
}

function codePointLength(s: string, i: number): number {
  const c = s.charCodeAt(i);
  if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
    const d = s.charCodeAt(i + 1);
    if (d >= 0xdc00 && d <= 0xdfff) return 2;
  }
  return 1;
}

function subError(substitution: string, reason: string): { error: string } {
  return { error: `invalid regex substitution "${clip(substitution)}": ${reason}` };
}

function clip(s: string): string {
  return s.length > 256 ? `${s.slice(0, 256)}...` : s;
}

/** Thrown inside the parser/translator only; `compile` turns it into `{ error }`. */
class Re2Error extends Error {}

function fail(reason: string): never {
  throw new Re2Error(reason);
}

function compile(pattern: string, ignoreCase: boolean, global: boolean, full: boolean, maxProgramSize = DEFAULT_MAX_PROGRAM_SIZE): Re2Result {
  const prefix = `invalid RE2 regex "${clip(pattern)}": `;
  let source: string;
  let programSize: number;
  let flags = 'l';
  let parsed: Parsed;
  try {
    parsed = parse(pattern, ignoreCase);
    if (parsed.lineAnchors) {
      if (full) fail('multi-line anchors ((?m)^ and (?m)$) are not supported in full-match mode');
      if (parsed.textAnchors) fail('mixing multi-line anchors ((?m)^, (?m)$) with text anchors (^, $, \\A, \\z) is not supported');
      flags += 'm';
    }
    const body = emit(parsed.root, 1, !full);
    programSize = body.cost;
    if (programSize > maxProgramSize) {
      fail(`program size ${programSize} exceeds the limit of ${maxProgramSize} (large Unicode classes and counted repetitions make it grow)`);
    }
    source = full ? `^(?:${body.s})$` : body.s;
    if (source.length > MAX_SOURCE_LENGTH) fail('pattern is too large after translation');
  } catch (e) {
    if (e instanceof Re2Error) return { error: prefix + e.message };
    if (e instanceof RangeError) return { error: `${prefix}pattern is too large or too deeply nested` };
    return { error: prefix + String(e instanceof Error ? e.message : e) };
  }
  if (global) flags += 'g';
  let re: RegExp;
  try {
    re = new RegExp(source, flags);
  } catch (e) {
    const why = e instanceof Error ? e.message : String(e);
    return { error: `${prefix}the linear-time regexp engine cannot run it (${why.slice(0, 200)})` };
  }
  const groupCount = full ? 0 : parsed.groupNames.length - 1;
  groupCounts.set(re, groupCount);
  return { re, groupCount, groupNames: parsed.groupNames, programSize };
}

// ---------------------------------------------------------------------------------------------
// Code point sets: flat sorted arrays [lo0, hi0, lo1, hi1, ...] of disjoint, non-adjacent ranges.
// ---------------------------------------------------------------------------------------------

type Ranges = number[];

const MAX_CP = 0x10ffff;

function normalize(pairs: number[]): Ranges {
  const idx: number[] = [];
  for (let i = 0; i < pairs.length; i += 2) idx.push(i);
  idx.sort((a, b) => pairs[a] - pairs[b]);
  const out: Ranges = [];
  for (const i of idx) {
    const lo = pairs[i];
    const hi = pairs[i + 1];
    const last = out.length - 1;
    if (last > 0 && lo <= out[last] + 1) {
      if (hi > out[last]) out[last] = hi;
    } else {
      out.push(lo, hi);
    }
  }
  return out;
}

function negate(r: Ranges): Ranges {
  const out: Ranges = [];
  let next = 0;
  for (let i = 0; i < r.length; i += 2) {
    if (r[i] > next) out.push(next, r[i] - 1);
    next = r[i + 1] + 1;
  }
  if (next <= MAX_CP) out.push(next, MAX_CP);
  return out;
}

const R_DIGIT: Ranges = [0x30, 0x39];
const R_SPACE: Ranges = [0x09, 0x0a, 0x0c, 0x0d, 0x20, 0x20]; // RE2 \s: [\t\n\f\r ] (no \v)
const R_WORD: Ranges = [0x30, 0x39, 0x41, 0x5a, 0x5f, 0x5f, 0x61, 0x7a];

const POSIX: Readonly<Record<string, Ranges>> = {
  alnum: [0x30, 0x39, 0x41, 0x5a, 0x61, 0x7a],
  alpha: [0x41, 0x5a, 0x61, 0x7a],
  ascii: [0x00, 0x7f],
  blank: [0x09, 0x09, 0x20, 0x20],
  cntrl: [0x00, 0x1f, 0x7f, 0x7f],
  digit: [0x30, 0x39],
  graph: [0x21, 0x7e],
  lower: [0x61, 0x7a],
  print: [0x20, 0x7e],
  punct: [0x21, 0x2f, 0x3a, 0x40, 0x5b, 0x60, 0x7b, 0x7e],
  space: [0x09, 0x0d, 0x20, 0x20],
  upper: [0x41, 0x5a],
  word: R_WORD,
  xdigit: [0x30, 0x39, 0x41, 0x46, 0x61, 0x66],
};

// --- Unicode properties: computed once per name from V8's own Unicode tables, then cached. ----

const GENERAL_CATEGORIES = new Set([
  'C', 'Cc', 'Cf', 'Co', 'Cs', 'L', 'Ll', 'Lm', 'Lo', 'Lt', 'Lu', 'M', 'Mc', 'Me', 'Mn',
  'N', 'Nd', 'Nl', 'No', 'P', 'Pc', 'Pd', 'Pe', 'Pf', 'Pi', 'Po', 'Ps', 'S', 'Sc', 'Sk', 'Sm',
  'So', 'Z', 'Zl', 'Zp', 'Zs',
]);
const propertyCache = new Map<string, Ranges | null>();

function unicodeProperty(name: string): Ranges | null {
  const cached = propertyCache.get(name);
  if (cached !== undefined) return cached;
  let r: Ranges | null;
  if (name === 'Any') {
    r = [0, MAX_CP];
  } else if (name === 'C') {
    // RE2's C is Cc+Cf+Co+Cs (no unassigned code points, unlike \p{C} in JS).
    r = normalize(['Cc', 'Cf', 'Co', 'Cs'].flatMap((n) => unicodeProperty(n) ?? []));
  } else if (name === 'Cs') {
    r = [0xd800, 0xdfff];
  } else if (GENERAL_CATEGORIES.has(name)) {
    r = scanProperty(`\\p{General_Category=${name}}`);
  } else if (/^[A-Z][A-Za-z]*(?:_[A-Z][A-Za-z]*)*$/.test(name)) {
    r = scanProperty(`\\p{Script=${name}}`);
  } else {
    r = null;
  }
  propertyCache.set(name, r);
  return r;
}

/** Code point ranges of a JS `\p{...}` class, or null when V8 does not know the property. */
function scanProperty(jsClass: string): Ranges | null {
  let re: RegExp;
  try {
    re = new RegExp(`${jsClass}+`, 'gu'); // config-time only, over a fixed string
  } catch {
    return null;
  }
  // Every code point except the surrogates, in order: U+0000..U+D7FF and U+E000..U+FFFF take one
  // unit each (indexes 0..0xF7FF), the astral planes two (from index 0xF800).
  const units = new Uint16Array(0xf800 + 2 * 0x100000);
  for (let i = 0; i < 0xf800; i++) units[i] = i < 0xd800 ? i : i + 0x800;
  for (let v = 0, i = 0xf800; v < 0x100000; v++, i += 2) {
    units[i] = 0xd800 + (v >> 10);
    units[i + 1] = 0xdc00 + (v & 0x3ff);
  }
  const text = Buffer.from(units.buffer).toString('utf16le');
  const at = (i: number): number => (i < 0xd800 ? i : i < 0xf800 ? i + 0x800 : 0x10000 + ((i - 0xf800) >> 1));
  const out: Ranges = [];
  for (const m of text.matchAll(re)) {
    const start = m.index ?? 0;
    const end = start + m[0].length;
    out.push(at(start), at(end > 0xf800 ? end - 2 : end - 1));
  }
  return normalize(out);
}

// --- Simple case folding orbits, built once on first case-insensitive use. --------------------

let foldOrbits: Map<number, number[]> | undefined;
let foldKeys: number[] = [];

function buildFoldOrbits(): Map<number, number[]> {
  const parent = new Map<number, number>();
  const find = (x: number): number => {
    let r = x;
    while (parent.has(r) && parent.get(r) !== r) r = parent.get(r) as number;
    return r;
  };
  const join = (a: number, b: number): void => {
    const ra = find(a);
    const rb = find(b);
    if (!parent.has(ra)) parent.set(ra, ra);
    if (!parent.has(rb)) parent.set(rb, rb);
    if (ra !== rb) parent.set(ra, rb);
  };
  // Candidates come from the case mappings; a pair is kept only when V8's /iu matching (which
  // uses Unicode simple case folding, as RE2 does) agrees, which drops pairs such as i/U+0131.
  // No code point above U+1FFFF has a case mapping.
  for (let c = 0; c <= 0x1ffff; c++) {
    if (c === 0xd800) c = 0xe000;
    const s = String.fromCodePoint(c);
    for (const t of [s.toLowerCase(), s.toUpperCase()]) {
      if (t === s) continue;
      const d = t.codePointAt(0) as number;
      if (t.length !== (d > 0xffff ? 2 : 1)) continue;
      if (new RegExp(`^\\u{${c.toString(16)}}$`, 'iu').test(t)) join(c, d);
    }
  }
  const groups = new Map<number, number[]>();
  for (const x of parent.keys()) {
    const r = find(x);
    let g = groups.get(r);
    if (g === undefined) groups.set(r, (g = []));
    g.push(x);
  }
  const orbits = new Map<number, number[]>();
  for (const g of groups.values()) {
    if (g.length < 2) continue;
    g.sort((a, b) => a - b);
    for (const x of g) orbits.set(x, g);
  }
  foldKeys = [...orbits.keys()].sort((a, b) => a - b);
  return orbits;
}

function orbit(cp: number): number[] | undefined {
  if (foldOrbits === undefined) foldOrbits = buildFoldOrbits();
  return foldOrbits.get(cp);
}

/** Adds every code point that is case-equivalent to one in `r`. */
function foldRanges(r: Ranges): Ranges {
  if (foldOrbits === undefined) foldOrbits = buildFoldOrbits();
  const out = r.slice();
  for (let i = 0; i < r.length; i += 2) {
    const lo = r[i];
    const hi = r[i + 1];
    let a = 0;
    let b = foldKeys.length;
    while (a < b) {
      const mid = (a + b) >> 1;
      if (foldKeys[mid] < lo) a = mid + 1;
      else b = mid;
    }
    for (let k = a; k < foldKeys.length && foldKeys[k] <= hi; k++) {
      for (const m of foldOrbits.get(foldKeys[k]) as number[]) out.push(m, m);
    }
  }
  return normalize(out);
}

// ---------------------------------------------------------------------------------------------
// Parser: RE2 syntax -> AST. Iterative over groups; errors are thrown as Re2Error.
// ---------------------------------------------------------------------------------------------

type Assertion = 'bot' | 'eot' | 'bol' | 'eol' | 'wb' | 'nwb';

type Node =
  | { readonly k: 'empty' }
  | { readonly k: 'lit'; readonly cp: number }
  | { readonly k: 'set'; readonly r: Ranges }
  | { readonly k: 'assert'; readonly a: Assertion }
  | { readonly k: 'cat'; readonly items: Node[] }
  | { readonly k: 'alt'; readonly items: Node[] }
  | { readonly k: 'cap'; readonly jsName: string | undefined; readonly sub: Node }
  | { readonly k: 'rep'; readonly min: number; readonly max: number; readonly greedy: boolean; readonly counted: boolean; readonly sub: Node };

interface Flags {
  i: boolean;
  m: boolean;
  s: boolean;
  U: boolean;
}

interface Frame {
  readonly saved: Flags;
  readonly alts: Node[];
  cat: Node[];
  /** For a capture group: the name to give it in JS, if any. */
  readonly cap: { jsName: string | undefined } | undefined;
}

interface Parsed {
  readonly root: Node;
  readonly groupNames: (string | undefined)[];
  readonly lineAnchors: boolean;
  readonly textAnchors: boolean;
}

const MAX_REPEAT = 1000;
const MAX_NESTING = 1000;
const MAX_SOURCE_LENGTH = 1 << 20;
/** V8's linear engine refuses patterns whose nested quantifier bounds multiply past this. */
const LINEAR_REPLICATION = 16;
const REPEAT_SPEC = /\{(\d+)(?:(,)(\d*))?\}/y;
const CAPTURE_NAME = /^[\p{L}\p{Mn}\p{Mc}\p{Nd}\p{Pc}]+$/u;
const JS_GROUP_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

function parse(pattern: string, ignoreCase: boolean): Parsed {
  let pos = 0;
  let flags: Flags = { i: ignoreCase, m: false, s: false, U: false };
  const groupNames: (string | undefined)[] = [undefined];
  const stack: Frame[] = [];
  let frame: Frame = { saved: flags, alts: [], cat: [], cap: undefined };
  let lineAnchors = false;
  let textAnchors = false;
  // What the last item was: repetition needs an operand and may not follow another repetition.
  let prev: 'none' | 'operand' | 'repeat' = 'none';

  const len = pattern.length;
  const peek = (o = 0): string => pattern[pos + o] ?? '';

  const nextCodePoint = (): number => {
    const c = pattern.codePointAt(pos) as number;
    if (c >= 0xd800 && c <= 0xdfff) fail('pattern contains an unpaired UTF-16 surrogate');
    pos += c > 0xffff ? 2 : 1;
    return c;
  };

  const literal = (cp: number): Node => {
    if (flags.i) {
      const o = orbit(cp);
      if (o !== undefined) return { k: 'set', r: normalize(o.flatMap((x) => [x, x])) };
    }
    return { k: 'lit', cp };
  };
  const classNode = (r: Ranges, negated: boolean): Node => {
    let out = flags.i ? foldRanges(r) : r;
    if (negated) out = negate(out);
    return { k: 'set', r: out };
  };
  const push = (n: Node): void => {
    frame.cat.push(n);
    prev = 'operand';
  };
  const anchor = (a: Assertion): void => {
    if (a === 'bol' || a === 'eol') lineAnchors = true;
    else if (a !== 'wb' && a !== 'nwb') textAnchors = true;
    push({ k: 'assert', a });
  };
  const repeat = (min: number, max: number, counted: boolean, opText: string): void => {
    let greedy = true;
    if (peek() === '?') {
      greedy = false;
      pos++;
      opText += '?';
    }
    if (prev === 'repeat') fail(`bad repetition operator: ${opText} directly after another repetition`);
    if (prev === 'none' || frame.cat.length === 0) fail(`missing argument to repetition operator: ${opText}`);
    if (flags.U) greedy = !greedy;
    const sub = frame.cat.pop() as Node;
    frame.cat.push({ k: 'rep', min, max, greedy, counted, sub });
    prev = 'repeat';
  };

  while (pos < len) {
    const ch = pattern[pos];
    switch (ch) {
      case '(': {
        if (stack.length >= MAX_NESTING) fail('expression nests too deeply');
        let cap: Frame['cap'];
        const inner: Flags = { ...flags };
        if (peek(1) === '?') {
          const rest = pattern.slice(pos + 2, pos + 4);
          if (rest.startsWith('P<') || (rest.startsWith('<') && rest !== '<=' && rest !== '<!')) {
            const nameStart = pos + (rest.startsWith('P') ? 4 : 3);
            const close = pattern.indexOf('>', nameStart);
            if (close < 0) fail(`invalid named capture group: ${clip(pattern.slice(pos))}`);
            const name = pattern.slice(nameStart, close);
            if (!CAPTURE_NAME.test(name)) fail(`invalid named capture group name "${name}"`);
            // RE2 accepts a repeated name; JS does not, so only its first group is named in JS.
            const jsName = JS_GROUP_NAME.test(name) && !groupNames.includes(name) ? name : undefined;
            groupNames.push(name);
            cap = { jsName };
            pos = close + 1;
          } else if (rest.startsWith('P=') || rest.startsWith('P>')) {
            fail(rest === 'P=' ? 'backreferences are not supported' : 'recursive patterns are not supported');
          } else if (rest.startsWith('=') || rest.startsWith('!') || rest === '<=' || rest === '<!') {
            fail('lookaround assertions ((?=, (?!, (?<=, (?<!) are not supported');
          } else {
            // Flags: (?imsU-imsU) or (?imsU-imsU:re)
            let p = pos + 2;
            let negated = false;
            let afterMinusFlag = false;
            for (;;) {
              const f = pattern[p];
              if (f === undefined) fail('missing closing )');
              if (f === 'i' || f === 'm' || f === 's' || f === 'U') {
                inner[f] = !negated;
                if (negated) afterMinusFlag = true;
                p++;
              } else if (f === '-') {
                if (negated) fail(`invalid flag group: ${clip(pattern.slice(pos, p + 1))}`);
                negated = true;
                p++;
              } else if (f === ')' || f === ':') {
                // (?:re) and (?) carry no flags; a '-' must be followed by at least one flag.
                if (negated && !afterMinusFlag) fail(`invalid flag group: ${clip(pattern.slice(pos, p + 1))}`);
                break;
              } else {
                fail(`invalid or unsupported group syntax: ${clip(pattern.slice(pos, p + 1))}`);
              }
            }
            if (pattern[p] === ')') {
              // (?flags): applies to the rest of the enclosing group.
              flags = inner;
              pos = p + 1;
              prev = 'none';
              break;
            }
            pos = p + 1; // (?flags:re)
            stack.push(frame);
            frame = { saved: flags, alts: [], cat: [], cap: undefined };
            flags = inner;
            prev = 'none';
            break;
          }
        } else {
          groupNames.push(undefined);
          cap = { jsName: undefined };
          pos++;
        }
        if (cap === undefined) fail('internal: group without capture');
        stack.push(frame);
        frame = { saved: flags, alts: [], cat: [], cap };
        flags = inner;
        prev = 'none';
        break;
      }
      case ')': {
        if (stack.length === 0) fail('unexpected ): no group to close');
        pos++;
        const body = finishAlternation(frame);
        const done = frame;
        flags = done.saved;
        frame = stack.pop() as Frame;
        push(done.cap === undefined ? body : { k: 'cap', jsName: done.cap.jsName, sub: body });
        break;
      }
      case '|':
        pos++;
        frame.alts.push(catNode(frame.cat));
        frame.cat = [];
        prev = 'none';
        break;
      case '^':
        pos++;
        anchor(flags.m ? 'bol' : 'bot');
        break;
      case '$':
        pos++;
        anchor(flags.m ? 'eol' : 'eot');
        break;
      case '.':
        pos++;
        push({ k: 'set', r: flags.s ? [0, MAX_CP] : [0, 0x09, 0x0b, MAX_CP] });
        break;
      case '[': {
        const { r, negated } = parseClass();
        push(classNode(r, negated));
        break;
      }
      case '*':
        pos++;
        repeat(0, Infinity, false, '*');
        break;
      case '+':
        pos++;
        repeat(1, Infinity, false, '+');
        break;
      case '?':
        pos++;
        repeat(0, 1, false, '?');
        break;
      case '{': {
        REPEAT_SPEC.lastIndex = pos;
        const m = REPEAT_SPEC.exec(pattern);
        if (m === null) {
          pos++;
          push(literal(0x7b));
          break;
        }
        const min = Number(m[1]);
        const max = m[2] === undefined ? min : m[3] === '' ? Infinity : Number(m[3]);
        pos += m[0].length;
        if (min > MAX_REPEAT || (max !== Infinity && max > MAX_REPEAT)) {
          fail(`bad repetition operator: ${m[0]} (counts above ${MAX_REPEAT} are not allowed)`);
        }
        if (max < min) fail(`bad repetition operator: ${m[0]} (max is smaller than min)`);
        repeat(min, max, true, m[0]);
        break;
      }
      case '\\': {
        const next = peek(1);
        if (next === 'Q') {
          pos += 2;
          const end = pattern.indexOf('\\E', pos);
          const stop = end < 0 ? len : end;
          while (pos < stop) push(literal(nextCodePoint()));
          pos = end < 0 ? len : end + 2;
          break;
        }
        if (next === 'A') {
          pos += 2;
          anchor('bot');
          break;
        }
        if (next === 'z') {
          pos += 2;
          anchor('eot');
          break;
        }
        if (next === 'b' || next === 'B') {
          pos += 2;
          anchor(next === 'b' ? 'wb' : 'nwb');
          break;
        }
        const e = parseEscape(false);
        if (typeof e === 'number') push(literal(e));
        else push(classNode(e.r, e.negated));
        break;
      }
      default:
        push(literal(nextCodePoint()));
    }
  }
  if (stack.length > 0) fail('missing closing )');
  const root = finishAlternation(frame);
  checkRepeatProduct(root, 1);
  return { root, groupNames, lineAnchors, textAnchors };

  // --- helpers that share the parser state ---

  /** Parses an escape at `pos` (a backslash): a code point, or a class to add. */
  function parseEscape(inClass: boolean): number | { r: Ranges; negated: boolean } {
    pos++; // backslash
    if (pos >= len) fail('trailing backslash at end of pattern');
    const c = pattern[pos];
    const code = pattern.charCodeAt(pos);
    pos++;
    switch (c) {
      case 'd':
      case 'D':
        return { r: R_DIGIT, negated: c === 'D' };
      case 's':
      case 'S':
        return { r: R_SPACE, negated: c === 'S' };
      case 'w':
      case 'W':
        return { r: R_WORD, negated: c === 'W' };
      case 'p':
      case 'P': {
        let name: string;
        if (pattern[pos] === '{') {
          const close = pattern.indexOf('}', pos);
          if (close < 0) fail(`invalid character class range: ${clip(pattern.slice(pos - 2))}`);
          name = pattern.slice(pos + 1, close);
          pos = close + 1;
        } else {
          if (pos >= len) fail(`invalid escape sequence: \\${c} at end of pattern`);
          name = String.fromCodePoint(nextCodePoint());
        }
        let negated = c === 'P';
        if (name.startsWith('^')) {
          negated = !negated;
          name = name.slice(1);
        }
        const r = unicodeProperty(name);
        if (r === null) fail(`invalid character class range: unknown Unicode class \\${c}{${name}}`);
        return { r, negated };
      }
      case 'a':
        return 0x07;
      case 'f':
        return 0x0c;
      case 't':
        return 0x09;
      case 'n':
        return 0x0a;
      case 'r':
        return 0x0d;
      case 'v':
        return 0x0b;
      case 'x': {
        if (pattern[pos] === '{') {
          const m = /^\{([0-9A-Fa-f]+)\}/.exec(pattern.slice(pos, pos + 16));
          if (m === null) fail(`invalid escape sequence: ${clip(pattern.slice(pos - 2, pos + 10))}`);
          const v = parseInt(m[1], 16);
          if (m[1].length > 8 || v > MAX_CP) fail(`invalid escape sequence: \\x${m[0]} is beyond U+10FFFF`);
          pos += m[0].length;
          return v;
        }
        const h = pattern.slice(pos, pos + 2);
        if (!/^[0-9A-Fa-f]{2}$/.test(h)) fail(`invalid escape sequence: \\x${h}`);
        pos += 2;
        return parseInt(h, 16);
      }
      case 'C':
        return fail('\\C (any byte) is not supported');
      case 'Z':
        return fail('\\Z is not valid RE2 syntax (use \\z for end of text)');
      case 'Q':
      case 'E':
        return fail(inClass ? `\\${c} is not allowed in a character class` : '\\E without \\Q');
      case 'k':
      case 'g':
        return fail('backreferences are not supported');
      default:
        break;
    }
    if (code >= 0x30 && code <= 0x37) {
      // \0 starts an octal escape; \1-\7 only when followed by another octal digit (else it
      // would be a backreference). Up to three octal digits in all.
      const isOct = (k: number): boolean => {
        const x = pattern.charCodeAt(k);
        return x >= 0x30 && x <= 0x37;
      };
      if (code !== 0x30 && !isOct(pos)) fail('backreferences are not supported');
      let v = code - 0x30;
      for (let n = 0; n < 2 && isOct(pos); n++) v = v * 8 + (pattern.charCodeAt(pos++) - 0x30);
      return v;
    }
    if (code === 0x38 || code === 0x39) fail('backreferences are not supported');
    if (code < 0x80 && !/[A-Za-z0-9]/.test(c)) return code; // escaped punctuation is literal
    pos--;
    fail(`invalid escape sequence: \\${String.fromCodePoint(pattern.codePointAt(pos) as number)}`);
  }

  /** Parses a bracket class at `pos` (the `[`). Returns the positive set and whether it is negated. */
  function parseClass(): { r: Ranges; negated: boolean } {
    const start = pos;
    pos++;
    let negated = false;
    if (peek() === '^') {
      negated = true;
      pos++;
    }
    const acc: number[] = [];
    let first = true;
    const add = (r: Ranges, neg: boolean): void => {
      let x = flags.i ? foldRanges(r) : r;
      if (neg) x = negate(x);
      for (const v of x) acc.push(v);
    };
    const single = (): number | { r: Ranges; negated: boolean } => {
      if (pos >= len) fail(`missing closing ]: ${clip(pattern.slice(start))}`);
      if (pattern[pos] === '\\') return parseEscape(true);
      return nextCodePoint();
    };
    for (;;) {
      if (pos >= len) fail(`missing closing ]: ${clip(pattern.slice(start))}`);
      const c = pattern[pos];
      if (c === ']' && !first) {
        pos++;
        break;
      }
      first = false;
      if (c === '[' && peek(1) === ':') {
        const close = pattern.indexOf(':]', pos + 2);
        if (close >= 0) {
          let name = pattern.slice(pos + 2, close);
          let neg = false;
          if (name.startsWith('^')) {
            neg = true;
            name = name.slice(1);
          }
          const r = Object.prototype.hasOwnProperty.call(POSIX, name) ? POSIX[name] : undefined;
          if (r === undefined) fail(`invalid character class range: [:${pattern.slice(pos + 2, close)}:]`);
          add(r, neg);
          pos = close + 2;
          continue;
        }
      }
      const lo = single();
      if (typeof lo !== 'number') {
        add(lo.r, lo.negated);
        continue;
      }
      if (peek() === '-' && peek(1) !== ']' && pos + 1 < len) {
        pos++;
        const hi = single();
        if (typeof hi !== 'number') fail(`bad character class range: ${clip(pattern.slice(start, pos))}`);
        if (hi < lo) fail(`bad character class range: ${String.fromCodePoint(lo)}-${String.fromCodePoint(hi)}`);
        add([lo, hi], false);
      } else {
        add([lo, lo], false);
      }
    }
    return { r: normalize(acc), negated };
  }
}

function catNode(items: Node[]): Node {
  if (items.length === 0) return { k: 'empty' };
  if (items.length === 1) return items[0];
  return { k: 'cat', items };
}

function finishAlternation(frame: Frame): Node {
  const last = catNode(frame.cat);
  if (frame.alts.length === 0) return last;
  return { k: 'alt', items: [...frame.alts, last] };
}

/** RE2 refuses nested counted repetitions whose counts multiply past 1000, e.g. (a{100}){100}. */
function checkRepeatProduct(n: Node, product: number): void {
  switch (n.k) {
    case 'cat':
    case 'alt':
      for (const x of n.items) checkRepeatProduct(x, product);
      return;
    case 'cap':
      checkRepeatProduct(n.sub, product);
      return;
    case 'rep': {
      let p = product;
      if (n.counted) {
        const m = n.max === Infinity ? n.min : n.max;
        if (m > 0) p *= m;
        if (p > MAX_REPEAT) fail(`bad repetition operator: nested counted repetitions exceed ${MAX_REPEAT} in total`);
      }
      checkRepeatProduct(n.sub, p);
      return;
    }
    default:
  }
}

// ---------------------------------------------------------------------------------------------
// Emitter: AST -> JS source for V8's linear engine (non-unicode mode, no `i`).
// ---------------------------------------------------------------------------------------------

interface Out {
  readonly s: string;
  /** Whether a quantifier can follow `s` directly. */
  readonly atom: boolean;
  /**
   * Character-range tests this piece puts in the engine's program once quantifiers are
   * replicated: a bound on the work per input character spent in it.
   */
  readonly cost: number;
}

function hex(u: number, width: number): string {
  return u.toString(16).toUpperCase().padStart(width, '0');
}

/** One UTF-16 code unit as JS regexp source (valid both inside and outside a class). */
function esc(u: number): string {
  if ((u >= 0x30 && u <= 0x39) || (u >= 0x41 && u <= 0x5a) || (u >= 0x61 && u <= 0x7a) || u === 0x5f) {
    return String.fromCharCode(u);
  }
  return u < 0x100 ? `\\x${hex(u, 2)}` : `\\u${hex(u, 4)}`;
}

function unitClass(ranges: { lo: number; hi: number }[]): string {
  if (ranges.length === 1 && ranges[0].lo === ranges[0].hi) return esc(ranges[0].lo);
  return `[${ranges.map((x) => (x.lo === x.hi ? esc(x.lo) : `${esc(x.lo)}-${esc(x.hi)}`)).join('')}]`;
}

/**
 * A set of code points as source matching exactly one of them. Astral code points become
 * surrogate pairs; lone surrogates in the input are never matched.
 */
function emitSet(r: Ranges): Out {
  const bmp: { lo: number; hi: number }[] = [];
  const astral: { hLo: number; hHi: number; lLo: number; lHi: number }[] = [];
  const addBmp = (lo: number, hi: number): void => {
    if (lo <= hi) bmp.push({ lo, hi });
  };
  for (let i = 0; i < r.length; i += 2) {
    const lo = r[i];
    const hi = r[i + 1];
    if (lo <= 0xffff) {
      const h = Math.min(hi, 0xffff);
      addBmp(lo, Math.min(h, 0xd7ff));
      addBmp(Math.max(lo, 0xe000), h);
    }
    if (hi >= 0x10000) {
      const a = Math.max(lo, 0x10000) - 0x10000;
      const b = hi - 0x10000;
      const ha = 0xd800 + (a >> 10);
      const la = 0xdc00 + (a & 0x3ff);
      const hb = 0xd800 + (b >> 10);
      const lb = 0xdc00 + (b & 0x3ff);
      if (ha === hb) {
        astral.push({ hLo: ha, hHi: ha, lLo: la, lHi: lb });
      } else {
        let from = ha;
        let to = hb;
        if (la !== 0xdc00) {
          astral.push({ hLo: ha, hHi: ha, lLo: la, lHi: 0xdfff });
          from++;
        }
        if (lb !== 0xdfff) to--;
        if (from <= to) astral.push({ hLo: from, hHi: to, lLo: 0xdc00, lHi: 0xdfff });
        if (lb !== 0xdfff) astral.push({ hLo: hb, hHi: hb, lLo: 0xdc00, lHi: lb });
      }
    }
  }
  const alts: string[] = [];
  let cost = bmp.length;
  if (bmp.length > 0) alts.push(unitClass(bmp));
  // Pieces with the same low-surrogate range share one alternative with a class of leads.
  const byLow = new Map<string, { lo: number; hi: number }[]>();
  for (const p of astral) {
    const key = `${p.lLo}-${p.lHi}`;
    let leads = byLow.get(key);
    if (leads === undefined) byLow.set(key, (leads = []));
    const last = leads[leads.length - 1];
    if (last !== undefined && last.hi + 1 === p.hLo) last.hi = p.hHi;
    else leads.push({ lo: p.hLo, hi: p.hHi });
  }
  for (const [key, leads] of byLow) {
    const [lo, hi] = key.split('-').map(Number);
    alts.push(unitClass(leads) + unitClass([{ lo, hi }]));
    cost += leads.length + 1;
  }
  if (alts.length === 0) return { s: '[]', atom: true, cost: 1 }; // matches nothing
  if (alts.length === 1) return { s: alts[0], atom: bmp.length > 0, cost };
  return { s: `(?:${alts.join('|')})`, atom: true, cost };
}

function emitLiteral(cp: number): Out {
  if (cp >= 0xd800 && cp <= 0xdfff) return { s: '[]', atom: true, cost: 1 };
  if (cp <= 0xffff) return { s: esc(cp), atom: true, cost: 1 };
  const v = cp - 0x10000;
  return { s: esc(0xd800 + (v >> 10)) + esc(0xdc00 + (v & 0x3ff)), atom: false, cost: 2 };
}

function wrap(o: Out): string {
  return o.atom ? o.s : `(?:${o.s})`;
}

function hasCapture(n: Node): boolean {
  switch (n.k) {
    case 'cap':
      return true;
    case 'cat':
    case 'alt':
      return n.items.some(hasCapture);
    case 'rep':
      return hasCapture(n.sub);
    default:
      return false;
  }
}

/** Estimated replication of `n`'s own quantifiers once emitted (for chunking unrolled copies). */
function innerReplication(n: Node): number {
  switch (n.k) {
    case 'cap':
      return innerReplication(n.sub);
    case 'cat':
    case 'alt':
      return n.items.reduce((m, x) => Math.max(m, innerReplication(x)), 1);
    case 'rep': {
      const f = n.max === Infinity ? n.min + 1 : n.max;
      const native = f >= 1 && f <= LINEAR_REPLICATION;
      return Math.min(LINEAR_REPLICATION + 1, (native ? f : 1) * innerReplication(n.sub));
    }
    default:
      return 1;
  }
}

function checkSize(n: number): void {
  if (n > MAX_SOURCE_LENGTH) fail('pattern is too large after translation');
}

function quantifier(min: number, max: number): string {
  if (max === Infinity) return min === 0 ? '*' : min === 1 ? '+' : `{${min},}`;
  if (min === 0 && max === 1) return '?';
  return min === max ? `{${min}}` : `{${min},${max}}`;
}

/** Concatenation of pieces (never an atom unless it is a single atom). */
function seq(parts: Out[]): Out {
  if (parts.length === 1) return parts[0];
  let s = '';
  let cost = 0;
  for (const p of parts) {
    s += p.s;
    cost += p.cost;
    checkSize(s.length);
  }
  return { s, atom: false, cost };
}

/**
 * Emits `n`. `repl` is the product of the bounds of the native quantifiers around it (V8's
 * replication factor, which must stay <= 16); `keep` says whether capture groups stay capturing.
 */
function emit(n: Node, repl: number, keep: boolean): Out {
  switch (n.k) {
    case 'empty':
      return { s: '', atom: false, cost: 0 };
    case 'lit':
      return emitLiteral(n.cp);
    case 'set':
      return emitSet(n.r);
    case 'assert': {
      const s = n.a === 'bot' || n.a === 'bol' ? '^' : n.a === 'wb' ? '\\b' : n.a === 'nwb' ? '\\B' : '$';
      return { s, atom: false, cost: 1 };
    }
    case 'cat':
      return seq(n.items.map((x) => emit(x, repl, keep)));
    case 'alt': {
      const items = n.items.map((x) => emit(x, repl, keep));
      const s = `(?:${items.map((x) => x.s).join('|')})`;
      checkSize(s.length);
      return { s, atom: true, cost: items.reduce((c, x) => c + x.cost, 0) };
    }
    case 'cap': {
      const sub = emit(n.sub, repl, keep);
      if (!keep) return { s: `(?:${sub.s})`, atom: true, cost: sub.cost };
      const named = n.jsName !== undefined;
      return { s: named ? `(?<${n.jsName}>${sub.s})` : `(${sub.s})`, atom: true, cost: sub.cost };
    }
    case 'rep':
      return emitRepeat(n, repl, keep);
  }
}

function emitRepeat(n: Extract<Node, { k: 'rep' }>, repl: number, keep: boolean): Out {
  const { min, max, sub } = n;
  const lazy = n.greedy ? '' : '?';
  const captures = keep && hasCapture(sub);
  if (max === 0) {
    // x{0}: nothing, but its capture groups must still exist (and never participate).
    if (!captures) return { s: '', atom: false, cost: 0 };
    const x = emit(sub, repl, true);
    return { s: `(?:[]${x.s})?`, atom: true, cost: x.cost + 1 };
  }
  const factor = max === Infinity ? min + 1 : max;
  if (factor <= LINEAR_REPLICATION && repl * factor <= LINEAR_REPLICATION) {
    const x = emit(sub, repl * factor, keep);
    return { s: wrap(x) + quantifier(min, max) + lazy, atom: false, cost: x.cost * factor };
  }
  // Too many replications for the engine: unroll, as RE2 itself does.
  const copies = (k: number): Out => {
    if (k <= 0) return { s: '', atom: false, cost: 0 };
    const chunk = Math.min(k, Math.floor(LINEAR_REPLICATION / (repl * innerReplication(sub))));
    if (chunk >= 2) {
      const x = emit(sub, repl * chunk, false);
      const unit = wrap(x);
      const whole = Math.floor(k / chunk);
      const rest = k % chunk;
      checkSize((unit.length + 5) * (whole + 1));
      const s = `${unit}{${chunk}}`.repeat(whole) + (rest === 0 ? '' : rest === 1 ? unit : `${unit}{${rest}}`);
      return { s, atom: false, cost: x.cost * k };
    }
    const x = emit(sub, repl, false);
    const unit = wrap(x);
    checkSize(unit.length * k);
    return { s: unit.repeat(k), atom: false, cost: x.cost * k };
  };
  const optionalNest = (k: number): Out => {
    if (k <= 0) return { s: '', atom: false, cost: 0 };
    const x = emit(sub, repl, false);
    const unit = wrap(x);
    checkSize((unit.length + 6) * k);
    let s = '';
    for (let i = 0; i < k; i++) s = `(?:${unit}${s})?${lazy}`;
    return { s, atom: false, cost: x.cost * k };
  };
  const star = (capturing: boolean): Out => {
    const x = emit(sub, repl, capturing);
    return { s: `${wrap(x)}*${lazy}`, atom: false, cost: x.cost };
  };
  if (!captures) return seq([copies(min), max === Infinity ? star(false) : optionalNest(max - min)]);
  // Capture groups report the last iteration, so exactly one copy captures and it must be the
  // one that runs last. For x{n} and x{n,} that is exact; for x{n,m} (and x{n,} under deeply
  // nested quantifiers) the optional copies are placed before the capturing one, which matches
  // the same strings but may pick different submatches than RE2 when x itself is ambiguous.
  const capturing = (): Out => {
    const x = emit(sub, repl, true);
    return { s: wrap(x), atom: true, cost: x.cost };
  };
  if (max === min) return seq([copies(min - 1), capturing()]);
  if (max === Infinity) {
    if (repl * 2 <= LINEAR_REPLICATION) {
      const x = emit(sub, repl * 2, true);
      return seq([copies(min - 1), { s: `${wrap(x)}+${lazy}`, atom: false, cost: x.cost * 2 }]);
    }
    return seq([copies(min - 1), star(false), capturing()]);
  }
  if (min === 0) {
    const inner = seq([optionalNest(max - 1), capturing()]);
    return { s: `(?:${inner.s})?${lazy}`, atom: false, cost: inner.cost };
  }
  return seq([copies(min - 1), optionalNest(max - min), capturing()]);
}
