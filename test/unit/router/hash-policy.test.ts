import t from 'tap';
import { HeaderMap } from '../../../src/http/headers';
import { requestHash } from '../../../src/router/hash-policy';
import type { HashPolicyConfig } from '../../../src/config/types';

const h = (...kv: string[]) => new HeaderMap(kv);
const header = (name: string, terminal = false): HashPolicyConfig => ({ kind: 'header', name, terminal });

t.test('no policy yields no hash; a missing value is skipped', async (t) => {
  t.equal(requestHash([], h('x-user', 'a'), '/', '1.2.3.4'), undefined);
  t.equal(requestHash([header('x-user')], h(), '/', '1.2.3.4'), undefined);
});

t.test('same value, same hash; different values, different hashes', async (t) => {
  const a1 = requestHash([header('x-user')], h('x-user', 'alice'), '/', '');
  const a2 = requestHash([header('x-user')], h('x-user', 'alice', 'other', 'x'), '/p', '9.9.9.9');
  const b = requestHash([header('x-user')], h('x-user', 'bob'), '/', '');
  t.equal(a1, a2);
  t.not(a1, b);
});

t.test('cookie, source ip and query parameter sources', async (t) => {
  const c1 = requestHash([{ kind: 'cookie', name: 'sid', terminal: false }], h('cookie', 'a=1; sid=xyz'), '/', '');
  const c2 = requestHash([{ kind: 'cookie', name: 'sid', terminal: false }], h('cookie', 'sid="xyz"'), '/', '');
  t.equal(c1, c2);
  t.type(c1, 'number');
  const ip1 = requestHash([{ kind: 'source_ip', name: '', terminal: false }], h(), '/', '10.0.0.1');
  const ip2 = requestHash([{ kind: 'source_ip', name: '', terminal: false }], h(), '/', '10.0.0.2');
  t.not(ip1, ip2);
  const q1 = requestHash([{ kind: 'query_parameter', name: 'u', terminal: false }], h(), '/x?a=1&u=7', '');
  const q2 = requestHash([{ kind: 'query_parameter', name: 'u', terminal: false }], h(), '/y?u=7', '');
  t.equal(q1, q2);
});

t.test('policies combine, and a terminal policy with a value stops the walk', async (t) => {
  const both = requestHash([header('a'), header('b')], h('a', '1', 'b', '2'), '/', '');
  const onlyA = requestHash([header('a')], h('a', '1', 'b', '2'), '/', '');
  t.not(both, onlyA, 'the second policy changes the hash');
  const terminal = requestHash([header('a', true), header('b')], h('a', '1', 'b', '2'), '/', '');
  t.equal(terminal, onlyA, 'terminal: b is not consulted');
  const skipped = requestHash([header('missing', true), header('b')], h('b', '2'), '/', '');
  t.equal(skipped, requestHash([header('b')], h('b', '2'), '/', ''), 'a terminal policy without a value does not stop the walk');
});
