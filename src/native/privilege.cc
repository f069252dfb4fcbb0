// Root's commands take the map owner's rights here rather than through
// process.setuid(): Node refuses those calls outright when it is linked
// against a libuv that might use io_uring (CVE-2024-22017: a ring keeps the
// credentials it was made with), which is how Debian 13 builds nodejs. The
// TypeScript side refuses when io_uring was asked for (UV_USE_IO_URING=1);
// libuv 1.49 and later leave it off otherwise. glibc applies each call to
// every thread of the process.

#include <napi.h>

#include <errno.h>
#include <grp.h>
#include <string.h>
#include <unistd.h>

#include <string>

Napi::Value DropPrivileges(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uid_t uid = info[0].As<Napi::Number>().Uint32Value();
  gid_t gid = info[1].As<Napi::Number>().Uint32Value();
  const char* step = nullptr;
  if (setgroups(0, nullptr) != 0) step = "setgroups";
  else if (setresgid(gid, gid, gid) != 0) step = "setresgid";
  else if (setresuid(uid, uid, uid) != 0) step = "setresuid";
  if (step != nullptr) {
    int err = errno;
    Napi::Error e = Napi::Error::New(env, std::string(step) + ": " + strerror(err));
    e.Set("errno", Napi::Number::New(env, err));
    throw e;
  }
  // All three ids changed, so root is not to be had back.
  uid_t r, e, s;
  if (getresuid(&r, &e, &s) != 0 || r != uid || e != uid || s != uid || (uid != 0 && setuid(0) == 0)) {
    throw Napi::Error::New(env, "setresuid: the user ids did not all change");
  }
  return env.Undefined();
}
