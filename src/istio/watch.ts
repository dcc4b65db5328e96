// Watches the Istio YAML files keel runs from and calls back (debounced) when one changes. Watches
// the parent directories, not the files, so editors that save by rename are seen too. It never
// translates or applies anything itself; the caller decides (src/cli/istio.ts).

import * as fs from 'node:fs';
import * as path from 'node:path';

export class IstioFileWatcher {
  private readonly watchers: fs.FSWatcher[] = [];
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  /** `files` are watched by name; `dirs` (given as -f directories) for any .yaml/.yml/.json in them. */
  constructor(
    files: readonly string[],
    dirs: readonly string[],
    private readonly onChange: () => void,
    private readonly debounceMs = 150,
  ) {
    const byDir = new Map<string, Set<string> | 'all'>();
    for (const f of files) {
      const abs = path.resolve(f);
      const d = path.dirname(abs);
      const cur = byDir.get(d);
      if (cur === 'all') continue;
      byDir.set(d, new Set([...(cur ?? []), path.basename(abs)]));
    }
    for (const d of dirs) byDir.set(path.resolve(d), 'all');
    for (const [dir, names] of byDir) {
      const w = fs.watch(dir, { persistent: true }, (_event, name) => {
        if (name === null) return this.schedule();
        const n = name.toString();
        if (names === 'all' ? /\.(ya?ml|json)$/i.test(n) : names.has(n)) this.schedule();
      });
      w.on('error', () => undefined);
      this.watchers.push(w);
    }
  }

  private schedule(): void {
    if (this.closed) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (!this.closed) this.onChange();
    }, this.debounceMs);
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    for (const w of this.watchers) w.close();
  }
}
