import t from 'tap';
import {
  applySubstitution,
  compileRe2,
  compileRe2Full,
  compileSubstitution,
  DEFAULT_MAX_PROGRAM_SIZE,
  fullMatch,
  re2Substitute,
  type CompiledSubstitution,
  type Re2Compiled,
  type Re2Options,
} from '../../../src/common/re2';

// ---------------------------------------------------------------------------------------------
// helpers

function search(pattern: string, opts?: Re2Options): Re2Compiled {
  const c = compileRe2(pattern, opts);
  if ('error' in c) throw new Error(c.error);
  return c;
}

function full(pattern: string, opts?: Re2Options): RegExp {
  const c = compileRe2Full(pattern, opts);
  if ('error' in c) throw new Error(c.error);
  return c.re;
}

/** Full-match results of `pattern` against each input. */
function fm(pattern: string, inputs: string[], opts?: Re2Options): boolean[] {
  const re = full(pattern, opts);
  return inputs.map((s) => fullMatch(re, s));
}

/** The error from both compile forms (they must agree), or a failure if either compiled. */
function errorOf(pattern: string): string {
  const a = compileRe2(pattern);
  const b = compileRe2Full(pattern);
  if (!('error' in a) || !('error' in b)) return `compiled: ${pattern}`;
  if (a.error !== b.error) return `forms disagree: ${a.error} / ${b.error}`;
  return a.error;
}

function sub(substitution: string, groupCount: number): CompiledSubstitution {
  const s = compileSubstitution(substitution, groupCount);
  if ('error' in s) throw new Error(s.error);
  return s;
}

function replaceAll(pattern: string, input: string, substitution: string): string {
  const c = search(pattern, { global: true });
  return applySubstitution(c.re, input, sub(substitution, c.groupCount));
}

// ---------------------------------------------------------------------------------------------
// the engine

t.test('every compiled regexp runs on the linear engine', async (t) => {
  const s = search('a+b');
  t.ok(s.re.flags.includes('l'), 'search form has l');
  t.notOk(s.re.global, 'no g unless asked for');
  t.ok(search('a', { global: true }).re.global, 'g when asked for');
  const f = full('a+b');
  t.ok(f.flags.includes('l'), 'full form has l');
  t.notOk(f.global, 'full form never has g');
  t.notOk(full('x', { global: true }).global, 'full form ignores a global option');
});

t.test('a catastrophic pattern stays linear', async (t) => {
  const hostile = 'a'.repeat(100000) + '!';
  const s = search('(a+)+$');
  t.ok(s.re.flags.includes('l'));
  t.equal(s.re.test(hostile), false);
  t.equal(s.re.test('aaa'), true, 'still matches what it should');
  const f = full('(a+)+');
  t.ok(f.flags.includes('l'));
  t.equal(fullMatch(f, hostile), false);
  t.equal(fullMatch(f, 'a'.repeat(100000)), true);
  const g = full('(x+x+)+y');
  t.equal(fullMatch(g, 'x'.repeat(50000)), false);
});

// ---------------------------------------------------------------------------------------------
// full-match semantics

t.test('full match anchors the whole pattern, alternation included', async (t) => {
  t.same(fm('a|ab', ['a', 'ab', 'abc', 'xab']), [true, true, false, false]);
  t.same(fm('foo', ['foo', 'foobar', 'xfoo', '']), [true, false, false, false]);
  t.same(fm('/api/.*', ['/api/', '/api/x/y', '/apix', 'x/api/']), [true, true, false, false]);
  t.same(fm('', ['', 'a']), [true, false]);
  t.same(fm('a*', ['', 'aaa', 'ab']), [true, true, false]);
});

t.test('the search form finds a match anywhere', async (t) => {
  const s = search('b+');
  t.equal(s.re.test('abbbc'), true);
  t.equal(s.re.test('ac'), false);
  t.same([...(s.re.exec('abbbc') ?? [])], ['bbb']);
});

