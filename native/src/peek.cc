// keel_native peek (see peek.h): a one-shot uv_poll_t + recv(MSG_PEEK) wrapped as a JS PeekHandle.
#include "peek.h"

#include <cerrno>
#include <cmath>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include "js_errors.h"

#if !defined(KEEL_NATIVE_UNSUPPORTED_OS)
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>
#endif

namespace keel {

namespace {

struct Registry;

struct AddonData {
  Napi::FunctionReference peek_handle_ctor;
  Registry* registry = nullptr;  // not owned: it may outlive napi's own teardown (see Registry)
};

bool IntArg(const Napi::CallbackInfo& info, size_t index, const char* what, int min, int max,
            int* out) {
  Napi::Env env = info.Env();
  if (info.Length() <= index || !info[index].IsNumber()) {
    Napi::TypeError::New(env, std::string(what) + " must be a number").ThrowAsJavaScriptException();
    return false;
  }
  const double v = info[index].As<Napi::Number>().DoubleValue();
  if (!std::isfinite(v) || v < min || v > max || std::floor(v) != v) {
    Napi::TypeError::New(env, std::string(what) + " must be an integer from " +
                                  std::to_string(min) + " to " + std::to_string(max))
        .ThrowAsJavaScriptException();
    return false;
  }
  *out = static_cast<int>(v);
  return true;
}

#if defined(KEEL_NATIVE_UNSUPPORTED_OS)

Napi::Value Peek(const Napi::CallbackInfo& info) {
  ErrnoError(info.Env(), ENOTSUP, "peek").ThrowAsJavaScriptException();
  return info.Env().Undefined();
}

Napi::Function DefinePeekHandle(Napi::Env env) {
  return Napi::Function::New(
      env, [](const Napi::CallbackInfo& info) { return info.Env().Undefined(); });
}

Registry* NewRegistry(Napi::Env) { return nullptr; }

#else

class PeekHandle;

// Per environment (main thread, each worker): the active polls and the uv_close calls whose
// callback has not run yet. On teardown an async cleanup hook closes the active polls and holds
// the teardown until every close callback has run (the addon is unloaded right after, and a close
// callback into unloaded code would crash); then the registry deletes itself. napi's own teardown
// (instance data, wrapped objects) may come first, so nothing here belongs to it.
struct Registry {
  std::unordered_set<PeekHandle*> active;
  int pending_closes = 0;
  bool tearing_down = false;
  napi_async_cleanup_hook_handle hook = nullptr;
};

void MaybeFinishTeardown(Registry* registry) {
  if (!registry->tearing_down || registry->pending_closes != 0) return;
  napi_remove_async_cleanup_hook(registry->hook);
  delete registry;
}

// The libuv handle lives apart from the JS object: uv_close completes on a later loop turn, by
// which time the PeekHandle may have been collected. `owner` is cleared when the poll stops.
struct PollState {
  uv_poll_t poll;
  PeekHandle* owner;
  Registry* registry;
};

class PeekHandle : public Napi::ObjectWrap<PeekHandle> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "PeekHandle",
                       {InstanceMethod<&PeekHandle::Cancel>("cancel"),
                        InstanceAccessor<&PeekHandle::Active>("active")});
  }

  explicit PeekHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<PeekHandle>(info) {}

  ~PeekHandle() override { StopPolling(); }

  // Starts watching a dup of `fd`. Returns 0, or an errno with *syscall naming what failed.
  int Start(uv_loop_t* loop, Registry* registry, int fd, int max_bytes, int min_bytes,
            Napi::Function callback, const char** syscall) {
    *syscall = "fcntl(F_DUPFD_CLOEXEC)";
    const int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dup_fd < 0) return errno;
    auto state = std::make_unique<PollState>();
    state->owner = this;
    state->registry = registry;
    state->poll.data = state.get();
    *syscall = "uv_poll_init";
    int rc = uv_poll_init_socket(loop, &state->poll, dup_fd);
    if (rc != 0) {  // not a libuv handle yet: plain delete is right
      close(dup_fd);
      return -rc;
    }
    poll_ = state.release();
    registry->active.insert(this);
    fd_ = dup_fd;
    max_bytes_ = max_bytes;
    if (min_bytes > 1) SetLowat(min_bytes < kMaxRcvLowat ? min_bytes : kMaxRcvLowat);
    *syscall = "uv_poll_start";
    rc = uv_poll_start(&poll_->poll, UV_READABLE | UV_DISCONNECT, &PeekHandle::OnPoll);
    if (rc != 0) {
      StopPolling();
      return -rc;
    }
    callback_ = Napi::Persistent(callback);
    async_ = std::make_unique<Napi::AsyncContext>(Env(), "KeelPeek", Value());
    Ref();  // the JS object (and so this) stays alive while the poll may call back
    return 0;
  }

  // Stops the poll, restores SO_RCVLOWAT, closes the dup. Idempotent; no JS involved (the
  // registry's teardown hook calls it too).
  void StopPolling() {
    if (poll_ == nullptr) return;
    PollState* state = poll_;
    poll_ = nullptr;
    state->owner = nullptr;
    state->registry->active.erase(this);
    state->registry->pending_closes++;
    uv_poll_stop(&state->poll);  // also EPOLL_CTL_DEL (uv__platform_invalidate_fd)
    RestoreLowat();
    uv_close(reinterpret_cast<uv_handle_t*>(&state->poll), [](uv_handle_t* h) {
      PollState* closed = static_cast<PollState*>(h->data);
      Registry* registry = closed->registry;
      delete closed;
      registry->pending_closes--;
      MaybeFinishTeardown(registry);
    });
    // libuv does no more fd syscalls for a poll handle after uv_close() returns, so the dup can go
    // now: a socket Node has closed meanwhile is then really closed (FIN) without delay.
    close(fd_);
    fd_ = -1;
  }

 private:
  static void OnPoll(uv_poll_t* poll, int status, int events) {
    PollState* state = static_cast<PollState*>(poll->data);
    if (state->owner != nullptr) state->owner->OnEvent(status, events);
  }

  void OnEvent(int status, int events) {
    // Size the copy by what is queued (SIOCINQ), so a large maxBytes costs nothing extra.
    int queued = 0;
    size_t want = static_cast<size_t>(max_bytes_);
    if (ioctl(fd_, FIONREAD, &queued) == 0 && queued >= 0 && static_cast<size_t>(queued) < want) {
      want = queued > 0 ? static_cast<size_t>(queued) : 1;
    }
    std::unique_ptr<char[]> buf(new char[want]);
    ssize_t n;
    do {
      n = recv(fd_, buf.get(), want, MSG_PEEK | MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    const int recv_err = n < 0 ? errno : 0;
    const bool would_block = n < 0 && (recv_err == EAGAIN || recv_err == EWOULDBLOCK);
    if (status < 0) {
      // libuv reports EPOLLERR (e.g. after a RST) as UV_EBADF: name the socket's real error.
      if (n < 0 && !would_block) return Deliver(recv_err, "recv", nullptr, 0, false);
      int so_error = 0;
      socklen_t len = sizeof(so_error);
      if (getsockopt(fd_, SOL_SOCKET, SO_ERROR, &so_error, &len) == 0 && so_error != 0) {
        return Deliver(so_error, "recv", nullptr, 0, false);
      }
      return Deliver(-status, "uv_poll", nullptr, 0, false);
    }
    if (would_block) return;  // spurious wakeup: keep waiting
    if (n < 0) return Deliver(recv_err, "recv", nullptr, 0, false);
    const bool eof = n == 0 || (events & UV_DISCONNECT) != 0;
    Deliver(0, nullptr, buf.get(), static_cast<size_t>(n), eof);
  }

  // Stops the poll, then calls back once (an errno Error, or a copy of the bytes) and lets go.
  // Plain N-API with every status checked: if JS cannot run (the environment is being torn
  // down), there is nobody to tell, and node-addon-api would make that a fatal error.
  void Deliver(int err, const char* syscall, const char* data, size_t length, bool eof) {
    napi_env env = Env();
    StopPolling();
    Napi::FunctionReference callback = std::move(callback_);
    std::unique_ptr<Napi::AsyncContext> async = std::move(async_);
    napi_handle_scope scope = nullptr;
    if (napi_open_handle_scope(env, &scope) == napi_ok) {
      napi_value argv[3] = {nullptr, nullptr, nullptr};
      bool ok = napi_get_null(env, &argv[0]) == napi_ok &&
                napi_get_null(env, &argv[1]) == napi_ok &&
                napi_get_boolean(env, eof, &argv[2]) == napi_ok;
      if (ok && err != 0) {
        ok = CreateErrnoError(env, err, syscall, "", &argv[0]) == napi_ok;
      } else if (ok) {
        ok = napi_create_buffer_copy(env, length, data, nullptr, &argv[1]) == napi_ok;
      }
      if (ok) {
        napi_value result = nullptr;
        const napi_status status =
            napi_make_callback(env, *async, Value(), callback.Value(), 3, argv, &result);
        bool pending = false;
        if (status != napi_ok && napi_is_exception_pending(env, &pending) == napi_ok && pending) {
          // No JS frame below a libuv callback: report it as Node does for its own callbacks.
          napi_value exception = nullptr;
          if (napi_get_and_clear_last_exception(env, &exception) == napi_ok) {
            napi_fatal_exception(env, exception);
          }
        }
      }
      napi_close_handle_scope(env, scope);
    }
    Unref();
  }

  void SetLowat(int value) {
    int prev = 1;
    socklen_t len = sizeof(prev);
    if (getsockopt(fd_, SOL_SOCKET, SO_RCVLOWAT, &prev, &len) != 0) return;
    if (prev == value) return;
    // On failure the poll fires on the first byte; the JS caller sees no growth and backs off.
    if (setsockopt(fd_, SOL_SOCKET, SO_RCVLOWAT, &value, sizeof(value)) != 0) return;
    prev_lowat_ = prev;
    lowat_set_ = true;
  }

  void RestoreLowat() {
    if (!lowat_set_) return;
    lowat_set_ = false;
    setsockopt(fd_, SOL_SOCKET, SO_RCVLOWAT, &prev_lowat_, sizeof(prev_lowat_));
  }

  Napi::Value Cancel(const Napi::CallbackInfo& info) {
    if (poll_ != nullptr) {
      StopPolling();
      callback_.Reset();
      async_.reset();
      Unref();
    }
    return info.Env().Undefined();
  }

  Napi::Value Active(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), poll_ != nullptr);
  }

  PollState* poll_ = nullptr;
  Napi::FunctionReference callback_;
  std::unique_ptr<Napi::AsyncContext> async_;
  int fd_ = -1;  // our dup, open while poll_ is set
  int max_bytes_ = 0;
  int prev_lowat_ = 1;
  bool lowat_set_ = false;
};

