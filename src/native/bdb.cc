// Thin Node-API binding to the system Berkeley DB (the libdb that sendmail
// and Postfix link). Policy lives in TypeScript; this file only translates
// calls and errors.

#include <napi.h>

#include <db.h>
#include <errno.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <unordered_set>
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

// What a map value means, as src/map/values.ts says: all digits and at most ten
// of them is a time; more digits is invalid (no login wrote it); anything
// else (OK, empty) is permanent. Kept in step with classifyValue() there.
enum EntryKind { kDated, kInvalid, kPermanent };

EntryKind Classify(const DBT& v, double* time) {
  const uint8_t* p = static_cast<const uint8_t*>(v.data);
  if (v.size == 0) return kPermanent;
  double t = 0;
  for (u_int32_t i = 0; i < v.size; i++) {
    if (p[i] < '0' || p[i] > '9') return kPermanent;
    t = t * 10 + (p[i] - '0');
  }
  if (v.size > 10) return kInvalid;
  *time = t;
  return kDated;
}

void PackBytes(std::vector<uint8_t>& out, const void* data, uint32_t size) {
  const uint8_t* s = reinterpret_cast<const uint8_t*>(&size);
  out.insert(out.end(), s, s + 4);
  out.insert(out.end(), static_cast<const uint8_t*>(data), static_cast<const uint8_t*>(data) + size);
}

// As Scan() packs a record: [u32le keyLen][u32le valLen][key][value].
void PackRecord(std::vector<uint8_t>& out, const DBT& key, const DBT& val) {
  uint32_t sizes[2] = {key.size, val.size};
  const uint8_t* s = reinterpret_cast<const uint8_t*>(sizes);
  out.insert(out.end(), s, s + sizeof sizes);
  out.insert(out.end(), static_cast<uint8_t*>(key.data), static_cast<uint8_t*>(key.data) + key.size);
  out.insert(out.end(), static_cast<uint8_t*>(val.data), static_cast<uint8_t*>(val.data) + val.size);
}

// A one-key entry of a removeExpired() pack.
void PackEntry(std::vector<uint8_t>& out, const DBT& key, const DBT& val) {
  uint32_t one = 1;
  const uint8_t* s = reinterpret_cast<const uint8_t*>(&one);
  out.insert(out.end(), s, s + 4);
  PackBytes(out, val.data, val.size);
  PackBytes(out, key.data, key.size);
}

// An entry of several keys, as packEntry() in src/native.ts packs it.
void PackKeys(std::vector<uint8_t>& out, const std::vector<std::string>& keys, const std::string& value) {
  uint32_t n = static_cast<uint32_t>(keys.size());
  const uint8_t* s = reinterpret_cast<const uint8_t*>(&n);
  out.insert(out.end(), s, s + 4);
  PackBytes(out, value.data(), static_cast<uint32_t>(value.size()));
  for (const std::string& k : keys) PackBytes(out, k.data(), static_cast<uint32_t>(k.size()));
}

// The two keys of an IPv6 login as src/address.ts writes them: sendmail's
// "ipv6:" and eight %x groups, and the RFC 5952 text (compressIPv6()).
void AppendHex(std::string& out, uint16_t v) {
  static const char kDigits[] = "0123456789abcdef";
  char buf[4];
  int n = 0;
  do {
    buf[n++] = kDigits[v & 15];
    v >>= 4;
  } while (v != 0);
  while (n > 0) out += buf[--n];
}

std::string SendmailKey(const uint16_t g[8]) {
  std::string out = "ipv6:";
  for (int i = 0; i < 8; i++) {
    if (i > 0) out += ':';
    AppendHex(out, g[i]);
  }
  return out;
}

