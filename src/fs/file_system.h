// The file system core: a directory view of an S3 prefix, read through the
// node-local cache, written through staged files exported on close. Everything
// POSIX-visible is decided here; the FUSE adapter only forwards (src/fuse). No
// libfuse or gRPC types appear in this layer.
//
// The code is in six files: namespace.cc (inodes, the directory view, TTL
// and import policy), namespace_change.cc (unlink, mkdir, rmdir, symlink,
// rename), read_path.cc (open, read, prefetch, uncached reads), write_path.cc
// (staging, create, write, setattr, close), export.cc (export to S3, export
// policy, retries, crash recovery) and file_system.cc (the rest: extended
// attributes, release).
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
// Lock order: Staged::io → Handle::mu → FileSystem::mu_ → Staged::mu, with
// the cache's locks (cache/block_cache.h) below FileSystem::mu_ and the
// exporter's queue lock a leaf (a read may swap its handle's fetcher; an
// export holds its staged file's io lock while it uploads). Network requests
// and waits for fetches happen with no lock held but Staged::io.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "cache/block_cache.h"
#include "common/error.h"
#include "fs/block_fetcher.h"
#include "fs/metrics.h"
#include "fs/posix_metadata.h"
#include "s3/object_client.h"

namespace nacre::staging {
class StagingStore;
struct UploadWindow;
}  // namespace nacre::staging

namespace nacre::fs {

using Ino = uint64_t;
inline constexpr Ino kRootIno = 1;

// Which bucket changes new lookups and opens see (FSx's autoImportPolicy).
struct ImportPolicy {
  bool new_objects = true;  // NEW: objects that appear become files
  bool changed = true;      // CHANGED: a new ETag replaces the old version
  bool deleted = true;      // DELETED: objects that disappear are removed
};

// Which changes made through the mount are written to the bucket (FSx's
// autoExportPolicy). A change the policy leaves out stays on this node: new and
// changed files stay staged (kept across restarts, listed by `nacre status`),
// deleted names stay hidden on this mount while it lives.
struct ExportPolicy {
  bool new_objects = true;  // NEW: files, directories and symlinks created here
  bool changed = true;      // CHANGED: content and metadata changes of existing objects
  bool deleted = true;      // DELETED: unlink and rmdir delete the objects
  bool none() const { return !new_objects && !changed && !deleted; }
  bool all() const { return new_objects && changed && deleted; }
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
  // Read-only opens of files at least this large whose cached copy is complete are
  // served by kernel passthrough when the adapter can (open's `passthrough`). While
  // such an open exists the file cannot be opened for writing (ETXTBSY): the kernel
  // reads the cache file, not the staged one. Small files, which are the ones edited
  // in place, stay in cached mode.
  uint64_t passthrough_min_size = 8ull << 20;
  // How long a write open or truncate waits for a file's passthrough readers to be
  // released before it fails with ETXTBSY: the kernel reports a close after close()
  // returned, so a program that closes its reader and then writes would race it.
  std::chrono::milliseconds passthrough_release_wait{500};
  // setuid/setgid bits from file-permissions metadata are shown only when the mount
  // asks for them (-o suid); otherwise masked, as nosuid mounts do.
  bool allow_suid = false;
  // Refuse (EACCES at readlink, so also when following) symlinks whose target leaves
  // the mount: absolute, or climbing above the root with "..".
  bool contain_symlinks = false;
  // Called when a file's cached data is dropped, so the adapter can drop the
  // kernel's page cache of it too.
  std::function<void(Ino)> invalidate_data;
  ExportPolicy export_policy;
  // Where written files are staged (required for read-write mounts; not owned).
  staging::StagingStore* staging = nullptr;
  int upload_concurrency = 8;  // parts in flight per export
  // How long a failed export waits before it is tried again (doubling to 1 min).
  std::chrono::milliseconds export_retry = std::chrono::seconds(2);
};

// What setattr changes (chmod, chown, utimens, truncate).
struct SetAttr {
  std::optional<uint64_t> size;
  std::optional<mode_t> mode;  // permission bits
  std::optional<uid_t> uid;
  std::optional<gid_t> gid;
  std::optional<timespec> atime;
  std::optional<timespec> mtime;
};

// Who makes a new file: the owner it gets.
struct Caller {
  uid_t uid = 0;
  gid_t gid = 0;
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
  // >= 0: open this handle in kernel passthrough mode on this file (the complete,
  // verified cache file; valid until release(fh)). Every open of one inode then gets
  // the same file until its last passthrough handle is released. keep_cache is false.
  int passthrough_fd = -1;
};

// Bytes [offset, offset + length) of file descriptor `fd` (the cache file),
// which the adapter splices to the kernel without copying; or, when the cache
// could not take the data (bounds reached, disk full), the bytes themselves in
// `data` (fd is then -1); or views of blocks in memory in `pieces`. `source` owns `fd`: the caller
// keeps the result alive until the kernel has the bytes, so the fd cannot be closed (and its number
// reused) mid-reply by a concurrent release or version change.
struct ReadResult {
  int fd = -1;
  uint64_t offset = 0;
  size_t length = 0;
  std::string data;
  // Or the bytes already in memory, in order (blocks just fetched, which the cache
  // keeps for the reader waiting on them), fd -1; `source` owns that memory.
  std::vector<std::string_view> pieces;
  std::shared_ptr<const void> source;  // a cache::CachedObject, a staged file or blocks
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
  // An open for writing stages the file (O_TRUNC: empty; otherwise a copy of the
  // object, from the node cache where it has the bytes); kBusy while the file has
  // passthrough opens. `passthrough`: the adapter can serve this open by kernel
  // passthrough (OpenResult::passthrough_fd), granted to a read-only open of an
  // unstaged file of passthrough_min_size or more whose cached copy is complete and
  // verified, when every other open of the inode is passthrough too (the kernel
  // refuses to mix the two modes on one inode); every read-only open of an inode
  // that has passthrough handles is one (kBusy without `passthrough`).
  [[nodiscard]] Result<OpenResult> open(Ino ino, int flags, bool passthrough = false);
  // Waits (up to FsOptions::passthrough_release_wait) until `ino` has no passthrough
  // handles; true when it has none. For an open the kernel would not take in
  // passthrough mode: cached mode needs the others gone.
  bool await_no_passthrough(Ino ino);
  [[nodiscard]] Result<ReadResult> read(uint64_t fh, uint64_t offset, size_t size);
  // Exports a handle's staged file when it is the last writer to go (a shared
  // mmap's pages may be written back after close); a failure is retried later.
  void release(uint64_t fh);
  StatFs statfs() const { return {}; }
  // Inodes held in memory (the root included).
  size_t inode_count();

