#include "csi/mount_ops.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <functional>
#include <future>
#include <memory>
#include <sstream>
#include <thread>
#include <utility>

extern char** environ;

namespace nacre::csi {

namespace {

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      const std::string oct = s.substr(i + 1, 3);
      if (oct.size() == 3 && oct.find_first_not_of("01234567") == std::string::npos) {
        out += static_cast<char>(std::stoi(oct, nullptr, 8));
        i += 3;
        continue;
      }
    }
    out += s[i];
  }
  return out;
}

}  // namespace

std::vector<MountEntry> parse_mountinfo(const std::string& text) {
  // 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
  std::vector<MountEntry> out;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream f(line);
    std::string id, parent, devno, root, point, opts;
    if (!(f >> id >> parent >> devno >> root >> point >> opts)) continue;
    std::string field;
    while (f >> field && field != "-") {
    }
    MountEntry e;
    if (!(f >> e.fs_type >> e.source)) continue;
    e.mount_point = unescape(point);
    e.source = unescape(e.source);
    size_t colon = devno.find(':');
    if (colon == std::string::npos) continue;
    e.major = static_cast<unsigned>(std::stoul(devno.substr(0, colon)));
    e.minor = static_cast<unsigned>(std::stoul(devno.substr(colon + 1)));
    e.read_only = opts == "ro" || opts.starts_with("ro,");
    out.push_back(std::move(e));
  }
  return out;
}

std::vector<MountEntry> read_mountinfo() {
  std::ifstream in("/proc/self/mountinfo");
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_mountinfo(ss.str());
}

std::optional<MountEntry> find_mount(const std::vector<MountEntry>& table,
                                     const std::string& path) {
  std::optional<MountEntry> found;
  for (const auto& e : table) {
    if (e.mount_point == path) found = e;  // later lines are stacked on top
  }
  return found;
}

Status bind_mount(const std::string& source, const std::string& target, bool read_only) {
  if (::mount(source.c_str(), target.c_str(), nullptr, MS_BIND, nullptr) != 0) {
    return fail_errno("bind mount " + source + " on " + target, errno);
  }
  if (read_only &&
      ::mount(nullptr, target.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr) != 0) {
    int err = errno;
    (void)::umount2(target.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW);
    return fail_errno("remount " + target + " read-only", err);
  }
  return {};
}

Result<int> detach_mounts(const std::string& path) {
  int detached = 0;
  // Stacked mounts come off one at a time; the table says when none is left.
  for (int i = 0; i < 256 && find_mount(read_mountinfo(), path); ++i) {
    if (::umount2(path.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) != 0) {
      if (errno == EINVAL || errno == ENOENT) break;  // not a mount point (any more)
      return fail_errno("umount -l " + path, errno);
    }
    ++detached;
  }
  if (find_mount(read_mountinfo(), path)) {
    return fail(ErrorCode::kIo,
                path + " is still mounted after " + std::to_string(detached) + " lazy unmounts");
  }
  return detached;
}

Result<FuseConnection> FuseConnection::open(unsigned minor) {
  const std::string dir = "/sys/fs/fuse/connections";
  struct stat st {};
  if (::stat((dir + "/" + std::to_string(minor)).c_str(), &st) != 0) {
    // fusectl not mounted here (containers often lack it).
    if (::mount("fusectl", dir.c_str(), "fusectl", 0, nullptr) != 0 && errno != EBUSY) {
      return fail_errno("mount fusectl on " + dir, errno);
    }
  }
  const std::string abort = dir + "/" + std::to_string(minor) + "/abort";
  int fd = ::open(abort.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return fail(ErrorCode::kNotFound, "FUSE connection " + abort + " is gone");
    return fail_errno("open " + abort, errno);
  }
  return FuseConnection(fd);
}

FuseConnection::FuseConnection(FuseConnection&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)) {}

