// Thin Node-API binding to the system Berkeley DB (the libdb that sendmail
// and Postfix link) plus flock(2), which Node core lacks. Policy lives in
// TypeScript; this file only translates calls and errors.

#include <napi.h>

#include <db.h>
#include <errno.h>
#include <sys/file.h>
#include <time.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace {

// libdb passes its detailed diagnostics ("unexpected file type or format")
// only to an error callback, not through return codes. All calls run on the
// JS thread, so one slot is enough.
std::string lastDbMessage;

void CaptureDbMessage(const DB_ENV*, const char*, const char* msg) {
  lastDbMessage = msg != nullptr ? msg : "";
}

Napi::Error MakeError(Napi::Env env, const std::string& op,
                      const std::string& path, int err) {
  std::string detail = lastDbMessage.empty() ? db_strerror(err) : lastDbMessage;
  lastDbMessage.clear();
  Napi::Error e = Napi::Error::New(env, op + " " + path + ": " + detail);
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("op", Napi::String::New(env, op));
  e.Set("path", Napi::String::New(env, path));
  e.Set("detail", Napi::String::New(env, detail));
  return e;
}

DBT BufferDbt(const Napi::Value& v, const char* what) {
  if (!v.IsBuffer()) {
    throw Napi::TypeError::New(v.Env(), std::string(what) + " must be a Buffer");
  }
  Napi::Buffer<uint8_t> b = v.As<Napi::Buffer<uint8_t>>();
  DBT d;
  std::memset(&d, 0, sizeof d);
  d.data = b.Data();
  d.size = static_cast<u_int32_t>(b.Length());
  return d;
}

DBT EmptyDbt() {
  DBT d;
  std::memset(&d, 0, sizeof d);
  return d;
}

const char* TypeName(DBTYPE t) {
  switch (t) {
    case DB_HASH: return "hash";
    case DB_BTREE: return "btree";
    case DB_RECNO: return "recno";
    case DB_QUEUE: return "queue";
    case DB_HEAP: return "heap";
    default: return "unknown";
  }
}

class Database : public Napi::ObjectWrap<Database> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Database", {
      InstanceAccessor<&Database::Type>("type"),
      InstanceMethod<&Database::Get>("get"),
      InstanceMethod<&Database::Put>("put"),
      InstanceMethod<&Database::Del>("del"),
      InstanceMethod<&Database::Scan>("scan"),
      InstanceMethod<&Database::Sync>("sync"),
      InstanceMethod<&Database::Close>("close"),
    });
  }

  // new Database(path, type: 'hash'|'btree'|'unknown', readonly, create, mode)
  explicit Database(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Database>(info) {
    Napi::Env env = info.Env();
    path_ = info[0].As<Napi::String>().Utf8Value();
    std::string type = info[1].As<Napi::String>().Utf8Value();
    bool readonly = info[2].As<Napi::Boolean>().Value();
    bool create = info[3].As<Napi::Boolean>().Value();
    int mode = info[4].As<Napi::Number>().Int32Value();

    DBTYPE dbtype = DB_UNKNOWN;
    if (type == "hash") dbtype = DB_HASH;
    else if (type == "btree") dbtype = DB_BTREE;
    else if (type != "unknown") throw Napi::TypeError::New(env, "type must be hash, btree or unknown");

    int rc = db_create(&db_, nullptr, 0);
    if (rc != 0) throw MakeError(env, "db_create", path_, rc);
    db_->set_errcall(db_, CaptureDbMessage);
    u_int32_t flags = (readonly ? DB_RDONLY : 0) | (create ? DB_CREATE : 0);
    lastDbMessage.clear();
    rc = db_->open(db_, nullptr, path_.c_str(), nullptr, dbtype, flags, mode);
    if (rc != 0) {
      db_->close(db_, DB_NOSYNC);
      db_ = nullptr;
      throw MakeError(env, "open", path_, rc);
    }
  }

  ~Database() override { Release(DB_NOSYNC); }

 private:
  DB* Handle(Napi::Env env) {
    if (db_ == nullptr) throw Napi::Error::New(env, "database " + path_ + " is closed");
    return db_;
  }

  // Returns the libdb result of closing, 0 when nothing was open.
  int Release(u_int32_t flags) {
    int rc = 0;
    if (cursor_ != nullptr) {
      cursor_->close(cursor_);
      cursor_ = nullptr;
    }
    if (db_ != nullptr) {
      rc = db_->close(db_, flags);
      db_ = nullptr;
    }
    return rc;
  }

  Napi::Value Type(const Napi::CallbackInfo& info) {
    DBTYPE t;
    int rc = Handle(info.Env())->get_type(db_, &t);
    if (rc != 0) throw MakeError(info.Env(), "get_type", path_, rc);
    return Napi::String::New(info.Env(), TypeName(t));
  }

  Napi::Value Get(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    DBT key = BufferDbt(info[0], "key");
    DBT val = EmptyDbt();
    int rc = Handle(env)->get(db_, nullptr, &key, &val, 0);
    if (rc == DB_NOTFOUND || rc == DB_KEYEMPTY) return env.Null();
    if (rc != 0) throw MakeError(env, "get", path_, rc);
    return Napi::Buffer<uint8_t>::Copy(env, static_cast<uint8_t*>(val.data), val.size);
  }

  void Put(const Napi::CallbackInfo& info) {
    DBT key = BufferDbt(info[0], "key");
    DBT val = BufferDbt(info[1], "value");
    int rc = Handle(info.Env())->put(db_, nullptr, &key, &val, 0);
    if (rc != 0) throw MakeError(info.Env(), "put", path_, rc);
  }

  Napi::Value Del(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    DBT key = BufferDbt(info[0], "key");
    int rc = Handle(env)->del(db_, nullptr, &key, 0);
    if (rc == DB_NOTFOUND || rc == DB_KEYEMPTY) return Napi::Boolean::New(env, false);
    if (rc != 0) throw MakeError(env, "del", path_, rc);
    return Napi::Boolean::New(env, true);
  }

  // scan(max): the next records of a whole-database walk, packed into one
  // Buffer as repeated [u32le keyLen][u32le valLen][key][value], or null at
  // the end. One Buffer per batch instead of two per record keeps a sweep of
  // a million entries close to C speed.
  Napi::Value Scan(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint32_t max = info[0].As<Napi::Number>().Uint32Value();
    DB* db = Handle(env);
    if (cursor_ == nullptr) {
      if (scanDone_) return env.Null();
      int rc = db->cursor(db, nullptr, &cursor_, 0);
      if (rc != 0) throw MakeError(env, "cursor", path_, rc);
    }
    std::vector<uint8_t> out;
    uint32_t n = 0;
    while (n < max) {
      DBT key = EmptyDbt();
      DBT val = EmptyDbt();
      int rc = cursor_->get(cursor_, &key, &val, DB_NEXT);
      if (rc == DB_NOTFOUND) {
        cursor_->close(cursor_);
        cursor_ = nullptr;
        scanDone_ = true;
        break;
      }
      if (rc != 0) throw MakeError(env, "cursor get", path_, rc);
      uint32_t sizes[2] = {key.size, val.size};
      const uint8_t* s = reinterpret_cast<const uint8_t*>(sizes);
      out.insert(out.end(), s, s + sizeof sizes);
      out.insert(out.end(), static_cast<uint8_t*>(key.data), static_cast<uint8_t*>(key.data) + key.size);
      out.insert(out.end(), static_cast<uint8_t*>(val.data), static_cast<uint8_t*>(val.data) + val.size);
      n++;
    }
    if (n == 0) return env.Null();
    return Napi::Buffer<uint8_t>::Copy(env, out.data(), out.size());
  }

  void Sync(const Napi::CallbackInfo& info) {
    int rc = Handle(info.Env())->sync(db_, 0);
    if (rc != 0) throw MakeError(info.Env(), "sync", path_, rc);
  }

  // close() flushes dirty pages and fsyncs; a failure here means the file
  // on disk may be incomplete, so it must reach the caller.
  void Close(const Napi::CallbackInfo& info) {
    int rc = Release(0);
    if (rc != 0) throw MakeError(info.Env(), "close", path_, rc);
  }

  DB* db_ = nullptr;
  DBC* cursor_ = nullptr;
  bool scanDone_ = false;
  std::string path_;
};

