// path_config_source: CDS or LDS from a file on disk, watched for changes (Envoy's file-based
// subscription). The file holds a DiscoveryResponse in YAML or JSON: {version_info, resources:
// [{'@type': ..., ...}]}. Each read is state of the world: resources missing from the file are
// removed. A file that does not parse or fails validation changes nothing (a NACK's equivalent is
// logged and kept for /config_dump). Replacing the file by rename (the safe way) is seen too.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseDocument } from 'yaml';
import type { Logger } from '../common/logger';
import type { XdsHandler, XdsResource } from './client';
import { TYPE } from './ads-service';

export class FileConfigSource {
  private watcher?: fs.FSWatcher;
  private timer?: NodeJS.Timeout;
  private known = new Set<string>();
  private version = '';
  private lastText: string | undefined;
  private lastNack?: { version: string; error: string; at: string };
  /** successful loads (tests) */
  loads = 0;

  constructor(
    readonly file: string,
    readonly typeUrl: string,
    private readonly handler: XdsHandler,
    private readonly log: Logger,
  ) {}

  start(): void {
    this.load();
    try {
      this.watcher = fs.watch(path.dirname(this.file), (_ev, name) => {
        if (name === null || name === path.basename(this.file)) this.schedule();
      });
      this.watcher.on('error', () => undefined);
    } catch (e) {
      this.log.error(`path_config_source ${this.file}: cannot watch: ${(e as Error).message}`);
    }
  }

  stop(): void {
    this.watcher?.close();
    if (this.timer) clearTimeout(this.timer);
  }

  status(): { version: string; lastNack?: { version: string; error: string; at: string } } {
    return { version: this.version, ...(this.lastNack ? { lastNack: this.lastNack } : {}) };
  }

  private schedule(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => this.load(), 25);
  }

  /** Reads and applies the file; returns the errors (empty when applied or unchanged). */
  load(): string[] {
    let text: string;
    try {
      text = fs.readFileSync(this.file, 'utf8');
    } catch (e) {
      return this.reject('', [`cannot read ${this.file}: ${(e as Error).message}`]);
    }
    if (text === this.lastText) return [];
    this.lastText = text;
    let doc: unknown;
    try {
      if (/^\s*\{/.test(text)) doc = JSON.parse(text);
      else {
        const d = parseDocument(text);
        if (d.errors.length > 0) throw new Error(d.errors[0].message);
        doc = d.toJS();
      }
    } catch (e) {
      return this.reject('', [`${this.file}: ${(e as Error).message}`]);
    }
    const o = (doc ?? {}) as { version_info?: unknown; versionInfo?: unknown; resources?: unknown };
    const version = String(o.version_info ?? o.versionInfo ?? '');
    const list = Array.isArray(o.resources) ? o.resources : [];
    const added: XdsResource[] = [];
    const errors: string[] = [];
    list.forEach((r, i) => {
      if (r === null || typeof r !== 'object' || Array.isArray(r)) {
        errors.push(`resources[${i}]: expected an object`);
        return;
      }
      const json = r as Record<string, unknown>;
      const t = json['@type'];
      if (t !== this.typeUrl && `type.googleapis.com/${String(t)}` !== this.typeUrl) {
        errors.push(`resources[${i}]: @type ${String(t)}, expected ${this.typeUrl}`);
        return;
      }
      const name = this.typeUrl === TYPE.endpoint ? json.cluster_name : json.name;
      added.push({ name: typeof name === 'string' ? name : '', version, json });
    });
    if (errors.length > 0) return this.reject(version, errors);
    const present = new Set(added.map((a) => a.name));
    const removed = [...this.known].filter((n) => !present.has(n));
    const problems = this.handler.apply({ typeUrl: this.typeUrl, version, added, removed, errors: [] });
    this.known = present;
    if (problems.length > 0) return this.reject(version, problems);
    this.version = version;
    this.loads++;
    return [];
  }

  private reject(version: string, errors: string[]): string[] {
    this.lastNack = { version, error: errors.join('\n'), at: new Date().toISOString() };
    this.log.warn(`path_config_source ${this.file} rejected:\n  ${errors.join('\n  ')}`);
    return errors;
  }
}
