{
  "targets": [
    {
      "target_name": "poprelay_native",
      "sources": [
        "src/native/addon.cc",
        "src/native/bdb.cc",
        "src/native/flock.cc",
        "src/native/exchange.cc",
        "src/native/privilege.cc",
        "src/native/peer.cc"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")"
      ],
      "defines": [
        "NAPI_VERSION=8",
        "NODE_ADDON_API_DISABLE_DEPRECATED",
        "NAPI_CPP_EXCEPTIONS"
      ],
      "cflags_cc": [
        "-std=c++17",
        "-fexceptions",
        "-Wall",
        "-Wextra"
      ],
      "cflags_cc!": [
        "-fno-exceptions"
      ],
      "libraries": [
        "-ldb"
      ]
    },
    {
      "target_name": "poprelay-login",
      "type": "executable",
      "sources": [
        "src/front/poprelay-login.c"
      ],
      "cflags": [
        "-std=c11",
        "-O2",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-D_GNU_SOURCE"
      ]
    }
  ]
}
