// FUSE kernel passthrough (Linux 6.9+, FUSE protocol 7.40): a read-only open of
// a file whose cached copy is complete and verified hands the cache file to
// the kernel, which then serves read(), splice and mmap from it directly, at
// local-disk and page-cache speed; no READ request reaches the daemon.
//
// Debian 12's libfuse 3.14 predates passthrough: it can neither ask for it at
// INIT nor name a backing file in an open reply. Rather than speak the whole
// protocol ourselves, we keep libfuse and use its custom-I/O hook
// (fuse_session_custom_io) to see the raw INIT request and patch the raw INIT
// reply; open replies carrying a backing id are built here and sent with
// fuse_reply_buf. docs/ARCHITECTURE.md ("Kernel passthrough") gives the
// reasons. Written by hand because no packaged library does it: libfuse 3.17
// has this (FUSE_CAP_PASSTHROUGH, fuse_passthrough_open), Debian 12 has 3.14.
//
// The kernel's rules (fs/fuse/iomode.c, backing.c), which the fs core and
// this class keep between them:
//  - one backing file per inode while any passthrough open of it exists, and
//    then every open of that inode must be passthrough (the fs core answers
//    ETXTBSY to a write open instead);
//  - a passthrough open fails while cached-mode opens of the inode exist (the
//    fs core grants passthrough only when every other open is passthrough);
//  - no FOPEN_KEEP_CACHE with passthrough; no writeback cache on the mount;
//  - FUSE_DEV_IOC_BACKING_OPEN needs CAP_SYS_ADMIN.
// A kernel without passthrough, a daemon without CAP_SYS_ADMIN or
// `--passthrough off` leave the mount in cached mode: every read goes through
// the daemon as before. INIT decides, and the mount logs which mode it runs in.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <unordered_map>

#include "common/error.h"

namespace nacre::fuse {

// What the kernel's INIT request offers. `is_init` is false for any other request.
struct InitRequest {
  bool is_init = false;
  uint64_t unique = 0;
  uint32_t minor = 0;
  bool offers_passthrough = false;  // FUSE_INIT_EXT in flags and FUSE_PASSTHROUGH in flags2
};
InitRequest parse_init_request(const void* buf, size_t len);

// Turns the INIT reply in `iov` (header, fuse_init_out) for request `unique`
// into one that asks for passthrough: FUSE_INIT_EXT, FUSE_PASSTHROUGH in
// flags2, max_stack_depth 1 (a backing file on a local file system), and no
// writeback cache. False (nothing changed) when `iov` is not that reply or is
// an error reply.
bool patch_init_reply(iovec* iov, int count, uint64_t unique);

// The open reply body of protocol 7.40 (fuse_open_out with backing_id).
struct PassthroughOpenOut {
  uint64_t fh;
  uint32_t open_flags;
  int32_t backing_id;
};
inline constexpr uint32_t kFopenPassthrough = 1u << 7;
inline constexpr uint32_t kFopenNoflush = 1u << 5;

class Passthrough {
 public:
  // `wanted`: the mount's --passthrough setting allows it.
  explicit Passthrough(bool wanted) : wanted_(wanted) {}

  // The custom-I/O hooks: every request read from and reply written to /dev/fuse.
  // They throw nothing (libfuse is C) but thread cancellation: libfuse cancels its
  // workers at the session's end, blocked in read(), and that unwinding must pass
  // (hence not noexcept, which would turn it into std::terminate).
  ssize_t read_request(int fd, void* buf, size_t len);
  ssize_t write_reply(int fd, iovec* iov, int count);

  // After INIT: passthrough is on for this connection.
  bool enabled() const { return enabled_.load(std::memory_order_acquire); }
  // From the INIT request on (before its reply): passthrough is or will be on. Reads
  // init_unique_ first: write_reply sets enabled_ before it clears init_unique_, so a
  // cleared id read here means enabled_ reads true after it (never false in between).
  bool agreed() const {
    return init_unique_.load(std::memory_order_acquire) != 0 ||
           enabled_.load(std::memory_order_acquire);
  }
  // Why the mount runs in the mode it does (for the log line at INIT).
  std::string mode_description() const;

  // The backing id for handle `fh` of inode `ino`: the inode's, or `fd` (the
  // cache file) registered with the kernel when the inode has none yet. One id per
  // inode while any of its passthrough handles lives (the kernel's rule). Errors:
  // kNotSupported (passthrough is off), kIo (the kernel refused the file; on EPERM
  // passthrough is turned off for the rest of this mount). The caller then opens
  // the handle in cached mode.
  Result<int32_t> acquire(uint64_t fh, uint64_t ino, int fd);
  // At the release of handle `fh`: when it was a passthrough handle, drops its
  // reference; the inode's last one closes the backing id. Nothing otherwise.
  void release(uint64_t fh);

  void set_device_fd(int fd) { dev_fd_ = fd; }
  // Runs once, right after the kernel took the INIT reply (it applies INIT's
  // settings during that write): for settings that must come after them.
  void set_after_init(std::function<void()> f) { after_init_ = std::move(f); }

 private:
  const bool wanted_;
  int dev_fd_ = -1;
  std::function<void()> after_init_;
  std::atomic<bool> init_seen_{false};    // an INIT request was read; its reply not yet written
  std::atomic<uint64_t> init_unique_{0};  // the INIT request to patch the reply of
  std::atomic<bool> enabled_{false};
  mutable std::mutex mu_;
  std::string why_off_;  // GUARDED_BY(mu_)
  struct Backing {
    int32_t id = 0;
    uint64_t refs = 0;
  };
  std::unordered_map<uint64_t, Backing> backing_;   // GUARDED_BY(mu_), by inode
  std::unordered_map<uint64_t, uint64_t> handles_;  // GUARDED_BY(mu_): fh -> inode
};

// True when this process has CAP_SYS_ADMIN in its effective set.
bool have_cap_sys_admin();

}  // namespace nacre::fuse
