// The write half of the fs core (see file_system.h): files are written to a
// staging file on the node's disk (staging/staging_store.h) and exported to
// S3 on close and fsync, as one PUT or a multipart upload whose full parts
// are streamed while a large file is written sequentially. The export policy
// decides what reaches the bucket; failed exports stay staged and are retried.
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache/disk_io.h"
#include "fs/inode.h"
#include "fs/names.h"
#include "fs/staged.h"
#include "s3/transfer.h"

namespace nacre::fs {

namespace {

constexpr uint64_t kMaxObjectSize = 5ull << 40;  // S3's limit: 5 TiB

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Streamed parts grow with the file, whose final size is not known while it is
// written: `base` for the first 1000 parts, twice that for the next 1000, and
// so on, so 10,000 parts of an 8 MiB base hold 8 TiB (S3's object limit is
// 5 TiB) and no part exceeds S3's 5 GiB.
uint64_t part_length(uint64_t base, size_t index) {
  return base << std::min<size_t>(index / 1000, 9);
}

Status check_size(uint64_t size) {
  if (size > kMaxObjectSize) {
    return fail(ErrorCode::kFileTooBig, "S3 objects are at most 5 TiB");
  }
  return {};
}

s3::UserMetadata metadata_of(const PosixMetadata& posix, s3::UserMetadata other) {
  encode_posix_metadata(posix, other);
  return other;
}

}  // namespace

// ---------------------------------------------------------------------------
// Staged files and the exporter's threads

FileSystem::Staged::~Staged() {
  ::close(fd);
  if (unlinked || !dirty()) {
    if (Status st = store.remove(manifest.id); !st) {
      spdlog::warn("staging: cannot remove {}: {}", manifest.id, st.error().describe());
    }
  }
}

void FileSystem::Exporter::start(int workers) {
  {
    std::lock_guard lock(mu);
    stopped = false;
  }
  for (int i = 0; i < workers; ++i) {
    threads.emplace_back([this](std::stop_token stop) {
      for (;;) {
        std::function<void()> task;
        {
          std::unique_lock lock(mu);
          if (!wake.wait(lock, stop, [&] { return !tasks.empty(); })) return;
          task = std::move(tasks.front());
          tasks.pop_front();
        }
        // No exception may end a thread (std::terminate): a task logs it.
        try {
          task();
        } catch (const std::exception& e) {
          spdlog::error("export task: {}", e.what());
        } catch (...) {
          spdlog::error("export task: unknown exception");
        }
      }
    });
  }
  threads.emplace_back([this](std::stop_token stop) { fs.retry_loop(*this, stop); });
}

void FileSystem::Exporter::stop() {
  {
    std::lock_guard lock(mu);
    stopped = true;
  }
  for (auto& t : threads) t.request_stop();
  wake.notify_all();
  threads.clear();  // joins
}

void FileSystem::Exporter::submit(std::function<void()> task) {
  {
    std::lock_guard lock(mu);
    if (!stopped) {
      tasks.push_back(std::move(task));
      wake.notify_all();
      return;
    }
  }
  // Stopping (unmount, after the client was cancelled): the task runs here and
  // fails fast, so nothing waits for a part that no thread would send.
  task();
}

void FileSystem::Exporter::retry_later(const std::shared_ptr<Staged>& s) {
  {
    std::lock_guard sl(s->mu);
    if (s->retry_pending) return;
    s->retry_pending = true;
  }
  std::lock_guard lock(mu);
  retry_list.push_back(s);
}

size_t FileSystem::Exporter::pending() {
  std::lock_guard lock(mu);
  return retry_list.size() + retrying;
}

namespace {
// For threads of our own: an exception becomes an error, never std::terminate.
template <typename F>
Status no_throw(const char* what, F&& f) {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    return fail(ErrorCode::kNoSpace, std::string(what) + ": out of memory");
  } catch (const std::exception& e) {
    return fail(ErrorCode::kIo, std::string(what) + ": " + e.what());
  }
}
}  // namespace

Status FileSystem::guard_export(const std::shared_ptr<Staged>& s) {
  return no_throw("export", [&] { return export_staged(s); });
}

