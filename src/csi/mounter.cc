#include "csi/mounter.h"

#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

namespace nacre::csi {

namespace {

using nlohmann::json;

// One request or answer per connection: a JSON document, then EOF (the
// sender shuts down its writing side).
Status send_all(int fd, const std::string& text) {
  for (size_t off = 0; off < text.size();) {
    ssize_t n = ::send(fd, text.data() + off, text.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return fail_errno("send to the mounter", errno);
    off += static_cast<size_t>(n);
  }
  ::shutdown(fd, SHUT_WR);
  return {};
}

Result<std::string> read_all(int fd, std::chrono::milliseconds deadline) {
  std::string text;
  char buf[4096];
  auto end = std::chrono::steady_clock::now() + deadline;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        end - std::chrono::steady_clock::now());
    if (left.count() <= 0) return fail(ErrorCode::kRequestTimeout, "the mounter did not answer");
    pollfd p{fd, POLLIN, 0};
    int n = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 1000)));
    if (n < 0 && errno != EINTR) return fail_errno("poll", errno);
    if (n <= 0) continue;
    ssize_t got = ::recv(fd, buf, sizeof buf, 0);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return fail_errno("recv", errno);
    if (got == 0) return text;
    if (text.size() > (1 << 20)) return fail(ErrorCode::kInvalidArgument, "message too large");
    text.append(buf, static_cast<size_t>(got));
  }
}

Result<sockaddr_un> address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) {
    return fail(ErrorCode::kInvalidArgument, "socket path too long: " + path);
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

}  // namespace

Launcher local_launcher() {
  return [](const std::vector<std::string>& argv, const std::map<std::string, std::string>& env,
            std::chrono::milliseconds deadline,
            const std::function<void(const std::string&)>& on_line) {
    return run_process(argv, env, deadline, on_line);
  };
}

Launcher mounter_launcher(std::string socket_path) {
  return [socket_path](
             const std::vector<std::string>& argv, const std::map<std::string, std::string>& env,
             std::chrono::milliseconds deadline,
             const std::function<void(const std::string&)>& on_line) -> Result<RunResult> {
    auto addr = address(socket_path);
    if (!addr) return std::unexpected(addr.error());
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return fail_errno("socket", errno);
    struct Closer {
      int fd;
      ~Closer() { ::close(fd); }
    } closer{fd};
    if (::connect(fd, reinterpret_cast<sockaddr*>(&*addr), sizeof *addr) != 0) {
      return fail(ErrorCode::kNetwork, "the mounter at " + socket_path + " does not answer: " +
                                           std::strerror(errno) + " (is its container running?)");
    }
    json req = {{"argv", argv}, {"env", env}, {"deadline_ms", deadline.count()}};
    if (auto ok = send_all(fd, req.dump()); !ok) return std::unexpected(ok.error());
    auto text = read_all(fd, deadline + std::chrono::seconds(10));
    if (!text) return std::unexpected(text.error());
    try {
      json answer = json::parse(*text);
      RunResult r{answer.at("status").get<int>(), answer.at("output").get<std::string>()};
      if (on_line) {
        size_t pos = 0;
        for (size_t nl; (nl = r.output.find('\n', pos)) != std::string::npos; pos = nl + 1) {
          if (nl > pos) on_line(r.output.substr(pos, nl - pos));
        }
      }
      return r;
    } catch (const std::exception& e) {
      return fail(ErrorCode::kMalformedResponse, std::string("the mounter answered: ") + e.what());
    }
  };
}

Status run_mounter(const std::string& socket_path) {
  // Daemons that `nacre mount` leaves behind are re-parented here, not to the
  // container's init: reap them (they are not ours to wait for otherwise).
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  auto addr = address(socket_path);
  if (!addr) return std::unexpected(addr.error());
  ::unlink(socket_path.c_str());
  int lfd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (lfd < 0) return fail_errno("socket", errno);
  mode_t old = ::umask(0177);
  int rc = ::bind(lfd, reinterpret_cast<sockaddr*>(&*addr), sizeof *addr);
  ::umask(old);
  if (rc != 0 || ::listen(lfd, 16) != 0) {
    int err = errno;
    ::close(lfd);
    return fail_errno("listen on " + socket_path, err);
  }
  spdlog::info("mounter serving on {}", socket_path);
  for (;;) {
    while (::waitpid(-1, nullptr, WNOHANG) > 0) {
    }
    // One thread: SIGTERM/SIGINT are blocked and looked for between requests.
    sigset_t pending;
    sigpending(&pending);
    if (sigismember(&pending, SIGTERM) || sigismember(&pending, SIGINT)) break;
    pollfd p{lfd, POLLIN, 0};
    if (::poll(&p, 1, 500) <= 0) continue;
    int cfd = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    if (cfd < 0) continue;
    auto text = read_all(cfd, std::chrono::seconds(10));
    json answer;
    try {
      if (!text) throw std::runtime_error(text.error().describe());
      json req = json::parse(*text);
      auto argv = req.at("argv").get<std::vector<std::string>>();
      auto env = req.at("env").get<std::map<std::string, std::string>>();
      auto deadline = std::chrono::milliseconds(req.at("deadline_ms").get<int64_t>());
      if (argv.empty()) throw std::runtime_error("empty command");
      spdlog::info("mounter: starting {} {}", argv[0], argv.size() > 1 ? argv[1] : "");
      auto r = run_process(argv, env, deadline);
      if (!r) throw std::runtime_error(r.error().describe());
      answer = {{"status", r->status}, {"output", r->output}};
    } catch (const std::exception& e) {
      answer = {{"status", 127}, {"output", std::string("mounter: ") + e.what()}};
    }
    (void)send_all(cfd, answer.dump());
    ::close(cfd);
  }
  ::close(lfd);
  ::unlink(socket_path.c_str());
  spdlog::info("mounter stopping; the mounts it started keep serving until their container ends");
  return {};
}

}  // namespace nacre::csi