  // The write path (write_path.cc). Every change answers kReadOnly on read-only
  // mounts.
  // A new file `name` in `parent`, staged and open (kExists with O_EXCL when the
  // name exists; without O_EXCL an existing file is opened).
  [[nodiscard]] Result<std::pair<Attr, OpenResult>> create(Ino parent, const std::string& name,
                                                           mode_t mode, int flags,
                                                           const Caller& caller);
  [[nodiscard]] Result<size_t> write(uint64_t fh, uint64_t offset, std::string_view data);
  // close() (every close of a handle) and fsync(): export the staged file if it
  // changed. The error says why S3 did not take it; the data stays staged.
  [[nodiscard]] Status flush(uint64_t fh);
  [[nodiscard]] Status fsync(uint64_t fh);
  [[nodiscard]] Result<Attr> setattr(Ino ino, const SetAttr& change, std::optional<uint64_t> fh);
  // fallocate(2) on an open handle's staged file: mode 0 and FALLOC_FL_KEEP_SIZE.
  [[nodiscard]] Status fallocate(uint64_t fh, int mode, uint64_t offset, uint64_t length);
  // Starts the exporter (the threads that stream parts and retry failed
  // exports) and recovers the staged files of this mount's bucket and prefix
  // left by a process that died: the multipart uploads they had in flight are
  // aborted; files whose writer had closed them are exported in the
  // background; files still being written are kept and reported, never
  // exported or deleted. Call once, after daemonising, before serving. Without
  // it, exports happen only at close and fsync and failures are not retried.
  [[nodiscard]] Status start_write_path();
  // Exports still pending (failed, to be retried); 0 when S3 has everything.
  size_t pending_exports();
  // Stops the export retry thread (unmount): staged data stays on disk.
  void stop_write_path();