void FileSystem::retry_loop(Exporter& exporter, std::stop_token stop) {
  auto delay = options_.export_retry;
  for (;;) {
    {
      std::unique_lock lock(exporter.mu);
      exporter.wake.wait_for(lock, stop, delay, [] { return false; });
      if (stop.stop_requested()) return;
    }
    std::vector<std::shared_ptr<Staged>> due;
    {
      std::lock_guard lock(exporter.mu);
      due.swap(exporter.retry_list);
      exporter.retrying = due.size();
    }
    auto done_one = [&] {
      std::lock_guard lock(exporter.mu);
      exporter.retrying--;
    };
    bool failed = false;
    for (auto& s : due) {
      if (stop.stop_requested()) return;
      {
        std::lock_guard sl(s->mu);
        s->retry_pending = false;
      }
      struct Done {
        std::function<void()> f;
        ~Done() { f(); }
      } done{done_one};
      Status st = guard_export(s);
      if (!st) {
        failed = true;
        bool write_failed;
        {
          std::lock_guard sl(s->mu);
          write_failed = s->manifest.write_failed;
        }
        // A file whose write failed waits for its writer, not for S3.
        if (!write_failed) exporter.retry_later(s);
        continue;
      }
      std::lock_guard lock(mu_);
      if (s->ino != 0) {
        if (Inode* n = find(s->ino); n && n->staged == s) drop_staged_if_done(*n);
      }
    }
    delay = failed ? std::min<std::chrono::milliseconds>(delay * 2, std::chrono::minutes(1))
                   : options_.export_retry;
  }
}

size_t FileSystem::pending_exports() {
  return exporter_ ? exporter_->pending() : 0;
}

void FileSystem::stop_write_path() {
  if (exporter_) exporter_->stop();
}

Status FileSystem::start_write_path() {
  if (options_.read_only || !options_.staging) return {};
  if (exporter_) {
    // Started again after stop_write_path(): the threads only; recovery ran once.
    std::lock_guard lock(exporter_->mu);
    if (!exporter_->stopped) {
      return fail(ErrorCode::kInvalidArgument, "the write path is started already");
    }
  }
  const bool first = !exporter_;
  if (first) exporter_ = std::make_unique<Exporter>(*this);
  exporter_->start(options_.upload_concurrency);
  if (!first) return {};
  size_t unreadable = 0;
  auto manifests = options_.staging->list(&unreadable);
  if (!manifests) return std::unexpected(manifests.error());
  size_t exported = 0, kept = 0;
  for (auto& m : *manifests) {
    if (m.bucket != options_.bucket || !m.key.starts_with(options_.prefix)) continue;
    if (!m.upload_id.empty()) {
      // The upload a crashed process left: its parts are never completed, so no
      // partial object can appear; the export starts again from the whole file.
      if (auto st = client_.abort_multipart_upload(m.bucket, m.key, m.upload_id); !st) {
        spdlog::warn("staging: cannot abort upload {} of s3://{}/{}: {}", m.upload_id, m.bucket,
                     m.key, st.error().describe());
      }
      m.upload_id.clear();
      if (Status st = options_.staging->save(m); !st) return st;
    }
    if (!m.complete || m.write_failed) {
      ++kept;
      spdlog::warn(
          "staging: s3://{}/{} was still being written when the mount process stopped; not "
          "exported, kept at {} (see nacre status --staged)",
          m.bucket, m.key, options_.staging->data_path(m.id));
      continue;
    }
    auto fd = options_.staging->open_data(m.id);
    if (!fd) {
      ++kept;
      spdlog::warn("staging: s3://{}/{}: {}", m.bucket, m.key, fd.error().describe());
      continue;
    }
    struct stat st {};
    ::fstat(*fd, &st);
    auto s = std::make_shared<Staged>(*options_.staging, m, *fd, 0);
    s->size = static_cast<uint64_t>(st.st_size);
    s->posix = decode_posix_metadata(m.metadata);
    {
      std::lock_guard lock(mu_);
      recovered_[m.key] = s;
    }
    exporter_->retry_later(s);
    ++exported;
  }
  if (exported + kept + unreadable > 0) {
    spdlog::info("staging: {} closed files to export, {} incomplete kept, {} unreadable",
                 exported, kept, unreadable);
  }
  if (exported > 0) exporter_->wake.notify_all();
  return {};
}

// ---------------------------------------------------------------------------
// Staging

Status FileSystem::writable() const {
  if (options_.read_only) return fail(ErrorCode::kReadOnly, "read-only file system");
  if (!options_.staging) return fail(ErrorCode::kReadOnly, "no staging directory: read-only");
  return {};
}

bool FileSystem::may_export(const Staged& s) const {
  return s.manifest.base_etag.empty() ? options_.export_policy.new_objects
                                      : options_.export_policy.changed;
}

Result<std::shared_ptr<FileSystem::Staged>> FileSystem::new_staged(Ino ino, const std::string& key,
                                                                   const std::string& base_etag,
                                                                   const PosixMetadata& posix,
                                                                   const s3::UserMetadata& other,
                                                                   const std::string& content_type) {
  staging::Manifest m;
  m.bucket = options_.bucket;
  m.key = key;
  m.base_etag = base_etag;
  m.staged_at_ns = now_ns();
  m.metadata = metadata_of(posix, other);
  m.content_type = content_type;
  auto fd = options_.staging->create(m);
  if (!fd) return std::unexpected(fd.error());
  auto s = std::make_shared<Staged>(*options_.staging, std::move(m), *fd, ino);
  s->posix = posix;
  return s;
}

