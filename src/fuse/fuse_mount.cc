// API 3.12: below it, fuse_session_loop_mt() is the 3.2 entry point, which reads
// the loop config as the old public struct, so --fuse-threads, the idle-thread
// setting and clone_fd were silently replaced (10 threads, an fd cloned per worker,
// and a worker exiting after nearly every request, which could leave none reading
// /dev/fuse while the others waited on S3).
#define FUSE_USE_VERSION 312
#include "fuse/fuse_mount.h"

#include <cxxabi.h>
#include <fcntl.h>
#include <fuse3/fuse_lowlevel.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <chrono>
#include <csignal>
#include <cstring>
#include <fstream>
#include <mutex>
#include <new>
#include <sstream>
#include <thread>

#include "fs/errno_map.h"
#include "fuse/control_ioctl.h"
#include "fuse/passthrough.h"

namespace nacre::fuse {

namespace {

// The largest read the kernel sends. libfuse splices a reply through a pipe
// it sizes to header + data; without CAP_SYS_RESOURCE a pipe cannot grow past
// /proc/sys/fs/pipe-max-size (1 MiB by default), and libfuse then falls back
// to copying every reply for good. 1008 KiB keeps header + data within 1 MiB.
constexpr unsigned kMaxRead = 1008 * 1024;

using Context = FuseMount::Context;

Context& context_of(void* userdata) {
  return *static_cast<Context*>(userdata);
}

fs::FileSystem& fs_of(fuse_req_t req) {
  return *context_of(fuse_req_userdata(req)).fs;
}

Passthrough& passthrough_of(fuse_req_t req) {
  return *context_of(fuse_req_userdata(req)).passthrough;
}

void reply_error(fuse_req_t req, const Error& e) {
  fuse_reply_err(req, fs::to_errno(e));
}

// No exception may cross into libfuse (C) or end a worker thread: every
// callback runs its body through this. The body replies last, so an exception
// always comes before the reply and the request gets exactly one answer.
// `replies` is false for forget, which takes no reply but fuse_reply_none.
template <typename Body>
void guarded(fuse_req_t req, const char* op, Body&& body, bool replies = true) {
  int err = EIO;
  try {
    body();
    return;
  } catch (abi::__forced_unwind&) {
    throw;  // thread cancellation must unwind
  } catch (const std::bad_alloc&) {
    spdlog::error("{}: out of memory", op);
    err = ENOMEM;
  } catch (const std::exception& e) {
    spdlog::error("{}: internal error: {}", op, e.what());
  } catch (...) {
    spdlog::error("{}: internal error (unknown exception)", op);
  }
  if (replies) {
    fuse_reply_err(req, err);
  } else {
    fuse_reply_none(req);
  }
}

struct stat to_stat(const fs::Attr& a) {
  struct stat st {};
  st.st_ino = a.ino;
  st.st_mode = a.mode;
  st.st_nlink = a.nlink;
  st.st_uid = a.uid;
  st.st_gid = a.gid;
  st.st_size = static_cast<off_t>(a.size);
  st.st_blksize = 1 << 20;
  st.st_blocks = static_cast<blkcnt_t>((a.size + 511) / 512);
  st.st_mtim = a.mtime;
  st.st_atim = a.atime;
  st.st_ctim = a.ctime;
  return st;
}

void on_init(void* userdata, fuse_conn_info* conn) {
  // Splice replies straight from the cache file; let the kernel issue reads
  // in parallel; large requests.
  if (conn->capable & FUSE_CAP_SPLICE_WRITE) conn->want |= FUSE_CAP_SPLICE_WRITE;
  if (conn->capable & FUSE_CAP_SPLICE_MOVE) conn->want |= FUSE_CAP_SPLICE_MOVE;
  if (conn->capable & FUSE_CAP_ASYNC_READ) conn->want |= FUSE_CAP_ASYNC_READ;
  conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;  // the ETag decides, via keep_cache
  // open(O_TRUNC) arrives as one open with the flag, not a truncate then an open:
  // the file is staged empty instead of being copied in first.
  if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC) conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
  // No write-back cache: each write reaches the staging file at once, so
  // close() exports every byte written and reports the export's outcome.
  conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
  conn->max_readahead = 1 << 20;
  conn->max_write = 1 << 20;
  conn->max_read = kMaxRead;  // must equal the max_read mount option
  spdlog::info("FUSE protocol {}.{}, max_readahead {}, splice {}", conn->proto_major,
               conn->proto_minor, conn->max_readahead,
               (conn->want & FUSE_CAP_SPLICE_WRITE) ? "on" : "off");
  // The reply is patched for passthrough on its way out (Passthrough::write_reply).
  try {
    spdlog::info("read mode: {}", context_of(userdata).passthrough->mode_description());
  } catch (const std::exception&) {  // a log line is not worth failing INIT
  }
  try {
    const auto& context = context_of(userdata);
    if (context.on_init) context.on_init(context.passthrough->agreed());
  } catch (const std::exception& e) {  // must not throw; enforced here, inside libfuse (C)
    spdlog::warn("at FUSE INIT: {}", e.what());
  }
}

void on_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  guarded(req, "lookup", [&] {
    auto& fs = fs_of(req);
    auto attr = fs.lookup(parent, name);
    if (!attr) {
      if (attr.error().code == ErrorCode::kNotFound) {
        // A negative entry: the kernel caches the absence for the TTL.
        fuse_entry_param e{};
        e.ino = 0;
        e.entry_timeout = fs.timeout_seconds();
        fuse_reply_entry(req, &e);
        return;
      }
      reply_error(req, attr.error());
      return;
    }
    fuse_entry_param e{};
    e.ino = attr->ino;
    e.attr = to_stat(*attr);
    e.attr_timeout = fs.timeout_seconds();
    e.entry_timeout = fs.timeout_seconds();
    // An interrupted lookup's reply is dropped: the kernel never got the reference.
    if (fuse_reply_entry(req, &e) != 0) fs.forget(attr->ino, 1);
  });
}