std::string CompressedKey(const uint16_t g[8]) {
  int bestStart = -1, bestLen = 1;
  for (int i = 0; i < 8;) {
    if (g[i] != 0) {
      i++;
      continue;
    }
    int j = i;
    while (j < 8 && g[j] == 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  std::string out;
  for (int i = 0; i < 8; i++) {
    if (i == bestStart) {
      out += "::";
      i += bestLen - 1;
      continue;
    }
    if (!out.empty() && out.back() != ':') out += ':';
    AppendHex(out, g[i]);
  }
  return out;
}

// The IPv6 address a key with ':' stands for, as 16 bytes, as
// addressOfKey() in src/address.ts reads it: the text, or "ipv6:" and
// eight groups, of an address parseClientAddress() accepts as IPv6 (any
// case, leading zeros, "::" anywhere it fits, a trailing dotted quad
// without leading zeros, as inet_pton reads them too). Empty for any
// other key (a v4-mapped one is an IPv4 address): the caller decides it.
struct Addr16 {
  uint8_t b[16];
  bool operator==(const Addr16& o) const { return std::memcmp(b, o.b, 16) == 0; }
};

bool PairedAddress(const uint8_t* key, u_int32_t size, Addr16* addr) {
  static const char kPrefix[] = "ipv6:";
  bool prefixed = size > 5 && std::memcmp(key, kPrefix, 5) == 0;
  const char* text = reinterpret_cast<const char*>(key) + (prefixed ? 5 : 0);
  size_t len = size - (prefixed ? 5 : 0);
  if (len > 45) return false;
  if (prefixed && std::count(text, text + len, ':') != 7) return false;
  char buf[46];
  std::memcpy(buf, text, len);
  buf[len] = 0;
  if (inet_pton(AF_INET6, buf, addr->b) != 1) return false;
  uint16_t g[8];
  for (int i = 0; i < 8; i++) g[i] = static_cast<uint16_t>(addr->b[2 * i] << 8 | addr->b[2 * i + 1]);
  bool zero5 = g[0] == 0 && g[1] == 0 && g[2] == 0 && g[3] == 0 && g[4] == 0;
  if (zero5 && g[5] == 0xffff) return false;  // v4-mapped: an IPv4 address
  if (zero5 && g[5] == 0 && !(g[6] == 0 && g[7] == 1)) return false;  // unspecified, IPv4-compatible
  if (g[0] >> 8 == 0xff) return false;  // multicast
  return true;
}

// A key of an IPv6 address seen by the walk, its value decided already;
// the key and value bytes are in one arena. Sorted by address afterwards,
// so that an address's keys come together without a hash table lookup
// per key (each a cache miss on a big map).
struct Seen {
  Addr16 addr;
  double time;
  size_t off;
  uint32_t klen, vlen;
  EntryKind kind;
};

class Database : public Napi::ObjectWrap<Database> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Database", {
      InstanceAccessor<&Database::Type>("type"),
      InstanceMethod<&Database::Get>("get"),
      InstanceMethod<&Database::Put>("put"),
      InstanceMethod<&Database::Del>("del"),
      InstanceMethod<&Database::Scan>("scan"),
      InstanceMethod<&Database::SweepScan>("sweepScan"),
      InstanceMethod<&Database::RemoveExpired>("removeExpired"),
      InstanceMethod<&Database::Close>("close"),
    });
  }

  // new Database(path, type: 'hash'|'btree'|'unknown', readonly, create, mode, cacheBytes?)
  explicit Database(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Database>(info) {
    Napi::Env env = info.Env();
    path_ = info[0].As<Napi::String>().Utf8Value();
    std::string type = info[1].As<Napi::String>().Utf8Value();
    bool readonly = info[2].As<Napi::Boolean>().Value();
    bool create = info[3].As<Napi::Boolean>().Value();
    int mode = info[4].As<Napi::Number>().Int32Value();
    double cacheBytes = info.Length() > 5 && info[5].IsNumber() ? info[5].As<Napi::Number>().DoubleValue() : 0;

    DBTYPE dbtype = DB_UNKNOWN;
    if (type == "hash") dbtype = DB_HASH;
    else if (type == "btree") dbtype = DB_BTREE;
    else if (type != "unknown") throw Napi::TypeError::New(env, "type must be hash, btree or unknown");

    int rc = db_create(&db_, nullptr, 0);
    if (rc != 0) throw MakeError(env, "db_create", path_, rc);
    db_->set_errcall(db_, CaptureDbMessage);
    // libdb's own cache is 256 KB: enough to walk a file in order, not to
    // reach both keys of many IPv6 entries (in different pages) without
    // writing out and reading back pages over and over.
    if (cacheBytes > 0) {
      rc = db_->set_cachesize(db_, static_cast<u_int32_t>(cacheBytes / 1073741824.0),
                              static_cast<u_int32_t>(static_cast<uint64_t>(cacheBytes) % 1073741824u), 1);
      if (rc != 0) {
        db_->close(db_, DB_NOSYNC);
        db_ = nullptr;
        throw MakeError(env, "set_cachesize", path_, rc);
      }
    }
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

  // scan(max, restart): the next records of a whole-database walk, packed
  // into one Buffer as repeated [u32le keyLen][u32le valLen][key][value], or
  // null at the end; restart begins a new walk. One Buffer per batch instead
  // of two per record keeps a sweep of a million entries close to C speed.
  Napi::Value Scan(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint32_t max = info[0].As<Napi::Number>().Uint32Value();
    DB* db = Handle(env);
    if (info.Length() > 1 && info[1].ToBoolean().Value()) {
      if (cursor_ != nullptr) cursor_->close(cursor_);
      cursor_ = nullptr;
      scanDone_ = false;
    }
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
      PackRecord(out, key, val);
      n++;
    }
    if (n == 0) return env.Null();
    return Napi::Buffer<uint8_t>::Copy(env, out.data(), out.size());
  }

  // sweepScan(cutoff, now, skip, list): one walk of the whole database
  // deciding its entries as src/map/relay-map.ts's groupEntries() and src/map/values.ts would,
  // so that a sweep of a million entries makes no JS object per record: a
  // key without ':' (an IPv4 address, or a key that is no address) is its
  // own entry; the keys of one IPv6 address (PairedAddress) are one entry.
  // The keys in `skip` are left out; any other key with ':' (v4-mapped, no
  // client address, no address at all) comes back as a record for the
  // caller to decide. Returns { expired: entry pack (see RemoveExpired) of
  // the expired entries, an IPv6 one with both its keys, each with its
  // value (the newest), expiredCount, kept, permanent, colon: the records
  // handed back, future: a record for each kept entry dated after `now`
  // (only with `list`; futureCount always), nulKey: a key ends with NUL
  // (the walk stops there) }. Records are packed as Scan() packs them.
  Napi::Value SweepScan(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    double cutoff = info[0].As<Napi::Number>().DoubleValue();
    double now = info[1].As<Napi::Number>().DoubleValue();
    Napi::Array skipList = info[2].As<Napi::Array>();
    bool list = info[3].ToBoolean().Value();
    std::unordered_set<std::string> skip;
    for (uint32_t i = 0; i < skipList.Length(); i++) {
      DBT k = BufferDbt(skipList.Get(i), "skip key");
      skip.emplace(static_cast<const char*>(k.data), k.size);
    }
    DB* db = Handle(env);
    DBC* c = nullptr;
    int rc = db->cursor(db, nullptr, &c, 0);
    if (rc != 0) throw MakeError(env, "cursor", path_, rc);
    std::vector<uint8_t> expired, colon, future;
    double expiredCount = 0, kept = 0, permanent = 0, futureCount = 0;
    bool nulKey = false;
    std::vector<char> arena;
    std::vector<Seen> seen;
    for (;;) {
      DBT key = EmptyDbt();
      DBT val = EmptyDbt();
      rc = c->get(c, &key, &val, DB_NEXT);
      if (rc == DB_NOTFOUND) break;
      if (rc != 0) {
        c->close(c);
        throw MakeError(env, "cursor get", path_, rc);
      }
      const uint8_t* k = static_cast<const uint8_t*>(key.data);
      if (key.size > 0 && k[key.size - 1] == 0) {
        nulKey = true;
        break;
      }
      if (!skip.empty() && skip.count(std::string(reinterpret_cast<const char*>(k), key.size)) > 0) continue;
      if (std::memchr(k, ':', key.size) != nullptr) {
        Addr16 addr;
        if (!PairedAddress(k, key.size, &addr)) {
          PackRecord(colon, key, val);
          continue;
        }
        double t = 0;
        EntryKind kind = Classify(val, &t);
        seen.push_back({addr, t, arena.size(), key.size, val.size, kind});
        arena.insert(arena.end(), reinterpret_cast<const char*>(k), reinterpret_cast<const char*>(k) + key.size);
        arena.insert(arena.end(), static_cast<const char*>(val.data), static_cast<const char*>(val.data) + val.size);
        continue;
      }
      double t;
      switch (Classify(val, &t)) {
        case kPermanent:
          permanent++;
          break;
        case kInvalid:
          PackEntry(expired, key, val);
          expiredCount++;
          break;
        case kDated:
          if (t < cutoff) {
            PackEntry(expired, key, val);
            expiredCount++;
          } else {
            kept++;
            if (t > now) {
              futureCount++;
              if (list) PackRecord(future, key, val);
            }
          }
          break;
      }
    }
    c->close(c);
    // An IPv6 address's keys as groupEntries() in src/map/relay-map.ts makes them one
    // entry: permanent if one key is, else the newer time, invalid (time 0)
    // only when every key is; an expired one goes with both keys, even if
    // the walk saw one.
    // Each address's keys in the order the walk saw them.
    std::sort(seen.begin(), seen.end(), [](const Seen& a, const Seen& b) {
      int c = std::memcmp(a.addr.b, b.addr.b, 16);
      return c < 0 || (c == 0 && a.off < b.off);
    });
    for (size_t from = 0, to; from < seen.size(); from = to) {
      const Addr16& addr = seen[from].addr;
      to = from + 1;
      while (to < seen.size() && seen[to].addr == addr) to++;
      bool isPermanent = false, allInvalid = true;
      double newest = 0;
      const Seen* newestAt = &seen[from];
      for (size_t i = from; i < to; i++) {
        const Seen& r = seen[i];
        if (r.kind == kPermanent) isPermanent = true;
        if (r.kind != kDated) continue;
        if (allInvalid || r.time > newest) {
          newest = r.time;
          newestAt = &r;
        }
        allInvalid = false;
      }
      DBT newestKey = EmptyDbt(), newestValue = EmptyDbt();
      newestKey.data = arena.data() + newestAt->off;
      newestKey.size = newestAt->klen;
      newestValue.data = arena.data() + newestAt->off + newestAt->klen;
      newestValue.size = newestAt->vlen;
      if (isPermanent) {
        permanent++;
      } else if (allInvalid || newest < cutoff) {
        uint16_t g[8];
        for (int i = 0; i < 8; i++) g[i] = static_cast<uint16_t>(addr.b[2 * i] << 8 | addr.b[2 * i + 1]);
        std::vector<std::string> keys;
        for (size_t i = from; i < to; i++) keys.emplace_back(arena.data() + seen[i].off, seen[i].klen);
        for (std::string k : {SendmailKey(g), CompressedKey(g)}) {
          if (std::find(keys.begin(), keys.end(), k) == keys.end()) keys.push_back(k);
        }
        PackKeys(expired, keys, std::string(static_cast<const char*>(newestValue.data), newestValue.size));
        expiredCount++;
      } else {
        kept++;
        if (newest > now) {
          futureCount++;
          if (list) PackRecord(future, newestKey, newestValue);
        }
      }
    }
    Napi::Object out = Napi::Object::New(env);
    out.Set("expired", Napi::Buffer<uint8_t>::Copy(env, expired.data(), expired.size()));
    out.Set("expiredCount", Napi::Number::New(env, expiredCount));
    out.Set("kept", Napi::Number::New(env, kept));
    out.Set("permanent", Napi::Number::New(env, permanent));
    out.Set("colon", Napi::Buffer<uint8_t>::Copy(env, colon.data(), colon.size()));
    out.Set("future", Napi::Buffer<uint8_t>::Copy(env, future.data(), future.size()));
    out.Set("futureCount", Napi::Number::New(env, futureCount));
    out.Set("nulKey", Napi::Boolean::New(env, nulKey));
    return out;
  }

  // removeExpired(pack, offset, max, cutoff, status, index): removes, of
  // the entries packed from byte `offset` on (at most `max` of them), each
  // whose keys are all still expired (absent, invalid, or dated before
  // `cutoff`) and not all absent: a login applied since the pack was made
  // keeps its entry. An entry is [u32le keyCount][u32le valueLen][value]
  // then keyCount times [u32le keyLen][key]; the value is the caller's
  // (what it lists) and not looked at here. Writes each entry's fate at
  // status[index + i] (1 removed, 2 kept, 3 already gone) when status is
  // a Buffer. Returns { offset: where the next call goes on (pack.length
  // when done), entries, removed, kept }.
  Napi::Value RemoveExpired(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsBuffer()) throw Napi::TypeError::New(env, "pack must be a Buffer");
    Napi::Buffer<uint8_t> packBuf = info[0].As<Napi::Buffer<uint8_t>>();
    const uint8_t* pack = packBuf.Data();
    size_t len = packBuf.Length();
    size_t off = static_cast<size_t>(info[1].As<Napi::Number>().DoubleValue());
    uint32_t max = info[2].As<Napi::Number>().Uint32Value();
    double cutoff = info[3].As<Napi::Number>().DoubleValue();
    uint8_t* status = nullptr;
    size_t statusLen = 0;
    if (info[4].IsBuffer()) {
      status = info[4].As<Napi::Buffer<uint8_t>>().Data();
      statusLen = info[4].As<Napi::Buffer<uint8_t>>().Length();
    }
    size_t index = static_cast<size_t>(info[5].As<Napi::Number>().DoubleValue());
    DB* db = Handle(env);
    DBC* c = nullptr;
    int rc = db->cursor(db, nullptr, &c, 0);
    if (rc != 0) throw MakeError(env, "cursor", path_, rc);
    auto fail = [&](const char* op, int err) {
      c->close(c);
      return MakeError(env, op, path_, err);
    };
    auto u32 = [&](size_t at) {
      if (at + 4 > len) {
        c->close(c);
        throw Napi::RangeError::New(env, "removeExpired: malformed pack");
      }
      uint32_t v;
      std::memcpy(&v, pack + at, 4);
      return v;
    };
    uint32_t entries = 0;
    double removed = 0, kept = 0;
    std::vector<DBT> keys;
    while (off < len && entries < max) {
      uint32_t nkeys = u32(off);
      uint32_t vlen = u32(off + 4);
      size_t at = off + 8 + vlen;
      keys.clear();
      for (uint32_t i = 0; i < nkeys; i++) {
        uint32_t klen = u32(at);
        if (at + 4 + klen > len) {
          c->close(c);
          throw Napi::RangeError::New(env, "removeExpired: malformed pack");
        }
        DBT k = EmptyDbt();
        k.data = const_cast<uint8_t*>(pack + at + 4);
        k.size = klen;
        keys.push_back(k);
        at += 4 + klen;
      }
      off = at;
      // Looked up first, all of them: an entry goes only when every key may.
      bool found = false, still = true;
      for (DBT& k : keys) {
        DBT key = k;
        DBT val = EmptyDbt();
        rc = c->get(c, &key, &val, DB_SET);
        if (rc == DB_NOTFOUND || rc == DB_KEYEMPTY) continue;
        if (rc != 0) throw fail("cursor get", rc);
        found = true;
        double t;
        EntryKind kind = Classify(val, &t);
        if (kind == kPermanent || (kind == kDated && t >= cutoff)) still = false;
      }
      uint8_t fate;
      if (!found) {
        fate = 3;
      } else if (!still) {
        fate = 2;
        kept++;
      } else {
        // One key: the cursor is still on it. Otherwise each key again.
        for (DBT& k : keys) {
          if (keys.size() > 1) {
            DBT key = k;
            DBT val = EmptyDbt();
            rc = c->get(c, &key, &val, DB_SET);
            if (rc == DB_NOTFOUND || rc == DB_KEYEMPTY) continue;
            if (rc != 0) throw fail("cursor get", rc);
          }
          rc = c->del(c, 0);
          if (rc != 0) throw fail("cursor del", rc);
        }
        fate = 1;
        removed++;
      }
      if (status != nullptr && index + entries < statusLen) status[index + entries] = fate;
      entries++;
    }
    c->close(c);
    Napi::Object out = Napi::Object::New(env);
    out.Set("offset", Napi::Number::New(env, static_cast<double>(off)));
    out.Set("entries", Napi::Number::New(env, entries));
    out.Set("removed", Napi::Number::New(env, removed));
    out.Set("kept", Napi::Number::New(env, kept));
    return out;
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

}  // namespace

// For the addon's registration (addon.cc).
Napi::Function DatabaseClass(Napi::Env env) { return Database::Define(env); }

std::string LibdbVersion() { return db_version(nullptr, nullptr, nullptr); }