t.test('fullMatch resets lastIndex on a stateful regexp', async (t) => {
  const g = search('ab', { global: true }).re;
  g.lastIndex = 1;
  t.equal(fullMatch(g, 'ab'), true);
  t.equal(fullMatch(g, 'ab'), true, 'same answer twice');
});

// ---------------------------------------------------------------------------------------------
// groups

t.test('named groups: (?P<name>re) and (?<name>re)', async (t) => {
  const s = search('(?P<year>\\d{4})-(?<month>\\d\\d)-(\\d\\d)');
  t.equal(s.groupCount, 3);
  t.same(s.groupNames, [undefined, 'year', 'month', undefined]);
  const m = s.re.exec('on 2024-05-17.');
  t.ok(m);
  t.equal(m?.groups?.year, '2024');
  t.equal(m?.groups?.month, '05');
  t.equal(m?.[3], '17');
  t.equal(full('(?P<x>a)b').test('ab'), true);
  t.equal(full('(?P<x>a)b').test('a'), false);
  t.match(errorOf('(?P<>a)'), /invalid named capture group/);
  t.match(errorOf('(?P<a-b>x)'), /invalid named capture group/);
  t.match(errorOf('(?P<name'), /invalid named capture group/);
  // RE2 accepts a repeated name; only the first group carries it in JS.
  const dup = search('(?P<n>a)(?P<n>b)');
  t.equal(dup.groupCount, 2);
  t.equal(dup.re.exec('ab')?.groups?.n, 'a');
});

t.test('non-capturing groups and group counting', async (t) => {
  const s = search('(?:a)(b)(?:c(d))');
  t.equal(s.groupCount, 2);
  t.same([...(s.re.exec('abcd') ?? [])], ['abcd', 'b', 'd']);
  const f = compileRe2Full('(a)(b)');
  t.equal('error' in f ? -1 : f.groupCount, 0, 'the full form has no capture groups');
});

// ---------------------------------------------------------------------------------------------
// flags

t.test('(?i) and the ignoreCase option', async (t) => {
  t.same(fm('(?i)abc', ['abc', 'ABC', 'aBc', 'abd']), [true, true, true, false]);
  t.same(fm('abc', ['ABC', 'abc']), [false, true]);
  t.same(fm('abc', ['ABC', 'abc'], { ignoreCase: true }), [true, true]);
  t.same(fm('(?i)[a-c]+', ['ABCabc', 'abd']), [true, false]);
  t.same(fm('(?i)[^a]', ['A', 'a', 'b']), [false, false, true], 'negation applies after folding');
  // Unicode simple case folding, as RE2 does it.
  t.same(fm('(?i)k', ['k', 'K', '\u212a', 'x']), [true, true, true, false]);
  t.same(fm('(?i)σ', ['σ', 'Σ', 'ς', 's']), [true, true, true, false]);
  t.same(fm('(?i)é', ['É', 'é', 'e']), [true, true, false]);
  t.same(fm('(?i)straße', ['STRAßE', 'STRASSE']), [true, false], 'no multi-character folding');
  t.same(fm('(?i)\\x{10400}', ['\u{10428}', '\u{10400}', 'a']), [true, true, false], 'astral case pairs');
});

t.test('flag groups (?i:re) and flags scoped to their group', async (t) => {
  t.same(fm('a(?i:b)c', ['aBc', 'abc', 'ABC', 'abC']), [true, true, false, false]);
  t.same(fm('(a(?i)b)c', ['aBc', 'aBC']), [true, false], '(?i) ends with its group');
  t.same(fm('a(?i)b|c', ['C', 'aB', 'Ab']), [true, true, false], '(?i) carries across |');
  t.same(fm('(?i)a(?-i)b', ['Ab', 'AB']), [true, false]);
  t.same(fm('(?i:a(?-i:b))', ['Ab', 'AB']), [true, false]);
  t.same(fm('(?)a', ['a']), [true], 'an empty flag group is allowed');
  t.match(errorOf('(?i-)a'), /invalid flag group/);
  t.match(errorOf('(?--i)a'), /invalid flag group/);
  t.match(errorOf('(?x)a'), /invalid or unsupported group syntax/);
  t.match(errorOf('(?#comment)a'), /invalid or unsupported group syntax/);
});

