// keel_native N-API glue: validates arguments, calls the sockopts.h helpers, and turns their errno
// results into thrown JS errors shaped like Node's system errors ({ code: 'ENOENT', errno: -2,
// syscall }). These calls are synchronous and cheap (one or two syscalls on an existing fd); the
// one asynchronous export, peek(), lives in peek.cc (with its own contract in peek.h).
// Must not (here): own, close or dup an fd (Node's handle owns it), block, keep state between
// calls, or use C++ exceptions (built with NODE_ADDON_API_DISABLE_CPP_EXCEPTIONS).
#include <napi.h>

#include <cerrno>
#include <cmath>
#include <string>

#include "js_errors.h"
#include "peek.h"
#include "pool.h"
#include "sockopts.h"

namespace {

// Bumped whenever the JS-visible contract changes, so a stale build is not used by newer JS.
constexpr int kAbiVersion = 4;  // 2: peek(), 3: scanHead(), 4: pool/LB functions (pool.h)

std::string Hint(int err, const char* syscall) {
  const std::string call(syscall);
  if (call.find("ORIGINAL_DST") != std::string::npos) {
    if (err == ENOENT) {
      return " (no NAT entry: the connection was not redirected by iptables REDIRECT/DNAT)";
    }
    if (err == ENOPROTOOPT) {
      return " (the kernel answered no conntrack for this family: is nf_conntrack loaded?)";
    }
  }
  if (call.find("TRANSPARENT") != std::string::npos && (err == EPERM || err == EACCES)) {
    return " (transparent sockets need CAP_NET_ADMIN)";
  }
  return "";
}

Napi::Value ThrowErrno(Napi::Env env, int err, const char* syscall) {
  keel::ErrnoError(env, err, syscall, Hint(err, syscall)).ThrowAsJavaScriptException();
  return env.Undefined();
}

// Reads a non-negative integer argument; throws a TypeError (and returns false) otherwise.
bool IntArg(const Napi::CallbackInfo& info, size_t index, const char* what, int* out) {
  Napi::Env env = info.Env();
  if (info.Length() <= index || !info[index].IsNumber()) {
    Napi::TypeError::New(env, std::string(what) + " must be a number").ThrowAsJavaScriptException();
    return false;
  }
  const double v = info[index].As<Napi::Number>().DoubleValue();
  if (!std::isfinite(v) || v < 0 || v > 2147483647.0 || std::floor(v) != v) {
    Napi::TypeError::New(env, std::string(what) + " must be a non-negative integer")
        .ThrowAsJavaScriptException();
    return false;
  }
  *out = static_cast<int>(v);
  return true;
}

Napi::Object ToObject(Napi::Env env, const keel::SockAddr& addr) {
  Napi::Object result = Napi::Object::New(env);
  result.Set("address", Napi::String::New(env, addr.address));
  result.Set("port", Napi::Number::New(env, addr.port));
  result.Set("family", Napi::Number::New(env, addr.family));
  return result;
}

Napi::Value OriginalDst(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = -1;
  if (!IntArg(info, 0, "fd", &fd)) return env.Undefined();
  keel::SockAddr addr;
  const char* syscall = "";
  const int err = keel::OriginalDst(fd, &addr, &syscall);
  if (err != 0) return ThrowErrno(env, err, syscall);
  return ToObject(env, addr);
}

Napi::Value LocalAddress(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = -1;
  if (!IntArg(info, 0, "fd", &fd)) return env.Undefined();
  keel::SockAddr addr;
  const char* syscall = "";
  const int err = keel::LocalAddress(fd, &addr, &syscall);
  if (err != 0) return ThrowErrno(env, err, syscall);
  return ToObject(env, addr);
}

Napi::Value SetTransparent(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = -1;
  int family = 0;
  if (!IntArg(info, 0, "fd", &fd)) return env.Undefined();
  if (!IntArg(info, 1, "family", &family)) return env.Undefined();
  if (family != 4 && family != 6) {
    Napi::TypeError::New(env, "family must be 4 or 6").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  const char* syscall = "";
  const int err = keel::SetTransparent(fd, family, &syscall);
  if (err != 0) return ThrowErrno(env, err, syscall);
  return env.Undefined();
}

// scanHead(buf, start, end): the offset of the first byte in buf[start, end) that cannot stand in
// an HTTP/1 head (a control character other than HTAB, or a CR or LF that is not part of a CRLF),
// or -1. The request path's head check: one pass over raw bytes instead of a regex and two
// indexOf per line in JS. Reads the buffer only; no allocation.
Napi::Value ScanHead(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsBuffer()) {
    Napi::TypeError::New(env, "scanHead(buffer, start, end)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  const Napi::Buffer<uint8_t> buf = info[0].As<Napi::Buffer<uint8_t>>();
  int start = 0;
  int end = 0;
  if (!IntArg(info, 1, "start", &start) || !IntArg(info, 2, "end", &end)) return env.Undefined();
  const size_t len = buf.Length();
  if (static_cast<size_t>(end) > len || start > end) {
    Napi::RangeError::New(env, "scanHead: range outside the buffer").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  const uint8_t* p = buf.Data();
  for (int i = start; i < end; i++) {
    const uint8_t c = p[i];
    if (c >= 0x20 && c != 0x7f) continue;
    if (c == '\t') continue;
    if (c == '\r' && i + 1 < end && p[i + 1] == '\n') {
      i++;  // CRLF
      continue;
    }
    return Napi::Number::New(env, i);
  }
  return Napi::Number::New(env, -1);
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("scanHead", Napi::Function::New(env, ScanHead, "scanHead"));
  exports.Set("abiVersion", Napi::Number::New(env, kAbiVersion));
  exports.Set("originalDst", Napi::Function::New(env, OriginalDst, "originalDst"));
  exports.Set("setTransparent", Napi::Function::New(env, SetTransparent, "setTransparent"));
  exports.Set("localAddress", Napi::Function::New(env, LocalAddress, "localAddress"));
  keel::InitPeek(env, exports);
  keel::InitPool(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(keel_native, Init)
