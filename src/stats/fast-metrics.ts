// Counters and histograms for the request path, exposed through a prom-client Registry. prom-client's
// own metrics hash the whole label object on every inc()/observe() (25 Istio labels: tens of µs per
// request); these keep one plain record per label set, found once and then updated with a few
// number writes. At scrape time they give the registry the same {name, help, type, values} shape its
// own metrics do, so Registry.metrics(), getMetricsAsJSON() and AggregatorRegistry work unchanged.

import type { Registry } from 'prom-client';

type Labels = Readonly<Record<string, string>>;

interface Value {
  labels: Record<string, string | number>;
  value: number;
  metricName?: string;
}

interface MetricData {
  name: string;
  help: string;
  type: 'counter' | 'histogram';
  values: Value[];
  aggregator: 'sum';
}

export interface CounterChild {
  inc(v?: number): void;
}

export interface HistogramChild {
  observe(v: number): void;
}

function escape(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

/** `k="v",...` rendered once per label set (shared by the families that use it) (the scrape then only concatenates). */
export function renderLabels(labels: Labels): string {
  let out = '';
  for (const k in labels) out += `${out === '' ? '' : ','}${k}="${escape(labels[k])}"`;
  return out;
}

class CounterSeries implements CounterChild {
  value = 0;
  readonly rendered: string;
  constructor(readonly labels: Labels, rendered?: string) {
    this.rendered = rendered ?? renderLabels(labels);
  }
  inc(v = 1): void {
    this.value += v;
  }
}

class HistogramSeries implements HistogramChild {
  readonly counts: Float64Array;
  sum = 0;
  count = 0;
  readonly rendered: string;
  constructor(readonly labels: Labels, private readonly bounds: readonly number[], rendered?: string) {
    this.counts = new Float64Array(bounds.length);
    this.rendered = rendered ?? renderLabels(labels);
  }
  observe(v: number): void {
    const b = this.bounds;
    for (let i = 0; i < b.length; i++) {
      if (v <= b[i]) {
        this.counts[i]++;
        break;
      }
    }
    this.sum += v;
    this.count++;
  }
}

abstract class FastMetric<S> {
  readonly aggregator = 'sum' as const;
  protected readonly series = new Map<string, S>();
  constructor(readonly name: string, readonly help: string, registry: Registry) {
    // Registry only calls get() (and reset()); a duck-typed metric is enough.
    registry.registerMetric(this as unknown as Parameters<Registry['registerMetric']>[0]);
  }
  reset(): void {
    this.series.clear();
  }
}

export class FastCounter extends FastMetric<CounterSeries> {
  readonly type = 'counter' as const;
  /** The child for a label set; `key` identifies it (callers keep their own cheaper keys). */
  child(key: string, labels: Labels, rendered?: string): CounterChild {
    let s = this.series.get(key);
    if (!s) this.series.set(key, (s = new CounterSeries(labels, rendered)));
    return s;
  }
  async get(): Promise<MetricData> {
    const values: Value[] = [];
    for (const s of this.series.values()) values.push({ labels: { ...s.labels }, value: s.value });
    return { name: this.name, help: this.help, type: this.type, values, aggregator: 'sum' };
  }
  /** For Registry.metrics(): each line's name already carries its rendered labels. */
  async getForPromString(): Promise<MetricData> {
    const values: Value[] = [];
    for (const s of this.series.values()) values.push({ metricName: `${this.name}{${s.rendered}}`, labels: {}, value: s.value });
    return { name: this.name, help: this.help, type: this.type, values, aggregator: 'sum' };
  }
}

export class FastHistogram extends FastMetric<HistogramSeries> {
  readonly type = 'histogram' as const;
  constructor(name: string, help: string, registry: Registry, readonly buckets: readonly number[]) {
    super(name, help, registry);
  }
  /** The child for a label set; `key` identifies it (callers keep their own cheaper keys). */
  child(key: string, labels: Labels, rendered?: string): HistogramChild {
    let s = this.series.get(key);
    if (!s) this.series.set(key, (s = new HistogramSeries(labels, this.buckets, rendered)));
    return s;
  }
  async get(): Promise<MetricData> {
    const values: Value[] = [];
    for (const s of this.series.values()) {
      let acc = 0;
      for (let i = 0; i < this.buckets.length; i++) {
        acc += s.counts[i];
        values.push({ labels: { ...s.labels, le: this.buckets[i] }, value: acc, metricName: `${this.name}_bucket` });
      }
      values.push({ labels: { ...s.labels, le: '+Inf' }, value: s.count, metricName: `${this.name}_bucket` });
      values.push({ labels: { ...s.labels }, value: s.sum, metricName: `${this.name}_sum` });
      values.push({ labels: { ...s.labels }, value: s.count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, values, aggregator: 'sum' };
  }
  /** For Registry.metrics(): each line's name already carries its rendered labels. */
  async getForPromString(): Promise<MetricData> {
    const values: Value[] = [];
    const bucket = `${this.name}_bucket{`;
    const les = this.buckets.map((b) => `,le="${b}"}`);
    for (const s of this.series.values()) {
      const prefix = bucket + s.rendered;
      let acc = 0;
      for (let i = 0; i < les.length; i++) {
        acc += s.counts[i];
        values.push({ metricName: prefix + les[i], labels: {}, value: acc });
      }
      values.push({ metricName: `${prefix},le="+Inf"}`, labels: {}, value: s.count });
      values.push({ metricName: `${this.name}_sum{${s.rendered}}`, labels: {}, value: s.sum });
      values.push({ metricName: `${this.name}_count{${s.rendered}}`, labels: {}, value: s.count });
    }
    return { name: this.name, help: this.help, type: this.type, values, aggregator: 'sum' };
  }
}
