// The proxy's fast pseudo-random numbers: a uint32 xorshift for route weights, runtime fractions,
// fault and mirror percentages. Speed, not secrecy: nothing here may be used for anything an
// attacker must not predict (request ids use crypto.randomUUID).

let seed = (Date.now() ^ (process.pid << 16)) >>> 0 || 1;

/** A uint32, uniformly distributed. */
export function random32(): number {
  seed ^= seed << 13;
  seed >>>= 0;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  seed >>>= 0;
  return seed;
}
