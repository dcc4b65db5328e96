'use strict';
// Aggregates bench/run's per-round records into one markdown table (medians over rounds).
// usage: node report.js <records.tsv> <meta.json> <out.md>
// records.tsv columns: peer round status rps p50_ms p99_ms rss_kb cpu_cores errors note
//   status is ok|fail; numbers may be "-" when not measured; note is free text (fail reason).
const fs = require('node:fs');

const [recordsPath, metaPath, outPath] = process.argv.slice(2);
const meta = JSON.parse(fs.readFileSync(metaPath, 'utf8'));
const lines = fs.existsSync(recordsPath) ? fs.readFileSync(recordsPath, 'utf8').split('\n').filter(Boolean) : [];

const num = (s) => (s === undefined || s === '-' || s === '' ? null : Number(s));
const byPeer = new Map();
for (const line of lines) {
  const [peer, round, status, rps, p50, p99, rss, cpu, errors, ...note] = line.split('\t');
  if (!byPeer.has(peer)) byPeer.set(peer, []);
  byPeer.get(peer).push({
    round: Number(round), status, rps: num(rps), p50: num(p50), p99: num(p99),
    rss: num(rss), cpu: num(cpu), errors: errors && errors !== '-' ? errors : '', note: note.join('\t'),
  });
}