  // Namespace changes (namespace_change.cc).
  [[nodiscard]] Result<Attr> mkdir(Ino parent, const std::string& name, mode_t mode,
                                   const Caller& caller);
  [[nodiscard]] Result<Attr> symlink(Ino parent, const std::string& name, const std::string& target,
                                     const Caller& caller);
  [[nodiscard]] Status unlink(Ino parent, const std::string& name);
  [[nodiscard]] Status rmdir(Ino parent, const std::string& name);
  // flags: RENAME_NOREPLACE (kExists when the target exists); RENAME_EXCHANGE is
  // kNotSupported.
  [[nodiscard]] Status rename(Ino parent, const std::string& name, Ino new_parent,
                              const std::string& new_name, unsigned flags);
  // Hard links are never supported (kNotSupported → ENOTSUP).
  [[nodiscard]] Status link() const;
  // Refusal of what the file system never does (mknod of devices and fifos).
  [[nodiscard]] Status refuse_special() const;

  // Extended attributes for `nacre status` / `nacre release`:
  //   user.nacre.s3_url        s3://bucket/key of the file
  //   user.nacre.etag          the version the file shows now
  //   user.nacre.cached_bytes  bytes of that version in the node cache
  // Setting user.nacre.release drops the file's cached data (on read-write mounts;
  // the kernel refuses setxattr on read-only ones, hence release_child below).
  // Unknown names: kNoAttribute (get), kNotSupported (set: user extended
  // attributes are not stored in S3 metadata, see docs/SEMANTICS.md).
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
  // [offset, offset + length) from blocks the cache still holds in memory; nullopt when
  // any of them is not there (then the data file is read).
  std::optional<ReadResult> recent_blocks(cache::CachedObject& object, uint64_t offset,
                                          size_t length);
  // Makes `h` a passthrough handle on `object` (or on the inode's passthrough object)
  // when the kernel's rules allow it now; its file descriptor, or -1. Locked.
  int start_passthrough(Ino ino, Handle& h, const std::shared_ptr<cache::CachedObject>& object);
  std::unexpected<Error> busy_error(const Inode& n);
  // Waits (up to passthrough_release_wait, mu_ held by `lock`) for `ino` to have no
  // passthrough opens; true when it has none. The kernel sends RELEASE after close()
  // returned, so a program that closes its reader and then writes would race it.
  bool wait_passthrough_closed(std::unique_lock<std::mutex>& lock, Ino ino);

