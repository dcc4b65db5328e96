// keel_native pool/LB bookkeeping and the header-block probe: the native halves of the functions
// whose TypeScript twins live in src/native/lb-pool.ts (that file states the shared contract; both
// must give the same answer for the same arguments, and the same errors: TypeError for a wrong
// argument type, RangeError for an index or size outside the arrays).
//
// JS:
//   leastRequestPick(counts: Int32Array, slots: Int32Array, randoms: Float64Array, choiceCount)
//     -> set position or -1
//   edfPick(counts, slots, weights: Float64Array, deadlines: Float64Array, heap: Int32Array, bias)
//     -> set position or -1 (updates deadlines and heap in place)
//   poolTake(pool: Int32Array) -> ready id, -1 (open a connection: counted), -2 (at the limit)
//   poolPut(pool: Int32Array, id) -> undefined
//   readHeaderBlock(block: string[] | string, ...more: string[]) -> characters read into native memory
//
// Must not: keep a pointer into a typed array beyond the call, allocate on the JS heap on the
// pick/take/put paths, read or write outside an array whatever the arguments (every index taken
// from JS is bounds-checked), or throw C++ exceptions.
#pragma once

#include <node_api.h>

namespace keel {

void InitPool(napi_env env, napi_value exports);

}  // namespace keel