t.test('(?s) lets . match a newline', async (t) => {
  t.same(fm('a.b', ['axb', 'a\nb']), [true, false]);
  t.same(fm('(?s)a.b', ['axb', 'a\nb']), [true, true]);
  t.same(fm('(?s:.)(?-s:.)', ['\n\n', '\nx']), [false, true]);
});

t.test('(?m): ^ and $ at line boundaries (search form)', async (t) => {
  const m = search('(?m)^b$');
  t.ok(m.re.multiline);
  t.equal(m.re.test('a\nb\nc'), true);
  t.equal(m.re.test('a\nbc'), false);
  t.equal(search('^b$').re.test('a\nb\nc'), false);
  t.match(errorOf('(?m)^a\\z'), /mixing multi-line anchors/);
  const f = compileRe2Full('(?m)^a$');
  t.match('error' in f ? f.error : '', /not supported in full-match mode/);
  t.notOk('error' in compileRe2Full('(?m)a'), '(?m) without anchors is fine');
});

t.test('(?U) swaps greedy and lazy', async (t) => {
  t.equal(search('a+').re.exec('aaa')?.[0], 'aaa');
  t.equal(search('(?U)a+').re.exec('aaa')?.[0], 'a');
  t.equal(search('(?U)a+?').re.exec('aaa')?.[0], 'aaa');
  t.equal(search('(?U:a{2,3})a*').re.exec('aaaa')?.[0], 'aaaa');
  t.equal(search('(?U:a{2,3})').re.exec('aaaa')?.[0], 'aa');
});

// ---------------------------------------------------------------------------------------------
// anchors

t.test('\\A and \\z; \\Z is not RE2', async (t) => {
  t.same(fm('\\Aab\\z', ['ab']), [true]);
  const s = search('\\Aab\\z');
  t.equal(s.re.test('ab'), true);
  t.equal(s.re.test('xab'), false);
  t.equal(s.re.test('abx'), false);
  t.equal(search('ab\\z').re.test('ab\n'), false, '\\z is the very end');
  t.equal(search('ab$').re.test('ab\n'), false, '$ without (?m) is the very end too');
  t.equal(errorOf('ab\\Z'), 'invalid RE2 regex "ab\\Z": \\Z is not valid RE2 syntax (use \\z for end of text)');
});

t.test('\\b and \\B are ASCII word boundaries', async (t) => {
  const b = search('\\bfoo\\b');
  t.equal(b.re.test('a foo b'), true);
  t.equal(b.re.test('afoo'), false);
  t.equal(search('\\Boo').re.test('foo'), true);
  t.equal(search('\\Boo').re.test(' oo'), false);
  t.same(fm('a\\b*b', ['ab']), [true], 'an assertion may be repeated');
});

// ---------------------------------------------------------------------------------------------
// classes

t.test('POSIX classes inside brackets', async (t) => {
  t.same(fm('[[:alpha:]]+', ['abcXYZ', 'abc1']), [true, false]);
  t.same(fm('[[:digit:][:upper:]]+', ['A1B2', 'a1']), [true, false]);
  t.same(fm('[[:^digit:]]+', ['abc', 'a1']), [true, false]);
  t.same(fm('[[:xdigit:]]+', ['09afAF', 'g']), [true, false]);
  t.same(fm('[[:word:]]+', ['a_1', 'a-1']), [true, false]);
  t.same(fm('[[:punct:]]', ['!', '~', 'a']), [true, true, false]);
  t.same(fm('[[:space:]]', ['\v', ' ']), [true, true], '[[:space:]] has \\v');
  t.same(fm('(?i)[[:upper:]]', ['a']), [true], 'folded under (?i)');
  t.same(fm('[:alpha:]', [':', 'l', 'b']), [true, true, false], 'outside brackets it is a plain class');
  t.equal(errorOf('[[:foo:]]'), 'invalid RE2 regex "[[:foo:]]": invalid character class range: [:foo:]');
});

