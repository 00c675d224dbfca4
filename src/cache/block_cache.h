// The node-local on-disk cache of object data, keyed by (bucket, key, ETag).
//
// Each cached object version is an entry of two files: a sparse data file
// (block i at offset i * block_size) and a metadata file with a header and one
// record (CRC-32C + present tag) per block; see entry_format.h for the layout.
// Entries survive a restart: BlockCache::open indexes what an earlier process
// left and the first has_block() of such a block reads it back and checks its
// CRC-32C. A block that fails any check is a miss, never wrong bytes.
//
// Versions: each (bucket, key, ETag) is an entry of its own. Opening a new version
// drops the unheld older versions of the key at once; versions still held (an open
// handle reading the old version during a rolling update) stay until unheld and
// evicted, so readers of either version never lose their data to the other.
//
// Size: data bytes (the sum of present blocks) are bounded by max_bytes, and
// min_free_bytes are kept free on the cache's file system, by evicting whole
// entries in least-recently-used order (LRU = last open_object; it survives a
// restart through the metadata file's mtime). Entries held by a caller (a
// CachedObject shared_ptr alive outside the cache) are never evicted. The bounds
// are hard: when nothing evictable is left, write_block refuses the block
// (kCacheFull, counted in CacheStats::refused_writes) and the caller serves those
// bytes without caching them.
//
// Files are private (files 0600, and every directory the cache creates 0700,
// whatever the umask): the cache holds other tenants' data and key names. A
// directory that already exists (the user's --cache-dir) keeps its mode.
//
// After a restart, start_check() reads back the whole entries an earlier process left
// on a thread of its own, so the first open of a model finds it checked.
//
// One process per cache directory: open() takes an exclusive flock on
// dir/v1/LOCK. The cache knows nothing of S3, FUSE or Kubernetes.
//
// Threads and locks: BlockCache and CachedObject are thread-safe. There are two
// kinds of lock and one order: BlockCache::mu_ (the index and the LRU list) is
// taken before an entry's mutex (detail::Entry::mu: block states, byte counts and
// recent blocks), never after. The block buffer pool's mutex is a leaf below both
// (a buffer let go under either goes back to the pool). No lock is held while
// reading or writing a data block.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>

#include "cache/block_buffer.h"
#include "common/error.h"

namespace nacre::cache {

struct ObjectVersion {
  std::string bucket;
  std::string key;
  std::string etag;
  uint64_t size = 0;
};

struct CacheOptions {
  std::string dir;                       // created if missing
  uint64_t max_bytes = 10ull << 30;      // bound on cached data bytes (sum of present blocks)
  uint64_t min_free_bytes = 1ull << 30;  // keep at least this much free on dir's file system
  uint32_t block_size = 1 << 20;         // an existing entry with another block size is discarded
  // Bound on the bytes of recently written blocks kept in memory (write_block with a
  // BlockBuffer), from which readers are answered without reading the data file back.
  uint64_t memory_bytes = 96ull << 20;
  // Write whole blocks to the data file with O_DIRECT where the file system takes it:
  // no copy into the page cache and no dirty pages to write back (the reader's copy
  // is the kernel's FUSE page cache). Otherwise, and for a last partial block, pwrite.
  bool direct_io = true;
  // Bytes available to unprivileged writers on dir's file system. Empty: statvfs(dir)
  // (f_bavail * f_frsize). Tests replace it to simulate a nearly full disk. Called with
  // BlockCache's mutex held, from any thread; must be thread-safe and must not call back
  // into the cache. Return UINT64_MAX when unknown (the floor is then not enforced).
  std::function<uint64_t(const std::string& dir)> free_bytes_probe;
};

struct CacheStats {
  uint64_t used_bytes = 0;  // bytes of present blocks plus writes in flight
  uint64_t entries = 0;     // object versions in the index
  uint64_t hits = 0;        // has_block() answers true
  uint64_t misses = 0;      // has_block() answers false
  uint64_t evictions = 0;   // entries removed to make room (not release() or a new ETag)
  uint64_t bad_blocks = 0;  // blocks dropped because their bytes failed the CRC-32C check
  // Blocks not stored because nothing evictable was left to stay within max_bytes and
  // above min_free_bytes (every other entry was held): those bytes were served uncached.
  uint64_t refused_writes = 0;
  // Bytes an earlier process left that were read back and checked against their CRC,
  // by reads, by opens (verify_all) and by the check at start (start_check).
  uint64_t checked_bytes = 0;
  // True from start_check() until its thread has finished (or was stopped).
  bool start_check_running = false;
};

// What is known of a block without reading it.
enum class BlockPresence { kAbsent, kUnverified, kVerified };

class BlockCache;
namespace detail {
struct Entry;
}

// One object version in the cache. Obtained from BlockCache::open_object; shared by all
// callers of the same version; thread-safe. Holding it pins the entry (no eviction) and
// keeps its files open. The BlockCache must outlive every CachedObject.
class CachedObject {
 public:
  ~CachedObject();
  CachedObject(const CachedObject&) = delete;
  CachedObject& operator=(const CachedObject&) = delete;

