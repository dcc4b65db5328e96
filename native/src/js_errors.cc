// keel_native JS error construction (see js_errors.h).
#include "js_errors.h"

#include <cstring>

#include "errno_names.h"

namespace keel {

namespace {

std::string Code(int err) {
  const char* name = ErrnoName(err);
  return name != nullptr ? name : "E" + std::to_string(err);
}

}  // namespace

napi_status CreateErrnoError(napi_env env, int err, const char* syscall, const std::string& hint,
                             napi_value* result) {
  const std::string code = Code(err);
  const std::string message = std::string(syscall) + " " + code + ": " + std::strerror(err) + hint;
  napi_value msg = nullptr;
  napi_value code_value = nullptr;
  napi_value errno_value = nullptr;
  napi_value syscall_value = nullptr;
  napi_value error = nullptr;
  napi_status status;
  if ((status = napi_create_string_utf8(env, message.c_str(), message.size(), &msg)) != napi_ok ||
      (status = napi_create_string_utf8(env, code.c_str(), code.size(), &code_value)) != napi_ok ||
      (status = napi_create_int32(env, -err, &errno_value)) != napi_ok ||
      (status = napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &syscall_value)) !=
          napi_ok ||
      (status = napi_create_error(env, nullptr, msg, &error)) != napi_ok ||
      (status = napi_set_named_property(env, error, "code", code_value)) != napi_ok ||
      (status = napi_set_named_property(env, error, "errno", errno_value)) != napi_ok ||
      (status = napi_set_named_property(env, error, "syscall", syscall_value)) != napi_ok) {
    return status;
  }
  *result = error;
  return napi_ok;
}

Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall, const std::string& hint) {
  napi_value error = nullptr;
  if (CreateErrnoError(env, err, syscall, hint, &error) != napi_ok) {
    const std::string message = std::string(syscall) + " " + Code(err) + ": " + std::strerror(err);
    return Napi::Error::New(env, message);
  }
  return Napi::Error(env, error);
}

}  // namespace keel
