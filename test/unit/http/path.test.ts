// normalize_path / merge_slashes (src/http/path.ts): RFC 3986 dot-segment removal, decoding of
// escaped unreserved characters, backslashes, the query left alone, and what cannot be normalized.
import t from 'tap';
import { normalizeRequestPath } from '../../../src/http/path';

const N = (p: string): string | undefined => normalizeRequestPath(p, true, false);
const M = (p: string): string | undefined => normalizeRequestPath(p, false, true);

t.test('normalize_path', async (t) => {
  const cases: [string, string | undefined][] = [
    ['/a/b/c', '/a/b/c'],
    ['/a/b/../c', '/a/c'],
    ['/a/./b', '/a/b'],
    ['/../a', '/a'],
    ['/a/b/..', '/a/'],
    ['/a/b/.', '/a/b/'],
    ['/.', '/'],
    ['/..', '/'],
    ['/public/../admin', '/admin'],
    ['/public/%2e%2e/admin', '/admin'],
    ['/public/%2E%2E/admin', '/admin'],
    ['/public/.%2e/admin', '/admin'],
    ['/public\\..\\admin', '/admin'],
    ['/%7euser/%41', '/~user/A'],
    ['/a%2fb', '/a%2Fb'],
    ['/a%5cb', '/a%5Cb'],
    ['/a%zz', '/a%zz'],
    ['/a/.hidden/..x', '/a/.hidden/..x'],
    ['/a//b/../c', '/a//c'],
    ['/a/../b?x=/../y&z=%2e', '/b?x=/../y&z=%2e'],
    ['/a/./b#frag/../x', '/a/b#frag/../x'],
    ['*', '*'],
    ['a/b', undefined],
    ['', undefined],
  ];
  for (const [input, want] of cases) t.equal(N(input), want, JSON.stringify(input));
});

t.test('merge_slashes', async (t) => {
  t.equal(M('//a///b/'), '/a/b/');
  t.equal(M('/a/b'), '/a/b');
  t.equal(M('/a//b?x=//y'), '/a/b?x=//y', 'the query is left alone');
  t.equal(M('a//b'), 'a//b', 'without normalize_path a path that is not absolute passes');
  t.equal(normalizeRequestPath('//admin/../x//y', true, true), '/x/y', 'both');
  t.equal(normalizeRequestPath('/a/b', false, false), '/a/b');
});
