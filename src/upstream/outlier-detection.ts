// Outlier detection (passive health checking), after Envoy's documented algorithm:
//  - inline detection on every recorded outcome: consecutive_5xx, consecutive_gateway_failure
//    (502/503/504) and, with split_external_local_origin_errors, consecutive_local_origin_failure;
//  - interval detection (timer, unref'd): success rate (mean − stdev × factor/1000) and failure
//    percentage over the outcomes of the past interval;
//  - an outlier is ejected with probability enforcing_*%, if fewer than max_ejection_percent of the
//    cluster's hosts are already ejected (checked before the ejection, so with a non-zero
//    percentage at least one host can always be ejected);
//  - ejection lasts base_ejection_time × times ejected, capped at max_ejection_time; at each
//    interval an ejected host whose time is up returns, and a host that is not ejected has its
//    ejection multiplier decremented.
// Without split_external_local_origin_errors, locally originated failures count as Envoy maps
// them: connect failure / reset / protocol error as 503, timeout as 504.

import type { OutlierDetectionConfig } from '../config/types';
import type { AttemptOutcome } from './cluster';
import type { Host } from './host';
import type { RandomSource } from './load-balancer';

export interface OutlierDetectionStats {
  ejections_active: number;
  ejections_overflow: number;
  /** deprecated Envoy counter: enforced ejections of any kind */
  ejections_total: number;
  ejections_enforced_total: number;
  /** deprecated Envoy counter: enforced consecutive 5xx ejections */
  ejections_consecutive_5xx: number;
  ejections_detected_consecutive_5xx: number;
  ejections_enforced_consecutive_5xx: number;
  ejections_detected_consecutive_gateway_failure: number;
  ejections_enforced_consecutive_gateway_failure: number;
  ejections_detected_consecutive_local_origin_failure: number;
  ejections_enforced_consecutive_local_origin_failure: number;
  /** deprecated Envoy counter: enforced success-rate ejections */
  ejections_success_rate: number;
  ejections_detected_success_rate: number;
  ejections_enforced_success_rate: number;
  ejections_detected_failure_percentage: number;
  ejections_enforced_failure_percentage: number;
}

function newStats(): OutlierDetectionStats {
  return {
    ejections_active: 0,
    ejections_overflow: 0,
    ejections_total: 0,
    ejections_enforced_total: 0,
    ejections_consecutive_5xx: 0,
    ejections_detected_consecutive_5xx: 0,
    ejections_enforced_consecutive_5xx: 0,
    ejections_detected_consecutive_gateway_failure: 0,
    ejections_enforced_consecutive_gateway_failure: 0,
    ejections_detected_consecutive_local_origin_failure: 0,
    ejections_enforced_consecutive_local_origin_failure: 0,
    ejections_success_rate: 0,
    ejections_detected_success_rate: 0,
    ejections_enforced_success_rate: 0,
    ejections_detected_failure_percentage: 0,
    ejections_enforced_failure_percentage: 0,
  };
}

export type EjectionType = 'consecutive_5xx' | 'consecutive_gateway_failure' | 'consecutive_local_origin_failure' | 'success_rate' | 'failure_percentage';

/** Per-host detector state. */
export class HostOutlierState {
  consecutive5xx = 0;
  consecutiveGatewayFailure = 0;
  consecutiveLocalOriginFailure = 0;
  /** outcomes counted for success rate / failure percentage during the current interval */
  requests = 0;
  failures = 0;
  ejected = false;
  ejectedAt = 0;
  /** ejection time multiplier: incremented per ejection, decremented per healthy interval */
  multiplier = 0;
  /** how many times the host has ever been ejected */
  ejections = 0;
  lastEjection: EjectionType | undefined;
}

export interface OutlierDetectorOptions {
  /** ms clock; Date.now by default */
  readonly now?: () => number;
  readonly random?: RandomSource;
  /** false: no interval timer (tests drive `tick()` themselves) */
  readonly timer?: boolean;
  /** called after hosts are ejected or returned, so the cluster rebuilds its load-balancing sets */
  readonly onChange?: () => void;
}