void on_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  guarded(
      req, "forget",
      [&] {
        fs_of(req).forget(ino, nlookup);
        fuse_reply_none(req);
      },
      /*replies=*/false);
}

void on_forget_multi(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
  guarded(
      req, "forget",
      [&] {
        for (size_t i = 0; i < count; ++i) fs_of(req).forget(forgets[i].ino, forgets[i].nlookup);
        fuse_reply_none(req);
      },
      /*replies=*/false);
}

void on_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  guarded(req, "getattr", [&] {
    auto& fs = fs_of(req);
    auto attr = fs.getattr(ino);
    if (!attr) return reply_error(req, attr.error());
    struct stat st = to_stat(*attr);
    fuse_reply_attr(req, &st, fs.timeout_seconds());
  });
}

void on_readlink(fuse_req_t req, fuse_ino_t ino) {
  guarded(req, "readlink", [&] {
    auto target = fs_of(req).readlink(ino);
    if (!target) return reply_error(req, target.error());
    fuse_reply_readlink(req, target->c_str());
  });
}

// The opener was interrupted, so nobody will release handle `fh`: release it here.
// `req` is gone (a reply frees it, failed or not), so nothing may reach guarded()'s
// error reply: failures are only logged.
void release_unanswered(fs::FileSystem& fs, Passthrough* pt, uint64_t fh) {
  try {
    if (pt) pt->release(fh);
    fs.release(fh);
  } catch (const std::exception& e) {
    spdlog::error("release of an unanswered open: {}", e.what());
  }
}

