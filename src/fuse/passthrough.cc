#include "fuse/passthrough.h"

#include <spdlog/spdlog.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>

namespace nacre::fuse {

namespace {

// The protocol's numbers (include/uapi/linux/fuse.h of Linux 6.9+; Debian 12's
// linux-libc-dev is 6.1 and lacks them).
constexpr uint32_t kOpInit = 26;
constexpr uint32_t kInitExt = 1u << 30;         // fuse_init_{in,out}.flags: flags2 is valid
constexpr uint32_t kWritebackCache = 1u << 16;  // FUSE_WRITEBACK_CACHE
constexpr uint32_t kPassthroughFlag2 = 1u << (37 - 32);  // FUSE_PASSTHROUGH (bit 37)

// struct fuse_in_header: len, opcode, unique, nodeid, uid, gid, pid, padding.
constexpr size_t kInHeader = 40;
constexpr size_t kInOpcode = 4, kInUnique = 8;
// struct fuse_init_in after the header: major, minor, max_readahead, flags, flags2.
constexpr size_t kInitInMinor = 4, kInitInFlags = 12, kInitInFlags2 = 16;
// struct fuse_out_header: len, error, unique.
constexpr size_t kOutError = 4, kOutUnique = 8, kOutHeader = 16;
// struct fuse_init_out: ... flags at 12, flags2 at 32, max_stack_depth at 36.
constexpr size_t kInitOutFlags = 12, kInitOutFlags2 = 32, kInitOutStackDepth = 36;

struct BackingMap {
  int32_t fd;
  uint32_t flags;
  uint64_t padding;
};
constexpr unsigned long kBackingOpen = _IOW(229, 1, BackingMap);  // FUSE_DEV_IOC_BACKING_OPEN
constexpr unsigned long kBackingClose = _IOW(229, 2, uint32_t);   // FUSE_DEV_IOC_BACKING_CLOSE

template <typename T>
T load(const void* base, size_t off) {
  T v;
  std::memcpy(&v, static_cast<const char*>(base) + off, sizeof v);
  return v;
}

template <typename T>
void store(void* base, size_t off, T v) {
  std::memcpy(static_cast<char*>(base) + off, &v, sizeof v);
}

}  // namespace

InitRequest parse_init_request(const void* buf, size_t len) {
  InitRequest r;
  if (len < kInHeader + kInitInFlags + 4) return r;
  if (load<uint32_t>(buf, kInOpcode) != kOpInit) return r;
  r.is_init = true;
  r.unique = load<uint64_t>(buf, kInUnique);
  r.minor = load<uint32_t>(buf, kInHeader + kInitInMinor);
  const uint32_t flags = load<uint32_t>(buf, kInHeader + kInitInFlags);
  if ((flags & kInitExt) && len >= kInHeader + kInitInFlags2 + 4) {
    r.offers_passthrough = load<uint32_t>(buf, kInHeader + kInitInFlags2) & kPassthroughFlag2;
  }
  return r;
}

bool patch_init_reply(iovec* iov, int count, uint64_t unique) {
  if (count < 2 || iov[0].iov_len < kOutHeader || iov[1].iov_len < kInitOutStackDepth + 4) {
    return false;
  }
  if (load<uint64_t>(iov[0].iov_base, kOutUnique) != unique ||
      load<int32_t>(iov[0].iov_base, kOutError) != 0) {
    return false;
  }
  void* out = iov[1].iov_base;
  uint32_t flags = load<uint32_t>(out, kInitOutFlags);
  flags = (flags | kInitExt) & ~kWritebackCache;
  store(out, kInitOutFlags, flags);
  store(out, kInitOutFlags2, load<uint32_t>(out, kInitOutFlags2) | kPassthroughFlag2);
  store<uint32_t>(out, kInitOutStackDepth, 1);
  return true;
}

ssize_t Passthrough::read_request(int fd, void* buf, size_t len) {
  ssize_t n = ::read(fd, buf, len);
  if (n <= 0) return n;
  InitRequest init = parse_init_request(buf, static_cast<size_t>(n));
  if (!init.is_init) return n;
  init_seen_.store(true, std::memory_order_release);
  const char* why = nullptr;
  if (!wanted_) {
    why = "--passthrough off";
  } else if (!init.offers_passthrough) {
    why = "the kernel does not offer FUSE passthrough (Linux 6.9+ has it)";
  } else if (!have_cap_sys_admin()) {
    why = "no CAP_SYS_ADMIN (the kernel lets only it register backing files)";
  } else {
    init_unique_.store(init.unique, std::memory_order_release);
  }
  try {
    std::lock_guard lock(mu_);
    why_off_ = why ? why : "";
  } catch (const std::exception&) {  // no memory for the reason: the mode stays right
  }
  return n;
}

ssize_t Passthrough::write_reply(int fd, iovec* iov, int count) {
  if (uint64_t unique = init_unique_.load(std::memory_order_acquire); unique != 0) {
    if (patch_init_reply(iov, count, unique)) {
      enabled_.store(true, std::memory_order_release);  // first: see agreed()
      init_unique_.store(0, std::memory_order_release);
    }
  }
  ssize_t n = ::writev(fd, iov, count);
  // The first reply after INIT was read is INIT's (libfuse answers nothing else first).
  if (init_seen_.load(std::memory_order_relaxed) && init_seen_.exchange(false) && after_init_) {
    after_init_();
  }
  return n;
}

std::string Passthrough::mode_description() const {
  std::lock_guard lock(mu_);
  if (agreed()) {
    return "passthrough (fully cached files are read by the kernel from the cache file)";
  }
  return "cached (every read goes through the daemon): " +
         (why_off_.empty() ? std::string("passthrough was turned off") : why_off_);
}

Result<int32_t> Passthrough::acquire(uint64_t fh, uint64_t ino, int fd) {
  std::lock_guard lock(mu_);
  if (auto it = backing_.find(ino); it != backing_.end()) {
    handles_[fh] = ino;  // first: it may throw, and nothing is counted yet
    it->second.refs++;
    return it->second.id;
  }
  if (!enabled_.load(std::memory_order_acquire)) {
    return fail(ErrorCode::kNotSupported, "passthrough is off");
  }
  BackingMap map{fd, 0, 0};
  int id = ::ioctl(dev_fd_, kBackingOpen, &map);
  if (id <= 0) {
    int err = id < 0 ? errno : EIO;
    // For good, not for this file: no privilege (a user namespace's CAP_SYS_ADMIN),
    // no support, or ELOOP (the cache directory is on a stacking file system such
    // as overlayfs, deeper than the depth INIT asked for).
    if (err == EPERM || err == ENOTTY || err == EOPNOTSUPP || err == ELOOP) {
      why_off_ = std::string("the kernel refused a backing file: ") + std::strerror(err);
      enabled_.store(false, std::memory_order_release);
      spdlog::warn("FUSE passthrough turned off for this mount: {}", why_off_);
    }
    return fail(ErrorCode::kIo, std::string("FUSE_DEV_IOC_BACKING_OPEN: ") + std::strerror(err));
  }
  try {
    handles_[fh] = ino;
    backing_[ino] = Backing{id, 1};
  } catch (...) {
    handles_.erase(fh);
    uint32_t closing = static_cast<uint32_t>(id);
    (void)::ioctl(dev_fd_, kBackingClose, &closing);
    throw;
  }
  return id;
}

void Passthrough::release(uint64_t fh) {
  std::lock_guard lock(mu_);
  auto h = handles_.find(fh);
  if (h == handles_.end()) return;
  auto it = backing_.find(h->second);
  handles_.erase(h);
  if (it == backing_.end() || --it->second.refs > 0) return;
  uint32_t id = static_cast<uint32_t>(it->second.id);
  backing_.erase(it);
  if (::ioctl(dev_fd_, kBackingClose, &id) != 0) {
    spdlog::warn("FUSE_DEV_IOC_BACKING_CLOSE {}: {}", id, std::strerror(errno));
  }
}

bool have_cap_sys_admin() {
  constexpr int kCapSysAdmin = 21;
  try {
    std::ifstream status("/proc/self/status");
    std::string line;
    while (std::getline(status, line)) {
      if (line.rfind("CapEff:", 0) != 0) continue;
      uint64_t caps = std::strtoull(line.c_str() + 7, nullptr, 16);
      return (caps >> kCapSysAdmin) & 1;
    }
  } catch (const std::exception&) {  // unreadable: as if absent (cached mode)
  }
  return false;
}

}  // namespace nacre::fuse
