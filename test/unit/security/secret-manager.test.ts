// Secret manager: rotation timing computed from the certificate, CA fetch with retries and
// back-off, rotation with a short TTL, subscribers, file certificates (/etc/certs style and
// file-cert:/file-root: names) reloaded when the files change, env parsing, and no secrets in logs.
import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { IstioCaClient } from '../../../src/security/ca-client';
import { certFacts } from '../../../src/security/csr';
import { rotationDelayMs, SecretManager, workloadSecretEnv, type Secret } from '../../../src/security/secret-manager';
import { parseGoDurationOrSeconds as parseGoDuration } from '../../../src/common/go-duration';
import { Logger } from '../../../src/common/logger';
import { createTestCa, mintWorkloadCert, startFakeCa } from '../../helpers/fake-ca';
import { waitUntil } from '../../helpers/wait';

const until = (cond: () => boolean, ms = 10_000, what = 'condition'): Promise<void> => waitUntil(cond, what, ms);

t.test('rotation delay: half of the lifetime, with bounded jitter', async (t) => {
  const nb = 1_000_000;
  const na = nb + 86_400_000;
  t.equal(rotationDelayMs(nb, na, nb, 0.5, 0, () => 0.5), 43_200_000, 'no jitter: at half life');
  t.equal(rotationDelayMs(nb, na, nb, 0.5, 0.01, () => 0), 43_200_000 + 864_000, 'jitter -1% of lifetime: later');
  t.equal(rotationDelayMs(nb, na, nb, 0.5, 0.01, () => 1), 43_200_000 - 864_000, 'jitter +1%: earlier');
  t.equal(rotationDelayMs(nb, na, nb + 50_000_000, 0.5, 0), 0, 'overdue rotates at once');
  t.equal(rotationDelayMs(nb, na, nb, 0.2, 0), 86_400_000 * 0.8, 'ratio 0.2: when 20% is left');
});

t.test('rotation delay from a real certificate', async (t) => {
  const ca = createTestCa();
  const c = mintWorkloadCert(ca, 'default', 'x', { ttlSeconds: 3600, notBefore: new Date(Math.floor(Date.now() / 1000) * 1000) });
  const f = certFacts(c.cert);
  t.ok(Math.abs(f.notAfter - f.notBefore - 3_600_000) <= 1000);
  const d = rotationDelayMs(f.notBefore, f.notAfter, f.notBefore, 0.5, 0);
  t.ok(Math.abs(d - 1_800_000) <= 1000, `${d} ~ 30 min`);
});

t.test('Go durations and the injected environment', async (t) => {
  t.equal(parseGoDuration('24h'), 86_400_000);
  t.equal(parseGoDuration('1h30m'), 5_400_000);
  t.equal(parseGoDuration('90s'), 90_000);
  t.equal(parseGoDuration('250ms'), 250);
  t.equal(parseGoDuration('12'), 12_000);
  t.equal(parseGoDuration('soon'), undefined);
  t.equal(parseGoDuration('1h garbage'), undefined);
  t.same(workloadSecretEnv({}), { identity: { trustDomain: 'cluster.local', namespace: 'default', serviceAccount: 'default' }, keyType: 'RSA', ttlSeconds: 86_400, graceRatio: 0.5 });
  t.same(
    workloadSecretEnv({ TRUST_DOMAIN: 'td', POD_NAMESPACE: 'ns', SERVICE_ACCOUNT: 'sa', ECC_SIGNATURE_ALGORITHM: 'ECDSA', SECRET_TTL: '12h', SECRET_GRACE_PERIOD_RATIO: '0.25' }),
    { identity: { trustDomain: 'td', namespace: 'ns', serviceAccount: 'sa' }, keyType: 'ECDSA', ttlSeconds: 43_200, graceRatio: 0.25 },
  );
});

t.test('CA: default and ROOTCA, retries with back-off, rotation with a short TTL, no secrets logged', async (t) => {
  const fake = await startFakeCa({ token: 'tkn', ttlSeconds: 3 });
  t.teardown(() => fake.close());
  fake.record.failNext = 2;
  const lines: string[] = [];
  const log = new Logger('debug');
  (log as unknown as { write: (l: string, m: string) => void }).write = (_l, m) => lines.push(m);
  const sm = new SecretManager({
    ca: new IstioCaClient({ address: `127.0.0.1:${fake.port}`, rootCert: fake.ca.rootCert, serverName: 'localhost', token: () => 'tkn', clusterId: 'Kubernetes' }),
    identity: { trustDomain: 'cluster.local', namespace: 'bookinfo', serviceAccount: 'productpage' },
    keyType: 'ECDSA',
    ttlSeconds: 3600,
    retryInitialMs: 20,
    log,
  });
  t.teardown(() => sm.stop());
  const seen: Secret[] = [];
  sm.watch('default', (s) => seen.push(s));
  await sm.start();
  t.equal(sm.stats.caFailures, 2, 'two failures retried');
  t.equal(fake.record.calls.length, 1);
  t.equal(fake.record.calls[0].ttlSeconds, 3, 'the CA capped the lifetime');
  t.equal(fake.record.calls[0].validityDuration, 3600, 'SECRET_TTL asked for');
  const d = sm.get('default');
  t.equal(d?.kind, 'tls_certificate');
  if (d?.kind !== 'tls_certificate') return;
  t.same(d.uris, ['spiffe://cluster.local/ns/bookinfo/sa/productpage']);
  t.match(d.privateKey, /BEGIN PRIVATE KEY/);
  t.notMatch(d.certChain, fake.ca.rootCert, 'the root is not in the presented chain');
  const root = sm.get('ROOTCA');
  t.equal(root?.kind === 'validation_context' && root.trustedCa, fake.ca.rootCert);
  t.equal(sm.identity, 'spiffe://cluster.local/ns/bookinfo/sa/productpage');
  // 3 s lifetime: rotation at about 1.5 s
  await until(() => sm.stats.rotations >= 1 && (sm.get('default')?.version ?? 0) >= 2, 10_000, 'a rotation');
  const d2 = sm.get('default');
  t.not(d2?.kind === 'tls_certificate' && d2.serialNumber, d.serialNumber, 'a new certificate');
  t.not(d2?.kind === 'tls_certificate' && d2.privateKey, d.privateKey, 'with a new key');
  t.ok(seen.length >= 2, 'subscribers told of each version');
  t.equal(sm.get('ROOTCA')?.version, 1, 'ROOTCA unchanged: not re-announced');
  const all = lines.join('\n');
  t.notMatch(all, /PRIVATE KEY|BEGIN CERTIFICATE|tkn/, 'no key, certificate or token in logs');
  t.match(all, /retrying in/);
  t.same(sm.describe().map((x) => x.name).sort(), ['ROOTCA', 'default']);
  t.notMatch(JSON.stringify(sm.describe()), /BEGIN/, 'describe() carries no PEM');
});

