// Listener-filter planning: only what the match needs is sniffed; tls_inspector / http_inspector results.
import t from 'tap';
import * as tls from 'node:tls';
import * as net from 'node:net';
import { planInspection, inspectBytes, TLS_INSPECTOR_TYPE, HTTP_INSPECTOR_TYPE } from '../../../src/listener/inspect';
import { H2_PREFACE } from '../../../src/listener/peek';
import type { ListenerConfig } from '../../../src/config/types';

const listener = (filters: string[]): ListenerConfig =>
  ({ name: 'l', listenerFilters: filters.map((typeName) => ({ name: typeName, typeName })) }) as unknown as ListenerConfig;
const NONE = { serverNames: false, transportProtocol: false, applicationProtocols: false };

/** A real ClientHello with SNI and ALPN, captured from node:tls. */
async function clientHello(servername: string, alpn: string[]): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer((s) => {
      s.once('data', (d: Buffer) => {
        s.destroy();
        srv.close();
        resolve(d);
      });
    });
    srv.listen(0, '127.0.0.1', () => {
      const c = tls.connect({ host: '127.0.0.1', port: (srv.address() as net.AddressInfo).port, servername, ALPNProtocols: alpn, rejectUnauthorized: false });
      c.on('error', () => undefined);
    });
    srv.on('error', reject);
  });
}

t.test('plans', async (t) => {
  t.equal(planInspection(listener([TLS_INSPECTOR_TYPE, HTTP_INSPECTOR_TYPE]), NONE, false).any, false, 'nothing uses the inspectors');
  const transport = planInspection(listener([TLS_INSPECTOR_TYPE]), { ...NONE, transportProtocol: true }, false);
  t.equal(transport.tls, 'transport');
  t.equal(transport.want(Buffer.from([0x16])), 'done', 'the first byte is enough');
  t.equal(planInspection(listener([]), { ...NONE, transportProtocol: true }, false).tls, 'off', 'no tls_inspector: raw_buffer always');
  const hello = planInspection(listener([TLS_INSPECTOR_TYPE]), { ...NONE, serverNames: true }, false);
  t.equal(hello.tls, 'hello');
  t.equal(hello.want(Buffer.from([0x16, 3, 1, 0, 50])), 'more', 'waits for the whole ClientHello');
  const http = planInspection(listener([HTTP_INSPECTOR_TYPE]), { ...NONE, applicationProtocols: true }, false);
  t.equal(http.http, true);
  t.equal(http.want(Buffer.from('GET / HT')), 'more');
  t.equal(http.want(Buffer.from('GET / HTTP/1.1\r\n')), 'done');
  t.equal(http.want(Buffer.from('\x00\x01binary')), 'done');
  const pre = planInspection(listener([]), NONE, true);
  t.equal(pre.any, true);
  t.equal(pre.want(H2_PREFACE.subarray(0, 5)), 'more');
  t.equal(pre.want(Buffer.from('GET ')), 'done');
});

t.test('inspection results', async (t) => {
  const hello = await clientHello('outbound_.8080_._.svc.cluster.local', ['istio-peer-exchange', 'istio-http/1.1']);
  const full = planInspection(listener([TLS_INSPECTOR_TYPE, HTTP_INSPECTOR_TYPE]), { serverNames: true, transportProtocol: true, applicationProtocols: true }, false);
  t.same(inspectBytes(hello, full), {
    transportProtocol: 'tls',
    serverName: 'outbound_.8080_._.svc.cluster.local',
    applicationProtocols: ['istio-peer-exchange', 'istio-http/1.1'],
    h2c: false,
  });
  t.same(inspectBytes(Buffer.from('GET / HTTP/1.0\r\n'), full).applicationProtocols, ['http/1.0']);
  t.same(inspectBytes(Buffer.from('POST /x HTTP/1.1\r\nhost: a\r\n'), full).applicationProtocols, ['http/1.1']);
  const h2 = inspectBytes(H2_PREFACE, full);
  t.same(h2.applicationProtocols, ['h2c']);
  t.equal(h2.h2c, true);
  t.same(inspectBytes(Buffer.from('SSH-2.0-OpenSSH\r\n'), full), { transportProtocol: 'raw_buffer', applicationProtocols: [], h2c: false });
  t.equal(inspectBytes(hello.subarray(0, 20), full).transportProtocol, 'raw_buffer', 'an incomplete ClientHello (timeout) is not TLS');
  const noTls = planInspection(listener([HTTP_INSPECTOR_TYPE]), { serverNames: true, transportProtocol: true, applicationProtocols: true }, false);
  t.equal(inspectBytes(hello, noTls).transportProtocol, 'raw_buffer', 'without tls_inspector');
});