// Answers an open the fs core granted passthrough, with the inode's backing id.
// False when the kernel will not take the file: nothing sent, the handle released.
// Nothing is left open by an exception either: a passthrough handle nobody
// releases would keep the file busy for writers for the mount's life.
// (A reply frees `req`, failed or not: nothing reads it after.)
bool reply_open_passthrough(fuse_req_t req, fuse_ino_t ino, const fs::OpenResult& r,
                            fs::FileSystem& fs, Passthrough& pt) {
  Result<int32_t> id = fail(ErrorCode::kIo, "no backing id");
  try {
    id = pt.acquire(r.fh, ino, r.passthrough_fd);
    if (!id) spdlog::info("open of inode {} in cached mode: {}", ino, id.error().describe());
  } catch (...) {
    pt.release(r.fh);
    fs.release(r.fh);
    throw;
  }
  if (!id) {
    fs.release(r.fh);
    return false;
  }
  // libfuse 3.14's fuse_reply_open cannot carry a backing id: the 7.40 reply is built
  // here. No FLUSH at close for a read-only open: there is nothing to flush, and a
  // close then never waits on the daemon.
  PassthroughOpenOut out{r.fh, kFopenPassthrough | kFopenNoflush, *id};
  if (fuse_reply_buf(req, reinterpret_cast<const char*>(&out), sizeof out) != 0) {
    release_unanswered(fs, &pt, r.fh);
  }
  return true;
}

void on_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  guarded(req, "open", [&] {
    auto& fs = fs_of(req);
    auto& pt = passthrough_of(req);
    const bool read_only = (fi->flags & O_ACCMODE) == O_RDONLY && !(fi->flags & O_TRUNC);
    bool want = pt.enabled();
    Result<fs::OpenResult> r = fail(ErrorCode::kIo, "not opened");
    // The kernel allows one mode per inode at a time. A read-only open meeting the
    // inode's passthrough handles (kBusy) joins them, through their backing id, even
    // when passthrough was turned off meanwhile; one the kernel will not take in
    // passthrough mode waits for those handles to go, then opens in cached mode.
    for (int attempt = 0; attempt < 4; ++attempt) {
      r = fs.open(ino, fi->flags, want);
      if (!r && r.error().code == ErrorCode::kBusy && read_only && !want) {
        want = true;
        continue;
      }
      if (!r || r->passthrough_fd < 0) break;
      if (reply_open_passthrough(req, ino, *r, fs, pt)) return;
      want = false;
      fs.await_no_passthrough(ino);
      r = fail(ErrorCode::kIo, "the kernel refused this file in passthrough mode");
    }
    if (!r) return reply_error(req, r.error());
    fi->fh = r->fh;
    fi->keep_cache = r->keep_cache;
    fi->noflush = read_only;  // nothing to flush (see reply_open_passthrough)
    if (fuse_reply_open(req, fi) != 0) release_unanswered(fs, nullptr, r->fh);
  });
}

void on_read(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info* fi) {
  guarded(req, "read", [&] {
    // `r` owns the cache file's fd (r->source) until fuse_reply_data returns:
    // the splice reads from it after a concurrent release may have dropped
    // every other reference.
    auto r = fs_of(req).read(fi->fh, static_cast<uint64_t>(off), size);
    if (!r) return reply_error(req, r.error());
    if (!r->pieces.empty()) {
      // Blocks in memory (r->source owns them): one copy, into the kernel.
      std::vector<iovec> iov;
      iov.reserve(r->pieces.size());
      for (auto p : r->pieces) iov.push_back({const_cast<char*>(p.data()), p.size()});
      fuse_reply_iov(req, iov.data(), static_cast<int>(iov.size()));
      return;
    }
    if (r->length == 0 || r->fd < 0) {
      fuse_reply_buf(req, r->data.data(), r->data.size());
      return;
    }
    fuse_bufvec buf = FUSE_BUFVEC_INIT(r->length);
    buf.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
    buf.buf[0].fd = r->fd;
    buf.buf[0].pos = static_cast<off_t>(r->offset);
    fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
  });
}

