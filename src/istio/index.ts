// Entry point of the Istio front end: files (or text) -> validated resources -> Envoy v3 bootstrap
// (raw JSON, as `keel translate` prints it) -> decoded Bootstrap (via decodeBootstrap, so keel runs
// it unchanged). Every problem from every stage is collected; a config with problems is refused
// whole with an IstioConfigError.

import { stringify } from 'yaml';
import { decodeBootstrap } from '../config/bootstrap';
import { ConfigError } from '../config/errors';
import type { Bootstrap } from '../config/types';
import { KeelError } from '../common/errors';
import { IstioDiagnostics, type IstioResource, loadIstioFiles, parseIstioText, type Obj } from './resources';
import { translateIstio, type TranslateOptions } from './translate';

export type { TranslateOptions } from './translate';

export class IstioConfigError extends KeelError {
  constructor(
    readonly problems: readonly string[],
    readonly warnings: readonly string[],
  ) {
    super('KEEL_CONFIG_INVALID', problems.map((p) => `keel: istio config error: ${p}`).join('\n'));
    this.name = 'IstioConfigError';
  }
  format(): string {
    return this.message;
  }
}

export interface IstioTranslation {
  /** The Envoy v3 bootstrap as JSON (what `keel translate` prints). */
  readonly envoy: Obj;
  /** The same, decoded for KeelServer. */
  readonly bootstrap: Bootstrap;
  readonly warnings: readonly string[];
  readonly resources: readonly IstioResource[];
}

function finish(resources: IstioResource[], opts: TranslateOptions, diag: IstioDiagnostics): IstioTranslation {
  // Translate even when the schema already found problems, so every problem is reported at once.
  let envoy: Obj | undefined;
  try {
    envoy = translateIstio(resources, opts, diag);
  } catch (e) {
    // only reachable with input the schema already rejected (a value of an unexpected type)
    if (diag.problems.length === 0) throw e;
  }
  if (envoy === undefined || diag.problems.length > 0) throw new IstioConfigError(diag.problems, diag.warnings);
  let decoded;
  try {
    decoded = decodeBootstrap(envoy);
  } catch (e) {
    if (e instanceof ConfigError) {
      // The generated config uses something keel's Envoy layer refuses (e.g. a filter not built yet).
      throw new IstioConfigError(
        e.problems.map((p) => `generated Envoy config: ${p.path}: ${p.message}`),
        [...diag.warnings, ...e.warnings],
      );
    }
    throw e;
  }
  return { envoy, bootstrap: decoded.bootstrap, warnings: [...diag.warnings, ...decoded.warnings.map((w) => `generated Envoy config: ${w}`)], resources };
}

/** Reads, validates and translates Istio YAML files. Throws IstioConfigError with every problem. */
export function translateIstioFiles(paths: readonly string[], opts: TranslateOptions): IstioTranslation {
  const diag = new IstioDiagnostics();
  const resources = loadIstioFiles(paths, opts.namespace ?? 'default', diag);
  return finish(resources, opts, diag);
}

/** The same from text (tests, --istio-yaml). */
export function translateIstioText(text: string, opts: TranslateOptions, sourceName = 'istio.yaml'): IstioTranslation {
  const diag = new IstioDiagnostics();
  const resources = parseIstioText(text, sourceName, opts.namespace ?? 'default', diag);
  return finish(resources, opts, diag);
}

/** The bootstrap as YAML, as `keel translate` prints it. */
export function envoyYaml(envoy: Obj): string {
  return stringify(envoy, { lineWidth: 0, aliasDuplicateObjects: false });
}
