// keel_native peek: look at the first bytes of an accepted TCP connection without consuming them,
// so the fd can afterwards be handed to a consumer that reads it from C++ (node:http2, tls).
//
// JS: peek(fd, maxBytes, callback, minBytes = 1) -> PeekHandle { cancel(), active }
//   Watches the socket with a uv_poll_t on the calling environment's event loop (UV_READABLE |
//   UV_DISCONNECT). When it is readable, recv(MSG_PEEK | MSG_DONTWAIT) of up to maxBytes, and ONE
//   callback:
//     callback(null, Buffer, eof)  the bytes queued in the kernel now (they stay queued). eof:
//                                  the peer has shut down its sending side (recv returned 0, or
//                                  UV_DISCONNECT): the bytes, possibly none, are all it sent.
//     callback(Error, null, false) recv or the poll failed ({ code, errno, syscall } like Node's;
//                                  a RST is ECONNRESET).
//   Before calling back it stops and closes the poll (uv_poll_stop deletes the fd from epoll), so
//   the callback may at once socket.resume() or hand the socket on.
//   minBytes > 1 sets SO_RCVLOWAT while polling (restored to its previous value before the callback
//   or on cancel), so Linux reports the socket readable only once that many bytes are queued (or
//   on FIN/error): waiting for "more than seen" without a busy loop. Capped at kMaxRcvLowat; where
//   the kernel ignores it the poll fires early, and the caller sees no growth.
//   cancel() stops the poll (same teardown) and guarantees no callback; idempotent, a no-op after
//   the callback ran. An active peek keeps the event loop alive.
//   Throws synchronously: TypeError on bad arguments, an errno Error if dup/uv_poll_init fails.
//
// The poll watches a private dup of the fd (F_DUPFD_CLOEXEC), closed as soon as the poll stops.
// libuv keys watchers by fd number, so a poll on Node's own fd would collide with the TCP handle's
// watcher (EEXIST, or a stale watcher swallowing the socket's events after a resume), and libuv
// would abort if Node closed that fd first (a worker's teardown closes handles before addon
// cleanup hooks run). For the caller: do not start reading the socket while a peek is pending
// (src/native/index.ts enforces this for net.Socket), and a pending peek keeps the connection open
// after Node closes its fd, until it is cancelled or calls back (index.ts cancels on destroy()).
// On environment teardown (worker exit) active polls are closed without a callback, and the
// teardown waits for their close callbacks (napi async cleanup hook).
// Must not: consume the socket's bytes, close the caller's fd or keep the dup past the poll, leave
// SO_RCVLOWAT changed once the callback runs or cancel() returns, call back more than once or
// after cancel(), call into JS while the environment is being torn down, or throw C++ exceptions.
#ifndef KEEL_NATIVE_PEEK_H_
#define KEEL_NATIVE_PEEK_H_

#include <napi.h>

namespace keel {

// Upper bound for maxBytes (one peek never copies more than this).
constexpr int kMaxPeekBytes = 1 << 20;
// Largest SO_RCVLOWAT peek sets: small enough that the kernel never grows the receive buffer or
// clamps the window for it (tcp_set_rcvlowat does so only when ~2x the value exceeds rcvbuf).
constexpr int kMaxRcvLowat = 16 * 1024;

// Adds `peek` to the addon's exports, and registers the environment's teardown hook.
void InitPeek(Napi::Env env, Napi::Object exports);

}  // namespace keel

#endif  // KEEL_NATIVE_PEEK_H_