void on_release(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  guarded(req, "release", [&] {
    // The backing id first: the kernel is done with this open, and a new open of the
    // inode meanwhile (still counted passthrough by the core) registers it again.
    passthrough_of(req).release(fi->fh);
    fs_of(req).release(fi->fh);
    fuse_reply_err(req, 0);
  });
}

// The custom-I/O hooks (fuse_session_custom_io): plain read/writev/splice on
// /dev/fuse, with the INIT exchange seen by Passthrough on the way.
ssize_t io_read(int fd, void* buf, size_t len, void* userdata) {
  return context_of(userdata).passthrough->read_request(fd, buf, len);
}

ssize_t io_writev(int fd, iovec* iov, int count, void* userdata) {
  return context_of(userdata).passthrough->write_reply(fd, iov, count);
}

ssize_t io_splice(int fdin, off_t* offin, int fdout, off_t* offout, size_t len, unsigned int flags,
                  void*) {
  return ::splice(fdin, offin, fdout, offout, len, flags);
}

// A directory handle holds the listing snapshot taken at opendir, so that
// readdir offsets stay consistent while the kernel pages through it.
struct DirHandle {
  std::vector<fs::DirEntry> entries;
};

void on_opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  guarded(req, "opendir", [&] {
    auto entries = fs_of(req).readdir(ino);
    if (!entries) return reply_error(req, entries.error());
    auto h = std::make_unique<DirHandle>(DirHandle{std::move(*entries)});
    fi->fh = reinterpret_cast<uint64_t>(h.get());
    fi->cache_readdir = 0;
    if (fuse_reply_open(req, fi) == 0) h.release();  // owned by the kernel's handle now
  });
}

void on_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  guarded(req, "readdir", [&] {
    auto* h = reinterpret_cast<DirHandle*>(fi->fh);
    std::string buf(size, '\0');
    size_t used = 0;
    // Offsets: 0 ".", 1 "..", 2.. entries; each entry's offset is the next one's.
    for (size_t i = static_cast<size_t>(off); i < h->entries.size() + 2; ++i) {
      struct stat st {};
      const char* name;
      if (i == 0) {
        name = ".";
        st.st_ino = ino;
        st.st_mode = S_IFDIR;
      } else if (i == 1) {
        name = "..";
        st.st_ino = 1;
        st.st_mode = S_IFDIR;
      } else {
        const auto& e = h->entries[i - 2];
        name = e.name.c_str();
        st.st_ino = e.ino;
        st.st_mode = e.type;
      }
      size_t n = fuse_add_direntry(req, buf.data() + used, size - used, name, &st,
                                   static_cast<off_t>(i + 1));
      if (n > size - used) break;
      used += n;
    }
    fuse_reply_buf(req, buf.data(), used);
  });
}

void on_releasedir(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  delete reinterpret_cast<DirHandle*>(fi->fh);
  fuse_reply_err(req, 0);
}

void on_statfs(fuse_req_t req, fuse_ino_t) {
  fs::StatFs s = fs_of(req).statfs();
  struct statvfs st {};
  st.f_bsize = s.block_size;
  st.f_frsize = s.block_size;
  st.f_blocks = s.blocks;
  st.f_bfree = s.blocks;
  st.f_bavail = s.blocks;
  st.f_files = s.files;
  st.f_ffree = s.files;
  st.f_namemax = s.name_max;
  fuse_reply_statfs(req, &st);
}

void on_getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  guarded(req, "getxattr", [&] {
    auto value = fs_of(req).getxattr(ino, name);
    if (!value) return reply_error(req, value.error());
    if (size == 0) return (void)fuse_reply_xattr(req, value->size());
    if (size < value->size()) return (void)fuse_reply_err(req, ERANGE);
    fuse_reply_buf(req, value->data(), value->size());
  });
}