Result<std::shared_ptr<FileSystem::Staged>> FileSystem::stage(Ino ino, bool truncate,
                                                              bool* created) {
  cache::ObjectVersion v;
  PosixMetadata posix;
  s3::UserMetadata other;
  std::string content_type;
  std::shared_ptr<Staged> existing;
  {
    std::lock_guard lock(mu_);
    Inode* n = find(ino);
    if (!n) return fail(ErrorCode::kStale, "stale inode");
    existing = n->staged;
    if (!existing) {
      // The file a crashed process left for this key, not exported yet: it is
      // newer than S3's version, so it is what a new writer starts from.
      if (auto adopted = adopt_recovered(n->key, ino)) existing = n->staged = adopted;
    }
    v = {options_.bucket, n->key, n->etag, n->size};
    posix = n->posix;
    other = n->user_metadata;
    content_type = n->content_type;
  }
  if (existing) {
    // Every handle of the inode shares its staged file.
    if (truncate) {
      if (Status st = truncate_staged(*existing, 0); !st) return std::unexpected(st.error());
    }
    return existing;
  }
  auto made = new_staged(ino, v.key, v.etag, posix, other, content_type);
  if (!made) return made;
  std::shared_ptr<Staged> s = *made;
  if (!truncate && v.size > 0) {
    // The object's bytes, from the node cache where it holds them (or fetches
    // them once for every reader); straight from S3 when the cache cannot take them.
    Status filled = [&]() -> Status {
      auto fetcher = fetcher_for(v, /*current=*/true);
      if (fetcher) {
        auto object = (*fetcher)->object();
        if (Status st = (*fetcher)->ensure(0, object->block_count() - 1); st) {
          loff_t in = 0, out = 0;
          while (static_cast<uint64_t>(out) < v.size) {
            ssize_t n = ::copy_file_range(object->data_fd(), &in, s->fd, &out,
                                          v.size - static_cast<uint64_t>(out), 0);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return fail_errno("copy into the staging file", n < 0 ? errno : EIO);
          }
          return {};
        }
      }
      s3::TransferOptions transfer;
      transfer.part_size = options_.part_size;
      transfer.concurrency = options_.upload_concurrency;
      auto info = s3::download_to_fd(client_, v.bucket, v.key, s->fd, transfer);
      if (!info) return std::unexpected(info.error());
      if (info->etag != v.etag) return fail(ErrorCode::kStale, "the object changed while staged");
      return {};
    }();
    if (!filled) {
      std::lock_guard sl(s->mu);
      s->unlinked = true;  // never exported: the destructor removes the files
      return std::unexpected(filled.error());
    }
  }
  {
    std::lock_guard sl(s->mu);
    s->size = truncate ? 0 : v.size;
    // Staged from S3 and unchanged: nothing to export until a write.
    if (!truncate) s->exported = s->generation;
  }
  std::lock_guard lock(mu_);
  Inode* n = find(ino);
  if (!n) {
    std::lock_guard sl(s->mu);
    s->unlinked = true;
    return fail(ErrorCode::kStale, "the file went away while it was staged");
  }
  if (n->staged) {  // a concurrent open staged it first: use that one
    {
      std::lock_guard sl(s->mu);
      s->unlinked = true;
    }
    auto winner = n->staged;
    mu_.unlock();
    Status st = truncate ? truncate_staged(*winner, 0) : Status{};
    mu_.lock();
    if (!st) return std::unexpected(st.error());
    return winner;
  }
  n->staged = s;
  if (created) *created = true;
  return s;
}

Status FileSystem::truncate_staged(Staged& s, uint64_t size) {
  if (Status st = check_size(size); !st) return st;
  std::unique_lock io(s.io);
  if (::ftruncate(s.fd, static_cast<off_t>(size)) != 0) {
    return fail_errno("truncate the staging file", errno);
  }
  std::lock_guard sl(s.mu);
  s.size = size;
  s.generation++;
  s.posix.mtime_ns = now_ns();
  if (size < s.streamed) s.stream_broken = true;
  // Emptied, the file no longer lacks bytes a failed write was to put there.
  if (size == 0) s.manifest.write_failed = false;
  return {};
}

void FileSystem::drop_staged_if_done(Inode& n) {
  if (!n.staged || n.open_handles > 0) return;
  std::shared_ptr<Staged> gone;
  {
    std::lock_guard sl(n.staged->mu);
    if (n.staged->dirty() && !n.staged->unlinked) return;
    gone = std::move(n.staged);
  }
  // `gone` is released here, its mutex unlocked: the destructor removes the files.
}