  // Write path internals (write_path.cc).
  struct Staged;
  struct Exporter;
  Status writable() const;
  // The staged file of inode `ino`, staging it first if needed: an empty file
  // when `truncate`, otherwise the object's bytes. No lock held.
  // `created`: set when this call made the staged file (not another handle's).
  // kBusy while the inode has passthrough opens.
  Result<std::shared_ptr<Staged>> stage(Ino ino, bool truncate, bool* created = nullptr);
  Result<std::shared_ptr<Staged>> stage_file(Ino ino, bool truncate, bool* created);
  // A staged file recovered at start for `key` (not exported yet), taken over by
  // inode `ino` so that a new write and the recovered one are one file. Locked.
  std::shared_ptr<Staged> adopt_recovered(const std::string& key, Ino ino);
  // `other`: the object's user metadata and content type, kept by the export
  // (the POSIX headers are replaced by `posix`).
  Result<std::shared_ptr<Staged>> new_staged(Ino ino, const std::string& key,
                                             const std::string& base_etag,
                                             const PosixMetadata& posix,
                                             const s3::UserMetadata& other = {},
                                             const std::string& content_type = {});
  Status truncate_staged(Staged& s, uint64_t size);
  // The staged file of a handle open for writing (kBadHandle otherwise).
  Result<std::shared_ptr<Staged>> staged_for_writing(uint64_t fh);
  // Exports `s` if it changed: PUT or multipart (completing a streamed upload).
  Status export_staged(const std::shared_ptr<Staged>& s);
  // export_staged for the exporter's threads: an exception is an error.
  Status guard_export(const std::shared_ptr<Staged>& s);
  // Streams full parts of a sequentially written file while it is written.
  void stream_parts(const std::shared_ptr<Staged>& s);
  // Aborts the uploads S3 holds for the keys of `windows` that were initiated
  // within one (what a crash, a lost answer, also one the S3 client's retry
  // hid, or a failed abort may have left), except this process's live ones,
  // and removes the windows it has resolved. No lock held.
  Status abort_unrecorded_uploads(std::vector<staging::UploadWindow>& windows);
  // This process's multipart uploads from their create until they are
  // completed or aborted: abort_unrecorded_uploads() leaves them alone.
  void upload_started(const std::string& id);
  void upload_ended(const std::string& id);
  // Around a request that may create an upload of `key`, until its id (if
  // any) is registered: abort_unrecorded_uploads() aborts no unknown upload of
  // a key with a create in flight.
  void create_begins(const std::string& key);
  void create_ends(const std::string& key);
  struct CreateInFlight {
    CreateInFlight(FileSystem& f, const std::string& k) : fs(f), key(k) { fs.create_begins(key); }
    ~CreateInFlight() { fs.create_ends(key); }
    CreateInFlight(const CreateInFlight&) = delete;
    CreateInFlight& operator=(const CreateInFlight&) = delete;
    FileSystem& fs;
    const std::string key;
  };
  // Looks for the uploads `windows` name in the exporter (a file deleted or
  // replaced with windows open, whose manifest goes); logged, not returned.
  void look_for_uploads_later(std::vector<staging::UploadWindow> windows);
  // After a successful export of `s` (to `key`) that created multipart
  // uploads: abort_unrecorded_uploads() for the windows `seen`, then removes
  // from the manifest those resolved and not widened since. No lock held.
  void resolve_upload_windows(Staged& s, const std::string& key,
                              const std::vector<staging::UploadWindow>& seen);
  // Lets go of an inode's staged file once nothing needs it (exported, no
  // handle open). Locked.
  void drop_staged_if_done(Inode& n);
  void schedule_retry(const std::shared_ptr<Staged>& s);
  void retry_loop(Exporter& exporter, std::stop_token stop);
  // The export policy's verdict for a staged file.
  bool may_export(const Staged& s) const;
  // Copies `key` onto itself with new POSIX metadata (other metadata and the
  // content type kept). No lock held.
  Status replace_metadata(const std::string& key, const std::string& etag,
                          const PosixMetadata& posix, std::string* new_etag);
  // Moves the objects of one key (file) or prefix (directory) in S3.
  // Returns the ETag of the copy at `to`, or "" when nothing was copied (a
  // staged file goes to `to` at its export).
  Result<std::string> move_file(Ino ino, const std::string& from, const std::string& to,
                                uint64_t size, const std::string& etag);
  Status move_directory(const std::string& from, const std::string& to);
  // Changes the keys of an inode and everything below it after a rename. Locked.
  void rekey(Ino ino, const std::string& from, const std::string& to);
  // kExists when `name` exists in `parent`, looking in S3 unless the view is fresh.
  Status check_absent(Ino parent, const std::string& name);
  // The key a new entry `name` in `parent` gets (mkdir, symlink), after the
  // checks every new name passes: writable mount, valid name, absent.
  Result<std::string> new_key(Ino parent, const std::string& name);
  // Whether the name is hidden on this mount (deleted here, DELETED not exported).
  bool hidden_locally(const std::string& key) const;

  s3::ObjectClient& client_;
  cache::BlockCache& cache_;
  FetchPool& pool_;
  Metrics& metrics_;
  FsOptions options_;

  std::mutex mu_;
  std::condition_variable passthrough_closed_;           // an inode's last passthrough handle went
  std::map<Ino, std::unique_ptr<Inode>> inodes_;         // GUARDED_BY(mu_)
  std::map<std::string, Ino> ino_by_key_;                // GUARDED_BY(mu_)
  Ino next_ino_ = kRootIno + 1;                          // GUARDED_BY(mu_)
  std::map<uint64_t, std::shared_ptr<Handle>> handles_;  // GUARDED_BY(mu_)
  uint64_t next_fh_ = 1;                                 // GUARDED_BY(mu_)
  std::map<std::string, std::weak_ptr<BlockFetcher>> fetchers_;  // GUARDED_BY(mu_)
  std::set<std::string> deleted_locally_;                        // GUARDED_BY(mu_)
  std::map<std::string, std::weak_ptr<Staged>> recovered_;       // GUARDED_BY(mu_)
  std::mutex live_uploads_mu_;                                   // taken alone
  std::multiset<std::string> live_uploads_;                      // GUARDED_BY(live_uploads_mu_)
  std::map<std::string, int> creating_;                          // GUARDED_BY(live_uploads_mu_)
  std::unique_ptr<Exporter> exporter_;
};

}  // namespace nacre::fs
