// The node's side of mounts, without gRPC: /proc/self/mountinfo, bind mounts,
// unmounts that cannot hang, probes with a deadline, and the `nacre mount`
// processes the node plugin starts.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"

namespace nacre::csi {

struct MountEntry {
  std::string mount_point;  // unescaped
  std::string fs_type;      // e.g. "fuse.nacre"
  std::string source;       // e.g. "nacre:bucket/prefix"
  unsigned major = 0, minor = 0;
  bool read_only = false;
};
// Parses mountinfo text (the format of /proc/PID/mountinfo).
std::vector<MountEntry> parse_mountinfo(const std::string& text);
std::vector<MountEntry> read_mountinfo();
// The topmost mount at exactly `path`, if any.
std::optional<MountEntry> find_mount(const std::vector<MountEntry>& table, const std::string& path);

// mount --bind SOURCE TARGET, then remounted read-only when asked. SOURCE (a
// mount point) is made private first, so no two binds of it are peers.
[[nodiscard]] Status bind_mount(const std::string& source, const std::string& target,
                                bool read_only);
// umount -l on every mount stacked at `path` (never follows symlinks, never
// waits on the file system behind it). Returns how many were detached.
[[nodiscard]] Result<int> detach_mounts(const std::string& path);
// One FUSE connection's abort control (the kernel's fusectl,
// /sys/fs/fuse/connections/N/abort: requests in flight fail and the daemon's
// next read ends), opened while its mount is known to be there, to abort it
// later (after a wait or a lazy unmount). Through the open file the abort
// reaches that connection or, once it has ended, nothing: never the connection
// of a newer mount that was given the same number, as an abort by number
// could (the kernel reuses a number as soon as its connection ends).
class FuseConnection {
 public:
  FuseConnection() = default;
  // Mounts fusectl when it is missing. A connection already gone is kNotFound.
  [[nodiscard]] static Result<FuseConnection> open(unsigned minor);
  FuseConnection(FuseConnection&& other) noexcept;
  FuseConnection& operator=(FuseConnection&& other) noexcept;
  FuseConnection(const FuseConnection&) = delete;
  FuseConnection& operator=(const FuseConnection&) = delete;
  ~FuseConnection();
  bool valid() const { return fd_ >= 0; }
  [[nodiscard]] Status abort() const;

 private:
  explicit FuseConnection(int fd) : fd_(fd) {}
  int fd_ = -1;  // /sys/fs/fuse/connections/N/abort, O_WRONLY
};

// How a mount answers: statvfs with a deadline, on a thread left behind if the
// file system never answers (a hung FUSE daemon must not hang the caller).
struct Probe {
  bool answered = false;  // false: no answer within the deadline
  int error = 0;          // errno of statvfs (ENOTCONN: the daemon is gone)
  uint64_t bytes_total = 0, bytes_free = 0, inodes_total = 0, inodes_free = 0;
};
Probe probe_path(const std::string& path, std::chrono::milliseconds deadline);

// Whether `pid` runs (not a zombie) and, when `argument` is given, whether its
// command line has that argument: a pid recorded earlier may since belong to
// another process, which must never be signalled in the mount's place.
bool process_alive(pid_t pid, const std::string& argument = "");

// Runs `argv` with `env` added to a copy of this process's environment, in a
// session of its own, with no inherited descriptors but stdout/stderr to a
// pipe, until the pipe closes (a daemonising `nacre mount` closes it when it
// is ready) or `deadline` passes. Returns the exit status and what it printed
// (the first 64 KiB; `on_line` sees every line as it comes); a process still
// running at the deadline is killed (status -1).
struct RunResult {
  int status = -1;
  std::string output;
};
[[nodiscard]] Result<RunResult> run_process(
    const std::vector<std::string>& argv, const std::map<std::string, std::string>& env,
    std::chrono::milliseconds deadline,
    const std::function<void(const std::string&)>& on_line = {});
}  // namespace nacre::csi