  const ObjectVersion& version() const;
  uint32_t block_size() const;
  uint64_t block_count() const;             // ceil(size / block_size); 0 for an empty object
  uint64_t block_length(uint64_t i) const;  // block_size, or less for the last block

  // True when block i is present and its checksum has been verified. The first call for a
  // block written by an earlier process reads it back and checks its CRC-32C; a mismatch
  // or short read drops the block (counted in bad_blocks) and answers false. Verified
  // state is kept in memory (also across re-opens in this process), so later calls are
  // O(1). Counts a hit or a miss. False for i >= block_count() and once released().
  bool has_block(uint64_t i);

  // kVerified / kUnverified (present from an earlier process, CRC not checked yet) /
  // kAbsent, with no I/O and no hit or miss counted: lets a caller decide cheaply,
  // under its own lock, which blocks need work, and verify them elsewhere.
  BlockPresence presence(uint64_t i) const;

  // Stores a whole block (exactly block_length(i) bytes) and records its CRC-32C and
  // presence: the data is written first, then the metadata record, and a block from an
  // earlier process is served only after its CRC-32C matched, so a crash can lose a block
  // but never make a wrong one look valid. Makes room first (see the file comment).
  // On success has_block(i) is true (until release) and data_fd() holds the bytes.
  // A block already present is not written again (success). Concurrent writers of the
  // same block: one writes, the others wait for it and then share its outcome or retry.
  // Errors: kInvalidArgument (index out of range or wrong length), kCacheFull (max_bytes or
  // min_free_bytes cannot be kept: every other entry is held), kNoSpace (the disk is full
  // and nothing can be evicted), kReleased (the entry was released or evicted; the caller
  // should serve its bytes from memory), kIo (other disk errors).
  [[nodiscard]] Status write_block(uint64_t i, std::string_view data);
  // The same for a block in an aligned buffer (exactly block_length(i) bytes), written
  // with O_DIRECT when possible (CacheOptions::direct_io) and then kept in memory as a
  // recent block while CacheOptions::memory_bytes allows. A block written through the
  // page cache instead (a last partial block; no O_DIRECT) is not kept: the page
  // cache has it.
  [[nodiscard]] Status write_block(uint64_t i, std::shared_ptr<const BlockBuffer> block);

  // Block i's bytes from memory when it was written recently and is still kept (they
  // are verified); null otherwise (read the data file).
  std::shared_ptr<const BlockBuffer> recent_block(uint64_t i) const;
  // Lets go of block i's memory copy (a sequential reader has had it).
  void forget_recent(uint64_t i);
  // Lets go of every memory copy (the blocks will be read from the file only).
  void forget_all_recent();
  // An empty aligned buffer of block_size() bytes, from the cache's pool.
  std::shared_ptr<BlockBuffer> new_buffer() const;

  // The sparse data file opened O_RDONLY, for zero-copy replies (splice): block i lives
  // at offset i * block_size() and holds valid bytes once has_block(i) answered true or
  // write_block(i) succeeded. Valid until this object is destroyed, even after release().
  int data_fd() const;
  // The fd a reply of cached bytes splices from: data_fd(), or while blocks are missing
  // one of the same file opened without read-ahead (see open_files; an object opened
  // whole has none, and keeps data_fd() if a block is dropped later). Valid as data_fd().
  int reply_fd() const;

