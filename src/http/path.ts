// Request path normalization, the HTTP connection manager's `normalize_path` and `merge_slashes`:
// applied to :path before routing and before any filter sees the request, so that route matches,
// RBAC rules and the upstream all see one spelling of a path. `/public/../admin`,
// `/public/%2e%2e/admin`, `/public\..\admin` and (with merge_slashes) `//admin` would otherwise
// slip past a rule on `/admin` and be resolved by the application behind the proxy.

const HEX = '0123456789ABCDEF';

function hexVal(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 65 && c <= 70) return c - 55;
  if (c >= 97 && c <= 102) return c - 87;
  return -1;
}

/** RFC 3986 2.3 unreserved: ALPHA / DIGIT / "-" / "." / "_" / "~" */
function unreserved(c: number): boolean {
  return (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c === 45 || c === 46 || c === 95 || c === 126;
}

/**
 * The path part (no query) canonicalized as Envoy's normalize_path does (RFC 3986 6.2.2):
 * percent-encoded unreserved characters decoded, other escapes in upper-case hex, `\` read as `/`,
 * then dot segments removed (5.2.4). Escaped slashes (%2F, %5C) stay escaped.
 */
function canonicalPath(p: string): string {
  let s = '';
  for (let i = 0; i < p.length; i++) {
    const c = p.charCodeAt(i);
    if (c === 37 /* % */ && i + 2 < p.length) {
      const hi = hexVal(p.charCodeAt(i + 1));
      const lo = hexVal(p.charCodeAt(i + 2));
      if (hi >= 0 && lo >= 0) {
        const v = hi * 16 + lo;
        s += unreserved(v) ? String.fromCharCode(v) : `%${HEX[hi]}${HEX[lo]}`;
        i += 2;
        continue;
      }
    }
    s += c === 92 /* \ */ ? '/' : p[i];
  }
  return removeDotSegments(s);
}

/** RFC 3986 5.2.4, for an absolute path (starts with "/"). */
function removeDotSegments(p: string): string {
  const out: string[] = [];
  const segs = p.split('/');
  // segs[0] is '' (the leading slash)
  for (let i = 1; i < segs.length; i++) {
    const seg = segs[i];
    const last = i === segs.length - 1;
    if (seg === '.' || seg === '..') {
      if (seg === '..') out.pop();
      if (last) out.push(''); // "/a/.." -> "/"
      continue;
    }
    out.push(seg);
  }
  return `/${out.join('/')}`;
}

/**
 * :path after normalize_path and/or merge_slashes; undefined when the path cannot be normalized
 * (it does not start with "/"), which the connection manager answers with 400. The query is left
 * as it came; "*" (OPTIONS *) is left alone.
 */
export function normalizeRequestPath(path: string, normalize: boolean, mergeSlashes: boolean): string | undefined {
  if (path === '*') return path;
  if (path.charCodeAt(0) !== 47 /* / */) return normalize ? undefined : path;
  let q = path.indexOf('?');
  const hash = path.indexOf('#');
  if (hash >= 0 && (q < 0 || hash < q)) q = hash;
  let p = q < 0 ? path : path.slice(0, q);
  // Fast path: nothing to do for a path of plain segments.
  if (normalize && (p.includes('%') || p.includes('\\') || p.includes('/.'))) p = canonicalPath(p);
  if (mergeSlashes && p.includes('//')) p = p.replace(/\/{2,}/g, '/');
  return q < 0 ? p : p + path.slice(q);
}
