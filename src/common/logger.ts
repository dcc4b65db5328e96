// A small leveled logger writing one line per event to stderr, Envoy-style:
// `[2026-01-01T00:00:00.000Z][info][keel] message`. Nothing on the request path logs below warn.

/** Every logger by component name, for the admin's /logging. */
export const LOGGERS = new Map<string, Logger>();

export type Level = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'critical' | 'off';
const ORDER: Record<Level, number> = { trace: 0, debug: 1, info: 2, warn: 3, error: 4, critical: 5, off: 6 };

export class Logger {
  private min: number;
  constructor(level: Level = 'info', private readonly component = 'keel') {
    this.min = ORDER[level];
    LOGGERS.set(component, this);
  }
  /** A component logger (Envoy's per-component loggers), starting at this one's level; listed by /logging. */
  child(component: string): Logger {
    return LOGGERS.get(component) ?? new Logger(this.level, component);
  }
  get name(): string {
    return this.component;
  }
  get level(): Level {
    return (Object.keys(ORDER) as Level[]).find((l) => ORDER[l] === this.min) ?? 'info';
  }
  setLevel(level: Level): void {
    this.min = ORDER[level];
  }
  enabled(level: Level): boolean {
    return ORDER[level] >= this.min;
  }
  private write(level: Level, msg: string): void {
    if (ORDER[level] < this.min) return;
    process.stderr.write(`[${new Date().toISOString()}][${level}][${this.component}] ${msg}\n`);
  }
  debug(msg: string): void {
    this.write('debug', msg);
  }
  info(msg: string): void {
    this.write('info', msg);
  }
  warn(msg: string): void {
    this.write('warn', msg);
  }
  error(msg: string): void {
    this.write('error', msg);
  }
}

export function isLevel(s: string): s is Level {
  return s in ORDER;
}