  // Copies [offset, offset + len) into out. Every block touched must be present and
  // verified (checked as has_block does, without counting hits or misses).
  // Errors: kInvalidRange (past the end of the object), kNotCached (a block touched is
  // not cached, or the entry was released), kIo.
  [[nodiscard]] Status read(uint64_t offset, size_t len, char* out);

  // True when every block is present and verified: blocks an earlier process left are
  // read back and checked first (a bad one is dropped, and the answer is false). Answers
  // false at once, reading nothing, when a block is absent. After true, the whole data
  // file may be handed to a reader that bypasses this class (FUSE passthrough). Reads
  // in order, with the kernel's read-ahead, so the cost is about one sequential read of
  // the unverified part; no hit or miss is counted.
  // A stop requested through `stop` ends the check early, with false.
  [[nodiscard]] bool verify_all(std::stop_token stop = {});

  // Bytes of blocks present (including ones from an earlier process not yet verified);
  // 0 once released().
  uint64_t cached_bytes() const;

  // True once release() dropped this entry's files. A holder should then open_object()
  // again to cache anew.
  bool released() const;

 private:
  friend class BlockCache;
  CachedObject(BlockCache* cache, std::shared_ptr<detail::Entry> entry, int data_ro_fd,
               int data_rw_fd, int data_direct_fd, int meta_fd, int data_sparse_fd);

  // has_block without the hit/miss count.
  bool check_block(uint64_t i);
  // Reads block i back and checks it against the CRC from an earlier process; drops it on
  // a mismatch. Called without the entry lock.
  bool verify_block(uint64_t i);
  uint64_t record_offset(uint64_t i) const;
  // `direct`: data is aligned for O_DIRECT and data_direct_fd_ may take it.
  Status store_block(uint64_t i, std::string_view data, bool direct);
  Status write_block_impl(uint64_t i, std::string_view data, bool direct);
  // Keeps `block` as recent block i within the memory bound (entry lock held).
  void keep_recent_locked(uint64_t i, std::shared_ptr<const BlockBuffer> block);

  BlockCache* const cache_;
  const std::shared_ptr<detail::Entry> entry_;
  const int data_ro_fd_;
  const int data_rw_fd_;
  const int data_direct_fd_;  // O_WRONLY | O_DIRECT, or -1 when the file system refuses it
  std::atomic<bool> direct_failed_{false};  // an O_DIRECT write failed: pwrite from now on
  const int meta_fd_;
  const int data_sparse_fd_;  // see reply_fd(); -1: none
  // False for an object of BlockCache's own (open_files without `share`): the entry's
  // holders are others, whose recent blocks its end must not let go of.
  bool shared_ = true;
};

class BlockCache {
 public:
  // Opens (creating if missing) the cache directory and indexes what an earlier process
  // left there. Entries whose metadata is unreadable, foreign, of another format version
  // or block size, or whose data file is missing are deleted. Enforces max_bytes by LRU.
  // Errors: kIo or kNoSpace with a message naming the directory when it cannot be created
  // or written; kIo when another process holds the cache directory; kInvalidArgument for
  // an empty dir or a zero block size.
  [[nodiscard]] static Result<std::unique_ptr<BlockCache>> open(CacheOptions options);

  ~BlockCache();
  BlockCache(const BlockCache&) = delete;
  BlockCache& operator=(const BlockCache&) = delete;

  // The entry for this version (same bucket, key, ETag and size), created empty if absent.
  // With `supersede` (the caller knows `v` is the object's current version), unheld
  // entries for the same bucket/key with another ETag are deleted (the object changed);
  // held ones stay for their holders. Without it (an old version's reader caching
  // anew), other versions are left alone. Marks the entry most recently used, in
  // memory and on disk.
  // Errors: kInvalidArgument (empty bucket, key or etag), kIo / kNoSpace creating files.
  [[nodiscard]] Result<std::shared_ptr<CachedObject>> open_object(const ObjectVersion& v,
                                                                  bool supersede = true);

