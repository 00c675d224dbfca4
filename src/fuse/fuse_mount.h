// The libfuse3 low-level adapter: forwards kernel requests to fs::FileSystem
// and turns its results into replies. It holds no file-system behaviour; read
// replies are spliced from the cache file (fd-backed fuse_bufvec), and fully
// cached files are opened in kernel passthrough mode where the kernel has it
// (fuse/passthrough.h).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/error.h"
#include "fs/file_system.h"

struct fuse_session;

namespace nacre::fuse {

class Passthrough;

struct MountOptions {
  std::string mountpoint;
  std::string fsname;  // shown in /proc/mounts, e.g. "nacre:bucket/prefix"
  bool read_only = false;
  bool allow_other = false;
  std::vector<std::string> extra;  // further -o options for FUSE
  int max_threads = 16;
  // The FUSE bdi's read-ahead, set after INIT. 4 MiB: measured on a 1 GiB object
  // (cold, and warm in cached mode), 1, 4, 16 and 64 MiB read alike within this
  // machine's noise, but read-ahead goes out as background READs of up to 1 MiB,
  // and past the kernel's max_background (12) a reader blocks uninterruptibly for
  // a free slot: with 16 MiB a SIGKILLed reader of a stalled S3 stayed in D state
  // until the GET timed out (mount_safety_test's kill-then-umount round).
  unsigned read_ahead_kb = 4096;
  // Serve fully cached files by kernel passthrough where the kernel and the
  // process's capabilities allow (fuse/passthrough.h); false: always cached mode.
  bool passthrough = true;
  // Called at INIT, before its reply (so before any other request), on a FUSE worker
  // thread, with whether this connection runs in passthrough mode. Must not block and
  // must not throw.
  std::function<void(bool passthrough)> on_init;
};

class FuseMount {
 public:
  // Creates the session and mounts. Nothing runs yet, so the caller can still
  // daemonise (no threads exist).
  [[nodiscard]] static Result<std::unique_ptr<FuseMount>> mount(fs::FileSystem& fs,
                                                                const MountOptions& options);
  ~FuseMount();  // unmounts

  // Serves requests until the file system is unmounted or a signal arrives.
  // `on_exit` runs (once, on another thread) as soon as the session ends,
  // while workers may still be busy: it must make their requests end quickly
  // (cancel transfers), because run() returns only when every worker has.
  [[nodiscard]] Status run(std::function<void()> on_exit = {});
  // Drops the kernel's cached pages of `ino` (after `nacre release`).
  void invalidate_data(fs::Ino ino);
  fuse_session* session() const { return session_; }

  // The session's userdata, what every callback needs (internal to the adapter).
  struct Context {
    fs::FileSystem* fs = nullptr;
    Passthrough* passthrough = nullptr;
    std::function<void(bool)> on_init;  // MountOptions::on_init
  };

 private:
  FuseMount();
  std::unique_ptr<Passthrough> passthrough_;
  Context context_;
  fuse_session* session_ = nullptr;
  MountOptions options_;
  bool mounted_ = false;
};

}  // namespace nacre::fuse