Napi::Function DefinePeekHandle(Napi::Env env) { return PeekHandle::Define(env); }

void OnEnvTeardown(napi_async_cleanup_hook_handle hook, void* arg) {
  Registry* registry = static_cast<Registry*>(arg);
  registry->hook = hook;
  registry->tearing_down = true;
  const std::vector<PeekHandle*> active(registry->active.begin(), registry->active.end());
  for (PeekHandle* handle : active) handle->StopPolling();
  MaybeFinishTeardown(registry);
}

Registry* NewRegistry(Napi::Env env) {
  auto* registry = new Registry();
  if (napi_add_async_cleanup_hook(env, OnEnvTeardown, registry, nullptr) != napi_ok) {
    Napi::Error::New(env, "peek: napi_add_async_cleanup_hook failed").ThrowAsJavaScriptException();
  }
  return registry;
}

// peek(fd, maxBytes, callback, minBytes = 1) -> PeekHandle
Napi::Value Peek(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = -1;
  int max_bytes = 0;
  int min_bytes = 1;
  if (!IntArg(info, 0, "fd", 0, 2147483647, &fd)) return env.Undefined();
  if (!IntArg(info, 1, "maxBytes", 1, kMaxPeekBytes, &max_bytes)) return env.Undefined();
  if (info.Length() <= 2 || !info[2].IsFunction()) {
    Napi::TypeError::New(env, "callback must be a function").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (info.Length() > 3 && !info[3].IsUndefined() &&
      !IntArg(info, 3, "minBytes", 1, max_bytes, &min_bytes)) {
    return env.Undefined();
  }
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
    Napi::Error::New(env, "peek: no libuv event loop for this environment")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  AddonData* data = env.GetInstanceData<AddonData>();
  Napi::Object obj = data->peek_handle_ctor.New({});
  if (env.IsExceptionPending() || obj.IsEmpty()) return env.Undefined();
  PeekHandle* handle = PeekHandle::Unwrap(obj);
  if (handle == nullptr) return env.Undefined();  // JS is being terminated
  const char* syscall = "";
  const int err = handle->Start(loop, data->registry, fd, max_bytes, min_bytes,
                                info[2].As<Napi::Function>(), &syscall);
  if (err != 0) {
    ErrnoError(env, err, syscall).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  return obj;
}

#endif  // KEEL_NATIVE_UNSUPPORTED_OS

}  // namespace

void InitPeek(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  data->peek_handle_ctor = Napi::Persistent(DefinePeekHandle(env));
  data->registry = NewRegistry(env);
  env.SetInstanceData<AddonData>(data);
  exports.Set("peek", Napi::Function::New(env, Peek, "peek"));
}

}  // namespace keel