t.test('Perl classes are ASCII, as in RE2', async (t) => {
  t.same(fm('\\s', [' ', '\t', '\n', '\f', '\r', '\v', '\u00a0']), [true, true, true, true, true, false, false]);
  t.same(fm('\\d', ['7', '\u0663']), [true, false]);
  t.same(fm('\\w', ['a', '_', '9', 'é']), [true, true, true, false]);
  t.same(fm('\\S\\D\\W', ['a!.', 'a!a']), [true, false]);
  t.same(fm('[\\d-z]+', ['1-z', 'y']), [true, false], '- after a class is literal');
});

t.test('bracket classes', async (t) => {
  t.same(fm('[]a]+', [']a]', 'b']), [true, false], '] first is literal');
  t.same(fm('[^]a]', ['b', ']']), [true, false]);
  t.same(fm('[a-]+', ['a-', 'b']), [true, false]);
  t.same(fm('[^a]', ['\n', 'b', 'a']), [true, true, false], 'a negated class matches newline');
  t.same(fm('[\\x{1F600}-\\x{1F64F}]', ['\u{1F610}', '\u{1F650}', '\uD83D']), [true, false, false]);
  t.match(errorOf('[a'), /missing closing \]/);
  t.match(errorOf('[z-a]'), /bad character class range/);
  t.match(errorOf('[a-\\d]'), /bad character class range/);
  t.match(errorOf('[\\b]'), /invalid escape sequence/);
});

t.test('Unicode classes \\pN, \\p{Name}, \\PN, \\p{^Name}', async (t) => {
  const U: Re2Options = { maxProgramSize: 20000 }; // big classes are over the default limit
  t.same(fm('\\pL+', ['abcé\u{1D400}', 'ab1'], U), [true, false], 'astral letters count as one');
  t.same(fm('\\p{Greek}+', ['αβγ', 'αβc'], U), [true, false]);
  t.same(fm('\\PN', ['a', '5'], U), [true, false]);
  t.same(fm('\\pN', ['5', '\u0663', 'a'], U), [true, true, false]);
  t.same(fm('\\p{^Greek}', ['a', 'α'], U), [true, false]);
  t.same(fm('\\P{^Greek}', ['α', 'a'], U), [true, false]);
  t.same(fm('[\\p{Lu}\\d]+', ['AÉ1', 'a'], U), [true, false]);
  t.same(fm('(?i)\\p{Lu}', ['a'], U), [true], 'folded under (?i)');
  t.same(fm('\\p{Any}', ['\n', '\u{10FFFF}'], U), [true, true]);
  t.equal(errorOf('\\p{Klingon}'), 'invalid RE2 regex "\\p{Klingon}": invalid character class range: unknown Unicode class \\p{Klingon}');
  t.match(errorOf('\\p{greek}'), /unknown Unicode class/);
  t.match(errorOf('\\p{Cn}'), /unknown Unicode class/);
  t.match(errorOf('\\p{2}'), /unknown Unicode class/);
});

// ---------------------------------------------------------------------------------------------
// characters and escapes

