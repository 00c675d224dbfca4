// The write half of the fs core (see file_system.h): files are written to a
// staging file on the node's disk (staging/staging_store.h), shared by every
// handle of the inode; create, write, truncate, fallocate, chmod/chown/utimens,
// and close/fsync, which export (export.cc). The export policy decides what
// reaches the bucket.
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

Status check_size(uint64_t size) {
  if (size > kMaxObjectSize) {
    return fail(ErrorCode::kFileTooBig, "S3 objects are at most 5 TiB");
  }
  return {};
}

}  // namespace

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

Result<std::shared_ptr<FileSystem::Staged>> FileSystem::new_staged(
    Ino ino, const std::string& key, const std::string& base_etag, const PosixMetadata& posix,
    const s3::UserMetadata& other, const std::string& content_type) {
  staging::Manifest m;
  m.bucket = options_.bucket;
  m.key = key;
  m.base_etag = base_etag;
  m.staged_at_ns = now_ns();
  m.metadata = metadata_of(posix, other);
  m.content_type = content_type;
  m.modified = base_etag.empty();  // a new file is a change; a copy is not, yet
  auto fd = options_.staging->create(m);
  if (!fd) return std::unexpected(fd.error());
  auto s = std::make_shared<Staged>(*options_.staging, std::move(m), *fd, ino);
  s->posix = posix;
  return s;
}

Result<std::shared_ptr<FileSystem::Staged>> FileSystem::stage(Ino ino, bool truncate,
                                                              bool* created) {
  {
    std::unique_lock lock(mu_);
    Inode* n = find(ino);
    if (!n) return fail(ErrorCode::kStale, "stale inode");
    // The kernel reads the cache file for passthrough handles: writes would not reach them.
    // No passthrough open starts from here until this is over (also while waiting:
    // a reader reopening the file meanwhile must not starve this writer; joins of
    // existing passthrough handles still happen, so the wait is best effort).
    n->staging++;
    if (!n->staged && n->passthrough_opens > 0 && !wait_passthrough_closed(lock, ino)) {
      Inode* busy = find(ino);
      if (busy && busy->staging > 0) busy->staging--;
      if (!busy) return fail(ErrorCode::kStale, "stale inode");
      return busy_error(*busy);
    }
  }
  struct Unmark {
    FileSystem& fs;
    Ino ino;
    ~Unmark() {
      std::lock_guard lock(fs.mu_);
      if (Inode* n = fs.find(ino); n && n->staging > 0) n->staging--;
    }
  } unmark{*this, ino};
  return stage_file(ino, truncate, created);
}

Result<std::shared_ptr<FileSystem::Staged>> FileSystem::stage_file(Ino ino, bool truncate,
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
    if (truncate) {
      // Emptying a file is a change even if nothing is written after it.
      s->manifest.modified = true;
      if (Status saved = s->store.save(s->manifest); !saved) {
        s->unlinked = true;
        return std::unexpected(saved.error());
      }
    }
    s->size = truncate ? 0 : v.size;
    // Staged from S3 and unchanged: nothing to export until a write.
    if (!truncate) s->exported = s->generation;
    // Its bytes did not arrive in order from offset 0: streaming parts from 0
    // would make the first append wait for the whole file's upload.
    if (!truncate && v.size > 0) s->streamable = false;
  }
  std::shared_ptr<Staged> winner;
  {
    std::lock_guard lock(mu_);
    Inode* n = find(ino);
    // Unlinked or renamed while the copy ran: the copy is not this name's file
    // (installed, it would be exported under a name that went away).
    if (!n || !attached(*n) || n->key != v.key) {
      std::lock_guard sl(s->mu);
      s->unlinked = true;
      return fail(ErrorCode::kStale, "the file went away or moved while it was staged");
    }
    if (!n->staged) {
      n->staged = s;
      if (created) *created = true;
      return s;
    }
    // A concurrent open staged it first: use that one.
    {
      std::lock_guard sl(s->mu);
      s->unlinked = true;
    }
    winner = n->staged;
  }
  if (truncate) {
    if (Status st = truncate_staged(*winner, 0); !st) return std::unexpected(st.error());
  }
  return winner;
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
  if (size == 0) {
    s.manifest.write_failed = false;
    s.streamable = true;  // written from 0 again
  }
  if (!s.manifest.modified && !s.unlinked) {
    s.manifest.modified = true;
    if (Status saved = s.store.save(s.manifest); !saved) return saved;
  }
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
  std::shared_ptr<Staged> replaced;
  auto made = [&]() -> Result<std::pair<Attr, OpenResult>> {
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
      replaced = old;
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
    auto handle =
        std::make_shared<Handle>(ino, cache::ObjectVersion{options_.bucket, key, "", 0}, options_);
    handle->staged = staged;
    handle->writable = true;
    uint64_t fh = next_fh_++;
    handles_[fh] = std::move(handle);
    return std::pair{attr_of(n), OpenResult{fh, false}};
  }();
  // An export of the replaced recovered file still in progress ends before the
  // new file can be written (and exported): S3 never ends with the older one.
  if (replaced) std::unique_lock wait(replaced->io);
  return made;
}

