#include "cache/block_cache.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <vector>

#include "cache/disk_io.h"
#include "cache/entry.h"
#include "cache/entry_format.h"

namespace nacre::cache {

using detail::BlockState;
using detail::Entry;
namespace fs = std::filesystem;

namespace {

constexpr uint64_t kUnknownFree = UINT64_MAX;
// A metadata file this large cannot be ours (it would describe a multi-petabyte object).
constexpr uint64_t kMaxMetaFile = 1ull << 30;

// Index keys sort the versions of one object together: bucket NUL key NUL etag.
std::string key_prefix(std::string_view bucket, std::string_view key) {
  std::string k(bucket);
  k.push_back('\0');
  k += key;
  k.push_back('\0');
  return k;
}

std::string index_key(const ObjectVersion& v) {
  return key_prefix(v.bucket, v.key) + v.etag;
}

// The cache holds other tenants' weights and their key names: private to the
// owner whatever the umask (files are created 0600, which a umask can only narrow).
constexpr mode_t kDirMode = 0700;
constexpr mode_t kFileMode = 0600;

bool is_lower_hex(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

std::string root_dir(const CacheOptions& o) {
  return (fs::path(o.dir) / "v1").string();
}

void set_paths(Entry& e, const std::string& root) {
  std::string base = root + "/" + e.name.substr(0, 2) + "/" + e.name;
  e.data_path = base + ".data";
  e.meta_path = base + ".meta";
}

// Deletes an entry's files; the metadata first, so that an interrupted delete leaves an
// orphan data file (removed by the next load), never metadata without data.
void remove_entry_files(const std::string& meta_path, const std::string& data_path) {
  (void)io::remove_file(meta_path);
  (void)io::remove_file(data_path);
}

struct Loaded {
  std::shared_ptr<Entry> entry;
  timespec mtime{};
  uint64_t truncated_blocks = 0;  // recorded present but past the end of the data file
};

bool older(const timespec& a, const timespec& b) {
  return a.tv_sec != b.tv_sec ? a.tv_sec < b.tv_sec : a.tv_nsec < b.tv_nsec;
}

// Reads one entry left by an earlier process. Any inconsistency is an error: the caller
// deletes the entry, as a cache may always forget.
Result<Loaded> load_entry(const std::string& root, const std::string& subdir,
                          const std::string& stem, uint32_t block_size) {
  Loaded out;
  auto e = std::make_shared<Entry>();
  e->name = stem;
  set_paths(*e, root);
  if (stem.size() != 64 || !is_lower_hex(stem) || stem.substr(0, 2) != subdir) {
    return fail(ErrorCode::kMalformedResponse, "foreign file name");
  }
  auto file = io::read_file(e->meta_path, kMaxMetaFile);
  if (!file) return std::unexpected(file.error());
  auto header = format::decode_header(*file);
  if (!header) return std::unexpected(header.error());
  if (format::entry_name(header->version) != stem) {
    return fail(ErrorCode::kMalformedResponse, "name does not match bucket/key/etag");
  }
  if (header->block_size != block_size) {
    return fail(ErrorCode::kInvalidArgument, "another block size");
  }
  struct stat meta_st {
  }, data_st{};
  if (::stat(e->meta_path.c_str(), &meta_st) != 0 || ::stat(e->data_path.c_str(), &data_st) != 0) {
    return fail_errno("stat " + e->data_path, errno);
  }
  e->version = header->version;
  e->block_size = header->block_size;
  e->block_count = header->block_count;
  e->records_offset = header->records_offset;
  e->state.assign(e->block_count, BlockState::kAbsent);
  e->crc.assign(e->block_count, 0);
  const auto data_size = static_cast<uint64_t>(data_st.st_size);
  for (uint64_t i = 0; i < e->block_count; ++i) {
    auto r = format::decode_record(file->data() + e->records_offset + format::kRecordSize * i);
    // A block past the end of a truncated data file could only fail its check later.
    if (!r.present) continue;
    if (i * block_size + e->block_length(i) > data_size) {
      ++out.truncated_blocks;
      continue;
    }
    e->state[i] = BlockState::kUnverified;
    e->crc[i] = r.crc;
    e->present_bytes += e->block_length(i);
  }
  e->charged_bytes = e->present_bytes;
  out.entry = std::move(e);
  out.mtime = meta_st.st_mtim;
  return out;
}

// Creates the files of a new, empty entry. The metadata appears last, by rename, so a
// crash leaves either a whole entry or an orphan data file.
Status create_entry_files(const Entry& e, const ObjectVersion& v) {
  std::string dir = fs::path(e.meta_path).parent_path().string();
  if (::mkdir(dir.c_str(), kDirMode) != 0 && errno != EEXIST)
    return fail_errno("mkdir " + dir, errno);
  // Unlink rather than truncate: a released entry's holder may still read the old inode.
  if (Status r = io::remove_file(e.data_path); !r) return r;
  int data = ::open(e.data_path.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, kFileMode);
  if (data < 0) return fail_errno("create " + e.data_path, errno);
  int err = ::ftruncate(data, static_cast<off_t>(v.size)) == 0 ? 0 : errno;
  ::close(data);
  if (err != 0) {
    (void)io::remove_file(e.data_path);
    return fail_errno("truncate " + e.data_path, err);
  }

  std::string tmp = e.meta_path + ".tmp";
  int meta = ::open(tmp.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, kFileMode);
  if (meta < 0) {
    (void)io::remove_file(e.data_path);
    return fail_errno("create " + tmp, errno);
  }
  const uint64_t size = format::meta_size(v, e.block_size);
  Status r = io::pwrite_full(meta, format::encode_header(v, e.block_size), 0, "write " + tmp);
  if (r && ::ftruncate(meta, static_cast<off_t>(size)) != 0)
    r = fail_errno("truncate " + tmp, errno);
  // Allocating the records now means marking a block present later cannot hit ENOSPC.
  if (r) (void)::fallocate(meta, 0, 0, static_cast<off_t>(size));
  ::close(meta);
  if (r && ::rename(tmp.c_str(), e.meta_path.c_str()) != 0) {
    r = fail_errno("rename " + tmp, errno);
  }
  if (!r) remove_entry_files(tmp, e.data_path);
  return r;
}

}  // namespace

BlockCache::BlockCache(CacheOptions options, int lock_fd)
    : options_(std::move(options)),
      lock_fd_(lock_fd),
      buffers_(BlockBufferPool::create(options_.block_size)) {}

BlockCache::~BlockCache() {
  if (start_checker_.joinable()) {
    start_checker_.request_stop();
    start_checker_.join();
  }
  ::close(lock_fd_);
}

Result<std::unique_ptr<BlockCache>> BlockCache::open(CacheOptions options) {
  if (options.dir.empty()) return fail(ErrorCode::kInvalidArgument, "cache directory not set");
  if (options.block_size == 0) return fail(ErrorCode::kInvalidArgument, "cache block size is 0");
  const std::string root = root_dir(options);
  // Directories created here are 0700 (their names are bucket and prefix names);
  // existing ones are the user's and keep their mode, except v1, which is ours and
  // is narrowed if an earlier version made it wider.
  fs::path partial;
  for (const auto& part : fs::path(root)) {
    partial /= part;
    if (::mkdir(partial.c_str(), kDirMode) != 0 && errno != EEXIST) {
      return fail_errno("cannot create cache directory " + partial.string(), errno);
    }
  }
  struct stat root_st {};
  if (::stat(root.c_str(), &root_st) != 0 || !S_ISDIR(root_st.st_mode)) {
    return fail(ErrorCode::kIo, "cannot create cache directory " + root + ": not a directory");
  }
  if (::chmod(root.c_str(), kDirMode) != 0) return fail_errno("chmod " + root, errno);

  const std::string probe = root + "/.write-probe";
  int fd = ::open(probe.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, kFileMode);
  if (fd < 0) return fail_errno("cache directory " + root + " is not writable", errno);
  int err = ::write(fd, "x", 1) == 1 ? 0 : errno;
  ::close(fd);
  ::unlink(probe.c_str());
  if (err != 0) return fail_errno("cache directory " + root + " is not writable", err);

  const std::string lock_path = root + "/LOCK";
  int lock_fd = ::open(lock_path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, kFileMode);
  if (lock_fd < 0) return fail_errno("open " + lock_path, errno);
  if (::flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
    err = errno;
    ::close(lock_fd);
    if (err == EWOULDBLOCK) {
      return fail(ErrorCode::kIo,
                  "cache directory " + options.dir + " is in use by another process");
    }
    return fail_errno("lock " + lock_path, err);
  }
  std::unique_ptr<BlockCache> cache(new BlockCache(std::move(options), lock_fd));
  if (Status r = cache->load(); !r) return std::unexpected(r.error());
  return cache;
}

Status BlockCache::load() {
  const std::string root = root_dir(options_);
  // Names are collected before acting: deleting while iterating a directory may skip or
  // repeat entries.
  std::vector<std::pair<std::string, std::string>> files;  // (subdir, file name)
  // Iterated with error codes: the range-for form would throw.
  std::error_code ec;
  for (fs::directory_iterator sub(root, ec), end; !ec && sub != end; sub.increment(ec)) {
    std::string subdir = sub->path().filename().string();
    std::error_code type_ec;
    if (subdir.size() != 2 || !is_lower_hex(subdir) || !sub->is_directory(type_ec)) continue;
    (void)::chmod(sub->path().c_str(), kDirMode);
    std::error_code sub_ec;
    for (fs::directory_iterator f(sub->path(), sub_ec); !sub_ec && f != end; f.increment(sub_ec)) {
      files.emplace_back(subdir, f->path().filename().string());
    }
    if (sub_ec) return fail_errno("list cache directory " + sub->path().string(), sub_ec.value());
  }
  if (ec) return fail_errno("list cache directory " + root, ec.value());

  std::vector<Loaded> loaded;
  for (const auto& [subdir, name] : files) {
    const std::string base = root + "/" + subdir + "/";
    if (ends_with(name, ".tmp")) {
      (void)io::remove_file(base + name);
    } else if (ends_with(name, ".data")) {
      std::string stem = name.substr(0, name.size() - 5);
      if (::access((base + stem + ".meta").c_str(), F_OK) != 0) (void)io::remove_file(base + name);
    } else if (ends_with(name, ".meta")) {
      std::string stem = name.substr(0, name.size() - 5);
      auto entry = load_entry(root, subdir, stem, options_.block_size);
      if (entry) {
        (void)::chmod(entry->entry->meta_path.c_str(), kFileMode);
        (void)::chmod(entry->entry->data_path.c_str(), kFileMode);
        loaded.push_back(std::move(*entry));
      } else {
        remove_entry_files(base + name, base + stem + ".data");
      }
    }
  }

  std::sort(loaded.begin(), loaded.end(),
            [](const Loaded& a, const Loaded& b) { return older(a.mtime, b.mtime); });
  std::lock_guard lk(mu_);
  for (auto& l : loaded) {
    // Several versions of one key may be left (readers held an old one while a new one
    // was cached); each is an entry of its own, and the LRU order decides what goes.
    std::string key = index_key(l.entry->version);
    lru_.push_back(key);
    used_bytes_ += l.entry->charged_bytes;
    bad_blocks_ += l.truncated_blocks;
    index_.emplace(key, Slot{std::move(l.entry), {}, std::prev(lru_.end())});
  }
  // A smaller max_bytes than last time takes effect now.
  make_room_locked(0, /*budget=*/true, /*floor=*/false);
  return {};
}

uint64_t BlockCache::free_bytes() const {
  if (options_.free_bytes_probe) return options_.free_bytes_probe(options_.dir);
  struct statvfs st {};
  if (::statvfs(options_.dir.c_str(), &st) != 0) return kUnknownFree;
  return static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
}

bool BlockCache::make_room_locked(uint64_t len, bool budget, bool floor) {
  for (;;) {
    bool over = budget && used_bytes_.load() + len > options_.max_bytes;
    if (!over && floor && options_.min_free_bytes > 0) {
      uint64_t free = free_bytes();
      over = free != kUnknownFree && (free < len || free - len < options_.min_free_bytes);
    }
    if (!over) return true;
    if (!evict_lru_locked()) return false;
  }
}

bool BlockCache::evict_lru_locked() {
  auto victim = std::find_if(lru_.begin(), lru_.end(), [this](const std::string& key) {
    return index_.at(key).live.expired();
  });
  if (victim == lru_.end()) return false;
  // Evicted even if its files resist deletion: the index must shrink for the loop to end.
  (void)drop_locked(index_.find(*victim), /*eviction=*/true);
  return true;
}

bool BlockCache::evict_one() {
  std::lock_guard lk(mu_);
  return evict_lru_locked();
}

Status BlockCache::drop_locked(Index::iterator it, bool eviction) {
  Entry& e = *it->second.entry;
  {
    std::lock_guard lk(e.mu);
    e.dropped = true;
    detail::drop_recent_locked(e, recent_bytes_);
    used_bytes_ -= e.charged_bytes;
    e.charged_bytes = 0;
    e.present_bytes = 0;
    e.changed.notify_all();
  }
  Status r = io::remove_file(e.meta_path);
  Status d = io::remove_file(e.data_path);
  lru_.erase(it->second.lru_pos);
  index_.erase(it);
  if (eviction) evictions_.fetch_add(1, std::memory_order_relaxed);
  return r ? d : r;
}

Status BlockCache::reserve(Entry& entry, uint64_t len) {
  std::lock_guard lk(mu_);
  bool fits = make_room_locked(len, /*budget=*/true, /*floor=*/true);
  std::lock_guard entry_lk(entry.mu);
  if (entry.dropped) {
    return fail(ErrorCode::kReleased, "cache entry for " + entry.version.key + " was released");
  }
  if (!fits) {
    // The bounds are hard: a held model larger than the cache must not fill the disk.
    refused_writes_.fetch_add(1, std::memory_order_relaxed);
    return fail(ErrorCode::kCacheFull, "the cache is full of data in use (--cache-size " +
                                           std::to_string(options_.max_bytes >> 20) +
                                           " MiB, --cache-min-free " +
                                           std::to_string(options_.min_free_bytes >> 20) + " MiB)");
  }
  entry.charged_bytes += len;
  used_bytes_ += len;
  return {};
}

Result<std::shared_ptr<CachedObject>> BlockCache::open_files(Slot& slot, bool share) {
  const Entry& e = *slot.entry;
  int ro = ::open(e.data_path.c_str(), O_RDONLY | O_CLOEXEC);
  int rw = ro < 0 ? -1 : ::open(e.data_path.c_str(), O_RDWR | O_CLOEXEC);
  int meta = rw < 0 ? -1 : ::open(e.meta_path.c_str(), O_RDWR | O_CLOEXEC);
  if (meta < 0) {
    int err = errno;
    if (ro >= 0) ::close(ro);
    if (rw >= 0) ::close(rw);
    // A shortage (of fds, of memory) or a disk in trouble (EIO, EROFS: nothing could be
    // recreated either) passes: the entry is kept and the open fails, so a moment without
    // fds cannot drop gigabytes of cached data. Any other failure (files removed, EACCES)
    // makes the entry unusable: kNotFound, and open_object starts anew.
    if (err != EMFILE && err != ENFILE && err != ENOMEM && err != EINTR && err != EROFS &&
        err != EIO) {
      return fail(ErrorCode::kNotFound,
                  "cannot open the cache files of " + e.version.key + ": " + std::strerror(err));
    }
    return fail_errno("open cache files of " + e.version.key, err);
  }
  // -1 where the file system has no O_DIRECT (then every block goes through pwrite).
  // An object not shared (the check at start's) only reads and drops bad blocks: it
  // needs neither the O_DIRECT fd nor the one without read-ahead.
  int direct = options_.direct_io && share
                   ? ::open(e.data_path.c_str(), O_WRONLY | O_DIRECT | O_CLOEXEC)
                   : -1;
  // Replies from a file still being filled read through an fd without read-ahead: the
  // kernel's read-ahead would run into the holes of blocks not fetched yet and fill the
  // page cache with zeroed pages (perf, cold 14 GiB read: 22 % of the daemon's CPU in
  // ext4_mpage_readpages zeroing), which the blocks' writes then invalidate again. -1
  // (the fd above is used) if it cannot be opened or the file is whole already.
  bool whole;
  {
    std::lock_guard entry_lk(slot.entry->mu);
    whole = e.present_bytes >= e.version.size;
  }
  int sparse = whole || !share ? -1 : ::open(e.data_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (sparse >= 0) (void)::posix_fadvise(sparse, 0, 0, POSIX_FADV_RANDOM);
  std::shared_ptr<CachedObject> object(
      new CachedObject(this, slot.entry, ro, rw, direct, meta, sparse));
  if (share) {
    slot.live = object;
  } else {
    object->shared_ = false;
  }
  return object;
}

Result<std::shared_ptr<CachedObject>> BlockCache::open_object(const ObjectVersion& v,
                                                              bool supersede) {
  if (v.bucket.empty() || v.key.empty() || v.etag.empty()) {
    return fail(ErrorCode::kInvalidArgument, "cache needs a bucket, a key and an ETag");
  }
  const std::string key = index_key(v);
  std::lock_guard lk(mu_);
  if (auto it = index_.find(key); it != index_.end()) {
    Slot& slot = it->second;
    const Entry& e = *slot.entry;
    if (e.version.size == v.size) {
      lru_.splice(lru_.end(), lru_, slot.lru_pos);
      // The mtime carries the LRU order across restarts; losing it only costs accuracy.
      (void)::utimensat(AT_FDCWD, e.meta_path.c_str(), nullptr, 0);
      if (auto live = slot.live.lock()) return live;
      auto opened = open_files(slot);
      if (opened) return opened;
      // Files removed (or made unreadable) behind our back: forget the entry and start a
      // new one. A shortage (no fd left) keeps the entry for the next open.
      if (opened.error().code != ErrorCode::kNotFound) return opened;
    }
    if (Status r = drop_locked(it, false); !r) return std::unexpected(r.error());
  }
  // Other versions of the object are superseded: those nobody holds go now; held ones
  // stay readable by their holders (versions coexist) until released and evicted.
  const std::string prefix = key_prefix(v.bucket, v.key);
  for (auto it = index_.lower_bound(prefix);
       supersede && it != index_.end() && it->first.starts_with(prefix);) {
    auto next = std::next(it);
    if (it->second.live.expired()) (void)drop_locked(it, false);
    it = next;
  }

  make_room_locked(format::meta_size(v, options_.block_size), /*budget=*/false, /*floor=*/true);
  auto e = std::make_shared<Entry>();
  e->version = v;
  e->name = format::entry_name(v);
  set_paths(*e, root_dir(options_));
  e->block_size = options_.block_size;
  e->block_count = format::block_count(v.size, options_.block_size);
  e->records_offset = format::records_offset(v);
  e->state.assign(e->block_count, BlockState::kAbsent);
  e->crc.assign(e->block_count, 0);
  Status created = create_entry_files(*e, v);
  while (!created && created.error().code == ErrorCode::kNoSpace && evict_lru_locked()) {
    created = create_entry_files(*e, v);
  }
  if (!created) return std::unexpected(created.error());

  lru_.push_back(key);
  auto [it, inserted] = index_.emplace(key, Slot{e, {}, std::prev(lru_.end())});
  auto opened = open_files(it->second);
  if (!opened) (void)drop_locked(it, false);
  return opened;
}

Status BlockCache::release(const std::string& bucket, const std::string& key) {
  std::lock_guard lk(mu_);
  const std::string prefix = key_prefix(bucket, key);
  Status result = {};
  for (auto it = index_.lower_bound(prefix); it != index_.end() && it->first.starts_with(prefix);) {
    auto next = std::next(it);
    if (Status r = drop_locked(it, false); !r && result) result = r;
    it = next;
  }
  return result;
}

uint64_t BlockCache::cached_bytes(const ObjectVersion& v) {
  std::lock_guard lk(mu_);
  auto it = index_.find(index_key(v));
  if (it == index_.end()) return 0;
  Entry& e = *it->second.entry;
  if (e.version.size != v.size) return 0;
  std::lock_guard entry_lk(e.mu);
  return e.present_bytes;
}

CacheStats BlockCache::stats() const {
  CacheStats s;
  {
    std::lock_guard lk(mu_);
    s.entries = index_.size();
  }
  s.used_bytes = used_bytes_.load();
  s.hits = hits_.load(std::memory_order_relaxed);
  s.misses = misses_.load(std::memory_order_relaxed);
  s.evictions = evictions_.load(std::memory_order_relaxed);
  s.bad_blocks = bad_blocks_.load(std::memory_order_relaxed);
  s.refused_writes = refused_writes_.load(std::memory_order_relaxed);
  s.checked_bytes = checked_bytes_.load(std::memory_order_relaxed);
  s.start_check_running = start_check_running_.load();
  return s;
}

}  // namespace nacre::cache