std::shared_ptr<FileSystem::Staged> FileSystem::adopt_recovered(const std::string& key, Ino ino) {
  auto it = recovered_.find(key);
  if (it == recovered_.end()) return nullptr;
  auto s = it->second.lock();
  recovered_.erase(it);
  if (!s) return nullptr;
  std::lock_guard sl(s->mu);
  if (s->unlinked || !s->dirty()) return nullptr;
  s->ino = ino;
  return s;
}

// ---------------------------------------------------------------------------
// create, write, truncate, fallocate

Result<std::pair<Attr, OpenResult>> FileSystem::create(Ino parent, const std::string& name,
                                                       mode_t mode, int flags,
                                                       const Caller& caller) {
  if (Status st = writable(); !st) return std::unexpected(st.error());
  if (name.size() > kMaxNameLength) return fail(ErrorCode::kNameTooLong, "name over 255 bytes");
  if (!is_valid_name(name) || !is_utf8(name)) {
    return fail(ErrorCode::kInvalidArgument, "not a valid file name (S3 keys are UTF-8)");
  }
  // The kernel asks only after its own lookup said the name is absent; the TTL
  // may hide a newer object, so look again unless a listing vouches for it.
  auto existing = lookup(parent, name);
  if (existing) {
    forget(existing->ino, 1);
    if (flags & O_EXCL) return fail(ErrorCode::kExists, "the file exists");
    if (S_ISDIR(existing->mode)) return fail(ErrorCode::kIsADirectory, "is a directory");
    auto opened = open(existing->ino, flags);
    if (!opened) return std::unexpected(opened.error());
    std::lock_guard lock(mu_);
    Inode* n = find(existing->ino);
    if (!n) return fail(ErrorCode::kStale, "stale inode");
    n->lookups++;
    return std::pair{attr_of(*n), *opened};
  }
  if (existing.error().code != ErrorCode::kNotFound) return std::unexpected(existing.error());

  std::string key;
  {
    std::lock_guard lock(mu_);
    auto dir = find_dir(parent);
    if (!dir) return std::unexpected(dir.error());
    key = (*dir)->key + name;
  }
  PosixMetadata posix;
  posix.mode = S_IFREG | (mode & 07777);
  posix.uid = caller.uid;
  posix.gid = caller.gid;
  posix.mtime_ns = posix.atime_ns = now_ns();
  auto s = new_staged(0, key, "", posix);
  if (!s) return std::unexpected(s.error());
  std::lock_guard lock(mu_);
  auto dir = find_dir(parent);
  if (!dir) return std::unexpected(dir.error());
  if ((*dir)->children.contains(name)) {
    std::lock_guard sl((*s)->mu);
    (*s)->unlinked = true;
    return fail(ErrorCode::kExists, "the file was created concurrently");
  }
  deleted_locally_.erase(key);
  Ino ino = child_ino(**dir, name, key, S_IFREG);
  Inode& n = *inodes_[ino];
  std::shared_ptr<Staged> staged = *s;
  staged->ino = ino;
  if (auto old = adopt_recovered(key, 0)) {
    // A recovered file of that name is replaced by this new one: never exported.
    std::lock_guard sl(old->mu);
    old->unlinked = true;
  }
  {
    std::lock_guard sl(staged->mu);
    staged->writers = 1;
  }
  n.staged = staged;
  n.posix = posix;
  n.metadata_loaded = true;
  n.etag.clear();
  n.size = 0;
  n.validated = SteadyClock::now();
  n.lookups++;
  n.open_handles++;
  auto handle = std::make_shared<Handle>(ino, cache::ObjectVersion{options_.bucket, key, "", 0},
                                         options_);
  handle->staged = staged;
  handle->writable = true;
  uint64_t fh = next_fh_++;
  handles_[fh] = std::move(handle);
  return std::pair{attr_of(n), OpenResult{fh, false}};
}

