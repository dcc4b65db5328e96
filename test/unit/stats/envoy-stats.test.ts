// Envoy-style stats rendering: text (sorted), JSON, filters, and Prometheus names with Istio's tag
// extraction (cluster_name, response_code_class, http_conn_manager_prefix, listener_address).
import t from 'tap';
import { selectStats, statsJson, statsPrometheus, statsText, type EnvoyStat, listenerStatName } from '../../../src/stats/envoy-stats';
import { mergeEnvoyStats } from '../../../src/stats/scrape';

const stats: EnvoyStat[] = [
  { name: 'cluster.outbound|80||a.b.svc.cluster.local.upstream_rq_2xx', value: 3, kind: 'counter', prom: 'envoy_cluster_upstream_rq', labels: [['response_code_class', '2xx'], ['cluster_name', 'outbound|80||a.b.svc.cluster.local']] },
  { name: 'cluster.outbound|80||a.b.svc.cluster.local.upstream_rq_5xx', value: 0, kind: 'counter', prom: 'envoy_cluster_upstream_rq', labels: [['response_code_class', '5xx'], ['cluster_name', 'outbound|80||a.b.svc.cluster.local']] },
  { name: 'server.state', value: 0, kind: 'gauge', prom: 'envoy_server_state', labels: [] },
  { name: 'http.in "q".downstream_rq_total', value: 7, kind: 'counter', prom: 'envoy_http_downstream_rq_total', labels: [['http_conn_manager_prefix', 'in "q"']] },
];

t.test('text, json, filters', async (t) => {
  t.equal(statsText(stats).split('\n')[0], 'cluster.outbound|80||a.b.svc.cluster.local.upstream_rq_2xx: 3');
  t.equal(statsText([]), '');
  t.same(JSON.parse(statsJson(stats)).stats.map((s: { name: string }) => s.name), [...stats.map((s) => s.name)].sort());
  t.same(selectStats(stats, { filter: /5xx/ }).map((s) => s.value), [0]);
  t.same(selectStats(stats, { usedOnly: true }).map((s) => s.name).sort(), ['cluster.outbound|80||a.b.svc.cluster.local.upstream_rq_2xx', 'http.in "q".downstream_rq_total', 'server.state'], 'zero counters dropped, gauges kept');
});

t.test('prometheus', async (t) => {
  const text = statsPrometheus(stats);
  t.match(text, '# TYPE envoy_cluster_upstream_rq counter\nenvoy_cluster_upstream_rq{response_code_class="2xx",cluster_name="outbound|80||a.b.svc.cluster.local"} 3\n');
  t.match(text, 'envoy_http_downstream_rq_total{http_conn_manager_prefix="in \\"q\\""} 7', 'label values escaped');
  t.match(text, '# TYPE envoy_server_state gauge\nenvoy_server_state 0\n');
  t.equal(text.match(/# TYPE envoy_cluster_upstream_rq /g)?.length, 1, 'one TYPE line per family');
  t.equal(listenerStatName({ address: '0.0.0.0', port: 15006 }), '0.0.0.0_15006');
});

t.test('merging workers', async (t) => {
  const merged = mergeEnvoyStats([stats, stats]);
  t.equal(merged.find((s) => s.name.endsWith('upstream_rq_2xx'))!.value, 6, 'counters summed');
  t.equal(merged.find((s) => s.name === 'server.state')!.value, 0, 'server.* not summed');
});
