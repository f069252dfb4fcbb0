// One request and its whole answer over a stream socket, blocking, within a
// deadline: the hook's exchange with the shared engine (the caller ends its
// request with QUIT, so the answer ends where the engine closes). Done here
// because loading node:net costs a short-lived process about a tenth of its
// start-up; the protocol stays in TypeScript (src/engine/resp.ts).

#include <napi.h>

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cstdint>
#include <string>
#include <vector>

namespace {

constexpr size_t kMaxAnswer = 1 << 20;

double NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

Napi::Error ExchangeError(Napi::Env env, int err, const char* phase) {
  Napi::Error e = Napi::Error::New(env, std::string(phase) + ": " + strerror(err));
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("phase", Napi::String::New(env, phase));
  return e;
}

// Waits for `events` on fd until the deadline; a last look with no wait
// when the deadline has passed, so that a process the CPU kept waiting does
// not count that wait against the peer. False when nothing came in time.
bool WaitFor(int fd, short events, double deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    double left = deadline - NowMs();
    int r = poll(&p, 1, left > 0 ? static_cast<int>(left) + 1 : 0);
    if (r > 0) return true;
    if (r == 0) return false;
    if (errno != EINTR) return true;  // let the next call report it
  }
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

}  // namespace

// exchange(target, port, request, timeoutMs) -> Buffer: connects to target
// (a UNIX socket path when port is 0, else a host name or address), sends
// request, and reads until the peer closes. Throws with errno and phase
// ("connect" or "exchange"); ETIMEDOUT when the deadline passed.
Napi::Value Exchange(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string target = info[0].As<Napi::String>().Utf8Value();
  int port = info[1].As<Napi::Number>().Int32Value();
  Napi::Buffer<uint8_t> request = info[2].As<Napi::Buffer<uint8_t>>();
  double deadline = NowMs() + info[3].As<Napi::Number>().DoubleValue();

  sockaddr_storage addr{};
  socklen_t addrLen = 0;
  if (port == 0) {
    sockaddr_un* un = reinterpret_cast<sockaddr_un*>(&addr);
    if (target.size() >= sizeof un->sun_path) throw ExchangeError(env, ENAMETOOLONG, "connect");
    un->sun_family = AF_UNIX;
    memcpy(un->sun_path, target.c_str(), target.size() + 1);
    addrLen = sizeof(sockaddr_un);
  } else {
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    addrinfo* found = nullptr;
    int rc = getaddrinfo(target.c_str(), std::to_string(port).c_str(), &hints, &found);
    if (rc != 0 || found == nullptr) {
      Napi::Error e = Napi::Error::New(env, std::string("connect: ") + gai_strerror(rc));
      e.Set("phase", Napi::String::New(env, "connect"));
      e.Set("code", Napi::String::New(env, "ENOTFOUND"));
      throw e;
    }
    memcpy(&addr, found->ai_addr, found->ai_addrlen);
    addrLen = found->ai_addrlen;
    freeaddrinfo(found);
  }

  Fd sock(socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (sock.get() < 0) throw ExchangeError(env, errno, "connect");
  if (connect(sock.get(), reinterpret_cast<sockaddr*>(&addr), addrLen) != 0) {
    if (errno != EINPROGRESS) throw ExchangeError(env, errno, "connect");
    if (!WaitFor(sock.get(), POLLOUT, deadline)) throw ExchangeError(env, ETIMEDOUT, "connect");
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(sock.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) throw ExchangeError(env, err, "connect");
  }

  for (size_t sent = 0; sent < request.Length();) {
    ssize_t n = send(sock.get(), request.Data() + sent, request.Length() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
    } else if (errno == EAGAIN || errno == EINTR) {
      if (!WaitFor(sock.get(), POLLOUT, deadline)) throw ExchangeError(env, ETIMEDOUT, "exchange");
    } else {
      throw ExchangeError(env, errno, "exchange");
    }
  }

  std::vector<uint8_t> answer;
  uint8_t buf[16384];
  for (;;) {
    ssize_t n = recv(sock.get(), buf, sizeof buf, 0);
    if (n == 0) break;
    if (n > 0) {
      answer.insert(answer.end(), buf, buf + n);
      if (answer.size() > kMaxAnswer) throw ExchangeError(env, EMSGSIZE, "exchange");
    } else if (errno == EAGAIN || errno == EINTR) {
      if (!WaitFor(sock.get(), POLLIN, deadline)) throw ExchangeError(env, ETIMEDOUT, "exchange");
    } else {
      throw ExchangeError(env, errno, "exchange");
    }
  }
  return Napi::Buffer<uint8_t>::Copy(env, answer.data(), answer.size());
}