void on_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  guarded(req, "listxattr", [&] {
    auto names = fs_of(req).listxattr(ino);
    if (!names) return reply_error(req, names.error());
    std::string all;
    for (const auto& n : *names) {
      all += n;
      all.push_back('\0');
    }
    if (size == 0) return (void)fuse_reply_xattr(req, all.size());
    if (size < all.size()) return (void)fuse_reply_err(req, ERANGE);
    fuse_reply_buf(req, all.data(), all.size());
  });
}

void on_setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
                 int) {
  guarded(req, "setxattr", [&] {
    auto st = fs_of(req).setxattr(ino, name, std::string(value, size));
    if (!st) return reply_error(req, st.error());
    fuse_reply_err(req, 0);
  });
}

// The control channel (fuse/control_ioctl.h). Anything else: ENOTTY, as for a
// file system without ioctls.
void on_ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void*, fuse_file_info*,
              unsigned flags, const void* in_buf, size_t in_size, size_t) {
  guarded(req, "ioctl", [&] {
    if (cmd != static_cast<unsigned int>(kReleaseIoctl) || !(flags & FUSE_IOCTL_DIR) ||
        in_size != sizeof(ReleaseRequest)) {
      return (void)fuse_reply_err(req, ENOTTY);
    }
    const auto* arg = static_cast<const ReleaseRequest*>(in_buf);
    std::string name(arg->name, strnlen(arg->name, sizeof arg->name));
    auto st = fs_of(req).release_child(ino, name, fuse_req_ctx(req)->uid);
    if (!st) return reply_error(req, st.error());
    fuse_reply_ioctl(req, 0, nullptr, 0);
  });
}

fs::Caller caller_of(fuse_req_t req) {
  const fuse_ctx* ctx = fuse_req_ctx(req);
  return {ctx->uid, ctx->gid};
}

// Replies with a new entry (mkdir, symlink, mknod); the core counted the lookup.
void reply_entry(fuse_req_t req, const fs::Attr& attr) {
  auto& fs = fs_of(req);  // the reply frees req, failed or not
  fuse_entry_param e{};
  e.ino = attr.ino;
  e.attr = to_stat(attr);
  e.attr_timeout = fs.timeout_seconds();
  e.entry_timeout = fs.timeout_seconds();
  if (fuse_reply_entry(req, &e) != 0) fs.forget(attr.ino, 1);
}

void reply_status(fuse_req_t req, const Status& st) {
  if (!st) return reply_error(req, st.error());
  fuse_reply_err(req, 0);
}

void on_create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
               fuse_file_info* fi) {
  guarded(req, "create", [&] {
    auto& fs = fs_of(req);
    auto r = fs.create(parent, name, mode, fi->flags, caller_of(req));
    if (!r) return reply_error(req, r.error());
    fuse_entry_param e{};
    e.ino = r->first.ino;
    e.attr = to_stat(r->first);
    e.attr_timeout = fs.timeout_seconds();
    e.entry_timeout = fs.timeout_seconds();
    fi->fh = r->second.fh;
    fi->keep_cache = r->second.keep_cache;
    if (fuse_reply_create(req, &e, fi) != 0) {
      fs.forget(e.ino, 1);
      release_unanswered(fs, nullptr, fi->fh);
    }
  });
}

void on_mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t) {
  guarded(req, "mknod", [&] {
    auto& fs = fs_of(req);
    if (!S_ISREG(mode)) return reply_error(req, fs.refuse_special().error());
    auto r = fs.create(parent, name, mode, O_WRONLY | O_EXCL, caller_of(req));
    if (!r) return reply_error(req, r.error());
    Status st = fs.flush(r->second.fh);
    fs.release(r->second.fh);
    if (!st) {
      fs.forget(r->first.ino, 1);
      return reply_error(req, st.error());
    }
    reply_entry(req, r->first);
  });
}

void on_write(fuse_req_t req, fuse_ino_t, const char* buf, size_t size, off_t off,
              fuse_file_info* fi) {
  guarded(req, "write", [&] {
    auto n = fs_of(req).write(fi->fh, static_cast<uint64_t>(off), std::string_view(buf, size));
    if (!n) return reply_error(req, n.error());
    fuse_reply_write(req, *n);
  });
}

