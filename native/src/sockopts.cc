// keel_native socket-option helpers (see sockopts.h). Linux only: on other systems every call
// reports ENOTSUP so the addon still builds and the JS side explains why capture is unavailable.
// Must not: throw, allocate, block, close the fd, or touch any option other than the one named.
#include "sockopts.h"

#include <cerrno>
#include <cstring>

#if !defined(KEEL_NATIVE_UNSUPPORTED_OS)
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

// From <linux/netfilter_ipv4.h> and <linux/netfilter_ipv6/ip6_tables.h>; those kernel headers
// clash with the libc ones, so the two stable ABI values are spelled out here.
#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80
#endif
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80
#endif
#ifndef IP_TRANSPARENT
#define IP_TRANSPARENT 19
#endif
#ifndef IPV6_TRANSPARENT
#define IPV6_TRANSPARENT 75
#endif
#ifndef SOL_IP
#define SOL_IP IPPROTO_IP
#endif
#ifndef SOL_IPV6
#define SOL_IPV6 IPPROTO_IPV6
#endif
#endif  // !KEEL_NATIVE_UNSUPPORTED_OS

namespace keel {

#if defined(KEEL_NATIVE_UNSUPPORTED_OS)

int OriginalDst(int, SockAddr*, const char** syscall) {
  *syscall = "getsockopt(SO_ORIGINAL_DST)";
  return ENOTSUP;
}
int SetTransparent(int, int, const char** syscall) {
  *syscall = "setsockopt(IP_TRANSPARENT)";
  return ENOTSUP;
}
int LocalAddress(int, SockAddr*, const char** syscall) {
  *syscall = "getsockname";
  return ENOTSUP;
}

#else

namespace {

int FromV4(const sockaddr_in& sin, SockAddr* out) {
  if (inet_ntop(AF_INET, &sin.sin_addr, out->address, sizeof(out->address)) == nullptr) {
    return errno;
  }
  out->port = ntohs(sin.sin_port);
  out->family = 4;
  return 0;
}

int FromV6(const sockaddr_in6& sin6, SockAddr* out) {
  if (IN6_IS_ADDR_V4MAPPED(&sin6.sin6_addr)) {
    sockaddr_in sin;
    std::memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = sin6.sin6_port;
    std::memcpy(&sin.sin_addr, &sin6.sin6_addr.s6_addr[12], 4);
    return FromV4(sin, out);
  }
  if (inet_ntop(AF_INET6, &sin6.sin6_addr, out->address, sizeof(out->address)) == nullptr) {
    return errno;
  }
  out->port = ntohs(sin6.sin6_port);
  out->family = 6;
  return 0;
}

int FromStorage(const sockaddr_storage& ss, SockAddr* out) {
  if (ss.ss_family == AF_INET) {
    return FromV4(*reinterpret_cast<const sockaddr_in*>(&ss), out);
  }
  if (ss.ss_family == AF_INET6) {
    return FromV6(*reinterpret_cast<const sockaddr_in6*>(&ss), out);
  }
  return EAFNOSUPPORT;
}

bool IsV4Mapped(const sockaddr_storage& ss) {
  return ss.ss_family == AF_INET6 &&
         IN6_IS_ADDR_V4MAPPED(&reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_addr);
}

}  // namespace

int LocalAddress(int fd, SockAddr* out, const char** syscall) {
  *syscall = "getsockname";
  sockaddr_storage ss;
  std::memset(&ss, 0, sizeof(ss));
  socklen_t len = sizeof(ss);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return errno;
  return FromStorage(ss, out);
}

int OriginalDst(int fd, SockAddr* out, const char** syscall) {
  *syscall = "getsockname";
  sockaddr_storage local;
  std::memset(&local, 0, sizeof(local));
  socklen_t len = sizeof(local);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) != 0) return errno;

  // An IPv4 connection accepted on a dual-stack (::) socket was NATed by the IPv4 table, and the
  // kernel answers SOL_IP options on such sockets from the IPv4 side.
  if (local.ss_family == AF_INET || IsV4Mapped(local)) {
    *syscall = "getsockopt(SO_ORIGINAL_DST)";
    sockaddr_in dst;
    std::memset(&dst, 0, sizeof(dst));
    socklen_t dlen = sizeof(dst);
    if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &dst, &dlen) != 0) return errno;
    return FromV4(dst, out);
  }
  if (local.ss_family == AF_INET6) {
    *syscall = "getsockopt(IP6T_SO_ORIGINAL_DST)";
    sockaddr_in6 dst;
    std::memset(&dst, 0, sizeof(dst));
    socklen_t dlen = sizeof(dst);
    if (getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &dst, &dlen) != 0) return errno;
    return FromV6(dst, out);
  }
  return EAFNOSUPPORT;
}

int SetTransparent(int fd, int family, const char** syscall) {
  const int on = 1;
  if (family == 4) {
    *syscall = "setsockopt(IP_TRANSPARENT)";
    if (setsockopt(fd, SOL_IP, IP_TRANSPARENT, &on, sizeof(on)) != 0) return errno;
    return 0;
  }
  if (family == 6) {
    *syscall = "setsockopt(IPV6_TRANSPARENT)";
    if (setsockopt(fd, SOL_IPV6, IPV6_TRANSPARENT, &on, sizeof(on)) != 0) return errno;
    return 0;
  }
  *syscall = "setsockopt";
  return EINVAL;
}

#endif  // KEEL_NATIVE_UNSUPPORTED_OS

}  // namespace keel