function median(xs) {
  const v = xs.filter((x) => x !== null && Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

const fmtRps = (x) => (x === null ? '—' : Math.round(x).toLocaleString('en-US'));
const fmtMs = (x) => (x === null ? '—' : x < 10 ? `${x.toFixed(3)} ms` : `${x.toFixed(1)} ms`);
const fmtDeltaMs = (x) => (x === null ? '—' : `${x >= 0 ? '+' : '−'}${Math.abs(x).toFixed(3)} ms`);
const fmtRss = (kb) => (kb === null ? '—' : `${(kb / 1024).toFixed(1)} MB`);
const fmtRatio = (x) => (x === null || !Number.isFinite(x) ? '—' : `${x.toFixed(2)}x`);
const fmtCpu = (x) => (x === null ? '—' : `${x.toFixed(3)}`);

const summary = new Map();
for (const peer of meta.peers) {
  const rs = byPeer.get(peer) || [];
  const ok = rs.filter((r) => r.status === 'ok');
  const failed = rs.filter((r) => r.status !== 'ok');
  summary.set(peer, {
    ok: ok.length, total: rs.length,
    failReason: failed.length ? failed[failed.length - 1].note || 'unknown' : null,
    rps: median(ok.map((r) => r.rps)), p50: median(ok.map((r) => r.p50)), p99: median(ok.map((r) => r.p99)),
    rss: median(ok.map((r) => r.rss)), cpu: median(ok.map((r) => r.cpu)),
    errors: rs.filter((r) => r.errors).map((r) => `round ${r.round}: ${r.errors}`),
  });
}

const out = [];
const notes = [];
const nginx = summary.get('nginx');
const direct = summary.get('direct');
// fixed and mtls share the fixed-rate table (mtls: each row is a proxy pair, CPU and RSS summed)
const fixedRate = meta.mode === 'fixed' || meta.mode === 'mtls';
if (fixedRate) {
  out.push('| proxy | req/s | p50 | p99 | added p50 | added p99 | CPU (cores) | RSS |');
  out.push('|---|---:|---:|---:|---:|---:|---:|---:|');
} else {
  out.push('| proxy | req/s | vs nginx | p50 | p99 | RSS |');
  out.push('|---|---:|---:|---:|---:|---:|');
}
for (const peer of meta.peers) {
  const s = summary.get(peer);
  if (s.ok === 0) {
    const reason = (s.failReason || 'not run').replace(/\|/g, '\\|');
    out.push(fixedRate
      ? `| ${peer} | failed: ${reason} | | | | | | |`
      : `| ${peer} | failed: ${reason} | | | | |`);
    continue;
  }
  if (s.ok < s.total) notes.push(`${peer}: ${s.total - s.ok} of ${s.total} rounds failed (${s.failReason}); medians are over the rest.`);
  for (const e of s.errors) notes.push(`${peer}: ${e}`);
  if (fixedRate) {
    const base = peer !== 'direct' && direct && direct.ok ? direct : null;
    out.push(`| ${peer} | ${fmtRps(s.rps)} | ${fmtMs(s.p50)} | ${fmtMs(s.p99)} | `
      + `${base ? fmtDeltaMs(s.p50 - base.p50) : '—'} | ${base ? fmtDeltaMs(s.p99 - base.p99) : '—'} | `
      + `${fmtCpu(s.cpu)} | ${fmtRss(s.rss)} |`);
  } else {
    const ratio = nginx && nginx.ok && nginx.rps ? s.rps / nginx.rps : null;
    out.push(`| ${peer} | ${fmtRps(s.rps)} | ${fmtRatio(ratio)} | ${fmtMs(s.p50)} | ${fmtMs(s.p99)} | ${fmtRss(s.rss)} |`);
  }
}
const table = out.join('\n');

// node-pipe copies bytes and nothing else: the most any proxy on node:net could do on this run.
const pipe = summary.get('node-pipe');
const keel = summary.get('keel');
if (pipe && pipe.ok && keel && keel.ok) {
  if (!fixedRate && pipe.rps && nginx && nginx.ok && nginx.rps) {
    notes.push(`node-pipe (bytes copied, no HTTP work) is ${fmtRatio(pipe.rps / nginx.rps)} nginx; keel is ${fmtRatio(keel.rps / pipe.rps)} node-pipe.`);
  } else if (!fixedRate && pipe.rps) {
    notes.push(`keel is ${fmtRatio(keel.rps / pipe.rps)} node-pipe (bytes copied, no HTTP work).`);
  } else if (fixedRate && pipe.cpu !== null && keel.cpu !== null) {
    notes.push(`CPU: node-pipe (bytes copied, no HTTP work) ${fmtCpu(pipe.cpu)} cores; keel ${fmtCpu(keel.cpu)}.`);
  }
}

// mtls: what mutual TLS itself costs each proxy, <x>-mtls minus <x>-pair (same proxies, same run).
if (meta.mode === 'mtls') {
  for (const peer of meta.peers) {
    if (!peer.endsWith('-mtls')) continue;
    const tls = summary.get(peer);
    const plain = summary.get(peer.replace(/-mtls$/, '-pair'));
    if (!plain || !tls.ok || !plain.ok) continue;
    const cpu = tls.cpu !== null && plain.cpu !== null ? `, CPU ${tls.cpu - plain.cpu >= 0 ? '+' : '−'}${Math.abs(tls.cpu - plain.cpu).toFixed(3)} cores` : '';
    notes.push(`mTLS itself (${peer} minus ${peer.replace(/-mtls$/, '-pair')}): p50 ${fmtDeltaMs(tls.p50 - plain.p50)}, p99 ${fmtDeltaMs(tls.p99 - plain.p99)}${cpu}.`);
  }
}

const md = [];
md.push(`# keel macro benchmark — ${meta.mode} — ${meta.date}`);
md.push('');
md.push(meta.description);
md.push('');
md.push(table);
md.push('');
if (notes.length) {
  md.push('Notes:');
  for (const n of notes) md.push(`- ${n}`);
  md.push('');
}
md.push(`Medians over ${meta.rounds} interleaved round(s) of ${meta.duration} s each (after ${meta.warmup} s warm-up per peer per round).`);
md.push('');
md.push('## Machine');
md.push('');
for (const [k, v] of Object.entries(meta.machine)) md.push(`- ${k}: ${v}`);
md.push('');
md.push('## Versions');
md.push('');
for (const [k, v] of Object.entries(meta.versions)) md.push(`- ${k}: ${v}`);
md.push('');
md.push('## Parameters');
md.push('');
for (const [k, v] of Object.entries(meta.params)) md.push(`- ${k}: ${v}`);
md.push('');

fs.writeFileSync(outPath, md.join('\n'));
process.stdout.write(table + '\n');
if (notes.length) process.stdout.write('\nNotes:\n' + notes.map((n) => `- ${n}`).join('\n') + '\n');