Result<size_t> FileSystem::write(uint64_t fh, uint64_t offset, std::string_view data) {
  std::shared_ptr<Staged> s;
  {
    std::lock_guard lock(mu_);
    auto it = handles_.find(fh);
    if (it == handles_.end()) return fail(ErrorCode::kBadHandle, "unknown file handle");
    if (!it->second->writable) return fail(ErrorCode::kBadHandle, "not open for writing");
    s = it->second->staged;
  }
  if (Status st = check_size(offset + data.size()); !st) return std::unexpected(st.error());
  bool sequential;
  {
    std::shared_lock io(s->io);
    Status st = cache::io::pwrite_full(s->fd, data, offset, "write to the staging file");
    std::lock_guard sl(s->mu);
    bool first_change = !s->dirty() || s->manifest.complete;
    if (!st) {
      // The file now lacks bytes its writer meant it to have: never exported as it is.
      s->manifest.write_failed = true;
      s->manifest.complete = false;
      if (Status saved = s->store.save(s->manifest); !saved) {
        spdlog::error("staging: {}", saved.error().describe());
      }
      return std::unexpected(st.error());
    }
    s->size = std::max(s->size, offset + data.size());
    s->generation++;
    metrics_.written_bytes += data.size();
    s->posix.mtime_ns = now_ns();
    if (offset < s->streamed) s->stream_broken = true;
    sequential = offset + data.size() == s->size;
    s->last_write_sequential = sequential;
    if (first_change) {
      // A crash from here on leaves a file its writer had not closed: kept, not exported.
      s->manifest.complete = false;
      if (Status saved = s->store.save(s->manifest); !saved) return std::unexpected(saved.error());
    }
  }
  if (sequential && exporter_) {
    stream_parts(s);
    // Back-pressure: a writer may run at most one round of parts ahead of the
    // upload, so close() waits for about that, not for the whole file.
    const uint64_t ahead = static_cast<uint64_t>(options_.upload_concurrency) *
                           std::max(options_.part_size, s3::kMinPartSize);
    std::unique_lock sl(s->mu);
    s->parts_done.wait(sl, [&] {
      return (s->manifest.upload_id.empty() && !s->creating_upload) || s->stream_broken ||
             s->stream_error || s->unlinked || s->exporting || s->in_flight == 0 ||
             s->size <= s->streamed + ahead;
    });
  }
  return data.size();
}

Status FileSystem::fallocate(uint64_t fh, int mode, uint64_t offset, uint64_t length) {
  std::shared_ptr<Staged> s;
  {
    std::lock_guard lock(mu_);
    auto it = handles_.find(fh);
    if (it == handles_.end()) return fail(ErrorCode::kBadHandle, "unknown file handle");
    if (!it->second->writable) return fail(ErrorCode::kBadHandle, "not open for writing");
    s = it->second->staged;
  }
  if (mode & ~FALLOC_FL_KEEP_SIZE) {
    return fail(ErrorCode::kNotSupported, "only fallocate modes 0 and KEEP_SIZE are supported");
  }
  if (Status st = check_size(offset + length); !st) return st;
  std::unique_lock io(s->io);
  if (::fallocate(s->fd, mode, static_cast<off_t>(offset), static_cast<off_t>(length)) != 0) {
    return fail_errno("fallocate in the staging file", errno);
  }
  std::lock_guard sl(s->mu);
  if (!(mode & FALLOC_FL_KEEP_SIZE) && offset + length > s->size) {
    s->size = offset + length;
    s->generation++;
  }
  return {};
}

