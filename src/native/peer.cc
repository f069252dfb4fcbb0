// Who is at the other end of a UNIX socket (SO_PEERCRED), which Node does
// not read: poprelayd limits connections per peer uid on its UNIX sockets,
// as it does per address on TCP.

#include <napi.h>

#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include <string>

Napi::Value PeerCredentials(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    int err = errno;
    Napi::Error e = Napi::Error::New(env, std::string("getsockopt SO_PEERCRED: ") + strerror(err));
    e.Set("errno", Napi::Number::New(env, err));
    throw e;
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("pid", Napi::Number::New(env, cred.pid));
  out.Set("uid", Napi::Number::New(env, cred.uid));
  out.Set("gid", Napi::Number::New(env, cred.gid));
  return out;
}