t.test('stop() ends a start() that is still retrying', async (t) => {
  const sm = new SecretManager({
    ca: new IstioCaClient({ address: '127.0.0.1:1', timeoutMs: 200 }),
    identity: { trustDomain: 'cluster.local', namespace: 'a', serviceAccount: 'b' },
    keyType: 'ECDSA',
    retryInitialMs: 10_000,
  });
  const p = sm.start();
  await until(() => sm.stats.caFailures >= 1, 10_000, 'a failure');
  sm.stop();
  await t.rejects(p, /stopped/);
});

t.test('file certificates: loaded, watched, reloaded; file-cert:/file-root: names', async (t) => {
  const ca = createTestCa();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'keel-certs-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const files = { certChain: path.join(dir, 'cert-chain.pem'), key: path.join(dir, 'key.pem'), rootCert: path.join(dir, 'root-cert.pem') };
  const c1 = mintWorkloadCert(ca, 'default', 'one');
  fs.writeFileSync(files.certChain, c1.certChain);
  fs.writeFileSync(files.key, c1.privateKey);
  fs.writeFileSync(files.rootCert, ca.rootCert);
  const sm = new SecretManager({ files, filePollMs: 50 });
  t.teardown(() => sm.stop());
  await sm.start();
  const d1 = sm.get('default');
  t.same(d1?.kind === 'tls_certificate' && d1.uris, ['spiffe://cluster.local/ns/default/sa/one']);
  t.equal(sm.get('ROOTCA')?.kind, 'validation_context');
  const versions: number[] = [];
  sm.watch('default', (s) => versions.push(s.version));
  const c2 = mintWorkloadCert(ca, 'default', 'two');
  fs.writeFileSync(files.key, c2.privateKey);
  fs.writeFileSync(files.certChain, c2.certChain);
  await until(() => {
    const d = sm.get('default');
    return d?.kind === 'tls_certificate' && d.uris[0] === 'spiffe://cluster.local/ns/default/sa/two' && d.privateKey === c2.privateKey;
  }, 10_000, 'the reload');
  t.ok(versions.length >= 1 && versions[versions.length - 1] >= 2, 'subscribers told');
  t.ok(sm.stats.fileReloads >= 1);

  // Istio's names for files a DestinationRule points at
  const fc = sm.get(`file-cert:${files.certChain}~${files.key}`);
  t.equal(fc?.kind, 'tls_certificate');
  const fr = sm.get(`file-root:${files.rootCert}`);
  t.equal(fr?.kind === 'validation_context' && fr.trustedCa, ca.rootCert);
  t.equal(sm.get('file-root:/nonexistent/root.pem'), undefined, 'a missing file is no secret');
  t.equal(sm.get('file-cert:nonsense'), undefined);
});

t.test('missing mounted certificates fail start()', async (t) => {
  const sm = new SecretManager({ files: { certChain: '/nonexistent/a', key: '/nonexistent/b', rootCert: '/nonexistent/c' }, log: new Logger('off') });
  t.teardown(() => sm.stop());
  await t.rejects(sm.start(), /missing or unreadable/);
});

t.test('set(): pushed secrets (istiod SDS, static) reach subscribers', async (t) => {
  const ca = createTestCa();
  const sm = new SecretManager();
  const got: Secret[] = [];
  const off = sm.watch('kubernetes://gw-cred', (s) => got.push(s));
  const c = mintWorkloadCert(ca, 'istio-system', 'gw');
  sm.set('kubernetes://gw-cred', { kind: 'tls_certificate', certChain: c.certChain, privateKey: c.privateKey });
  t.equal(got.length, 1);
  t.equal(got[0].version, 1);
  off();
  sm.set('kubernetes://gw-cred', { kind: 'tls_certificate', certChain: c.certChain, privateKey: c.privateKey });
  t.equal(got.length, 1, 'unsubscribed');
  t.equal(sm.get('kubernetes://gw-cred')?.version, 2);
  sm.remove('kubernetes://gw-cred');
  t.equal(sm.get('kubernetes://gw-cred'), undefined);
});