  // Drops every cached version of bucket/key (for `nacre release`), held or not; success
  // when there is none. Safe while a CachedObject is held: it then answers released(), has_block()
  // is false, and its data_fd() stays valid (the files are unlinked, not truncated).
  [[nodiscard]] Status release(const std::string& bucket, const std::string& key);

  // Bytes cached for this exact version, without creating an entry; 0 when absent.
  uint64_t cached_bytes(const ObjectVersion& v);

  CacheStats stats() const;

  // Checks, on a thread of its own, the blocks an earlier process left in whole entries
  // (every block present) of `min_entry_bytes` or more, most recently used entry first,
  // reading at most `max_bytes`; an entry that does not fit in what is left is skipped.
  // The first open after a restart then finds its file verified and hands it to FUSE
  // passthrough at once, instead of reading all of it before the open returns
  // (verify_all); a block that fails its check is dropped, as there. The check neither
  // marks entries used nor keeps them from eviction or a new version. Call after any
  // fork (the thread does not survive one); calls after one that started the thread do
  // nothing. Never throws: a thread that cannot be created is logged and the check left
  // out. The destructor stops
  // it between two blocks and joins it. Progress: stats().start_check_running (true from
  // this call on) and checked_bytes.
  void start_check(uint64_t max_bytes, uint64_t min_entry_bytes = 0);

  const CacheOptions& options() const { return options_; }

 private:
  friend class CachedObject;
  struct Slot {
    std::shared_ptr<detail::Entry> entry;
    std::weak_ptr<CachedObject> live;  // the CachedObject handed out, while one is held
    std::list<std::string>::iterator lru_pos;
  };
  // By bucket NUL key NUL etag: ordered, so the versions of one key are neighbours.
  using Index = std::map<std::string, Slot>;

  BlockCache(CacheOptions options, int lock_fd);

  Status load();
  uint64_t free_bytes() const;
  // Evicts unheld entries in LRU order until `len` more bytes fit under max_bytes (when
  // `budget`) and leave min_free_bytes free on the disk (when `floor`). Returns false when
  // it had to stop short because every remaining entry is held.
  bool make_room_locked(uint64_t len, bool budget, bool floor);
  // Evicts the least recently used unheld entry; false when every entry is held.
  bool evict_lru_locked();
  // evict_lru_locked for CachedObject, after a real ENOSPC.
  bool evict_one();
  // Removes a slot from the index and deletes its files; holders see released().
  Status drop_locked(Index::iterator it, bool eviction);
  // Charges `len` bytes of a block about to be written to the entry and used_bytes_.
  Status reserve(detail::Entry& entry, uint64_t len);
  // Opens the entry's files. `share`: the object becomes slot.live, the one every
  // open_object of the version gets (and a holder pins the entry); otherwise it is the
  // caller's alone and pins nothing.
  Result<std::shared_ptr<CachedObject>> open_files(Slot& slot, bool share = true);
  // The body of start_check's thread.
  void run_start_check(uint64_t max_bytes, uint64_t min_entry_bytes, std::stop_token stop);

  const CacheOptions options_;
  const int lock_fd_;

  mutable std::mutex mu_;       // guards index_ and lru_; taken before any detail::Entry::mu
  Index index_;                 // GUARDED_BY(mu_)
  std::list<std::string> lru_;  // GUARDED_BY(mu_): index_ keys, least recently used first

  // Sum of detail::Entry::charged_bytes over the entries in index_. Changed together with
  // an entry's charged_bytes under that entry's mutex; increased only with mu_ held too.
  std::atomic<uint64_t> used_bytes_{0};
  std::atomic<uint64_t> hits_{0};
  std::atomic<uint64_t> misses_{0};
  std::atomic<uint64_t> evictions_{0};
  std::atomic<uint64_t> bad_blocks_{0};
  std::atomic<uint64_t> refused_writes_{0};
  std::atomic<uint64_t> recent_bytes_{0};  // sum of the entries' recent blocks
  std::atomic<uint64_t> checked_bytes_{0};
  std::atomic<bool> start_check_running_{false};
  const std::shared_ptr<BlockBufferPool> buffers_;
  // Stopped and joined first thing in the destructor.
  std::jthread start_checker_;
};

}  // namespace nacre::cache
