// The file system core: a directory view of an S3 prefix, read through the
// node-local cache. Everything POSIX-visible is decided here; the FUSE adapter
// only forwards (src/fuse). No libfuse or gRPC types appear in this layer.
//
// Thread safety: every method may be called from many threads at once.
// Lock order: Handle::mu → FileSystem::mu_ (a read may swap its handle's
// fetcher). Network requests and waits for fetches happen with no lock held.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "cache/block_cache.h"
#include "common/error.h"
#include "fs/block_fetcher.h"
#include "fs/metrics.h"
#include "fs/posix_metadata.h"
#include "s3/object_client.h"

namespace nacre::fs {

using Ino = uint64_t;
inline constexpr Ino kRootIno = 1;

// Which bucket changes new lookups and opens see (FSx's autoImportPolicy).
struct ImportPolicy {
  bool new_objects = true;  // NEW: objects that appear become files
  bool changed = true;      // CHANGED: a new ETag replaces the old version
  bool deleted = true;      // DELETED: objects that disappear are removed
};

struct FsOptions {
  std::string bucket;
  std::string prefix;  // "" or ending in '/'
  bool read_only = false;
  uid_t uid = 0;
  gid_t gid = 0;
  mode_t file_mode = 0644;
  mode_t dir_mode = 0755;
  // How long listings and attributes are trusted; nullopt: forever.
  std::optional<std::chrono::milliseconds> metadata_ttl = std::chrono::seconds(1);
  ImportPolicy import;
  uint64_t part_size = 8ull << 20;          // one GET
  uint64_t initial_window = 8ull << 20;     // sequential prefetch starts here...
  uint64_t max_window = 256ull << 20;       // ...and doubles up to this
  uint64_t hydrate_min_size = 64ull << 20;  // read-only opens of larger files hydrate whole
  // Called when a file's cached data is dropped, so the adapter can drop the
  // kernel's page cache of it too.
  std::function<void(Ino)> invalidate_data;
};

struct Attr {
  Ino ino = 0;
  mode_t mode = 0;  // with S_IFMT
  nlink_t nlink = 1;
  uid_t uid = 0;
  gid_t gid = 0;
  uint64_t size = 0;
  timespec mtime{};
  timespec atime{};
  timespec ctime{};
};

struct DirEntry {
  std::string name;
  Ino ino;
  mode_t type;  // S_IFREG, S_IFDIR or S_IFLNK
};

struct OpenResult {
  uint64_t fh = 0;
  bool keep_cache = false;  // the kernel may keep its page cache: same ETag as the last open
};

// Bytes [offset, offset + length) of file descriptor `fd` (the cache file),
// which the adapter splices to the kernel without copying; or, when the cache
// could not take the data (disk full), the bytes themselves in `data`.
struct ReadResult {
  int fd = -1;
  uint64_t offset = 0;
  size_t length = 0;
  std::string data;
};

struct StatFs {
  uint64_t block_size = 1 << 20;
  uint64_t blocks = 1ull << 30;
  uint64_t files = 1ull << 30;
  uint64_t name_max = 255;
};

class FileSystem {
 public:
  FileSystem(s3::ObjectClient& client, cache::BlockCache& cache, FetchPool& pool,
             Metrics& metrics, FsOptions options);
  ~FileSystem();

  // Kernel entry and attribute timeout, in seconds.
  double timeout_seconds() const;

  [[nodiscard]] Result<Attr> lookup(Ino parent, const std::string& name);
  void forget(Ino ino, uint64_t nlookup);
  [[nodiscard]] Result<Attr> getattr(Ino ino);
  [[nodiscard]] Result<std::vector<DirEntry>> readdir(Ino dir);
  [[nodiscard]] Result<std::string> readlink(Ino ino);
  [[nodiscard]] Result<OpenResult> open(Ino ino, int flags);
  [[nodiscard]] Result<ReadResult> read(uint64_t fh, uint64_t offset, size_t size);
  void release(uint64_t fh);
  StatFs statfs() const { return {}; }
  // The answer to every namespace or data change (create, mkdir, unlink,
  // rename, setattr, write...): the write path is not built yet, so the
  // file system is read-only (kReadOnly → EROFS). Hard links are never
  // supported (kNotSupported).
  [[nodiscard]] Status modify() const;
  [[nodiscard]] Status link() const;

  // Extended attributes for `nacre status` / `nacre release`:
  //   user.nacre.s3_url        s3://bucket/key of the file
  //   user.nacre.etag          the version the file shows now
  //   user.nacre.cached_bytes  bytes of that version in the node cache
  // Setting user.nacre.release drops the file's cached data.
  [[nodiscard]] Result<std::string> getxattr(Ino ino, const std::string& name);
  [[nodiscard]] Result<std::vector<std::string>> listxattr(Ino ino);
  [[nodiscard]] Status setxattr(Ino ino, const std::string& name, const std::string& value);

 private:
  struct Inode;
  struct Handle;

  bool fresh(std::chrono::steady_clock::time_point at) const;
  Attr attr_of(const Inode& inode) const;
  Inode* find(Ino ino);
  Ino child_ino(Inode& dir, const std::string& name, const std::string& key, mode_t type);
  // One LIST walk of a directory; applies the import policy. No lock held.
  Status list_directory(Ino dir);
  // HEAD of one file (and a one-key LIST for a directory of that name).
  Status revalidate(Ino parent, const std::string& name);
  void apply_object(Inode& file, const s3::ObjectInfo& info, bool with_metadata);
  std::shared_ptr<BlockFetcher> fetcher_for(const cache::ObjectVersion& v);

  s3::ObjectClient& client_;
  cache::BlockCache& cache_;
  FetchPool& pool_;
  Metrics& metrics_;
  FsOptions options_;

  std::mutex mu_;
  std::map<Ino, std::unique_ptr<Inode>> inodes_;               // GUARDED_BY(mu_)
  std::map<std::string, Ino> ino_by_key_;                      // GUARDED_BY(mu_)
  Ino next_ino_ = kRootIno + 1;                                // GUARDED_BY(mu_)
  std::map<uint64_t, std::shared_ptr<Handle>> handles_;        // GUARDED_BY(mu_)
  uint64_t next_fh_ = 1;                                       // GUARDED_BY(mu_)
  std::map<std::string, std::weak_ptr<BlockFetcher>> fetchers_;  // GUARDED_BY(mu_)
};

}  // namespace nacre::fs
