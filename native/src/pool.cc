// keel_native pool/LB bookkeeping over typed arrays, and the header-block probe. Contract: pool.h
// and src/native/lb-pool.ts (the TypeScript twins). Written against the plain N-API C interface:
// these are per-request calls whose whole point is measuring the cheapest possible crossing.
// Must not: keep a typed-array pointer after returning, allocate JS objects on the pick/take/put
// paths, or touch memory outside the arrays whatever JS passes.
#include "pool.h"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace keel {
namespace {

constexpr size_t kMaxArgs = 6;

napi_value Undefined(napi_env env) {
  napi_value v;
  napi_get_undefined(env, &v);
  return v;
}

napi_value Int(napi_env env, int32_t n) {
  napi_value v;
  napi_create_int32(env, n, &v);
  return v;
}

napi_value ThrowType(napi_env env, const char* msg) {
  napi_throw_type_error(env, nullptr, msg);
  return nullptr;
}

napi_value ThrowRange(napi_env env, const char* msg) {
  napi_throw_range_error(env, nullptr, msg);
  return nullptr;
}

template <typename T>
struct View {
  T* data = nullptr;
  size_t length = 0;
};

// The elements of a typed array of the given kind; false (nothing thrown yet) when it is not one.
template <typename T>
bool GetArray(napi_env env, napi_value v, napi_typedarray_type want, View<T>* out) {
  bool is = false;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is) return false;
  napi_typedarray_type type;
  size_t length = 0;
  void* data = nullptr;
  if (napi_get_typedarray_info(env, v, &type, &length, &data, nullptr, nullptr) != napi_ok) return false;
  if (type != want) return false;
  out->data = static_cast<T*>(data);
  out->length = length;
  return true;
}

bool GetDouble(napi_env env, napi_value v, double* out) {
  return napi_get_value_double(env, v, out) == napi_ok;
}

// The effective EDF weight of set position i: weight / (active + 1)^bias, or 1e-9 when that is
// not a positive finite number (as EdfLoadBalancer's safeWeight). Sets *bad when slots[i] is
// outside counts.
double EffectiveWeight(const View<int32_t>& counts, const View<int32_t>& slots, const View<double>& weights,
                       double bias, size_t i, bool* bad) {
  const int32_t s = slots.data[i];
  if (s < 0 || static_cast<size_t>(s) >= counts.length) {
    *bad = true;
    return 1;
  }
  double w = weights.data[i];
  if (bias == 1) {
    w = w / (static_cast<double>(counts.data[s]) + 1);
  } else if (bias != 0) {
    w = w / std::pow(static_cast<double>(counts.data[s]) + 1, bias);
  }
  return (w > 0 && std::isfinite(w)) ? w : 1e-9;
}

// leastRequestPick(counts, slots, randoms, choiceCount): see src/native/lb-pool.ts.
napi_value LeastRequestPick(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  if (argc < 4) return ThrowType(env, "leastRequestPick(counts, slots, randoms, choiceCount)");
  View<int32_t> counts, slots;
  View<double> randoms;
  if (!GetArray(env, argv[0], napi_int32_array, &counts)) return ThrowType(env, "counts must be an Int32Array");
  if (!GetArray(env, argv[1], napi_int32_array, &slots)) return ThrowType(env, "slots must be an Int32Array");
  if (!GetArray(env, argv[2], napi_float64_array, &randoms)) return ThrowType(env, "randoms must be a Float64Array");
  double k;
  if (!GetDouble(env, argv[3], &k)) return ThrowType(env, "choiceCount must be a number");
  if (!(k >= 1) || std::floor(k) != k || k > 2147483647.0) return ThrowRange(env, "choiceCount must be an integer >= 1");
  const size_t n = slots.length;
  if (n == 0) return Int(env, -1);
  const size_t choices = static_cast<size_t>(k);
  if (randoms.length < choices) return ThrowRange(env, "randoms has fewer than choiceCount numbers");
  size_t best = 0;
  int32_t bestCount = 0;
  for (size_t i = 0; i < choices; i++) {
    const double p = std::floor(randoms.data[i] * static_cast<double>(n));
    const size_t pos = !(p >= 0) ? 0 : (p >= static_cast<double>(n) ? n - 1 : static_cast<size_t>(p));
    const int32_t s = slots.data[pos];
    if (s < 0 || static_cast<size_t>(s) >= counts.length) return ThrowRange(env, "a slot is outside counts");
    const int32_t c = counts.data[s];
    if (i == 0 || c < bestCount) {
      best = pos;
      bestCount = c;
    }
  }
  return Int(env, static_cast<int32_t>(best));
}