void on_flush(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  guarded(req, "flush", [&] { reply_status(req, fs_of(req).flush(fi->fh)); });
}

void on_fsync(fuse_req_t req, fuse_ino_t, int, fuse_file_info* fi) {
  guarded(req, "fsync", [&] { reply_status(req, fs_of(req).fsync(fi->fh)); });
}

void on_fallocate(fuse_req_t req, fuse_ino_t, int mode, off_t offset, off_t length,
                  fuse_file_info* fi) {
  guarded(req, "fallocate", [&] {
    reply_status(req, fs_of(req).fallocate(fi->fh, mode, static_cast<uint64_t>(offset),
                                           static_cast<uint64_t>(length)));
  });
}

void on_setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info* fi) {
  guarded(req, "setattr", [&] {
    auto& fs = fs_of(req);
    fs::SetAttr change;
    if (to_set & FUSE_SET_ATTR_SIZE) change.size = static_cast<uint64_t>(attr->st_size);
    if (to_set & FUSE_SET_ATTR_MODE) change.mode = attr->st_mode & 07777;
    if (to_set & FUSE_SET_ATTR_UID) change.uid = attr->st_uid;
    if (to_set & FUSE_SET_ATTR_GID) change.gid = attr->st_gid;
    timespec now{};
    clock_gettime(CLOCK_REALTIME, &now);
    if (to_set & FUSE_SET_ATTR_ATIME_NOW) {
      change.atime = now;
    } else if (to_set & FUSE_SET_ATTR_ATIME) {
      change.atime = attr->st_atim;
    }
    if (to_set & FUSE_SET_ATTR_MTIME_NOW) {
      change.mtime = now;
    } else if (to_set & FUSE_SET_ATTR_MTIME) {
      change.mtime = attr->st_mtim;
    }
    std::optional<uint64_t> fh;
    if (fi) fh = fi->fh;
    auto r = fs.setattr(ino, change, fh);
    if (!r) return reply_error(req, r.error());
    struct stat st = to_stat(*r);
    fuse_reply_attr(req, &st, fs.timeout_seconds());
  });
}

void on_mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  guarded(req, "mkdir", [&] {
    auto r = fs_of(req).mkdir(parent, name, mode, caller_of(req));
    if (!r) return reply_error(req, r.error());
    reply_entry(req, *r);
  });
}

void on_symlink(fuse_req_t req, const char* target, fuse_ino_t parent, const char* name) {
  guarded(req, "symlink", [&] {
    auto r = fs_of(req).symlink(parent, name, target, caller_of(req));
    if (!r) return reply_error(req, r.error());
    reply_entry(req, *r);
  });
}

void on_unlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  guarded(req, "unlink", [&] { reply_status(req, fs_of(req).unlink(parent, name)); });
}

void on_rmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  guarded(req, "rmdir", [&] { reply_status(req, fs_of(req).rmdir(parent, name)); });
}

void on_rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t new_parent,
               const char* new_name, unsigned flags) {
  guarded(req, "rename",
          [&] { reply_status(req, fs_of(req).rename(parent, name, new_parent, new_name, flags)); });
}

void on_link(fuse_req_t req, fuse_ino_t, fuse_ino_t, const char*) {
  guarded(req, "link", [&] { reply_error(req, fs_of(req).link().error()); });
}

void on_removexattr(fuse_req_t req, fuse_ino_t, const char*) {
  // User extended attributes are not stored (docs/SEMANTICS.md).
  guarded(req, "removexattr", [&] { fuse_reply_err(req, ENOTSUP); });
}