t.test('. is one code point and never a newline by default', async (t) => {
  t.same(fm('.', ['a', '\r', '\u2028', '\n']), [true, true, true, false], 'only \\n is excluded (JS would exclude \\r too)');
  t.same(fm('.', ['\u{1F600}']), [true]);
  t.same(fm('..', ['\u{1F600}']), [false]);
  t.same(fm('.', ['\uD800']), [false], 'a lone surrogate is not a character');
  t.same(fm('\\x{1F600}+', ['\u{1F600}\u{1F600}', '\u{1F600}\uDE00']), [true, false], 'a repeated astral literal repeats whole');
});

t.test('\\x escapes, octal escapes and escaped punctuation', async (t) => {
  t.same(fm('\\x41\\x{42}\\x{10FFFF}', ['AB\u{10FFFF}', 'AB']), [true, false]);
  t.same(fm('\\101\\0\\07\\12', ['A\0\x07\n']), [true]);
  t.same(fm('\\.\\*\\_\\-', ['.*_-', 'a*_-']), [true, false]);
  t.same(fm('\\a\\f\\t\\n\\r\\v', ['\x07\f\t\n\r\v']), [true]);
  t.match(errorOf('\\x{110000}'), /beyond U\+10FFFF/);
  t.match(errorOf('\\xZZ'), /invalid escape sequence/);
  t.equal(errorOf('\\e'), 'invalid RE2 regex "\\e": invalid escape sequence: \\e');
  t.match(errorOf('\\cA'), /invalid escape sequence/);
  t.match(errorOf('\\é'), /invalid escape sequence/);
  t.match(errorOf('a\\'), /trailing backslash/);
});

t.test('\\Q...\\E quotes literally', async (t) => {
  t.same(fm('\\Qa.b*\\E', ['a.b*', 'axbb']), [true, false]);
  t.same(fm('x\\Q(y)', ['x(y)']), [true], 'to the end without \\E');
  t.same(fm('\\Qab\\E+', ['abbb', 'abab']), [true, false], 'a quantifier takes the last character');
  t.same(fm('(?i)\\Qk\\E', ['K']), [true]);
  t.match(errorOf('\\E'), /\\E without \\Q/);
  t.match(errorOf('[\\Q]'), /not allowed in a character class/);
});

// ---------------------------------------------------------------------------------------------
// repetition

t.test('counted repetition, including counts the engine cannot replicate natively', async (t) => {
  t.same(fm('a{3}', ['aaa', 'aa', 'aaaa']), [true, false, false]);
  t.same(fm('a{2,30}', ['a', 'aa', 'a'.repeat(30), 'a'.repeat(31)]), [false, true, true, false]);
  t.same(fm('a{20,}', ['a'.repeat(19), 'a'.repeat(20), 'a'.repeat(500)]), [false, true, true]);
  t.same(fm('[0-9a-f]{32}', ['0123456789abcdef0123456789abcdef', '0123456789abcdef0123456789abcde']), [true, false]);
  t.same(fm('(?:ab){0,17}c', ['c', 'ab'.repeat(17) + 'c', 'ab'.repeat(18) + 'c']), [true, true, false]);
  t.same(fm('(?:(?:a{4}){4}){4}', ['a'.repeat(64), 'a'.repeat(63)]), [true, false]);
  t.same(fm('a{1000}', ['a'.repeat(1000), 'a'.repeat(999)]), [true, false]);
  t.equal(search('a{2,20}?').re.exec('a'.repeat(30))?.[0], 'aa', 'lazy unrolled');
  t.equal(search('a{2,20}').re.exec('a'.repeat(30))?.[0], 'a'.repeat(20), 'greedy unrolled');
});

t.test('capture groups inside unrolled repetitions', async (t) => {
  const fixed = search('(a|b){20}x');
  t.equal(fixed.groupCount, 1);
  t.same([...(fixed.re.exec('a'.repeat(19) + 'bx') ?? [])], ['a'.repeat(19) + 'bx', 'b'], 'the last iteration is captured');
  const open = search('(\\d){17,}');
  t.equal(open.re.exec('1234567890123456789')?.[1], '9');
  const range = search('(\\d){2,20}');
  t.equal(range.re.exec('ab12345c')?.[1], '5');
  t.same([...(search('(a){0}(b)').re.exec('b') ?? [])], ['b', undefined, 'b'], 'x{0} keeps its group numbers');
});

