#include "fs/file_system.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>

#include <future>
#include <set>

#include "fs/names.h"

namespace nacre::fs {

using SteadyClock = std::chrono::steady_clock;

struct FileSystem::Inode {
  Ino ino = 0;
  Ino parent = 0;
  std::string name;
  std::string key;  // files: the object key; directories: the prefix, ending in '/' ("" for root)
  mode_t type = S_IFREG;
  uint64_t size = 0;
  std::string etag;
  timespec mtime{};
  PosixMetadata posix;          // from the last HEAD or GET with metadata
  bool metadata_loaded = false;  // a HEAD has read the object's user metadata
  std::string symlink_target;   // loaded by readlink
  uint64_t lookups = 0;
  SteadyClock::time_point validated{};  // attributes last confirmed by S3
  std::string last_open_etag;           // for keep_cache

  // Directories.
  std::map<std::string, Ino> children;
  bool imported = false;  // listed (or looked into) at least once
  SteadyClock::time_point listed{};
  std::map<std::string, SteadyClock::time_point> negative;  // names known absent
};

struct FileSystem::Handle {
  Ino ino = 0;
  cache::ObjectVersion version;
  std::shared_ptr<BlockFetcher> fetcher;
  std::mutex mu;
  uint64_t next_offset = 0;  // GUARDED_BY(mu): where a sequential read continues
  uint64_t window = 0;       // GUARDED_BY(mu): current prefetch window in bytes
  uint64_t prefetched_to = 0;  // GUARDED_BY(mu): first block not yet requested ahead
};

static timespec to_timespec(std::chrono::system_clock::time_point t) {
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  return {static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
}

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

FileSystem::~FileSystem() = default;

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

Attr FileSystem::attr_of(const Inode& n) const {
  Attr a;
  a.ino = n.ino;
  mode_t type = n.type;
  mode_t perm = type == S_IFDIR ? options_.dir_mode : options_.file_mode;
  if (n.posix.mode) perm = *n.posix.mode & 07777;
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

Ino FileSystem::child_ino(Inode& dir, const std::string& name, const std::string& key,
                          mode_t type) {
  // Inode numbers are stable for a key while the mount lives.
  Ino ino;
  if (auto it = ino_by_key_.find(key); it != ino_by_key_.end()) {
    ino = it->second;
  } else {
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
  n.type = type;
  dir.children[name] = ino;
  dir.negative.erase(name);
  return ino;
}

void FileSystem::apply_object(Inode& file, const s3::ObjectInfo& info, bool with_metadata) {
  if (file.etag != info.etag) {
    file.posix = {};
    file.metadata_loaded = false;
    file.symlink_target.clear();
  }
  file.size = info.size;
  file.etag = info.etag;
  file.mtime = to_timespec(info.last_modified);
  if (with_metadata) {
    file.posix = decode_posix_metadata(info.metadata);
    file.metadata_loaded = true;
    if (file.posix.mode && (*file.posix.mode & S_IFMT) == S_IFLNK) file.type = S_IFLNK;
  }
  file.validated = SteadyClock::now();
}

Status FileSystem::list_directory(Ino dir_ino) {
  std::string prefix;
  {
    std::lock_guard lock(mu_);
    Inode* dir = find(dir_ino);
    if (!dir || dir->type != S_IFDIR) return fail(ErrorCode::kNoSuchKey, "not a directory");
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

  std::lock_guard lock(mu_);
  Inode* dir = find(dir_ino);
  if (!dir) return fail(ErrorCode::kNoSuchKey, "directory vanished");
  bool first = !dir->imported;
  std::set<std::string> seen;
  for (const auto& p : dirs) {
    std::string name = p.substr(prefix.size(), p.size() - prefix.size() - 1);
    if (!is_valid_name(name)) {
      metrics_.hidden_keys++;
      continue;
    }
    seen.insert(name);
    auto existing = dir->children.find(name);
    if (existing == dir->children.end() && !first && !options_.import.new_objects) continue;
    if (existing != dir->children.end() && inodes_[existing->second]->type == S_IFDIR) continue;
    child_ino(*dir, name, p, S_IFDIR);
  }
  for (const auto& o : files) {
    if (o.key == prefix) continue;  // the directory's own marker object
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
    if (existing == dir->children.end()) {
      if (!first && !options_.import.new_objects) continue;
      Ino ino = child_ino(*dir, name, o.key, S_IFREG);
      apply_object(*inodes_[ino], o, false);
      continue;
    }
    Inode& file = *inodes_[existing->second];
    if (file.type == S_IFDIR) {
      // The prefix is gone and a plain object of that name remains: the name
      // becomes a file, under a new inode (the kernel must never see an inode
      // change type).
      if (!options_.import.deleted && !first) continue;
      Ino ino = child_ino(*dir, name, o.key, S_IFREG);
      apply_object(*inodes_[ino], o, false);
      continue;
    }
    if (file.etag != o.etag && !file.etag.empty() && !options_.import.changed) {
      file.validated = SteadyClock::now();
      continue;
    }
    apply_object(file, o, false);
  }
  for (auto it = dir->children.begin(); it != dir->children.end();) {
    if (!seen.contains(it->first) && (first || options_.import.deleted)) {
      it = dir->children.erase(it);
    } else {
      ++it;
    }
  }
  dir->imported = true;
  dir->listed = SteadyClock::now();
  return {};
}

Status FileSystem::revalidate(Ino parent, const std::string& name) {
  std::string dir_prefix;
  {
    std::lock_guard lock(mu_);
    Inode* dir = find(parent);
    if (!dir || dir->type != S_IFDIR) return fail(ErrorCode::kNoSuchKey, "not a directory");
    dir_prefix = dir->key;
  }
  std::string key = dir_prefix + name;
  // The HEAD and the one-key LIST for the directory case go out together.
  auto as_dir = std::async(std::launch::async, [&] {
    metrics_.count_request("ListObjectsV2");
    return client_.list_objects({options_.bucket, key + "/", "", "", "", 1});
  });
  metrics_.count_request("HeadObject");
  auto head = client_.head_object(options_.bucket, key);
  auto listing = as_dir.get();
  if (!listing) return std::unexpected(listing.error());
  if (!head && head.error().code != ErrorCode::kNoSuchKey) return std::unexpected(head.error());

  std::lock_guard lock(mu_);
  Inode* dir = find(parent);
  if (!dir) return fail(ErrorCode::kNoSuchKey, "directory vanished");
  auto existing = dir->children.find(name);
  bool known = existing != dir->children.end();
  bool may_add = !dir->imported || options_.import.new_objects;
  if (!listing->objects.empty() || !listing->common_prefixes.empty()) {
    if (known || may_add) {
      Ino ino = child_ino(*dir, name, key + "/", S_IFDIR);
      inodes_[ino]->validated = SteadyClock::now();
      if (head) {
        metrics_.shadowed_keys++;
        spdlog::info("s3://{}/{} is hidden by the directory {}/", options_.bucket, key, name);
      }
    }
    return {};
  }
  if (head) {
    if (!known && !may_add) return {};
    if (known && !inodes_[existing->second]->etag.empty() &&
        inodes_[existing->second]->etag != head->etag && !options_.import.changed) {
      inodes_[existing->second]->validated = SteadyClock::now();
      return {};
    }
    PosixMetadata posix = decode_posix_metadata(head->metadata);
    mode_t type = posix.mode && (*posix.mode & S_IFMT) == S_IFLNK ? S_IFLNK : S_IFREG;
    if (known && inodes_[existing->second]->type != type) {
      // A listing showed a regular file that its metadata says is a symlink
      // (LIST carries no metadata), or the object changed type. The kernel
      // must never see an inode change type: the name gets a new inode.
      Inode& old = *inodes_[existing->second];
      if (ino_by_key_[old.key] == old.ino) ino_by_key_.erase(old.key);
      dir->children.erase(existing);
      known = false;
    }
    Ino ino = known ? existing->second : child_ino(*dir, name, key, type);
    apply_object(*inodes_[ino], *head, true);
    return {};
  }
  // Absent in S3.
  if (known && (options_.import.deleted || !dir->imported)) {
    dir->children.erase(existing);
  } else if (known) {
    inodes_[existing->second]->validated = SteadyClock::now();
    return {};
  }
  dir->negative[name] = SteadyClock::now();
  return {};
}

Result<Attr> FileSystem::lookup(Ino parent, const std::string& name) {
  if (!is_valid_name(name)) return fail(ErrorCode::kNoSuchKey, "invalid name");
  bool need_check = true;
  {
    std::lock_guard lock(mu_);
    Inode* dir = find(parent);
    if (!dir) return fail(ErrorCode::kNoSuchKey, "no such directory");
    if (dir->type != S_IFDIR) return fail(ErrorCode::kInvalidArgument, "not a directory");
    auto it = dir->children.find(name);
    if (it != dir->children.end()) {
      Inode& n = *inodes_[it->second];
      // A fresh listing vouches for its entries; so does a recent HEAD.
      if (fresh(n.validated) || n.type == S_IFDIR) need_check = false;
    } else if (fresh(dir->listed)) {
      return fail(ErrorCode::kNoSuchKey, "not in the directory listing");
    } else if (auto neg = dir->negative.find(name); neg != dir->negative.end() && fresh(neg->second)) {
      return fail(ErrorCode::kNoSuchKey, "known absent");
    } else if (dir->imported && !options_.import.new_objects) {
      return fail(ErrorCode::kNoSuchKey, "new objects are not imported");
    }
  }
  if (need_check) {
    auto st = revalidate(parent, name);
    if (!st) return std::unexpected(st.error());
  }
  std::lock_guard lock(mu_);
  Inode* dir = find(parent);
  auto it = dir->children.find(name);
  if (it == dir->children.end()) return fail(ErrorCode::kNoSuchKey, "no such file");
  Inode& n = *inodes_[it->second];
  n.lookups++;
  return attr_of(n);
}

void FileSystem::forget(Ino ino, uint64_t nlookup) {
  std::lock_guard lock(mu_);
  Inode* n = find(ino);
  if (!n || ino == kRootIno) return;
  n->lookups = nlookup > n->lookups ? 0 : n->lookups - nlookup;
  // Keep inodes still reachable from their parent: their numbers stay stable.
  Inode* parent = find(n->parent);
  bool attached = parent && parent->children.contains(n->name) && parent->children[n->name] == ino;
  if (n->lookups == 0 && !attached && n->children.empty()) {
    ino_by_key_.erase(n->key);
    inodes_.erase(ino);
  }
}

Result<Attr> FileSystem::getattr(Ino ino) {
  Ino parent = 0;
  std::string name;
  {
    std::lock_guard lock(mu_);
    Inode* n = find(ino);
    if (!n) return fail(ErrorCode::kNoSuchKey, "stale inode");
    if (n->type == S_IFDIR || fresh(n->validated)) return attr_of(*n);
    parent = n->parent;
    name = n->name;
  }
  auto st = revalidate(parent, name);
  if (!st) return std::unexpected(st.error());
  std::lock_guard lock(mu_);
  Inode* n = find(ino);
  if (!n) return fail(ErrorCode::kNoSuchKey, "stale inode");
  Inode* dir = find(parent);
  if (!dir || !dir->children.contains(name) || dir->children[name] != ino) {
    return fail(ErrorCode::kNoSuchKey, "the object was deleted");
  }
  return attr_of(*n);
}

Result<std::vector<DirEntry>> FileSystem::readdir(Ino dir_ino) {
  bool stale;
  {
    std::lock_guard lock(mu_);
    Inode* dir = find(dir_ino);
    if (!dir) return fail(ErrorCode::kNoSuchKey, "no such directory");
    if (dir->type != S_IFDIR) return fail(ErrorCode::kInvalidArgument, "not a directory");
    stale = !fresh(dir->listed);
  }
  if (stale) {
    auto st = list_directory(dir_ino);
    if (!st) return std::unexpected(st.error());
  }
  std::lock_guard lock(mu_);
  Inode* dir = find(dir_ino);
  std::vector<DirEntry> out;
  out.reserve(dir->children.size());
  for (const auto& [name, ino] : dir->children) out.push_back({name, ino, inodes_[ino]->type});
  return out;
}

Result<std::string> FileSystem::readlink(Ino ino) {
  cache::ObjectVersion v;
  {
    std::lock_guard lock(mu_);
    Inode* n = find(ino);
    if (!n || n->type != S_IFLNK) return fail(ErrorCode::kInvalidArgument, "not a symlink");
    if (!n->symlink_target.empty()) return n->symlink_target;
    v = {options_.bucket, n->key, n->etag, n->size};
  }
  std::string target;
  metrics_.count_request("GetObject");
  auto r = client_.get_object({v.bucket, v.key, 0, std::nullopt, v.etag},
                              [&](std::string_view c) -> Status {
                                if (target.size() + c.size() > 4096) {
                                  return fail(ErrorCode::kInvalidArgument, "symlink target too long");
                                }
                                target.append(c);
                                return {};
                              });
  if (!r) return std::unexpected(r.error());
  std::lock_guard lock(mu_);
  if (Inode* n = find(ino)) n->symlink_target = target;
  return target;
}

std::shared_ptr<BlockFetcher> FileSystem::fetcher_for(const cache::ObjectVersion& v) {
  std::string id = v.key + '\0' + v.etag;
  {
    std::lock_guard lock(mu_);
    if (auto it = fetchers_.find(id); it != fetchers_.end()) {
      if (auto f = it->second.lock(); f && !f->object()->released()) return f;
    }
  }
  auto object = cache_.open_object(v);
  if (!object) return nullptr;
  auto fetcher = std::make_shared<BlockFetcher>(client_, pool_, *object, metrics_, options_.part_size);
  std::lock_guard lock(mu_);
  auto& slot = fetchers_[id];
  if (auto existing = slot.lock(); existing && !existing->object()->released()) {
    return existing;  // another open won the race
  }
  slot = fetcher;
  std::erase_if(fetchers_, [](auto& kv) { return kv.second.expired(); });
  return fetcher;
}

Result<OpenResult> FileSystem::open(Ino ino, int flags) {
  int access = flags & O_ACCMODE;
  if (access != O_RDONLY || (flags & (O_TRUNC | O_APPEND))) {
    // Writes are staged and exported by the write path, which is not built
    // yet: every mount is read-only for now.
    return fail(ErrorCode::kReadOnly, "read-only file system");
  }
  Ino parent = 0;
  std::string name;
  bool stale = false;
  {
    std::lock_guard lock(mu_);
    Inode* n = find(ino);
    if (!n) return fail(ErrorCode::kNoSuchKey, "stale inode");
    if (n->type == S_IFDIR) return fail(ErrorCode::kInvalidArgument, "is a directory");
    // Close-to-open: an open revalidates unless a HEAD confirmed the version
    // within the TTL. A listing alone has no metadata, so the first open HEADs.
    stale = !fresh(n->validated) || !n->metadata_loaded;
    parent = n->parent;
    name = n->name;
  }
  if (stale) {
    auto st = revalidate(parent, name);
    if (!st) return std::unexpected(st.error());
  }
  cache::ObjectVersion v;
  bool keep_cache = false;
  {
    std::lock_guard lock(mu_);
    Inode* n = find(ino);
    Inode* dir = find(parent);
    if (!n || !dir || !dir->children.contains(name)) {
      return fail(ErrorCode::kNoSuchKey, "the object was deleted");
    }
    v = {options_.bucket, n->key, n->etag, n->size};
    keep_cache = n->last_open_etag == n->etag;
    n->last_open_etag = n->etag;
  }
  auto handle = std::make_shared<Handle>();
  handle->ino = ino;
  handle->version = v;
  handle->window = options_.initial_window;
  if (v.size > 0) {
    handle->fetcher = fetcher_for(v);
    if (!handle->fetcher) return fail(ErrorCode::kIo, "cannot open the cache entry");
    if (v.size >= options_.hydrate_min_size) {
      // A whole-file background load, so mmap loaders faulting pages in any
      // order still run at line rate. Single-flight keeps it from doubling
      // the reads of a sequential reader.
      handle->fetcher->prefetch(0, handle->fetcher->object()->block_count() - 1,
                                FetchPriority::kHydrate);
    }
  }
  std::lock_guard lock(mu_);
  uint64_t fh = next_fh_++;
  handles_[fh] = std::move(handle);
  return OpenResult{fh, keep_cache};
}

Result<ReadResult> FileSystem::read(uint64_t fh, uint64_t offset, size_t size) {
  std::shared_ptr<Handle> h;
  {
    std::lock_guard lock(mu_);
    auto it = handles_.find(fh);
    if (it == handles_.end()) return fail(ErrorCode::kInvalidArgument, "bad file handle");
    h = it->second;
  }
  uint64_t file_size = h->version.size;
  if (offset >= file_size || size == 0) return ReadResult{};
  size_t length = static_cast<size_t>(std::min<uint64_t>(size, file_size - offset));
  std::shared_ptr<BlockFetcher> fetcher;
  {
    std::lock_guard lock(h->mu);
    if (h->fetcher->object()->released()) {
      // `nacre release` dropped the cached data: cache this version anew.
      auto fresh_fetcher = fetcher_for(h->version);
      if (!fresh_fetcher) return fail(ErrorCode::kIo, "cannot reopen the cache entry");
      h->fetcher = fresh_fetcher;
      h->prefetched_to = 0;
    }
    fetcher = h->fetcher;
  }
  auto& object = fetcher->object();
  uint64_t bs = object->block_size();
  uint64_t first = offset / bs, last = (offset + length - 1) / bs;
  {
    std::lock_guard lock(h->mu);
    bool sequential = offset == h->next_offset && offset != 0;
    if (offset == 0 || sequential) {
      if (sequential) h->window = std::min(h->window * 2, options_.max_window);
      uint64_t ahead_last = std::min<uint64_t>((offset + length + h->window - 1) / bs,
                                               object->block_count() - 1);
      uint64_t from = std::max(last + 1, h->prefetched_to);
      if (ahead_last >= from) fetcher->prefetch(from, ahead_last, FetchPriority::kPrefetch);
      h->prefetched_to = std::max(h->prefetched_to, ahead_last + 1);
    } else {
      h->window = options_.initial_window;
      h->prefetched_to = 0;
    }
    h->next_offset = offset + length;
  }
  auto st = fetcher->ensure(first, last);
  if (!st && st.error().code == ErrorCode::kNoSpace) {
    // The cache disk is full of data in use: serve this read straight from
    // S3 (same version, If-Match) rather than fail it.
    spdlog::warn("cache full ({}); reading s3://{}/{} without caching", st.error().message,
                 h->version.bucket, h->version.key);
    ReadResult direct;
    metrics_.count_request("GetObject");
    auto r = client_.get_object({h->version.bucket, h->version.key, offset, length, h->version.etag},
                                [&](std::string_view c) -> Status {
                                  direct.data.append(c);
                                  return {};
                                });
    if (!r) return std::unexpected(r.error());
    metrics_.s3_bytes_fetched += direct.data.size();
    direct.length = direct.data.size();
    metrics_.read_bytes += direct.length;
    return direct;
  }
  if (!st) return std::unexpected(st.error());
  metrics_.read_bytes += length;
  return ReadResult{object->data_fd(), offset, length, {}};
}

Status FileSystem::modify() const {
  return fail(ErrorCode::kReadOnly, "the file system is read-only (the write path is not built yet)");
}

Status FileSystem::link() const {
  return fail(ErrorCode::kNotSupported, "hard links are not supported on S3");
}

void FileSystem::release(uint64_t fh) {
  std::lock_guard lock(mu_);
  handles_.erase(fh);
}

Result<std::string> FileSystem::getxattr(Ino ino, const std::string& name) {
  cache::ObjectVersion v;
  {
    std::lock_guard lock(mu_);
    Inode* n = find(ino);
    if (!n) return fail(ErrorCode::kNoSuchKey, "stale inode");
    if (name == "user.nacre.s3_url") return "s3://" + options_.bucket + "/" + n->key;
    if (n->type == S_IFDIR) return fail(ErrorCode::kNotSupported, "no such attribute");
    if (name == "user.nacre.etag") return n->etag;
    if (name != "user.nacre.cached_bytes") return fail(ErrorCode::kNotSupported, "no such attribute");
    v = {options_.bucket, n->key, n->etag, n->size};
  }
  return std::to_string(cache_.cached_bytes(v));
}

Result<std::vector<std::string>> FileSystem::listxattr(Ino ino) {
  std::lock_guard lock(mu_);
  Inode* n = find(ino);
  if (!n) return fail(ErrorCode::kNoSuchKey, "stale inode");
  if (n->type == S_IFDIR) return std::vector<std::string>{"user.nacre.s3_url"};
  return std::vector<std::string>{"user.nacre.s3_url", "user.nacre.etag", "user.nacre.cached_bytes"};
}

Status FileSystem::setxattr(Ino ino, const std::string& name, const std::string&) {
  if (name != "user.nacre.release") return fail(ErrorCode::kNotSupported, "no such attribute");
  std::string key;
  {
    std::lock_guard lock(mu_);
    Inode* n = find(ino);
    if (!n) return fail(ErrorCode::kNoSuchKey, "stale inode");
    if (n->type == S_IFDIR) return fail(ErrorCode::kInvalidArgument, "release takes files");
    key = n->key;
  }
  auto st = cache_.release(options_.bucket, key);
  if (!st) return st;
  if (options_.invalidate_data) options_.invalidate_data(ino);
  return {};
}

}  // namespace nacre::fs
