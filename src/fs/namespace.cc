// The namespace half of the fs core: inodes, the directory view of a prefix,
// the metadata TTL and the import policy (see file_system.h).
#include <spdlog/spdlog.h>

#include <set>

#include "fs/inode.h"
#include "fs/names.h"
#include "fs/staged.h"

namespace nacre::fs {

timespec to_timespec(std::chrono::system_clock::time_point t) {
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  return {static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
}

double FileSystem::timeout_seconds() const {
  if (!options_.metadata_ttl) return 365.0 * 24 * 3600;
  return std::chrono::duration<double>(*options_.metadata_ttl).count();
}

bool FileSystem::fresh(SteadyClock::time_point at) const {
  if (at == SteadyClock::time_point{}) return false;
  if (!options_.metadata_ttl) return true;
  return SteadyClock::now() - at < *options_.metadata_ttl;
}

FileSystem::Inode* FileSystem::find(Ino ino) {
  auto it = inodes_.find(ino);
  return it == inodes_.end() ? nullptr : it->second.get();
}

size_t FileSystem::inode_count() {
  std::lock_guard lock(mu_);
  return inodes_.size();
}

Result<FileSystem::Inode*> FileSystem::find_dir(Ino ino) {
  Inode* n = find(ino);
  if (!n) return fail(ErrorCode::kStale, "stale directory inode");
  if (n->type != S_IFDIR) return fail(ErrorCode::kNotADirectory, "not a directory");
  return n;
}

bool FileSystem::attached(const Inode& n) {
  if (n.ino == kRootIno) return true;
  Inode* parent = find(n.parent);
  if (!parent) return false;
  auto it = parent->children.find(n.name);
  return it != parent->children.end() && it->second == n.ino;
}

bool FileSystem::hidden_locally(const std::string& key) const {
  return !deleted_locally_.empty() && deleted_locally_.contains(key);
}

Attr FileSystem::attr_of(const Inode& inode) const {
  // A staged file shows its staged size and metadata.
  const Inode* shown = &inode;
  Inode staged_view;
  if (inode.staged) {
    std::lock_guard sl(inode.staged->mu);
    staged_view.size = inode.staged->size;
    staged_view.posix = inode.staged->posix;
    staged_view.mtime = inode.mtime;
    staged_view.ino = inode.ino;
    staged_view.type = inode.type;
    shown = &staged_view;
  }
  const Inode& n = *shown;
  Attr a;
  a.ino = n.ino;
  mode_t type = n.type;
  mode_t perm = type == S_IFDIR ? options_.dir_mode : options_.file_mode;
  if (n.posix.mode) perm = *n.posix.mode & 07777;
  if (!options_.allow_suid) perm &= ~(S_ISUID | S_ISGID);
  if (type == S_IFLNK) perm = 0777;
  if (options_.read_only) perm &= ~0222;
  a.mode = type | perm;
  a.nlink = type == S_IFDIR ? 2 : 1;
  a.uid = n.posix.uid.value_or(options_.uid);
  a.gid = n.posix.gid.value_or(options_.gid);
  a.size = type == S_IFDIR ? 4096 : n.size;
  a.mtime = n.mtime;
  if (n.posix.mtime_ns) {
    a.mtime = {static_cast<time_t>(*n.posix.mtime_ns / 1'000'000'000),
               static_cast<long>(*n.posix.mtime_ns % 1'000'000'000)};
  }
  a.atime = a.mtime;
  if (n.posix.atime_ns) {
    a.atime = {static_cast<time_t>(*n.posix.atime_ns / 1'000'000'000),
               static_cast<long>(*n.posix.atime_ns % 1'000'000'000)};
  }
  a.ctime = a.mtime;
  return a;
}

void FileSystem::drop_if_unused(Ino ino) {
  Inode* n = find(ino);
  if (!n || ino == kRootIno || n->lookups > 0 || n->open_handles > 0 || attached(*n)) return;
  // A detached directory nobody uses can no longer be reached, nor can its children:
  // they go with it, recursively (one still in use lives on, detached, until the kernel
  // forgets it). Kept, they would never be freed: a cycle of "still has children".
  std::vector<Ino> children;
  for (const auto& [name, child] : n->children) children.push_back(child);
  n->children.clear();
  for (Ino child : children) drop_if_unused(child);
  if (auto it = ino_by_key_.find(n->key); it != ino_by_key_.end() && it->second == ino) {
    ino_by_key_.erase(it);
  }
  inodes_.erase(ino);
}

Ino FileSystem::child_ino(Inode& dir, const std::string& name, const std::string& key, mode_t type,
                          const std::string* etag) {
  // Inode numbers are stable for a key while the mount lives, with two exceptions
  // that the kernel requires: an inode never changes type, and the page cache (the
  // inode's) never mixes versions. Open handles of the old version keep the old inode.
  Ino ino = 0;
  if (auto it = ino_by_key_.find(key); it != ino_by_key_.end()) {
    const Inode& old = *inodes_[it->second];
    const bool superseded = etag && !old.etag.empty() && old.etag != *etag && old.open_handles > 0;
    if (old.type == type && !superseded) {
      ino = it->second;
    } else {
      ino_by_key_.erase(it);
    }
  }
  Ino replaced = 0;
  if (auto it = dir.children.find(name); it != dir.children.end() && it->second != ino) {
    replaced = it->second;
  }
  if (ino == 0) {
    ino = next_ino_++;
    auto n = std::make_unique<Inode>();
    n->ino = ino;
    n->key = key;
    n->type = type;
    // Prefixes have no time of their own in S3: directories show the mount's.
    n->mtime = inodes_[kRootIno]->mtime;
    ino_by_key_[key] = ino;
    inodes_[ino] = std::move(n);
  }
  Inode& n = *inodes_[ino];
  n.parent = dir.ino;
  n.name = name;
  dir.children[name] = ino;
  dir.negative.erase(name);
  if (replaced != 0) drop_if_unused(replaced);
  return ino;
}

void FileSystem::apply_object(Inode& file, const s3::ObjectInfo& info, bool with_metadata) {
  if (file.etag != info.etag) {
    file.posix = {};
    file.user_metadata.clear();
    file.content_type.clear();
    file.metadata_loaded = false;
    file.symlink_target.clear();
  }
  file.size = info.size;
  file.etag = info.etag;
  file.mtime = to_timespec(info.last_modified);
  if (with_metadata) {
    file.posix = decode_posix_metadata(info.metadata);
    file.user_metadata = info.metadata;
    file.content_type = info.content_type;
    file.metadata_loaded = true;
  }
  file.validated = SteadyClock::now();
}

Status FileSystem::list_directory(Ino dir_ino) {
  std::string prefix;
  {
    std::lock_guard lock(mu_);
    auto found = find_dir(dir_ino);
    if (!found) return std::unexpected(found.error());
    Inode* dir = *found;
    prefix = dir->key;
  }
  std::vector<s3::ObjectInfo> files;
  std::vector<std::string> dirs;
  s3::ListRequest req{options_.bucket, prefix, "/", "", "", 1000};
  do {
    metrics_.count_request("ListObjectsV2");
    auto page = client_.list_objects(req);
    if (!page) {
      metrics_.count_error("ListObjectsV2", std::string(to_string(page.error().code)));
      return std::unexpected(page.error());
    }
    for (auto& o : page->objects) files.push_back(std::move(o));
    for (auto& p : page->common_prefixes) dirs.push_back(std::move(p));
    req.continuation_token = page->next_continuation_token;
  } while (!req.continuation_token.empty());

  const auto now = SteadyClock::now();
  std::lock_guard lock(mu_);
  Inode* dir = find(dir_ino);
  if (!dir) return fail(ErrorCode::kStale, "the directory vanished while it was listed");
  bool first = !dir->imported;
  std::set<std::string> seen;
  // A server answering with keys outside the prefix asked for must not crash or
  // misplace anything: such keys are ignored.
  auto outside = [&](const std::string& k, size_t min_extra) {
    return !k.starts_with(prefix) || k.size() < prefix.size() + min_extra;
  };
  for (const auto& p : dirs) {
    if (outside(p, 2) || !p.ends_with('/') || hidden_locally(p)) continue;
    std::string name = p.substr(prefix.size(), p.size() - prefix.size() - 1);
    if (!is_valid_name(name)) {
      metrics_.hidden_keys++;
      continue;
    }
    seen.insert(name);
    auto existing = dir->children.find(name);
    if (existing == dir->children.end() && !first && !options_.import.new_objects) continue;
    if (existing != dir->children.end() &&
        (inodes_[existing->second]->staged || inodes_[existing->second]->local_only)) {
      continue;  // written here: a prefix of that name made elsewhere does not replace it
    }
    Ino ino = child_ino(*dir, name, p, S_IFDIR);
    inodes_[ino]->validated = now;
  }
  for (const auto& o : files) {
    if (o.key == prefix || outside(o.key, 1) || hidden_locally(o.key)) {
      continue;  // the directory's own marker object, or deleted on this mount
    }
    std::string name = o.key.substr(prefix.size());
    bool marker = name.ends_with('/');
    if (marker) name.pop_back();  // "dir/" markers also arrive as prefixes
    if (!is_valid_name(name)) {
      metrics_.hidden_keys++;
      continue;
    }
    if (marker) continue;
    if (seen.contains(name)) {
      // A file and a directory of the same name: the directory wins.
      metrics_.shadowed_keys++;
      spdlog::info("s3://{}/{} is hidden by the directory {}/", options_.bucket, o.key, name);
      continue;
    }
    seen.insert(name);
    auto existing = dir->children.find(name);
    if (existing != dir->children.end() &&
        (inodes_[existing->second]->staged || inodes_[existing->second]->local_only)) {
      continue;  // written here: this mount's copy is the file until it is exported
    }
    if (existing == dir->children.end()) {
      if (!first && !options_.import.new_objects) continue;
      Ino ino = child_ino(*dir, name, o.key, S_IFREG, &o.etag);
      apply_object(*inodes_[ino], o, false);
      continue;
    }
    Inode& file = *inodes_[existing->second];
    if (file.type == S_IFDIR) {
      // The prefix is gone and a plain object of that name remains: the name
      // becomes a file, under a new inode.
      if (!options_.import.deleted && !first) continue;
      Ino ino = child_ino(*dir, name, o.key, S_IFREG, &o.etag);
      apply_object(*inodes_[ino], o, false);
      continue;
    }
    if (file.etag != o.etag && !file.etag.empty() && !options_.import.changed) {
      file.validated = now;
      continue;
    }
    // LIST carries no metadata: a symlink stays one until a HEAD says otherwise.
    Ino ino = child_ino(*dir, name, o.key, file.type, &o.etag);
    apply_object(*inodes_[ino], o, false);
  }
  std::vector<Ino> gone;
  for (auto it = dir->children.begin(); it != dir->children.end();) {
    const Inode& child = *inodes_[it->second];
    if (!seen.contains(it->first) && (first || options_.import.deleted) && !child.staged &&
        !child.local_only) {
      gone.push_back(it->second);
      it = dir->children.erase(it);
    } else {
      ++it;
    }
  }
  for (Ino ino : gone) drop_if_unused(ino);
  dir->imported = true;
  dir->listed = now;
  return {};
}

Status FileSystem::revalidate(Ino parent, const std::string& name) {
  std::string dir_prefix;
  {
    std::lock_guard lock(mu_);
    auto found = find_dir(parent);
    if (!found) return std::unexpected(found.error());
    Inode* dir = *found;
    dir_prefix = dir->key;
  }
  const std::string key = dir_prefix + name;
  bool hide_dir = false, hide_file = false;
  {
    std::lock_guard lock(mu_);
    Inode* dir = find(parent);
    if (!dir) return fail(ErrorCode::kStale, "the directory vanished");
    auto it = dir->children.find(name);
    if (it != dir->children.end() &&
        (inodes_[it->second]->staged || inodes_[it->second]->local_only)) {
      inodes_[it->second]->validated = SteadyClock::now();
      return {};  // written here: S3's view does not replace it
    }
    hide_dir = hidden_locally(key + "/");
    hide_file = hidden_locally(key);
  }
  // The directory case first: a directory wins over a file of the same name, so
  // when the LIST finds one the HEAD is not needed. Sequential, in the caller's
  // thread: no thread to create (and fail to create) per lookup.
  metrics_.count_request("ListObjectsV2");
  auto listing = client_.list_objects({options_.bucket, key + "/", "", "", "", 1});
  if (!listing) return std::unexpected(listing.error());
  const bool is_dir = !hide_dir && (!listing->objects.empty() || !listing->common_prefixes.empty());
  std::optional<s3::ObjectInfo> head;
  if (!is_dir && !hide_file) {
    metrics_.count_request("HeadObject");
    auto h = client_.head_object(options_.bucket, key);
    if (h) {
      head = std::move(*h);
    } else if (h.error().code != ErrorCode::kNoSuchKey) {
      return std::unexpected(h.error());
    }
  }

  std::lock_guard lock(mu_);
  Inode* dir = find(parent);
  if (!dir) return fail(ErrorCode::kStale, "the directory vanished");
  auto existing = dir->children.find(name);
  const bool known = existing != dir->children.end();
  const bool may_add = !dir->imported || options_.import.new_objects;
  if (is_dir) {
    if (known || may_add) {
      Ino ino = child_ino(*dir, name, key + "/", S_IFDIR);
      inodes_[ino]->validated = SteadyClock::now();
    }
    return {};
  }
  if (head) {
    if (!known && !may_add) return {};
    if (known && inodes_[existing->second]->type == S_IFDIR && dir->imported &&
        !options_.import.deleted) {
      // The prefix is gone and a plain object of that name remains: without DELETED
      // the directory stays, as a listing keeps it (the view must not depend on
      // whether a lookup or a readdir came first).
      inodes_[existing->second]->validated = SteadyClock::now();
      return {};
    }
    if (known && !inodes_[existing->second]->etag.empty() &&
        inodes_[existing->second]->etag != head->etag && !options_.import.changed) {
      inodes_[existing->second]->validated = SteadyClock::now();
      return {};
    }
    PosixMetadata posix = decode_posix_metadata(head->metadata);
    mode_t type = posix.mode && (*posix.mode & S_IFMT) == S_IFLNK ? S_IFLNK : S_IFREG;
    // A listing showed a regular file that its metadata says is a symlink (LIST
    // carries no metadata), or the object changed type or version: child_ino
    // decides whether the name needs a new inode.
    Ino ino = child_ino(*dir, name, key, type, &head->etag);
    apply_object(*inodes_[ino], *head, true);
    return {};
  }
  // Absent in S3.
  if (known && (options_.import.deleted || !dir->imported)) {
    Ino gone = existing->second;
    dir->children.erase(existing);
    drop_if_unused(gone);
  } else if (known) {
    inodes_[existing->second]->validated = SteadyClock::now();
    return {};
  }
  dir->negative[name] = SteadyClock::now();
  return {};
}

Result<Attr> FileSystem::lookup(Ino parent, const std::string& name) {
  if (!is_valid_name(name)) return fail(ErrorCode::kNotFound, "not a name Nacre maps to a key");
  bool need_check = true;
  {
    std::lock_guard lock(mu_);
    auto found = find_dir(parent);
    if (!found) return std::unexpected(found.error());
    Inode* dir = *found;
    auto it = dir->children.find(name);
    if (it != dir->children.end()) {
      // A fresh listing vouches for its entries; so does a recent LIST or HEAD of
      // the name. Directories too: a deleted prefix disappears under DELETED.
      const Inode& child = *inodes_[it->second];
      if (fresh(child.validated) || fresh(dir->listed) || child.staged || child.local_only) {
        need_check = false;
      }
    } else if (fresh(dir->listed)) {
      return fail(ErrorCode::kNotFound, "not in the directory listing");
    } else if (auto neg = dir->negative.find(name);
               neg != dir->negative.end() && fresh(neg->second)) {
      return fail(ErrorCode::kNotFound, "known absent");
    } else if (dir->imported && !options_.import.new_objects) {
      return fail(ErrorCode::kNotFound, "new objects are not imported");
    }
  }
  if (need_check) {
    auto st = revalidate(parent, name);
    if (!st) return std::unexpected(st.error());
  }
  std::lock_guard lock(mu_);
  Inode* dir = find(parent);
  if (!dir) return fail(ErrorCode::kStale, "the directory vanished");
  auto it = dir->children.find(name);
  if (it == dir->children.end()) return fail(ErrorCode::kNotFound, "no such file or directory");
  Inode& n = *inodes_[it->second];
  n.lookups++;
  return attr_of(n);
}

void FileSystem::forget(Ino ino, uint64_t nlookup) {
  std::lock_guard lock(mu_);
  Inode* n = find(ino);
  if (!n || ino == kRootIno) return;
  n->lookups = nlookup > n->lookups ? 0 : n->lookups - nlookup;
  // Inodes still reachable from their parent stay: their numbers are stable. The
  // key map entry goes only if it still names this inode (a newer one may own it).
  drop_if_unused(ino);
}

Result<Attr> FileSystem::getattr(Ino ino) {
  Ino parent = 0;
  std::string name;
  {
    std::lock_guard lock(mu_);
    Inode* n = find(ino);
    if (!n) return fail(ErrorCode::kStale, "stale inode");
    // A detached inode (deleted or superseded while open) has nothing to revalidate:
    // it answers with what it last knew, so fstat of an open file keeps working.
    if (n->type == S_IFDIR || fresh(n->validated) || !attached(*n) || n->staged || n->local_only) {
      return attr_of(*n);
    }
    parent = n->parent;
    name = n->name;
  }
  auto st = revalidate(parent, name);
  if (!st) return std::unexpected(st.error());
  std::lock_guard lock(mu_);
  Inode* n = find(ino);
  if (!n) return fail(ErrorCode::kStale, "stale inode");
  return attr_of(*n);
}

Result<std::vector<DirEntry>> FileSystem::readdir(Ino dir_ino) {
  bool stale;
  {
    std::lock_guard lock(mu_);
    auto found = find_dir(dir_ino);
    if (!found) return std::unexpected(found.error());
    Inode* dir = *found;
    stale = !fresh(dir->listed);
  }
  if (stale) {
    auto st = list_directory(dir_ino);
    if (!st) return std::unexpected(st.error());
  }
  std::lock_guard lock(mu_);
  Inode* dir = find(dir_ino);
  if (!dir) return fail(ErrorCode::kStale, "the directory vanished");
  std::vector<DirEntry> out;
  out.reserve(dir->children.size());
  for (const auto& [name, ino] : dir->children) out.push_back({name, ino, inodes_[ino]->type});
  return out;
}

Result<std::string> FileSystem::readlink(Ino ino) {
  cache::ObjectVersion v;
  size_t depth = 0;
  std::string target;
  Ino parent = 0;
  std::string name;
  {
    std::lock_guard lock(mu_);
    Inode* n = find(ino);
    if (!n) return fail(ErrorCode::kStale, "stale inode");
    if (n->type != S_IFLNK) return fail(ErrorCode::kInvalidArgument, "not a symlink");
    // A listing that saw a new ETag cannot tell whether the object is still a symlink
    // (LIST has no metadata): a HEAD decides before its body is taken for a target.
    if (!n->metadata_loaded && attached(*n)) {
      parent = n->parent;
      name = n->name;
    }
  }
  if (!name.empty()) {
    if (Status st = revalidate(parent, name); !st) return std::unexpected(st.error());
  }
  {
    std::lock_guard lock(mu_);
    Inode* n = find(ino);
    if (!n) return fail(ErrorCode::kStale, "stale inode");
    // Now a regular file (under a new inode): this one no longer names the object.
    if (!name.empty() && !attached(*n)) return fail(ErrorCode::kStale, "no longer a symlink");
    v = {options_.bucket, n->key, n->etag, n->size};
    target = n->symlink_target;
    std::string_view rel(n->key);
    rel.remove_prefix(std::min(rel.size(), options_.prefix.size()));
    depth = static_cast<size_t>(std::count(rel.begin(), rel.end(), '/'));
  }
  if (target.empty()) {
    metrics_.count_request("GetObject");
    auto r = client_.get_object(
        {v.bucket, v.key, 0, std::nullopt, v.etag}, [&](std::string_view c) -> Status {
          if (target.size() + c.size() > 4096) {
            return fail(ErrorCode::kInvalidArgument, "symlink target too long");
          }
          target.append(c);
          return {};
        });
    if (!r) return std::unexpected(r.error());
    std::lock_guard lock(mu_);
    if (Inode* n = find(ino); n && n->etag == v.etag) n->symlink_target = target;
  }
  if (options_.contain_symlinks && !symlink_stays_inside(depth, target)) {
    metrics_.refused_symlinks++;
    spdlog::warn("refusing symlink s3://{}/{} -> {}: its target leaves the mount", v.bucket, v.key,
                 target);
    return fail(ErrorCode::kAccessDenied, "symlink target leaves the mount");
  }
  return target;
}

}  // namespace nacre::fs
