// The native addon's one registration: what each file of src/native gives
// the TypeScript face (src/native.ts).

#include <napi.h>

#include <string>

Napi::Function DatabaseClass(Napi::Env env);   // bdb.cc
std::string LibdbVersion();                    // bdb.cc
Napi::Value Flock(const Napi::CallbackInfo& info);            // flock.cc
Napi::Value Exchange(const Napi::CallbackInfo& info);         // exchange.cc
Napi::Value DropPrivileges(const Napi::CallbackInfo& info);   // privilege.cc
Napi::Value PeerCredentials(const Napi::CallbackInfo& info);  // peer.cc

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("Database", DatabaseClass(env));
  exports.Set("exchange", Napi::Function::New(env, Exchange, "exchange"));
  exports.Set("flock", Napi::Function::New(env, Flock, "flock"));
  exports.Set("dropPrivileges", Napi::Function::New(env, DropPrivileges, "dropPrivileges"));
  exports.Set("peerCredentials", Napi::Function::New(env, PeerCredentials, "peerCredentials"));
  exports.Set("libdbVersion", Napi::String::New(env, LibdbVersion()));
  return exports;
}

}  // namespace

NODE_API_MODULE(poprelay_native, Init)
