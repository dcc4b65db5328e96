// Throwaway network namespaces for tests that need root, iptables and `ip netns`: why a test must
// be skipped here, and a namespace with loopback up whose removal also kills what ran inside it.

import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';

/** Why these tools cannot be used here (not Linux, not root, a command missing), or undefined. */
export function netnsSkipReason(commands: readonly string[], install: string): string | undefined {
  if (process.platform !== 'linux') return 'Linux only';
  if (process.getuid?.() !== 0) return 'needs root (ip netns add, iptables)';
  for (const cmd of commands) {
    if (spawnSync('sh', ['-c', `command -v ${cmd}`]).status !== 0) return `${cmd} not installed (apt-get install -y ${install})`;
  }
  return undefined;
}

export interface Netns {
  readonly name: string;
  /** Kills every process still in the namespace, then deletes it; safe to call twice. */
  remove(): void;
}

/** Creates `<prefix>-<random>` with lo up; an Error carries `ip`'s stderr when it cannot. */
export function createNetns(prefix: string): Netns | Error {
  const name = `${prefix}-${randomBytes(4).toString('hex')}`;
  const add = spawnSync('ip', ['netns', 'add', name], { encoding: 'utf8' });
  if (add.status !== 0) return new Error(`ip netns add failed: ${add.stderr.trim()}`);
  spawnSync('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
  let present = true;
  return {
    name,
    remove(): void {
      if (!present) return;
      present = false;
      const pids = spawnSync('ip', ['netns', 'pids', name], { encoding: 'utf8' }).stdout.split('\n').filter((p) => /^\d+$/.test(p));
      for (const p of pids) {
        try {
          process.kill(Number(p), 'SIGKILL');
        } catch {
          // already gone
        }
      }
      spawnSync('ip', ['netns', 'del', name]);
    },
  };
}