const fuse_lowlevel_ops kOps = [] {
  fuse_lowlevel_ops ops{};
  ops.init = on_init;
  ops.lookup = on_lookup;
  ops.forget = on_forget;
  ops.forget_multi = on_forget_multi;
  ops.getattr = on_getattr;
  ops.readlink = on_readlink;
  ops.open = on_open;
  ops.read = on_read;
  ops.release = on_release;
  ops.opendir = on_opendir;
  ops.readdir = on_readdir;
  ops.releasedir = on_releasedir;
  ops.statfs = on_statfs;
  ops.getxattr = on_getxattr;
  ops.listxattr = on_listxattr;
  ops.setxattr = on_setxattr;
  ops.ioctl = on_ioctl;
  ops.mknod = on_mknod;
  ops.mkdir = on_mkdir;
  ops.unlink = on_unlink;
  ops.rmdir = on_rmdir;
  ops.symlink = on_symlink;
  ops.rename = on_rename;
  ops.link = on_link;
  ops.setattr = on_setattr;
  ops.create = on_create;
  ops.write = on_write;
  ops.removexattr = on_removexattr;
  ops.flush = on_flush;
  ops.fsync = on_fsync;
  ops.fallocate = on_fallocate;
  return ops;
}();

// Raises the kernel's read-ahead for this mount (the FUSE bdi), so sequential
// readers ask for more ahead of the application. Best effort: older kernels
// or a read-only /sys leave the default. The device number comes from
// mountinfo, because a stat() of the mount point from the server itself
// would wait for the server: a deadlock before the first request.
void tune_read_ahead(const std::string& mountpoint, unsigned kb) {
  std::ifstream info("/proc/self/mountinfo");
  std::string line, dev;
  while (std::getline(info, line)) {
    // id parent major:minor root mountpoint ...
    std::istringstream fields(line);
    std::string id, parent, majmin, root, point;
    fields >> id >> parent >> majmin >> root >> point;
    if (point == mountpoint) dev = majmin;
  }
  if (dev.empty()) return;
  std::string path = "/sys/class/bdi/" + dev + "/read_ahead_kb";
  std::ofstream out(path);
  if (out) out << kb;
  if (!out) spdlog::info("could not set {} (kernel default read-ahead stays)", path);
}

// Whether the kernel has ended the connection behind `dev_fd` (unmount, or an
// abort through /sys/fs/fuse/connections): /dev/fuse then polls POLLERR, which
// poll() reports even when no event is asked for. A zero timeout, as libfuse's own
// fuse_kern_unmount() checks it: a poller sleeping on the device would be woken
// by every request the kernel queues.
bool connection_ended(int dev_fd) {
  if (dev_fd < 0) return false;
  pollfd p{dev_fd, 0, 0};
  return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLERR | POLLHUP | POLLNVAL)) != 0;
}

}  // namespace

Result<std::unique_ptr<FuseMount>> FuseMount::mount(fs::FileSystem& fs,
                                                    const MountOptions& options) {
  std::vector<std::string> args = {"nacre",
                                   "-o",
                                   "fsname=" + options.fsname,
                                   "-o",
                                   "subtype=nacre",
                                   "-o",
                                   "max_read=" + std::to_string(kMaxRead),
                                   "-o",
                                   "default_permissions"};
  if (options.read_only) args.insert(args.end(), {"-o", "ro"});
  if (options.allow_other) args.insert(args.end(), {"-o", "allow_other"});
  for (const auto& e : options.extra) args.insert(args.end(), {"-o", e});
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  fuse_args fargs = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());
  std::unique_ptr<FuseMount> m(new FuseMount());
  m->options_ = options;
  m->passthrough_ = std::make_unique<Passthrough>(options.passthrough);
  m->context_ = {&fs, m->passthrough_.get(), options.on_init};
  m->session_ = fuse_session_new(&fargs, &kOps, sizeof kOps, &m->context_);
  if (!m->session_) {
    return fail(ErrorCode::kInvalidArgument, "cannot create the FUSE session (bad mount options?)");
  }
  if (fuse_session_mount(m->session_, options.mountpoint.c_str()) != 0) {
    return fail(ErrorCode::kIo, "cannot mount on " + options.mountpoint +
                                    " (does it exist, and is /dev/fuse usable?)");
  }
  m->mounted_ = true;
  // libfuse 3.14 mounted and opened /dev/fuse (mount(2), or fusermount3 without
  // privileges); from here its requests and replies pass through our hooks,
  // which is how INIT asks for passthrough (fuse/passthrough.h). The same fd:
  // fuse_session_destroy closes it once.
  const int dev_fd = fuse_session_fd(m->session_);
  m->passthrough_->set_device_fd(dev_fd);
  // The kernel caps the mount's read-ahead at INIT's max_readahead while it takes
  // the INIT reply, so a larger one is set after that.
  m->passthrough_->set_after_init([mountpoint = options.mountpoint, kb = options.read_ahead_kb] {
    try {
      tune_read_ahead(mountpoint, kb);
    } catch (...) {  // runs inside libfuse (C): nothing may leave
    }
  });
  const fuse_custom_io io{io_writev, io_read, io_splice, io_splice};
  if (fuse_session_custom_io(m->session_, &io, dev_fd) != 0) {
    return fail(ErrorCode::kIo, "cannot install the FUSE I/O hooks");
  }
  return m;
}

