// keel_native errno naming (see errno_names.h): a static switch over the errno values that socket
// calls can return. Must not: allocate or call into libc; unknown values yield nullptr.
#include "errno_names.h"

#include <cerrno>

namespace keel {

const char* ErrnoName(int err) {
  switch (err) {
#define KEEL_ERRNO_CASE(name) \
  case name:                  \
    return #name;
    KEEL_ERRNO_CASE(EPERM)
    KEEL_ERRNO_CASE(ENOENT)
    KEEL_ERRNO_CASE(EINTR)
    KEEL_ERRNO_CASE(EIO)
    KEEL_ERRNO_CASE(EBADF)
    KEEL_ERRNO_CASE(EAGAIN)
    KEEL_ERRNO_CASE(ENOMEM)
    KEEL_ERRNO_CASE(EACCES)
    KEEL_ERRNO_CASE(EFAULT)
    KEEL_ERRNO_CASE(EINVAL)
    KEEL_ERRNO_CASE(ENFILE)
    KEEL_ERRNO_CASE(EMFILE)
    KEEL_ERRNO_CASE(ENOSYS)
    KEEL_ERRNO_CASE(ENOTSOCK)
    KEEL_ERRNO_CASE(EDESTADDRREQ)
    KEEL_ERRNO_CASE(EPROTOTYPE)
    KEEL_ERRNO_CASE(ENOPROTOOPT)
    KEEL_ERRNO_CASE(EPROTONOSUPPORT)
    KEEL_ERRNO_CASE(EOPNOTSUPP)
#if defined(ENOTSUP) && ENOTSUP != EOPNOTSUPP
    KEEL_ERRNO_CASE(ENOTSUP)
#endif
    KEEL_ERRNO_CASE(EAFNOSUPPORT)
    KEEL_ERRNO_CASE(EADDRINUSE)
    KEEL_ERRNO_CASE(EADDRNOTAVAIL)
    KEEL_ERRNO_CASE(ENETDOWN)
    KEEL_ERRNO_CASE(ENETUNREACH)
    KEEL_ERRNO_CASE(ECONNABORTED)
    KEEL_ERRNO_CASE(ECONNRESET)
    KEEL_ERRNO_CASE(ENOBUFS)
    KEEL_ERRNO_CASE(EISCONN)
    KEEL_ERRNO_CASE(ENOTCONN)
    KEEL_ERRNO_CASE(ETIMEDOUT)
    KEEL_ERRNO_CASE(ECONNREFUSED)
    KEEL_ERRNO_CASE(EHOSTUNREACH)
#undef KEEL_ERRNO_CASE
    default:
      return nullptr;
  }
}

}  // namespace keel
