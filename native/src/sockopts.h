// keel_native socket-option helpers: plain C++ over libc (no N-API here), so each one is a thin,
// testable wrapper around one or two syscalls that reports failure as an errno value.
// Must not: throw, allocate, block, close or otherwise change the fd beyond the one option asked for.
#ifndef KEEL_NATIVE_SOCKOPTS_H_
#define KEEL_NATIVE_SOCKOPTS_H_

namespace keel {

// An IP endpoint in the shape the JS side returns: textual address, host-order port, 4 or 6.
// IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are reported as plain IPv4 with family 4.
struct SockAddr {
  char address[64];
  int port;
  int family;
};

// Each returns 0 on success, or an errno value with *syscall naming the call that failed.

// Original destination of a connection redirected by iptables NAT (REDIRECT/DNAT):
// getsockopt(SOL_IP, SO_ORIGINAL_DST) for IPv4 (and IPv4-mapped) sockets,
// getsockopt(SOL_IPV6, IP6T_SO_ORIGINAL_DST) for IPv6 ones. The family comes from getsockname.
int OriginalDst(int fd, SockAddr* out, const char** syscall);

// setsockopt IP_TRANSPARENT (family 4) or IPV6_TRANSPARENT (family 6) to 1. Needs CAP_NET_ADMIN.
int SetTransparent(int fd, int family, const char** syscall);

// getsockname: in TPROXY mode the socket's local address is the original destination.
int LocalAddress(int fd, SockAddr* out, const char** syscall);

}  // namespace keel

#endif  // KEEL_NATIVE_SOCKOPTS_H_