FuseConnection& FuseConnection::operator=(FuseConnection&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

FuseConnection::~FuseConnection() {
  if (fd_ >= 0) ::close(fd_);
}

Status FuseConnection::abort() const {
  if (fd_ < 0) return {};
  // The kernel takes the connection from the open file: one that has ended
  // meanwhile makes this a no-op.
  if (::write(fd_, "1", 1) != 1) {
    if (errno == ENOTCONN || errno == ENODEV) return {};
    return fail_errno("write fusectl abort", errno);
  }
  return {};
}

Probe probe_path(const std::string& path, std::chrono::milliseconds deadline) {
  auto result = std::make_shared<std::promise<Probe>>();
  auto answer = result->get_future();
  // Detached: if the file system never answers, the thread stays blocked in
  // the kernel and nothing waits for it; it owns copies of what it uses.
  std::thread([result, path] {
    Probe p;
    p.answered = true;
    struct statvfs sv {};
    if (::statvfs(path.c_str(), &sv) != 0) {
      p.error = errno;
    } else {
      p.bytes_total = static_cast<uint64_t>(sv.f_blocks) * sv.f_frsize;
      p.bytes_free = static_cast<uint64_t>(sv.f_bavail) * sv.f_frsize;
      p.inodes_total = sv.f_files;
      p.inodes_free = sv.f_favail;
    }
    result->set_value(p);
  }).detach();
  if (answer.wait_for(deadline) != std::future_status::ready) return Probe{};
  return answer.get();
}

bool process_alive(pid_t pid, const std::string& argument) {
  if (pid <= 0) return false;
  if (::kill(pid, 0) != 0 && errno == ESRCH) return false;
  // A zombie has exited; it is only waiting for its parent.
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  std::getline(stat, text);
  size_t paren = text.rfind(')');
  if (paren != std::string::npos && paren + 2 < text.size() && text[paren + 2] == 'Z') return false;
  if (argument.empty()) return true;
  std::ifstream cmdline("/proc/" + std::to_string(pid) + "/cmdline");
  std::string arg;
  while (std::getline(cmdline, arg, '\0')) {
    if (arg == argument) return true;
  }
  return false;
}

namespace {

struct Spawned {
  pid_t pid = -1;
  int out_fd = -1;  // read end of stdout+stderr, or -1
};

// posix_spawn rather than fork: the driver is multi-threaded (gRPC), and
// posix_spawn runs nothing of ours in the child before exec.
Result<Spawned> spawn(const std::vector<std::string>& argv,
                      const std::map<std::string, std::string>& env) {
  std::vector<std::string> env_strings;
  for (char** e = environ; *e; ++e) {
    std::string s = *e;
    if (env.contains(s.substr(0, s.find('=')))) continue;
    env_strings.push_back(std::move(s));
  }
  for (const auto& [k, v] : env) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp, args;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> argv_copy = argv;
  for (auto& s : argv_copy) args.push_back(s.data());
  args.push_back(nullptr);

  int pipe_fds[2] = {-1, -1};
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  std::unique_ptr<posix_spawn_file_actions_t, void (*)(posix_spawn_file_actions_t*)> a_guard(
      &actions, [](posix_spawn_file_actions_t* a) { posix_spawn_file_actions_destroy(a); });
  std::unique_ptr<posix_spawnattr_t, void (*)(posix_spawnattr_t*)> s_guard(
      &attr, [](posix_spawnattr_t* a) { posix_spawnattr_destroy(a); });
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return fail_errno("pipe", errno);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], 1);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], 2);
  posix_spawn_file_actions_addclosefrom_np(&actions, 3);
  // Its own session: signals to the driver's process group never reach it
  // (`nacre mount` daemonises into a session of its own anyway).
  short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSID;
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, flags);
  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, args[0], &actions, &attr, args.data(), envp.data());
  if (pipe_fds[1] >= 0) ::close(pipe_fds[1]);
  if (rc != 0) {
    if (pipe_fds[0] >= 0) ::close(pipe_fds[0]);
    return fail_errno("start " + argv[0], rc);
  }
  return Spawned{pid, pipe_fds[0]};
}

}  // namespace

Result<RunResult> run_process(const std::vector<std::string>& argv,
                              const std::map<std::string, std::string>& env,
                              std::chrono::milliseconds deadline,
                              const std::function<void(const std::string&)>& on_line) {
  auto child = spawn(argv, env);
  if (!child) return std::unexpected(child.error());
  RunResult result;
  const auto end = std::chrono::steady_clock::now() + deadline;
  // Read until EOF: a daemonising child closes its copy of the pipe when it is
  // ready (its daemon half points stdout/stderr at /dev/null).
  char buf[4096];
  std::string pending;  // a line not ended yet
  bool timed_out = false;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        end - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    pollfd p{child->out_fd, POLLIN, 0};
    int n = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 1000)));
    if (n < 0 && errno != EINTR) break;
    if (n <= 0) continue;
    ssize_t got = ::read(child->out_fd, buf, sizeof buf);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;
    std::string chunk(buf, static_cast<size_t>(got));
    if (on_line) {
      pending += chunk;
      for (size_t nl; (nl = pending.find_first_of("\r\n")) != std::string::npos;) {
        if (nl > 0) on_line(pending.substr(0, nl));
        pending.erase(0, nl + 1);
      }
    }
    if (result.output.size() < (64 << 10)) result.output += chunk;
  }
  ::close(child->out_fd);
  if (timed_out) ::kill(child->pid, SIGKILL);
  int status = 0;
  while (::waitpid(child->pid, &status, 0) < 0 && errno == EINTR) {
  }
  result.status =
      timed_out ? -1 : (WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
  return result;
}

}  // namespace nacre::csi
