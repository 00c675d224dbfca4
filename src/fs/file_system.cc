// The fs core's construction, extended attributes and `nacre release` (see
// file_system.h; the namespace, its changes, the read path and the write path
// have files of their own).
#include "fs/file_system.h"

#include <unistd.h>

#include "fs/inode.h"
#include "fs/names.h"
#include "fs/staged.h"

namespace nacre::fs {

FileSystem::FileSystem(s3::ObjectClient& client, cache::BlockCache& cache, FetchPool& pool,
                       Metrics& metrics, FsOptions options)
    : client_(client), cache_(cache), pool_(pool), metrics_(metrics), options_(std::move(options)) {
  auto root = std::make_unique<Inode>();
  root->ino = kRootIno;
  root->parent = kRootIno;
  root->key = options_.prefix;
  root->type = S_IFDIR;
  root->mtime = to_timespec(std::chrono::system_clock::now());
  ino_by_key_[root->key] = kRootIno;
  inodes_[kRootIno] = std::move(root);
}

FileSystem::~FileSystem() {
  stop_write_path();  // its threads use everything else
}

Result<std::string> FileSystem::getxattr(Ino ino, const std::string& name) {
  cache::ObjectVersion v;
  {
    std::lock_guard lock(mu_);
    Inode* n = find(ino);
    if (!n) return fail(ErrorCode::kStale, "stale inode");
    if (name == "user.nacre.s3_url") return "s3://" + options_.bucket + "/" + n->key;
    if (n->type == S_IFDIR) return fail(ErrorCode::kNoAttribute, "no such attribute");
    if (name == "user.nacre.etag") return n->etag;
    if (name != "user.nacre.cached_bytes")
      return fail(ErrorCode::kNoAttribute, "no such attribute");
    v = {options_.bucket, n->key, n->etag, n->size};
  }
  return std::to_string(cache_.cached_bytes(v));
}

Result<std::vector<std::string>> FileSystem::listxattr(Ino ino) {
  std::lock_guard lock(mu_);
  Inode* n = find(ino);
  if (!n) return fail(ErrorCode::kStale, "stale inode");
  if (n->type == S_IFDIR) return std::vector<std::string>{"user.nacre.s3_url"};
  return std::vector<std::string>{"user.nacre.s3_url", "user.nacre.etag",
                                  "user.nacre.cached_bytes"};
}

Status FileSystem::setxattr(Ino ino, const std::string& name, const std::string&) {
  if (name != "user.nacre.release") return fail(ErrorCode::kNotSupported, "no such attribute");
  return release_cached(ino);
}

Status FileSystem::release_child(Ino dir_ino, const std::string& name, uid_t caller) {
  if (caller != 0 && caller != ::getuid()) {
    return fail(ErrorCode::kAccessDenied, "only root or the user running the mount may release");
  }
  if (!is_valid_name(name)) return fail(ErrorCode::kNotFound, "no such file");
  Ino ino = 0;
  {
    std::lock_guard lock(mu_);
    auto found = find_dir(dir_ino);
    if (!found) return std::unexpected(found.error());
    Inode* dir = *found;
    auto it = dir->children.find(name);
    if (it == dir->children.end()) return fail(ErrorCode::kNotFound, "no such file");
    ino = it->second;
  }
  return release_cached(ino);
}

Status FileSystem::release_cached(Ino ino) {
  std::string key;
  {
    std::lock_guard lock(mu_);
    Inode* n = find(ino);
    if (!n) return fail(ErrorCode::kStale, "stale inode");
    if (n->type == S_IFDIR) return fail(ErrorCode::kIsADirectory, "release takes files");
    key = n->key;
  }
  auto st = cache_.release(options_.bucket, key);
  if (!st) return st;
  if (options_.invalidate_data) options_.invalidate_data(ino);
  return {};
}

}  // namespace nacre::fs
