// The file system core: a directory view of an S3 prefix, read through the
// node-local cache. Everything POSIX-visible is decided here; the FUSE adapter
// only forwards (src/fuse). No libfuse or gRPC types appear in this layer.
//
// The code is in three files: namespace.cc (inodes, the directory view, TTL
// and import policy), read_path.cc (open, read, prefetch, uncached reads) and
// file_system.cc (the rest: extended attributes, release, refusals).
//
// Errors are one code per meaning (common/error.h): kNotFound for a name that
// does not exist, kStale for an inode or handle that no longer names what it
// did, kNotADirectory / kIsADirectory, kBadHandle; S3 errors pass through.
// fs/errno_map.cc is the one place that turns them into errno.
//
// Inodes: a key keeps its inode number while the mount lives, except that
// the kernel must never see an inode change type or mix two versions in its
// page cache (which belongs to the inode): a key whose object changes type,
// or changes version while handles of the old version are open, gets a new
// inode. The old inode lives on, detached from its directory, for its open
// handles (fstat, reads of the old version) until the kernel forgets it.
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
  // setuid/setgid bits from file-permissions metadata are shown only when the mount
  // asks for them (-o suid); otherwise masked, as nosuid mounts do.
  bool allow_suid = false;
  // Refuse (EACCES at readlink, so also when following) symlinks whose target leaves
  // the mount: absolute, or climbing above the root with "..".
  bool contain_symlinks = false;
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
// could not take the data (bounds reached, disk full), the bytes themselves in
// `data` (fd is then -1). `source` owns `fd`: the caller keeps the result alive
// until the kernel has the bytes, so the fd cannot be closed (and its number
// reused) mid-reply by a concurrent release or version change.
struct ReadResult {
  int fd = -1;
  uint64_t offset = 0;
  size_t length = 0;
  std::string data;
  std::shared_ptr<cache::CachedObject> source;
};

struct StatFs {
  uint64_t block_size = 1 << 20;
  uint64_t blocks = 1ull << 30;
  uint64_t files = 1ull << 30;
  uint64_t name_max = 255;
};

class FileSystem {
 public:
  FileSystem(s3::ObjectClient& client, cache::BlockCache& cache, FetchPool& pool, Metrics& metrics,
             FsOptions options);
  ~FileSystem();

  // Kernel entry and attribute timeout, in seconds.
  double timeout_seconds() const;

  // kNotFound: no such name (the adapter caches the absence for the TTL).
  [[nodiscard]] Result<Attr> lookup(Ino parent, const std::string& name);
  void forget(Ino ino, uint64_t nlookup);
  // Revalidates a file past the TTL; an inode whose object was deleted or replaced
  // while it was open answers with its last known attributes (fstat of an open file).
  [[nodiscard]] Result<Attr> getattr(Ino ino);
  [[nodiscard]] Result<std::vector<DirEntry>> readdir(Ino dir);
  [[nodiscard]] Result<std::string> readlink(Ino ino);
  // kStale when the inode no longer names the object's current version (the kernel
  // then walks the path again and opens the new inode); kIsADirectory; kReadOnly.
  [[nodiscard]] Result<OpenResult> open(Ino ino, int flags);
  [[nodiscard]] Result<ReadResult> read(uint64_t fh, uint64_t offset, size_t size);
  void release(uint64_t fh);
  StatFs statfs() const { return {}; }
  // Inodes held in memory (the root included).
  size_t inode_count();
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
  // Setting user.nacre.release drops the file's cached data (on read-write mounts;
  // the kernel refuses setxattr on read-only ones, hence release_child below).
  // Unknown names: kNoAttribute (get), kNotSupported (set).
  [[nodiscard]] Result<std::string> getxattr(Ino ino, const std::string& name);
  [[nodiscard]] Result<std::vector<std::string>> listxattr(Ino ino);
  [[nodiscard]] Status setxattr(Ino ino, const std::string& name, const std::string& value);

  // `nacre release` through a channel that read-only mounts allow (an ioctl on the
  // directory): drops the cached data of the file `name` in directory `dir`. Only
  // root and the user running the mount may: kAccessDenied otherwise.
  [[nodiscard]] Status release_child(Ino dir, const std::string& name, uid_t caller);

 private:
  struct Inode;
  struct Handle;

  bool fresh(std::chrono::steady_clock::time_point at) const;
  Attr attr_of(const Inode& inode) const;
  Inode* find(Ino ino);
  // The directory `ino`, or kStale (unknown inode) / kNotADirectory. Locked.
  Result<Inode*> find_dir(Ino ino);
  // Whether the inode is what its parent directory shows under its name.
  bool attached(const Inode& inode);
  // The inode that shows `key` as `name` in `dir` from now on: the one the key had,
  // or a new one when the type differs or (with `etag`) the version changes while
  // handles of the old one are open. Locked.
  Ino child_ino(Inode& dir, const std::string& name, const std::string& key, mode_t type,
                const std::string* etag = nullptr);
  // Drops an inode the kernel does not know and no handle uses. Locked.
  void drop_if_unused(Ino ino);
  // One LIST walk of a directory; applies the import policy. No lock held.
  Status list_directory(Ino dir);
  // A one-key LIST for a directory of that name, then (if none) a HEAD of the file.
  Status revalidate(Ino parent, const std::string& name);
  void apply_object(Inode& file, const s3::ObjectInfo& info, bool with_metadata);
  Status release_cached(Ino ino);
  // `current`: v is the object's current version (an open), so the cache may drop
  // unheld older versions; a handle re-caching its pinned version passes false.
  Result<std::shared_ptr<BlockFetcher>> fetcher_for(const cache::ObjectVersion& v, bool current);
  // A read served straight from S3 (same version, If-Match) when the cache cannot
  // take the bytes.
  Result<ReadResult> read_uncached(Handle& h, uint64_t offset, size_t length, const Error& why);

  s3::ObjectClient& client_;
  cache::BlockCache& cache_;
  FetchPool& pool_;
  Metrics& metrics_;
  FsOptions options_;

  std::mutex mu_;
  std::map<Ino, std::unique_ptr<Inode>> inodes_;                 // GUARDED_BY(mu_)
  std::map<std::string, Ino> ino_by_key_;                        // GUARDED_BY(mu_)
  Ino next_ino_ = kRootIno + 1;                                  // GUARDED_BY(mu_)
  std::map<uint64_t, std::shared_ptr<Handle>> handles_;          // GUARDED_BY(mu_)
  uint64_t next_fh_ = 1;                                         // GUARDED_BY(mu_)
  std::map<std::string, std::weak_ptr<BlockFetcher>> fetchers_;  // GUARDED_BY(mu_)
};

}  // namespace nacre::fs