double MonotonicMs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

// flock(fd, 'sh'|'ex'|'un', timeoutMs) -> true when held (or released),
// false when the lock was still taken by another holder at the deadline.
// A blocking flock cannot be given a deadline without signals, so this polls.
// The backoff stops at 1 ms: a writer holds the lock for one copy (ms) and
// another writer retakes it within ~0.1 ms of a release, so a poller that
// slept longer would starve behind back-to-back writers (measured: a sweep
// polling every 20 ms timed out behind a process recording continuously).
Napi::Value Flock(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  std::string op = info[1].As<Napi::String>().Utf8Value();
  double timeoutMs = info[2].As<Napi::Number>().DoubleValue();
  int how;
  if (op == "sh") how = LOCK_SH;
  else if (op == "ex") how = LOCK_EX;
  else if (op == "un") how = LOCK_UN;
  else throw Napi::TypeError::New(env, "flock operation must be sh, ex or un");

  double deadline = MonotonicMs() + timeoutMs;
  long sleepUs = 100;
  for (;;) {
    if (flock(fd, how | (how == LOCK_UN ? 0 : LOCK_NB)) == 0) return Napi::Boolean::New(env, true);
    int err = errno;
    if (err == EINTR) continue;
    if (err != EWOULDBLOCK) {
      Napi::Error e = Napi::Error::New(env, std::string("flock: ") + strerror(err));
      e.Set("errno", Napi::Number::New(env, err));
      throw e;
    }
    double left = deadline - MonotonicMs();
    if (left <= 0) return Napi::Boolean::New(env, false);
    long us = sleepUs < left * 1000 ? sleepUs : static_cast<long>(left * 1000) + 1;
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, nullptr);
    if (sleepUs < 1000) sleepUs *= 2;
  }
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("Database", Database::Define(env));
  exports.Set("flock", Napi::Function::New(env, Flock, "flock"));
  exports.Set("libdbVersion", Napi::String::New(env, db_version(nullptr, nullptr, nullptr)));
  return exports;
}

}  // namespace

NODE_API_MODULE(poprelay_bdb, Init)