// edfPick(counts, slots, weights, deadlines, heap, bias): see src/native/lb-pool.ts.
napi_value EdfPick(napi_env env, napi_callback_info info) {
  size_t argc = kMaxArgs;
  napi_value argv[kMaxArgs];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  if (argc < 6) return ThrowType(env, "edfPick(counts, slots, weights, deadlines, heap, bias)");
  View<int32_t> counts, slots, heap;
  View<double> weights, deadlines;
  if (!GetArray(env, argv[0], napi_int32_array, &counts)) return ThrowType(env, "counts must be an Int32Array");
  if (!GetArray(env, argv[1], napi_int32_array, &slots)) return ThrowType(env, "slots must be an Int32Array");
  if (!GetArray(env, argv[2], napi_float64_array, &weights)) return ThrowType(env, "weights must be a Float64Array");
  if (!GetArray(env, argv[3], napi_float64_array, &deadlines)) return ThrowType(env, "deadlines must be a Float64Array");
  if (!GetArray(env, argv[4], napi_int32_array, &heap)) return ThrowType(env, "heap must be an Int32Array");
  double bias;
  if (!GetDouble(env, argv[5], &bias)) return ThrowType(env, "bias must be a number");
  if (!(bias >= 0) || !std::isfinite(bias)) return ThrowRange(env, "bias must be a finite number >= 0");
  const size_t n = heap.length;
  if (n == 0) return Int(env, -1);
  if (slots.length < n || weights.length < n || deadlines.length < n + 1) {
    return ThrowRange(env, "slots, weights and deadlines must cover the heap (deadlines: one more)");
  }
  int32_t* h = heap.data;
  double* d = deadlines.data;
  const int32_t top = h[0];
  if (top < 0 || static_cast<size_t>(top) >= n) return ThrowRange(env, "a heap entry is outside the set");
  bool bad = false;
  const double w = EffectiveWeight(counts, slots, weights, bias, static_cast<size_t>(top), &bad);
  if (bad) return ThrowRange(env, "a slot is outside counts");
  const double current = d[top];
  d[n] = current;
  d[top] = current + 1 / w;
  // sift the top down
  size_t i = 0;
  for (;;) {
    const size_t l = 2 * i + 1;
    if (l >= n) break;
    const size_t r = l + 1;
    const int32_t hl = h[l];
    const int32_t hi = h[i];
    if (hl < 0 || static_cast<size_t>(hl) >= n) return ThrowRange(env, "a heap entry is outside the set");
    size_t m = l;
    int32_t hm = hl;
    if (r < n) {
      const int32_t hr = h[r];
      if (hr < 0 || static_cast<size_t>(hr) >= n) return ThrowRange(env, "a heap entry is outside the set");
      if (d[hr] < d[hl] || (d[hr] == d[hl] && hr < hl)) {
        m = r;
        hm = hr;
      }
    }
    if (!(d[hm] < d[hi] || (d[hm] == d[hi] && hm < hi))) break;
    h[m] = hi;
    h[i] = hm;
    i = m;
  }
  return Int(env, top);
}

// poolTake(pool): see src/native/lb-pool.ts. Layout: [ready, open, limit, ready ids...].
napi_value PoolTake(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  View<int32_t> pool;
  if (argc < 1 || !GetArray(env, argv[0], napi_int32_array, &pool)) return ThrowType(env, "pool must be an Int32Array");
  if (pool.length < 3) return ThrowRange(env, "pool must have room for its header (3 slots)");
  int32_t* p = pool.data;
  const int32_t ready = p[0];
  if (ready < 0 || static_cast<size_t>(ready) > pool.length - 3) return ThrowRange(env, "pool ready count is outside the pool");
  if (ready > 0) {
    p[0] = ready - 1;
    return Int(env, p[3 + ready - 1]);
  }
  if (p[1] < p[2]) {
    p[1]++;
    return Int(env, -1);
  }
  return Int(env, -2);
}

