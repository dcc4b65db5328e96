# keel_native: the N-API addon behind src/native/index.ts (original destination of a redirected
# connection, IP_TRANSPARENT, getsockname, peek: MSG_PEEK on an accepted socket via uv_poll, and
# the pool/LB bookkeeping functions measured against their TypeScript twins).
# Built by scripts/build-native.js with node-gyp.
# Must not: link any library beyond libc, need a network fetch to build (headers come from nodedir),
# or enable C++ exceptions (node-addon-api runs with NODE_ADDON_API_DISABLE_CPP_EXCEPTIONS here).
{
  "targets": [
    {
      "target_name": "keel_native",
      "sources": [
        "src/addon.cc", "src/errno_names.cc", "src/js_errors.cc", "src/peek.cc", "src/pool.cc", "src/sockopts.cc"
      ],
      "dependencies": [
        "<!(node -p \"require('node-addon-api').targets\"):node_addon_api"
      ],
      # NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS: while a worker is being terminated JS can no
      # longer run, napi_throw fails, and node-addon-api would make that a fatal error.
      "defines": ["NAPI_VERSION=8", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra"],
      "conditions": [
        ["OS!='linux'", {
          "defines": ["KEEL_NATIVE_UNSUPPORTED_OS=1"]
        }]
      ]
    }
  ]
}
