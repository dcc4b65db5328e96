// keel_native JS error construction: turns an errno value into an Error shaped like Node's system
// errors ({ code: 'ENOENT', errno: -2, syscall }), shared by the synchronous calls (thrown) and
// peek (passed to its callback). Must not: throw C++ exceptions (the addon is built without them).
#ifndef KEEL_NATIVE_JS_ERRORS_H_
#define KEEL_NATIVE_JS_ERRORS_H_

#include <napi.h>

#include <string>

namespace keel {

// `<syscall> <CODE>: <strerror><hint>` with code/errno/syscall properties. An errno missing from
// errno_names gets code "E<n>", which src/native/index.ts renames from os.constants.errno.
Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall, const std::string& hint = "");

// The same Error through plain N-API calls, reporting failure as a status instead of raising a
// (possibly fatal) node-addon-api error: usable while the environment is being torn down.
napi_status CreateErrnoError(napi_env env, int err, const char* syscall, const std::string& hint,
                             napi_value* result);

}  // namespace keel

#endif  // KEEL_NATIVE_JS_ERRORS_H_