FuseMount::FuseMount() = default;

FuseMount::~FuseMount() {
  if (session_) {
    if (mounted_) fuse_session_unmount(session_);
    fuse_session_destroy(session_);
  }
}

Status FuseMount::run(std::function<void()> on_exit) {
  if (fuse_set_signal_handlers(session_) != 0)
    return fail(ErrorCode::kIo, "cannot set signal handlers");
  // libfuse's loop returns only after joining its workers, and a worker may be
  // waiting for a GET (up to attempts x stall timeout). Unmount must take
  // seconds (a pod gets 30 s to terminate): this watcher sees the session end
  // and lets the caller cancel what the workers wait for. The session ends by
  // a signal (libfuse's exited flag) or by the unmount, which aborts the
  // connection: /dev/fuse then polls POLLERR. The poll matters because libfuse
  // notices an unmount only when a worker reads the device, and when every
  // worker waits on a GET none does (--fuse-threads below the kernel's 12
  // background requests; before FUSE_USE_VERSION 312, workers that exited).
  // libfuse resets the exited flag before the loop returns, so when no worker
  // is busy the watcher may miss it: on_exit also runs once the loop is over
  // (background fetches may still be waiting then).
  std::once_flag exit_once;
  auto exited = [&] {
    if (on_exit) std::call_once(exit_once, on_exit);
  };
  std::jthread watcher([this, &exited](std::stop_token stop) {
    const int dev_fd = fuse_session_fd(session_);
    while (!stop.stop_requested()) {
      if (fuse_session_exited(session_) || connection_ended(dev_fd)) {
        exited();
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
  fuse_loop_config* config = fuse_loop_cfg_create();
  fuse_loop_cfg_set_max_threads(config, static_cast<unsigned>(options_.max_threads));
  // Keep the workers: by default libfuse lets idle ones exit, and async reads
  // then create and destroy a thread for nearly every request.
  fuse_loop_cfg_set_idle_threads(config, static_cast<unsigned>(options_.max_threads));
  fuse_loop_cfg_set_clone_fd(config, 0);
  int rc = fuse_session_loop_mt(session_, config);
  watcher.request_stop();
  watcher.join();
  exited();
  fuse_loop_cfg_destroy(config);
  fuse_remove_signal_handlers(session_);
  if (rc != 0 && rc != SIGTERM && rc != SIGINT && rc != SIGHUP) {
    return fail(ErrorCode::kIo, "FUSE loop ended with " + std::to_string(rc));
  }
  return {};
}

void FuseMount::invalidate_data(fs::Ino ino) {
  if (session_) fuse_lowlevel_notify_inval_inode(session_, ino, 0, 0);
}

}  // namespace nacre::fuse
