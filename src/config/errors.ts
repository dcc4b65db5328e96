// The error thrown when a configuration cannot be used: every problem found, each with the path of
// the offending field (snake_case, as in Envoy's docs), rather than only the first one.

import { KeelError } from '../common/errors';

export interface ConfigProblem {
  /** e.g. `static_resources.listeners[0].address.socket_address.port_value`, or `file.yaml:3:7` */
  readonly path: string;
  readonly message: string;
}

export const CONFIG_ERROR_PREFIX = 'keel: config error: ';

export class ConfigError extends KeelError {
  readonly problems: readonly ConfigProblem[];
  /** Warnings gathered before the configuration was rejected (useful context, never fatal). */
  readonly warnings: readonly string[];

  constructor(problems: readonly ConfigProblem[], warnings: readonly string[] = []) {
    super('KEEL_CONFIG_INVALID', formatProblems(problems));
    this.name = 'ConfigError';
    this.problems = problems;
    this.warnings = warnings;
  }

  /** One line per problem: `keel: config error: <path>: <message>`. */
  format(): string {
    return formatProblems(this.problems);
  }
}

function formatProblems(problems: readonly ConfigProblem[]): string {
  if (problems.length === 0) return `${CONFIG_ERROR_PREFIX}invalid configuration`;
  return problems.map((p) => `${CONFIG_ERROR_PREFIX}${p.path === '' ? '' : `${p.path}: `}${p.message}`).join('\n');
}