t.test("RE2's repetition limits", async (t) => {
  t.equal(errorOf('a{1001}'), 'invalid RE2 regex "a{1001}": bad repetition operator: {1001} (counts above 1000 are not allowed)');
  t.match(errorOf('a{2,1001}'), /counts above 1000/);
  t.match(errorOf('(a{100}){100}'), /nested counted repetitions exceed 1000/);
  t.notOk('error' in compileRe2('(?:a{10}){100}'), '10 * 100 is within the limit');
  t.match(errorOf('a{3,2}'), /max is smaller than min/);
  t.match(errorOf('*a'), /missing argument to repetition operator: \*/);
  t.match(errorOf('a|*'), /missing argument/);
  t.match(errorOf('(*)'), /missing argument/);
  t.match(errorOf('{2}'), /missing argument/);
  t.match(errorOf('a**'), /bad repetition operator: \*/);
  t.match(errorOf('a*+'), /bad repetition operator/);
  t.match(errorOf('a{2}{3}'), /bad repetition operator/);
  t.match(errorOf('a???'), /bad repetition operator/);
  t.same(fm('a{,5}', ['a{,5}']), [true], '{,n} is literal');
  t.same(fm('a{x}', ['a{x}']), [true], 'a { that starts no repetition is literal');
  t.same(fm('a{2', ['a{2']), [true]);
});

// ---------------------------------------------------------------------------------------------
// rejected features

t.test('backreferences and lookarounds are rejected with a clear error', async (t) => {
  t.equal(errorOf('(a)\\1'), 'invalid RE2 regex "(a)\\1": backreferences are not supported');
  t.equal(errorOf('(a)\\9'), 'invalid RE2 regex "(a)\\9": backreferences are not supported');
  t.equal(errorOf('(?P<n>a)(?P=n)'), 'invalid RE2 regex "(?P<n>a)(?P=n)": backreferences are not supported');
  t.equal(errorOf('(?<n>a)\\k<n>'), 'invalid RE2 regex "(?<n>a)\\k<n>": backreferences are not supported');
  for (const p of ['a(?=b)', 'a(?!b)', '(?<=a)b', '(?<!a)b']) {
    t.equal(errorOf(p), `invalid RE2 regex "${p}": lookaround assertions ((?=, (?!, (?<=, (?<!) are not supported`, p);
  }
  t.equal(errorOf('a\\C'), 'invalid RE2 regex "a\\C": \\C (any byte) is not supported');
  t.match(errorOf('(?>a)'), /invalid or unsupported group syntax/);
  t.match(errorOf('(?P>n)'), /recursive patterns are not supported/);
  t.match(errorOf('\\G'), /invalid escape sequence/);
});

t.test('malformed patterns come back as errors, never as exceptions', async (t) => {
  const bad = [
    '(', ')', 'a)', '(a', '[', '\\', '(?', '(?P', '(?P<n', '(?i', '\\x{', '\\x{}', '\\p', '\\p{', '\\p{L',
    '[[:', 'a\uD800', '\uDC00', '('.repeat(1001) + ')'.repeat(1001), '[\\x{10FFFF}-\\x{0}]', '\\8',
  ];
  for (const p of bad) {
    let r: unknown;
    t.doesNotThrow(() => {
      r = compileRe2(p);
    }, p);
    t.ok(r && typeof r === 'object' && 'error' in r, `${JSON.stringify(p)} is an error`);
    t.doesNotThrow(() => compileRe2Full(p, { ignoreCase: true }), p);
  }
  t.match(errorOf('a\uD800'), /unpaired UTF-16 surrogate/);
  t.match(errorOf('('.repeat(1001) + ')'.repeat(1001)), /nests too deeply/);
  t.notOk('error' in compileRe2('('.repeat(1000) + 'a' + ')'.repeat(1000)), '1000 levels are fine');
});

