// Changes to the namespace made through the mount (see file_system.h):
// mkdir (a `dir/` marker object), symlink (an object whose body is the
// target, as FSx stores them), unlink and rmdir (DeleteObject), rename
// (CopyObject + DeleteObject per object, not atomic). The export policy
// decides which of them reach the bucket.
#include <fcntl.h>
#include <linux/fs.h>
#include <spdlog/spdlog.h>

#include "fs/inode.h"
#include "fs/names.h"
#include "fs/staged.h"
#include "s3/transfer.h"

namespace nacre::fs {

namespace {

Status check_new_name(const std::string& name) {
  if (name.size() > kMaxNameLength) return fail(ErrorCode::kNameTooLong, "name over 255 bytes");
  if (!is_valid_name(name) || !is_utf8(name)) {
    return fail(ErrorCode::kInvalidArgument, "not a valid file name (S3 keys are UTF-8)");
  }
  return {};
}

PosixMetadata new_posix(mode_t mode, const Caller& caller) {
  PosixMetadata p;
  p.mode = mode;
  p.uid = caller.uid;
  p.gid = caller.gid;
  p.mtime_ns = p.atime_ns = now_ns();
  return p;
}

}  // namespace

Status FileSystem::check_absent(Ino parent, const std::string& name) {
  // The kernel asks only after its own lookup said the name is absent, but the
  // TTL may hide an object made elsewhere since: look again (a fresh listing or
  // negative entry answers without a request) rather than overwrite it.
  auto existing = lookup(parent, name);
  if (existing) {
    forget(existing->ino, 1);
    return fail(ErrorCode::kExists, "the name exists");
  }
  if (existing.error().code != ErrorCode::kNotFound) return std::unexpected(existing.error());
  return {};
}

Result<std::string> FileSystem::new_key(Ino parent, const std::string& name) {
  if (Status st = writable(); !st) return std::unexpected(st.error());
  if (Status st = check_new_name(name); !st) return std::unexpected(st.error());
  if (Status st = check_absent(parent, name); !st) return std::unexpected(st.error());
  std::lock_guard lock(mu_);
  auto dir = find_dir(parent);
  if (!dir) return std::unexpected(dir.error());
  if ((*dir)->children.contains(name)) return fail(ErrorCode::kExists, "the name exists");
  return (*dir)->key + name;
}

Status FileSystem::link() const {
  return fail(ErrorCode::kNotSupported, "hard links are not supported on S3");
}

Status FileSystem::refuse_special() const {
  return fail(ErrorCode::kNotSupported, "only regular files, directories and symlinks");
}

Result<Attr> FileSystem::mkdir(Ino parent, const std::string& name, mode_t mode,
                               const Caller& caller) {
  auto base = new_key(parent, name);
  if (!base) return std::unexpected(base.error());
  const std::string key = *base + "/";
  const PosixMetadata posix = new_posix(S_IFDIR | (mode & 07777), caller);
  const bool exported = options_.export_policy.new_objects;
  if (exported) {
    s3::UserMetadata meta;
    encode_posix_metadata(posix, meta);
    metrics_.count_request("PutObject");
    auto put = client_.put_object({options_.bucket, key, s3::Body::empty(), meta, ""});
    if (!put) return std::unexpected(put.error());
  }
  std::lock_guard lock(mu_);
  auto dir = find_dir(parent);
  if (!dir) return std::unexpected(dir.error());
  deleted_locally_.erase(key);
  Ino ino = child_ino(**dir, name, key, S_IFDIR);
  Inode& n = *inodes_[ino];
  n.posix = posix;
  n.metadata_loaded = true;
  n.local_only = !exported;
  // A new directory is empty: its listing is known for the TTL.
  n.imported = true;
  n.listed = n.validated = SteadyClock::now();
  n.lookups++;
  return attr_of(n);
}

Result<Attr> FileSystem::symlink(Ino parent, const std::string& name, const std::string& target,
                                 const Caller& caller) {
  if (target.empty() || target.size() >= 4096) {
    return fail(ErrorCode::kNameTooLong, "symlink targets are 1 to 4095 bytes");
  }
  auto made = new_key(parent, name);
  if (!made) return std::unexpected(made.error());
  const std::string key = *made;
  // FSx's format: the body is the target, file-permissions carries S_IFLNK.
  const PosixMetadata posix = new_posix(S_IFLNK | 0777, caller);
  const bool exported = options_.export_policy.new_objects;
  std::string etag;
  if (exported) {
    s3::UserMetadata meta;
    encode_posix_metadata(posix, meta);
    metrics_.count_request("PutObject");
    auto put = client_.put_object({options_.bucket, key, s3::Body::from_memory(target), meta, ""});
    if (!put) return std::unexpected(put.error());
    etag = *put;
  }
  std::lock_guard lock(mu_);
  auto dir = find_dir(parent);
  if (!dir) return std::unexpected(dir.error());
  deleted_locally_.erase(key);
  Ino ino = child_ino(**dir, name, key, S_IFLNK, &etag);
  Inode& n = *inodes_[ino];
  n.etag = etag;
  n.size = target.size();
  n.posix = posix;
  n.metadata_loaded = true;
  n.symlink_target = target;
  n.local_only = !exported;
  n.mtime = to_timespec(std::chrono::system_clock::now());
  n.validated = SteadyClock::now();
  n.lookups++;
  return attr_of(n);
}

Status FileSystem::unlink(Ino parent, const std::string& name) {
  if (Status st = writable(); !st) return st;
  std::shared_ptr<Staged> staged;
  {
    std::lock_guard lock(mu_);
    auto dir = find_dir(parent);
    if (!dir) return std::unexpected(dir.error());
    auto it = (*dir)->children.find(name);
    if (it == (*dir)->children.end()) return fail(ErrorCode::kNotFound, "no such file");
    Inode& n = *inodes_[it->second];
    if (n.type == S_IFDIR) return fail(ErrorCode::kIsADirectory, "is a directory");
    // A recovered file of that name not exported yet goes with it.
    if (!n.staged) n.staged = adopt_recovered(n.key, n.ino);
    staged = n.staged;
  }
  // An export in progress finishes first, and none starts after: a deleted file
  // never reappears in S3 because its close raced with the unlink.
  std::unique_lock<std::shared_mutex> io;
  if (staged) io = std::unique_lock(staged->io);
  std::string key;
  bool in_s3 = false;
  Ino ino = 0;
  {
    std::lock_guard lock(mu_);
    auto dir = find_dir(parent);
    if (!dir) return std::unexpected(dir.error());
    auto it = (*dir)->children.find(name);
    if (it == (*dir)->children.end()) return fail(ErrorCode::kNotFound, "no such file");
    ino = it->second;
    Inode& n = *inodes_[ino];
    if (n.staged != staged) return fail(ErrorCode::kStale, "the file changed; try again");
    key = n.key;
    // An object exists unless the file was only ever staged or kept local.
    in_s3 = !n.local_only && !n.etag.empty();
    if (staged) {
      std::lock_guard sl(staged->mu);
      in_s3 = !staged->manifest.base_etag.empty();
    }
  }
  if (in_s3 && options_.export_policy.deleted) {
    metrics_.count_request("DeleteObject");
    if (Status st = client_.delete_object(options_.bucket, key); !st) return st;
  }
  if (staged) {
    // Open handles keep writing to it, as to an unlinked file; it is never
    // exported, and a crash from here on does not bring it back.
    std::string upload_id, upload_key;
    std::vector<staging::UploadWindow> windows;
    {
      std::lock_guard sl(staged->mu);
      staged->unlinked = true;
      windows = staged->manifest.upload_windows;
      upload_id = staged->manifest.upload_id;
      upload_key = staged->manifest.upload_key.empty() ? key : staged->manifest.upload_key;
      if (Status st = staged->store.remove(staged->manifest.id); !st) {
        spdlog::warn("staging: {}", st.error().describe());
      }
    }
    // Nothing will complete its streamed upload: abort it (best effort; parts
    // still in flight fail against the aborted upload).
    if (!upload_id.empty()) {
      metrics_.count_request("AbortMultipartUpload");
      (void)client_.abort_multipart_upload(options_.bucket, upload_key, upload_id);
      upload_ended(upload_id);
    }
    look_for_uploads_later(std::move(windows));
  }
  io = {};
  std::lock_guard lock(mu_);
  if (in_s3 && !options_.export_policy.deleted) deleted_locally_.insert(key);
  // The key's next file gets a new inode: this one lives on for its open handles.
  if (auto k = ino_by_key_.find(key); k != ino_by_key_.end() && k->second == ino) {
    ino_by_key_.erase(k);
  }
  Inode* dir = find(parent);
  if (!dir) return {};
  auto it = dir->children.find(name);
  if (it == dir->children.end() || it->second != ino) return {};
  dir->children.erase(it);
  dir->negative[name] = SteadyClock::now();
  if (Inode* n = find(ino)) drop_staged_if_done(*n);
  drop_if_unused(ino);
  return {};
}

Status FileSystem::rmdir(Ino parent, const std::string& name) {
  if (Status st = writable(); !st) return st;
  Ino ino = 0;
  std::string key;
  {
    std::lock_guard lock(mu_);
    auto dir = find_dir(parent);
    if (!dir) return std::unexpected(dir.error());
    auto it = (*dir)->children.find(name);
    if (it == (*dir)->children.end()) return fail(ErrorCode::kNotFound, "no such directory");
    ino = it->second;
    if (inodes_[ino]->type != S_IFDIR) return fail(ErrorCode::kNotADirectory, "not a directory");
    key = inodes_[ino]->key;
  }
  // Empty means: nothing under the prefix but its marker, in S3 (less what was
  // deleted here only) and on this mount (files still staged).
  if (Status st = list_directory(ino); !st) return st;
  bool local_only = false;
  {
    std::lock_guard lock(mu_);
    Inode* n = find(ino);
    if (!n) return fail(ErrorCode::kStale, "stale inode");
    if (!n->children.empty()) return fail(ErrorCode::kNotEmpty, "directory not empty");
    local_only = n->local_only;
  }
  if (!local_only && options_.export_policy.deleted) {
    // The view may leave out objects (an import policy without NEW, hidden
    // names): S3 decides whether anything but the marker is left.
    metrics_.count_request("ListObjectsV2");
    auto page = client_.list_objects({options_.bucket, key, "", "", "", 2});
    if (!page) return std::unexpected(page.error());
    for (const auto& o : page->objects) {
      if (o.key != key) return fail(ErrorCode::kNotEmpty, "directory not empty (in S3)");
    }
  }
  if (!local_only) {
    if (options_.export_policy.deleted) {
      metrics_.count_request("DeleteObject");
      if (Status st = client_.delete_object(options_.bucket, key); !st) return st;
    }
  }
  std::lock_guard lock(mu_);
  if (!local_only && !options_.export_policy.deleted) deleted_locally_.insert(key);
  Inode* dir = find(parent);
  if (!dir) return {};
  auto it = dir->children.find(name);
  if (it != dir->children.end() && it->second == ino) {
    dir->children.erase(it);
    dir->negative[name] = SteadyClock::now();
    drop_if_unused(ino);
  }
  return {};
}

void FileSystem::rekey(Ino ino, const std::string& from, const std::string& to) {
  Inode* n = find(ino);
  if (!n || !n->key.starts_with(from)) return;
  if (auto it = ino_by_key_.find(n->key); it != ino_by_key_.end() && it->second == ino) {
    ino_by_key_.erase(it);
  }
  n->key = to + n->key.substr(from.size());
  ino_by_key_[n->key] = ino;
  if (n->staged) {
    std::lock_guard sl(n->staged->mu);
    n->staged->manifest.key = n->key;
    // Its streamed parts went to the old key: the export starts over.
    if (!n->staged->manifest.upload_id.empty()) n->staged->stream_broken = true;
    if (Status st = n->staged->store.save(n->staged->manifest); !st) {
      spdlog::error("staging: {}", st.error().describe());
    }
  }
  for (const auto& [child_name, child] : n->children) rekey(child, from, to);
}

Result<std::string> FileSystem::move_file(Ino ino, const std::string& from, const std::string& to,
                                          uint64_t size, const std::string& etag) {
  std::shared_ptr<Staged> s;
  {
    std::lock_guard lock(mu_);
    if (Inode* n = find(ino)) s = n->staged;
  }
  if (s) {
    std::lock_guard sl(s->mu);
    if (s->dirty() || s->manifest.base_etag.empty()) {
      // Not in S3 as it is now: it goes to the new key at its export (rekey);
      // only the old object, if any, is deleted here.
      return std::string();
    }
  }
  if (etag.empty()) return std::string();  // local only
  s3::CopyObjectRequest req;
  req.source_bucket = req.bucket = options_.bucket;
  req.source_key = from;
  req.source_if_match = etag;
  req.key = to;
  metrics_.count_request("CopyObject");
  auto copied = s3::copy_any_size(client_, req, size, {});
  if (!copied) return std::unexpected(copied.error());
  std::lock_guard lock(mu_);
  if (Inode* n = find(ino); n && n->etag == etag) {
    n->etag = *copied;
    n->last_open_etag = *copied;
  }
  return *copied;
}

Status FileSystem::move_directory(const std::string& from, const std::string& to) {
  // Per object and not atomic (docs/SEMANTICS.md): copy everything first, then
  // delete, so a failure midway loses nothing (the copies already made remain).
  std::vector<s3::ObjectInfo> objects;
  s3::ListRequest req{options_.bucket, from, "", "", "", 1000};
  do {
    metrics_.count_request("ListObjectsV2");
    auto page = client_.list_objects(req);
    if (!page) return std::unexpected(page.error());
    for (auto& o : page->objects) {
      if (o.key.starts_with(from)) objects.push_back(std::move(o));
    }
    req.continuation_token = page->next_continuation_token;
  } while (!req.continuation_token.empty());
  for (const auto& o : objects) {
    s3::CopyObjectRequest copy;
    copy.source_bucket = copy.bucket = options_.bucket;
    copy.source_key = o.key;
    copy.source_if_match = o.etag;
    copy.key = to + o.key.substr(from.size());
    metrics_.count_request("CopyObject");
    auto copied = s3::copy_any_size(client_, copy, o.size, {});
    if (!copied) return std::unexpected(copied.error());
  }
  std::vector<std::string> keys;
  for (size_t i = 0; i < objects.size(); ++i) {
    keys.push_back(objects[i].key);
    if (keys.size() == 1000 || i + 1 == objects.size()) {
      metrics_.count_request("DeleteObjects");
      auto failed = client_.delete_objects(options_.bucket, keys);
      if (!failed) return std::unexpected(failed.error());
      if (!failed->empty()) return std::unexpected(failed->front().error);
      keys.clear();
    }
  }
  return {};
}

Status FileSystem::rename(Ino parent, const std::string& name, Ino new_parent,
                          const std::string& new_name, unsigned flags) {
  if (Status st = writable(); !st) return st;
  if (flags & RENAME_EXCHANGE) {
    return fail(ErrorCode::kInvalidArgument, "RENAME_EXCHANGE is not supported");
  }
  if (Status st = check_new_name(new_name); !st) return st;
  if (!options_.export_policy.all()) {
    // A rename is a new object and a deleted one; under a partial policy it
    // cannot be carried out as one change: EXDEV makes mv copy and unlink, each
    // of which the policy then governs.
    return fail(ErrorCode::kCrossDevice, "rename needs the export policy NEW,CHANGED,DELETED");
  }
  Ino ino = 0, target = 0;
  std::string from, to, etag;
  mode_t type = 0;
  uint64_t size = 0;
  {
    std::lock_guard lock(mu_);
    auto dir = find_dir(parent);
    if (!dir) return std::unexpected(dir.error());
    auto new_dir = find_dir(new_parent);
    if (!new_dir) return std::unexpected(new_dir.error());
    auto it = (*dir)->children.find(name);
    if (it == (*dir)->children.end()) return fail(ErrorCode::kNotFound, "no such file");
    ino = it->second;
    Inode& n = *inodes_[ino];
    type = n.type;
    from = n.key;
    etag = n.etag;
    size = n.size;
    to = (*new_dir)->key + new_name + (type == S_IFDIR ? "/" : "");
    if (auto t = (*new_dir)->children.find(new_name); t != (*new_dir)->children.end()) {
      target = t->second;
      if (target == ino) return {};
      if (flags & RENAME_NOREPLACE) return fail(ErrorCode::kExists, "the target exists");
      const mode_t target_type = inodes_[target]->type;
      if (type == S_IFDIR && target_type != S_IFDIR) {
        return fail(ErrorCode::kNotADirectory, "the target is not a directory");
      }
      if (type != S_IFDIR && target_type == S_IFDIR) {
        return fail(ErrorCode::kIsADirectory, "the target is a directory");
      }
    }
    if (type == S_IFDIR && (to.starts_with(from))) {
      return fail(ErrorCode::kInvalidArgument, "a directory cannot move into itself");
    }
  }
  // No export of the file or of the file it replaces runs while the keys move
  // (it would publish under the old name, or resurrect the replaced file).
  std::shared_ptr<Staged> src_staged, dst_staged;
  {
    std::lock_guard lock(mu_);
    if (Inode* n = find(ino)) src_staged = n->staged;
    if (Inode* t = target ? find(target) : nullptr) dst_staged = t->staged;
  }
  std::unique_lock<std::shared_mutex> src_io, dst_io;
  if (src_staged) src_io = std::unique_lock(src_staged->io, std::defer_lock);
  if (dst_staged) dst_io = std::unique_lock(dst_staged->io, std::defer_lock);
  if (src_staged && dst_staged) {
    std::lock(src_io, dst_io);
  } else if (src_staged) {
    src_io.lock();
  } else if (dst_staged) {
    dst_io.lock();
  }
  // The object the target name holds in S3 (none if only staged or local): a
  // staged source replaces it at its export, and must delete it if unlinked first.
  std::string target_s3_etag;
  {
    std::lock_guard lock(mu_);
    // Re-read now that no export can change them: what S3 holds for the source
    // (a staged file's base version, not the inode's last listing) and its size.
    Inode* n = find(ino);
    if (!n || n->staged != src_staged ||
        (target && (!find(target) || find(target)->staged != dst_staged))) {
      return fail(ErrorCode::kStale, "the file changed during the rename; try again");
    }
    etag = n->local_only ? std::string() : n->etag;
    size = n->size;
    if (src_staged) {
      std::lock_guard sl(src_staged->mu);
      etag = src_staged->manifest.base_etag;
      if (!src_staged->dirty()) size = src_staged->size;
    }
    if (Inode* t = target ? find(target) : nullptr; t && !t->local_only) {
      target_s3_etag = t->etag;
      if (t->staged) {
        std::lock_guard sl(t->staged->mu);
        target_s3_etag = t->staged->manifest.base_etag;
      }
    }
  }
  std::string copied_etag;
  if (type == S_IFDIR) {
    if (target != 0) {
      if (Status st = list_directory(target); !st) return st;
      std::lock_guard lock(mu_);
      if (Inode* t = find(target); t && !t->children.empty()) {
        return fail(ErrorCode::kNotEmpty, "the target directory is not empty");
      }
    }
    if (Status st = move_directory(from, to); !st) return st;
  } else {
    auto moved = move_file(ino, from, to, size, etag);
    if (!moved) return std::unexpected(moved.error());
    copied_etag = *moved;
    if (!etag.empty()) {
      metrics_.count_request("DeleteObject");
      if (Status st = client_.delete_object(options_.bucket, from); !st) return st;
    }
  }

  std::shared_ptr<Staged> to_export;
  std::pair<std::string, std::string> replaced_upload;  // key, id
  std::vector<staging::UploadWindow> replaced_windows;
  {
    std::lock_guard lock(mu_);
    Inode* dir = find(parent);
    Inode* new_dir = find(new_parent);
    Inode* n = find(ino);
    if (!dir || !new_dir || !n) return fail(ErrorCode::kStale, "renamed while it was renamed");
    if (auto t = new_dir->children.find(new_name); t != new_dir->children.end()) {
      // The replaced file: whatever it was still staging is never exported.
      Ino replaced = t->second;
      new_dir->children.erase(t);
      if (Inode* r = find(replaced)) {
        if (r->staged) {
          std::lock_guard sl(r->staged->mu);
          r->staged->unlinked = true;
          (void)r->staged->store.remove(r->staged->manifest.id);
          replaced_windows = r->staged->manifest.upload_windows;
          if (!r->staged->manifest.upload_id.empty()) {
            const auto& m = r->staged->manifest;
            replaced_upload = {m.upload_key.empty() ? m.key : m.upload_key, m.upload_id};
          }
        }
        if (auto k = ino_by_key_.find(r->key); k != ino_by_key_.end() && k->second == replaced) {
          ino_by_key_.erase(k);
        }
        drop_staged_if_done(*r);
      }
      drop_if_unused(replaced);
    }
    if (auto it = dir->children.find(name); it != dir->children.end() && it->second == ino) {
      dir->children.erase(it);
    }
    dir->negative[name] = SteadyClock::now();
    rekey(ino, from, to);
    n->parent = new_parent;
    n->name = new_name;
    new_dir->children[new_name] = ino;
    new_dir->negative.erase(new_name);
    if (n->staged) {
      std::lock_guard sl(n->staged->mu);
      // What S3 holds at the new key now: the copy, or the replaced target's object.
      n->staged->manifest.base_etag = copied_etag.empty() ? target_s3_etag : copied_etag;
      if (copied_etag.empty()) n->staged->manifest.modified = true;  // S3 lacks it
      if (Status st = n->staged->store.save(n->staged->manifest); !st) {
        spdlog::error("staging: {}", st.error().describe());
      }
      if (n->staged->writers == 0 && n->staged->dirty()) to_export = n->staged;
    }
  }
  src_io = {};
  dst_io = {};
  // The replaced file's streamed upload: nothing will complete it (best effort).
  if (!replaced_upload.second.empty()) {
    metrics_.count_request("AbortMultipartUpload");
    (void)client_.abort_multipart_upload(options_.bucket, replaced_upload.first,
                                         replaced_upload.second);
    upload_ended(replaced_upload.second);
  }
  look_for_uploads_later(std::move(replaced_windows));
  // A staged file nobody has open goes out now, under its new name.
  if (to_export) {
    Status st = export_staged(to_export);
    if (!st && exporter_) exporter_->retry_later(to_export);
    return st;
  }
  return {};
}

}  // namespace nacre::fs