export class OutlierDetector {
  readonly stats: OutlierDetectionStats = newStats();
  private readonly states = new Map<Host, HostOutlierState>();
  private readonly now: () => number;
  private readonly random: RandomSource;
  private readonly onChange: () => void;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    readonly config: OutlierDetectionConfig,
    opts: OutlierDetectorOptions = {},
  ) {
    this.now = opts.now ?? Date.now;
    this.random = opts.random ?? Math.random;
    this.onChange = opts.onChange ?? (() => undefined);
    if (opts.timer !== false) {
      this.timer = setInterval(() => this.tick(), config.intervalMs);
      this.timer.unref();
    }
  }

  /** The cluster's current hosts: new ones are tracked, removed ones forgotten. */
  setHosts(hosts: readonly Host[]): void {
    const keep = new Set(hosts);
    for (const [h, s] of this.states) {
      if (keep.has(h)) continue;
      if (s.ejected) this.stats.ejections_active--;
      this.states.delete(h);
    }
    for (const h of hosts) if (!this.states.has(h)) this.states.set(h, new HostOutlierState());
  }

  isEjected(host: Host): boolean {
    return this.states.get(host)?.ejected === true;
  }

  stateOf(host: Host): HostOutlierState | undefined {
    return this.states.get(host);
  }

  /** One upstream attempt's outcome (inline detection). */
  record(host: Host, outcome: AttemptOutcome): void {
    const s = this.states.get(host);
    if (s === undefined) return;
    const cfg = this.config;
    const split = cfg.splitExternalLocalOriginErrors;
    let status: number;
    if (outcome.kind === 'local') {
      if (split) {
        s.consecutiveLocalOriginFailure++;
        if (s.consecutiveLocalOriginFailure >= cfg.consecutiveLocalOriginFailure && cfg.consecutiveLocalOriginFailure > 0) {
          s.consecutiveLocalOriginFailure = 0;
          this.detected(s, 'consecutive_local_origin_failure', cfg.enforcingConsecutiveLocalOriginFailure);
        }
        return; // local-origin success rate is not implemented; external counters are untouched
      }
      status = outcome.reason === 'timeout' ? 504 : 503;
    } else {
      status = outcome.status;
      // a response came back, so the connection (local origin) succeeded
      if (split) s.consecutiveLocalOriginFailure = 0;
    }
    s.requests++;
    if (status < 500 || status > 599) {
      s.consecutive5xx = 0;
      s.consecutiveGatewayFailure = 0;
      return;
    }
    s.failures++;
    if (status >= 502 && status <= 504) {
      s.consecutiveGatewayFailure++;
      if (cfg.consecutiveGatewayFailure > 0 && s.consecutiveGatewayFailure >= cfg.consecutiveGatewayFailure) {
        s.consecutiveGatewayFailure = 0;
        // a gateway-failure ejection also ends the current 5xx run (the host is out either way)
        if (this.detected(s, 'consecutive_gateway_failure', cfg.enforcingConsecutiveGatewayFailure)) {
          s.consecutive5xx = 0;
          return;
        }
      }
    } else {
      s.consecutiveGatewayFailure = 0;
    }
    s.consecutive5xx++;
    if (cfg.consecutive5xx > 0 && s.consecutive5xx >= cfg.consecutive5xx) {
      s.consecutive5xx = 0;
      this.detected(s, 'consecutive_5xx', cfg.enforcingConsecutive5xx);
    }
  }

  /**
   * Interval work: return hosts whose ejection time is up, decay multipliers, then run success-rate
   * and failure-percentage detection over the interval's outcomes and reset them.
   */
  tick(): void {
    const cfg = this.config;
    const now = this.now();
    let changed = false;
    for (const s of this.states.values()) {
      if (s.ejected) {
        const duration = Math.min(cfg.baseEjectionTimeMs * s.multiplier, Math.max(cfg.maxEjectionTimeMs, cfg.baseEjectionTimeMs));
        if (now - s.ejectedAt >= duration) {
          s.ejected = false;
          s.consecutive5xx = 0;
          s.consecutiveGatewayFailure = 0;
          s.consecutiveLocalOriginFailure = 0;
          this.stats.ejections_active--;
          changed = true;
        }
      } else if (s.multiplier > 0) {
        s.multiplier--;
      }
    }
    if (changed) this.onChange();
    this.successRate();
    this.failurePercentage();
    for (const s of this.states.values()) {
      s.requests = 0;
      s.failures = 0;
    }
  }

  private successRate(): void {
    const cfg = this.config;
    let count = 0;
    let sum = 0;
    for (const s of this.states.values()) {
      if (s.ejected || s.requests < cfg.successRateRequestVolume || s.requests === 0) continue;
      count++;
      sum += (100 * (s.requests - s.failures)) / s.requests;
    }
    if (count === 0 || count < cfg.successRateMinimumHosts) return;
    const mean = sum / count;
    let variance = 0;
    for (const s of this.states.values()) {
      if (s.ejected || s.requests < cfg.successRateRequestVolume || s.requests === 0) continue;
      const r = (100 * (s.requests - s.failures)) / s.requests;
      variance += (r - mean) * (r - mean);
    }
    const stdev = Math.sqrt(variance / count);
    const threshold = mean - stdev * (cfg.successRateStdevFactor / 1000);
    for (const s of this.states.values()) {
      if (s.ejected || s.requests < cfg.successRateRequestVolume || s.requests === 0) continue;
      const r = (100 * (s.requests - s.failures)) / s.requests;
      if (r < threshold) this.detected(s, 'success_rate', cfg.enforcingSuccessRate);
    }
  }

  private failurePercentage(): void {
    const cfg = this.config;
    let count = 0;
    for (const s of this.states.values()) if (!s.ejected && s.requests > 0 && s.requests >= cfg.failurePercentageRequestVolume) count++;
    if (count === 0 || count < cfg.failurePercentageMinimumHosts) return;
    for (const s of this.states.values()) {
      if (s.ejected || s.requests === 0 || s.requests < cfg.failurePercentageRequestVolume) continue;
      if ((100 * s.failures) / s.requests >= cfg.failurePercentageThreshold) {
        this.detected(s, 'failure_percentage', cfg.enforcingFailurePercentage);
      }
    }
  }

  /** A host was found to be an outlier: count it, roll enforcement, eject if allowed. */
  private detected(s: HostOutlierState, type: EjectionType, enforcing: number): boolean {
    if (s.ejected) return false;
    const st = this.stats;
    switch (type) {
      case 'consecutive_5xx':
        st.ejections_detected_consecutive_5xx++;
        break;
      case 'consecutive_gateway_failure':
        st.ejections_detected_consecutive_gateway_failure++;
        break;
      case 'consecutive_local_origin_failure':
        st.ejections_detected_consecutive_local_origin_failure++;
        break;
      case 'success_rate':
        st.ejections_detected_success_rate++;
        break;
      case 'failure_percentage':
        st.ejections_detected_failure_percentage++;
        break;
    }
    if (enforcing <= 0 || (enforcing < 100 && this.random() * 100 >= enforcing)) return false;
    // max_ejection_percent, checked against the hosts ejected before this one
    const total = this.states.size;
    if ((100 * st.ejections_active) / total >= this.config.maxEjectionPercent) {
      st.ejections_overflow++;
      return false;
    }
    s.ejected = true;
    s.ejectedAt = this.now();
    s.ejections++;
    s.lastEjection = type;
    // the multiplier only grows while the next ejection time stays within max_ejection_time
    if (this.config.baseEjectionTimeMs * s.multiplier < this.config.maxEjectionTimeMs) s.multiplier++;
    st.ejections_active++;
    st.ejections_total++;
    st.ejections_enforced_total++;
    switch (type) {
      case 'consecutive_5xx':
        st.ejections_enforced_consecutive_5xx++;
        st.ejections_consecutive_5xx++;
        break;
      case 'consecutive_gateway_failure':
        st.ejections_enforced_consecutive_gateway_failure++;
        break;
      case 'consecutive_local_origin_failure':
        st.ejections_enforced_consecutive_local_origin_failure++;
        break;
      case 'success_rate':
        st.ejections_enforced_success_rate++;
        st.ejections_success_rate++;
        break;
      case 'failure_percentage':
        st.ejections_enforced_failure_percentage++;
        break;
    }
    this.onChange();
    return true;
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}
