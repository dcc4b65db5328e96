// keel_native errno naming: maps an errno value to its symbolic name ("ENOENT"), the `code` that
// Node puts on its own system errors, so addon errors look like any other fs/net error in JS.
// Must not: allocate, or depend on glibc-only helpers (strerrorname_np), so musl builds work too.
#ifndef KEEL_NATIVE_ERRNO_NAMES_H_
#define KEEL_NATIVE_ERRNO_NAMES_H_

namespace keel {

// The symbolic name, or nullptr for a value not in the table (the JS side then derives one).
const char* ErrnoName(int err);

}  // namespace keel

#endif  // KEEL_NATIVE_ERRNO_NAMES_H_