t.test('program size is bounded', async (t) => {
  const small = search('^/api/v[0-9]+/users/[0-9a-f]{32}$');
  t.ok(small.programSize > 32 && small.programSize < 200, `programSize ${small.programSize}`);
  t.ok(search('[0-9a-f]{64}').programSize > search('[0-9a-f]{32}').programSize, 'grows with unrolling');
  t.match(errorOf('\\p{L}'), new RegExp(`program size \\d+ exceeds the limit of ${DEFAULT_MAX_PROGRAM_SIZE}`));
  const big = compileRe2('\\p{L}', { maxProgramSize: 5000 });
  t.notOk('error' in big, 'a caller can raise the limit');
  t.match(compileRe2('[a-z]{50}', { maxProgramSize: 10 }), { error: /exceeds the limit of 10/ });
});

// ---------------------------------------------------------------------------------------------
// substitution

t.test('compileSubstitution splits \\0-\\9 and \\\\ at config time', async (t) => {
  t.same(sub('x\\1y\\0\\\\z$1', 2).parts, ['x', 1, 'y', 0, '\\z$1']);
  t.same(sub('', 0).parts, []);
  t.same(sub('\\10', 1).parts, [1, '0'], 'one digit only');
  t.same(compileSubstitution('\\3', 2), {
    error: 'invalid regex substitution "\\3": \\3 refers to a capture group the regex does not have (it has 2)',
  });
  t.match(compileSubstitution('\\q', 2), { error: /invalid escape "\\q"/ });
  t.match(compileSubstitution('ab\\', 2), { error: /ends with a lone backslash/ });
  t.same(sub('\\0', 0).parts, [0], '\\0 needs no group');
});

t.test('applySubstitution replaces every match, RE2 style', async (t) => {
  t.equal(replaceAll('(\\w+)@(\\w+)', 'mail a@b and c@d', '\\2 at \\1'), 'mail b at a and d at c');
  t.equal(replaceAll('o', 'foo boo', '0'), 'f00 b00');
  t.equal(replaceAll('a', 'xyz', '-'), 'xyz', 'no match: unchanged');
  t.equal(replaceAll('\\d+', 'a1b22', '$&\\\\$1'), 'a$&\\$1b$&\\$1', '$ is literal, \\\\ is a backslash');
  t.equal(replaceAll('^/v1/(.*)$', '/v1/users/7', '/api/\\1'), '/api/users/7');
  t.equal(replaceAll('(a)|b', 'ab', '[\\1]'), '[a][]', 'an unset group is empty');
  // Empty matches: none right after the previous match, and stepping over whole code points.
  t.equal(replaceAll('b*', 'abc', '-'), '-a-c-');
  t.equal(replaceAll('x*', '\u{1F600}y', '-'), '-\u{1F600}-y-');
  t.equal(replaceAll('', 'ab', '.'), '.a.b.');
  const re = search('a', { global: true }).re;
  re.lastIndex = 3;
  t.equal(applySubstitution(re, 'aaa', sub('b', 0)), 'bbb', 'ignores a stale lastIndex');
  t.equal(re.lastIndex, 0, 'and leaves it at 0');
  t.throws(() => applySubstitution(search('a').re, 'a', sub('b', 0)), TypeError);
});

t.test('re2Substitute is the one-call form', async (t) => {
  const re = search('(\\d)', { global: true }).re;
  t.equal(re2Substitute(re, 'a1b2', '<\\1>'), 'a<1>b<2>');
  t.equal(re2Substitute(re, 'c3', '<\\1>'), 'c<3>', 'cached substitution, new input');
  t.throws(() => re2Substitute(re, 'a1', '\\2'), /refers to a capture group/);
});