Result<std::shared_ptr<FileSystem::Staged>> FileSystem::staged_for_writing(uint64_t fh) {
  std::lock_guard lock(mu_);
  auto it = handles_.find(fh);
  if (it == handles_.end()) return fail(ErrorCode::kBadHandle, "unknown file handle");
  if (!it->second->writable) return fail(ErrorCode::kBadHandle, "not open for writing");
  return it->second->staged;
}

Result<size_t> FileSystem::write(uint64_t fh, uint64_t offset, std::string_view data) {
  auto found = staged_for_writing(fh);
  if (!found) return std::unexpected(found.error());
  std::shared_ptr<Staged> s = std::move(*found);
  if (Status st = check_size(offset + data.size()); !st) return std::unexpected(st.error());
  bool sequential = false;
  std::pair<std::string, std::string> abort_upload;  // key, upload id
  Status failed;
  {
    std::shared_lock io(s->io);
    failed = cache::io::pwrite_full(s->fd, data, offset, "write to the staging file");
    std::lock_guard sl(s->mu);
    if (!failed) {
      // The file now lacks bytes its writer meant it to have: never exported as it
      // is, and its streamed upload will never be completed (aborted below).
      if (s->unlinked) return std::unexpected(failed.error());
      if (!s->manifest.upload_id.empty()) {
        s->stream_broken = true;
        abort_upload = {s->manifest.upload_key.empty() ? s->manifest.key : s->manifest.upload_key,
                        s->manifest.upload_id};
      }
      s->manifest.write_failed = true;
      s->manifest.complete = false;
      if (Status saved = s->store.save(s->manifest); !saved) {
        spdlog::error("staging: {}", saved.error().describe());
      }
    } else {
      const bool first_change = !s->dirty() || s->manifest.complete || !s->manifest.modified;
      s->size = std::max(s->size, offset + data.size());
      s->generation++;
      metrics_.written_bytes += data.size();
      s->posix.mtime_ns = now_ns();
      if (offset < s->streamed) s->stream_broken = true;
      sequential = offset + data.size() == s->size;
      s->last_write_sequential = sequential;
      if (first_change && !s->unlinked) {
        // A crash from here on leaves a file its writer had not closed: kept, not
        // exported.
        s->manifest.complete = false;
        s->manifest.modified = true;
        if (Status saved = s->store.save(s->manifest); !saved) {
          // The manifest on disk may still say "closed": these bytes must never be
          // exported by a recovery as if they were.
          s->manifest.write_failed = true;
          return std::unexpected(saved.error());
        }
      }
    }
  }
  if (!failed) {
    // Unlocked: a stopping exporter runs the task in this thread. The manifest
    // keeps the id until the abort succeeded (else recovery aborts it).
    if (!abort_upload.second.empty() && exporter_) {
      exporter_->submit([this, s, abort_upload] {
        metrics_.count_request("AbortMultipartUpload");
        if (!client_.abort_multipart_upload(options_.bucket, abort_upload.first,
                                            abort_upload.second)) {
          return;
        }
        upload_ended(abort_upload.second);
        std::lock_guard l(s->mu);
        if (s->manifest.upload_id == abort_upload.second) {
          s->manifest.upload_id.clear();
          s->manifest.upload_key.clear();
          if (!s->unlinked) (void)s->store.save(s->manifest);
        }
      });
    }
    return std::unexpected(failed.error());
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
  auto found = staged_for_writing(fh);
  if (!found) return std::unexpected(found.error());
  std::shared_ptr<Staged> s = std::move(*found);
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
    s->posix.mtime_ns = now_ns();
    return s->note_modified();
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
      // Also for a recovery: the manifest publishes what the inode shows.
      s->manifest.metadata = metadata_of(posix, s->manifest.metadata);
      if (!s->unlinked) {
        if (Status st = s->store.save(s->manifest); !st) return std::unexpected(st.error());
      }
      if (Status st = s->note_modified(); !st) return std::unexpected(st.error());
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
    auto put =
        client_.put_object({options_.bucket, key, s3::Body::empty(), metadata_of(posix, {}), ""});
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