// poolPut(pool, id): see src/native/lb-pool.ts.
napi_value PoolPut(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  View<int32_t> pool;
  if (argc < 2 || !GetArray(env, argv[0], napi_int32_array, &pool)) return ThrowType(env, "pool must be an Int32Array");
  double id;
  if (!GetDouble(env, argv[1], &id)) return ThrowType(env, "id must be a number");
  if (!(id >= 0) || std::floor(id) != id || id > 2147483647.0) return ThrowRange(env, "id must be an integer >= 0");
  if (pool.length < 3) return ThrowRange(env, "pool must have room for its header (3 slots)");
  int32_t* p = pool.data;
  const int32_t ready = p[0];
  if (ready < 0 || static_cast<size_t>(ready) >= pool.length - 3) return ThrowRange(env, "pool ready list is full");
  p[3 + ready] = static_cast<int32_t>(id);
  p[0] = ready + 1;
  return Undefined(env);
}

// The scratch a native matcher would match against; per thread (workers each have their own).
thread_local std::vector<char> scratch(16 * 1024);

// Copies one string's Latin-1 characters to scratch at *offset; false when v is not a string.
bool CopyString(napi_env env, napi_value v, size_t* offset) {
  size_t room = scratch.size() - *offset;
  size_t copied = 0;
  if (napi_get_value_string_latin1(env, v, scratch.data() + *offset, room, &copied) != napi_ok) return false;
  if (copied + 1 >= room) {
    // maybe truncated: make room for all of it and copy again
    size_t length = 0;
    if (napi_get_value_string_latin1(env, v, nullptr, 0, &length) != napi_ok) return false;
    if (length + 1 >= room) {
      scratch.resize((*offset + length + 1) * 2);
      room = scratch.size() - *offset;
      if (napi_get_value_string_latin1(env, v, scratch.data() + *offset, room, &copied) != napi_ok) return false;
    }
  }
  *offset += copied;
  return true;
}

// readHeaderBlock(block) / readHeaderBlock(s0, s1, ...): see src/native/lb-pool.ts.
napi_value ReadHeaderBlock(napi_env env, napi_callback_info info) {
  constexpr size_t kStackArgs = 32;
  size_t argc = kStackArgs;
  napi_value stackArgs[kStackArgs];
  napi_get_cb_info(env, info, &argc, stackArgs, nullptr, nullptr);
  if (argc < 1) return ThrowType(env, "readHeaderBlock(block: string[] | string, ...more: string[])");
  napi_value* argv = stackArgs;
  std::vector<napi_value> heapArgs;
  if (argc > kStackArgs) {
    heapArgs.resize(argc);
    napi_get_cb_info(env, info, &argc, heapArgs.data(), nullptr, nullptr);
    argv = heapArgs.data();
  }
  size_t offset = 0;
  napi_valuetype t;
  napi_typeof(env, argv[0], &t);
  if (t == napi_string) {
    for (size_t i = 0; i < argc; i++) {
      napi_valuetype at;
      napi_typeof(env, argv[i], &at);
      if (at != napi_string || !CopyString(env, argv[i], &offset)) return ThrowType(env, "every argument must be a string");
    }
    return Int(env, static_cast<int32_t>(offset));
  }
  bool isArray = false;
  napi_is_array(env, argv[0], &isArray);
  if (!isArray || argc > 1) return ThrowType(env, "block must be one array of strings, or strings");
  uint32_t length = 0;
  napi_get_array_length(env, argv[0], &length);
  for (uint32_t i = 0; i < length; i++) {
    napi_value e;
    if (napi_get_element(env, argv[0], i, &e) != napi_ok) return nullptr;
    napi_valuetype et;
    napi_typeof(env, e, &et);
    if (et != napi_string || !CopyString(env, e, &offset)) return ThrowType(env, "every element of block must be a string");
  }
  return Int(env, static_cast<int32_t>(offset));
}

void Export(napi_env env, napi_value exports, const char* name, napi_callback cb) {
  napi_value fn;
  napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, nullptr, &fn);
  napi_set_named_property(env, exports, name, fn);
}

}  // namespace

void InitPool(napi_env env, napi_value exports) {
  Export(env, exports, "leastRequestPick", LeastRequestPick);
  Export(env, exports, "edfPick", EdfPick);
  Export(env, exports, "poolTake", PoolTake);
  Export(env, exports, "poolPut", PoolPut);
  Export(env, exports, "readHeaderBlock", ReadHeaderBlock);
}

}  // namespace keel