Result<Attr> FileSystem::setattr(Ino ino, const SetAttr& change, std::optional<uint64_t> fh) {
  if (Status st = writable(); !st) return std::unexpected(st.error());
  bool has_handle_writer = false;
  if (fh) {
    std::lock_guard lock(mu_);
    auto it = handles_.find(*fh);
    has_handle_writer = it != handles_.end() && it->second->writable;
  }
  if (change.size) {
    if (Status st = check_size(*change.size); !st) return std::unexpected(st.error());
    {
      std::lock_guard lock(mu_);
      Inode* n = find(ino);
      if (!n) return fail(ErrorCode::kStale, "stale inode");
      if (n->type == S_IFDIR) return fail(ErrorCode::kIsADirectory, "is a directory");
    }
    auto s = stage(ino, *change.size == 0);
    if (!s) return std::unexpected(s.error());
    if (Status st = truncate_staged(**s, *change.size); !st) return std::unexpected(st.error());
  }
  std::shared_ptr<Staged> s;
  bool metadata_change = change.mode || change.uid || change.gid || change.atime || change.mtime;
  std::string key, etag;
  mode_t type = 0;
  PosixMetadata posix;
  {
    std::lock_guard lock(mu_);
    Inode* n = find(ino);
    if (!n) return fail(ErrorCode::kStale, "stale inode");
    type = n->type;
    posix = n->posix;
    s = n->staged;
    if (s) {
      std::lock_guard sl(s->mu);
      posix = s->posix;
    }
    if (change.mode) posix.mode = type | (*change.mode & 07777);
    if (!posix.mode) posix.mode = type | (type == S_IFDIR ? options_.dir_mode : options_.file_mode);
    if (change.uid) posix.uid = *change.uid;
    if (change.gid) posix.gid = *change.gid;
    if (!posix.uid) posix.uid = options_.uid;
    if (!posix.gid) posix.gid = options_.gid;
    auto ns = [](const timespec& t) { return int64_t{t.tv_sec} * 1'000'000'000 + t.tv_nsec; };
    if (change.mtime) posix.mtime_ns = ns(*change.mtime);
    if (change.atime) posix.atime_ns = ns(*change.atime);
    key = n->key;
    etag = n->etag;
    if (metadata_change && s) {
      std::lock_guard sl(s->mu);
      s->posix = posix;
      s->generation++;
      if (change.atime || change.mtime) s->times_set = true;
    }
  }
  if (s) {
    // Exported at close while a writer has it open; otherwise now (truncate(2),
    // chmod(2) of a staged file nobody has open).
    bool writers;
    {
      std::lock_guard sl(s->mu);
      writers = s->writers > 0 || has_handle_writer;
    }
    if (!writers) {
      Status st = export_staged(s);
      if (!st) {
        if (exporter_) exporter_->retry_later(s);
        return std::unexpected(st.error());
      }
      std::lock_guard lock(mu_);
      if (Inode* n = find(ino); n && n->staged == s) drop_staged_if_done(*n);
    }
  } else if (metadata_change) {
    std::string new_etag = etag;
    if (!options_.export_policy.changed || (etag.empty() && type != S_IFDIR)) {
      // Kept on this mount only (CHANGED is not exported, or the object is local).
    } else if (Status st = replace_metadata(key, etag, posix, &new_etag); !st) {
      return std::unexpected(st.error());
    }
    std::lock_guard lock(mu_);
    Inode* n = find(ino);
    if (!n) return fail(ErrorCode::kStale, "stale inode");
    n->posix = posix;
    n->metadata_loaded = true;
    if (n->etag == etag) n->etag = new_etag;
    n->last_open_etag = n->etag;
    n->validated = SteadyClock::now();
  }
  std::lock_guard lock(mu_);
  Inode* n = find(ino);
  if (!n) return fail(ErrorCode::kStale, "stale inode");
  return attr_of(*n);
}

Status FileSystem::replace_metadata(const std::string& key, const std::string& etag,
                                    const PosixMetadata& posix, std::string* new_etag) {
  if (key.ends_with('/') || key.empty()) {
    // A directory: its metadata lives on its marker object, made if missing.
    if (key.empty()) return fail(ErrorCode::kNotSupported, "the mount root has no object");
    metrics_.count_request("PutObject");
    auto put = client_.put_object(
        {options_.bucket, key, s3::Body::empty(), metadata_of(posix, {}), ""});
    if (!put) return std::unexpected(put.error());
    *new_etag = *put;
    return {};
  }
  // A copy onto itself replacing the metadata: S3's only way to change it. The
  // other user metadata and the content type are kept; If-Match keeps a newer
  // version written elsewhere from being overwritten with this one's bytes.
  metrics_.count_request("HeadObject");
  auto head = client_.head_object(options_.bucket, key);
  if (!head) return std::unexpected(head.error());
  if (head->etag != etag) return fail(ErrorCode::kStale, "the object changed; try again");
  s3::CopyObjectRequest req;
  req.source_bucket = req.bucket = options_.bucket;
  req.source_key = req.key = key;
  req.source_if_match = etag;
  req.replace_metadata = metadata_of(posix, head->metadata);
  req.content_type = head->content_type;
  metrics_.count_request("CopyObject");
  auto copied = s3::copy_any_size(client_, req, head->size, {});
  if (!copied) return std::unexpected(copied.error());
  *new_etag = *copied;
  return {};
}

// ---------------------------------------------------------------------------
// Export

void FileSystem::stream_parts(const std::shared_ptr<Staged>& s) {
  if (!exporter_) return;
  const uint64_t base = std::max(options_.part_size, s3::kMinPartSize);
  std::unique_lock sl(s->mu);
  if (s->stream_broken || s->stream_error || s->unlinked || s->exporting || !may_export(*s)) {
    return;
  }
  // Only files of two parts or more are streamed (smaller ones are one PUT).
  if (s->manifest.upload_id.empty()) {
    if (s->creating_upload || s->size < 2 * base) return;
    s->creating_upload = true;
    std::string key = s->manifest.key, content_type = s->manifest.content_type;
    s3::UserMetadata meta = metadata_of(s->posix, s->manifest.metadata);
    sl.unlock();
    exporter_->submit([this, s, key, meta, content_type] {
      Result<std::string> id = fail(ErrorCode::kIo, "no upload");
      Status asked = no_throw("create upload", [&]() -> Status {
        metrics_.count_request("CreateMultipartUpload");
        id = client_.create_multipart_upload(options_.bucket, key, meta, content_type);
        return {};
      });
      if (!asked) id = std::unexpected(asked.error());
      {
        std::lock_guard l(s->mu);
        s->creating_upload = false;
        if (!id) {
          s->stream_error = id.error();
        } else {
          s->manifest.upload_id = *id;
          s->upload_metadata = meta;
          // Recorded before any part is sent: a crash leaves an upload to abort.
          if (Status st = s->store.save(s->manifest); !st) s->stream_error = st.error();
        }
        s->parts_done.notify_all();
      }
      stream_parts(s);
    });
    return;
  }
  std::vector<std::function<void()>> tasks;
  while (s->in_flight < options_.upload_concurrency) {
    const size_t index = s->parts.size();
    if (index >= static_cast<size_t>(s3::kMaxParts)) break;
    const uint64_t len = part_length(base, index);
    if (s->size < s->streamed + len || !s->last_write_sequential) break;
    const uint64_t off = s->streamed;
    s->parts.push_back({static_cast<int>(index + 1), ""});
    s->streamed += len;
    s->in_flight++;
    std::string key = s->manifest.key, upload_id = s->manifest.upload_id;
    tasks.push_back([this, s, key, upload_id, index, off, len] {
      Result<std::string> etag = fail(ErrorCode::kIo, "part not sent");
      Status sent = no_throw("upload part", [&]() -> Status {
        metrics_.count_request("UploadPart");
        etag = client_.upload_part(options_.bucket, key, upload_id, static_cast<int>(index + 1),
                                   s3::Body::from_file(s->fd, off, len));
        return {};
      });
      if (!sent) etag = std::unexpected(sent.error());
      {
        std::lock_guard l(s->mu);
        if (etag) {
          s->parts[index].etag = *etag;
        } else if (!s->stream_error) {
          s->stream_error = etag.error();
        }
        s->in_flight--;
        s->parts_done.notify_all();
      }
      stream_parts(s);
    });
  }
  s->parts_done.notify_all();  // `streamed` moved: a writer held back may go on
  sl.unlock();
  // Submitted unlocked: a stopping exporter runs a task in this thread.
  for (auto& t : tasks) exporter_->submit(std::move(t));
}

Status FileSystem::export_staged(const std::shared_ptr<Staged>& s) {
  std::unique_lock io(s->io);  // the bytes sent are one state of the file
  std::unique_lock sl(s->mu);
  if (s->unlinked || !s->dirty()) return {};
  if (s->manifest.write_failed) {
    return fail(ErrorCode::kNoSpace,
                "a write to the staging file failed (disk full?): the file is kept staged, not "
                "exported; write it again");
  }
  if (!may_export(*s)) {
    spdlog::info("s3://{}/{} stays on this node (export policy)", options_.bucket,
                 s->manifest.key);
    return {};
  }
  s->parts_done.wait(sl, [&] { return s->in_flight == 0 && !s->creating_upload; });
  s->exporting = true;  // from here on the upload is this export's
  s->parts_done.notify_all();
  const uint64_t generation = s->generation, size = s->size;
  const std::string key = s->manifest.key;
  const s3::UserMetadata meta = metadata_of(s->posix, s->manifest.metadata);
  const std::string content_type = s->manifest.content_type;
  const uint64_t base = std::max(options_.part_size, s3::kMinPartSize);
  std::string upload_id = s->manifest.upload_id;
  std::vector<s3::CompletedPart> parts = s->parts;
  uint64_t streamed = s->streamed;
  bool streamed_ok =
      !upload_id.empty() && !s->stream_broken && !s->stream_error && streamed <= size;
  if (streamed_ok) {
    // The rest must fit in S3's 10,000 parts; if not (a part size too small for
    // the file), the whole file is uploaded again with parts sized to fit.
    size_t count = parts.size();
    for (uint64_t off = streamed; off < size; ++count) off += part_length(base, count);
    if (count > static_cast<size_t>(s3::kMaxParts)) streamed_ok = false;
  }
  sl.unlock();

  Result<std::string> etag = fail(ErrorCode::kOther, "not exported");
  if (streamed_ok) {
    // The streamed parts hold [0, streamed): send the rest and complete.
    std::vector<std::pair<uint64_t, uint64_t>> rest;
    for (uint64_t off = streamed; off < size;) {
      uint64_t len = std::min(part_length(base, parts.size() + rest.size()), size - off);
      rest.emplace_back(off, len);
      off += len;
    }
    const size_t first = parts.size();
    parts.resize(first + rest.size());
    Status st = s3::run_parallel(
        static_cast<int>(rest.size()), options_.upload_concurrency, [&](int i) -> Status {
          metrics_.count_request("UploadPart");
          auto e = client_.upload_part(options_.bucket, key, upload_id,
                                       static_cast<int>(first + i + 1),
                                       s3::Body::from_file(s->fd, rest[i].first, rest[i].second));
          if (!e) return std::unexpected(e.error());
          parts[first + i] = {static_cast<int>(first + i + 1), *e};
          return {};
        });
    if (st) {
      metrics_.count_request("CompleteMultipartUpload");
      etag = client_.complete_multipart_upload(options_.bucket, key, upload_id, parts);
    } else {
      etag = std::unexpected(st.error());
    }
    // S3 takes an upload's metadata when it starts. Writes since then moved the
    // file's mtime: the object keeps the upload's times and this mount shows
    // them too, so every mount agrees (docs/SEMANTICS.md). A chmod, chown or
    // utimens since then must be published: a copy onto itself, server-side.
    auto without_times = [](s3::UserMetadata m) {
      m.erase("file-mtime");
      m.erase("file-atime");
      return m;
    };
    std::unique_lock ul(s->mu);
    const bool stale_metadata = s->times_set || without_times(s->upload_metadata) !=
                                                    without_times(meta);
    if (etag && !stale_metadata) {
      const PosixMetadata published = decode_posix_metadata(s->upload_metadata);
      s->posix.mtime_ns = published.mtime_ns;
      s->posix.atime_ns = published.atime_ns;
    }
    ul.unlock();
    if (etag && stale_metadata) {
      s3::CopyObjectRequest fix;
      fix.source_bucket = fix.bucket = options_.bucket;
      fix.source_key = fix.key = key;
      fix.source_if_match = *etag;
      fix.replace_metadata = meta;
      fix.content_type = content_type;
      metrics_.count_request("CopyObject");
      etag = s3::copy_any_size(client_, fix, size, {});
    }
  } else {
    if (!upload_id.empty()) {
      metrics_.count_request("AbortMultipartUpload");
      (void)client_.abort_multipart_upload(options_.bucket, key, upload_id);
    }
    s3::PutObjectRequest target{options_.bucket, key, s3::Body::empty(), meta, content_type};
    metrics_.count_request(size <= base ? "PutObject" : "MultipartUpload");
    s3::TransferOptions transfer;
    transfer.part_size = base;
    transfer.concurrency = options_.upload_concurrency;
    etag = s3::upload_from_fd(client_, s->fd, size, target, transfer);
  }

  sl.lock();
  s->exporting = false;
  // Whatever happened, the upload is finished: the next export starts afresh.
  if (!etag && streamed_ok) {
    s->stream_broken = true;  // its upload id is aborted at the next export
  } else {
    s->manifest.upload_id.clear();
    s->parts.clear();
    s->streamed = 0;
    s->stream_broken = false;
    s->stream_error.reset();
  }
  if (!etag) {
    s->last_error = etag.error().describe();
    if (Status saved = s->store.save(s->manifest); !saved) {
      spdlog::error("staging: {}", saved.error().describe());
    }
    spdlog::error("export of s3://{}/{} failed, kept staged for a retry: {}", options_.bucket, key,
                  s->last_error);
    metrics_.count_error("Export", std::string(to_string(etag.error().code)));
    return std::unexpected(etag.error());
  }
  s->exported = generation;
  s->times_set = false;
  s->manifest.base_etag = *etag;
  metrics_.exported_bytes += size;
  metrics_.exported_files++;
  s->last_error.clear();
  const PosixMetadata posix = s->posix;
  if (Status saved = s->store.save(s->manifest); !saved) {
    spdlog::warn("staging: {}", saved.error().describe());
  }
  sl.unlock();
  io.unlock();
  std::lock_guard lock(mu_);
  if (s->ino != 0) {
    if (Inode* n = find(s->ino); n && n->staged == s) {
      n->etag = *etag;
      n->size = size;
      n->posix = posix;
      n->metadata_loaded = true;
      n->last_open_etag = *etag;
      n->validated = SteadyClock::now();
    }
  }
  return {};
}

Status FileSystem::flush(uint64_t fh) {
  std::shared_ptr<Staged> s;
  {
    std::lock_guard lock(mu_);
    auto it = handles_.find(fh);
    if (it == handles_.end()) return fail(ErrorCode::kBadHandle, "unknown file handle");
    if (!it->second->writable) return {};
    s = it->second->staged;
  }
  {
    std::lock_guard sl(s->mu);
    if (!s->dirty() || s->unlinked) return {};
    // The writer closed it: what the file holds now is what it meant to publish
    // (unless another writer still has it open).
    if (!s->manifest.complete && !s->manifest.write_failed && s->writers <= 1) {
      s->manifest.complete = true;
      if (Status saved = s->store.save(s->manifest); !saved) return saved;
    }
  }
  Status st = export_staged(s);
  if (!st && exporter_) exporter_->retry_later(s);
  return st;
}

Status FileSystem::fsync(uint64_t fh) {
  std::shared_ptr<Staged> s;
  {
    std::lock_guard lock(mu_);
    auto it = handles_.find(fh);
    if (it == handles_.end()) return fail(ErrorCode::kBadHandle, "unknown file handle");
    s = it->second->staged;
  }
  if (!s) return {};  // a file never written through this mount: S3 has it
  Status st = export_staged(s);
  if (!st && exporter_) exporter_->retry_later(s);
  return st;
}

}  // namespace nacre::fs
