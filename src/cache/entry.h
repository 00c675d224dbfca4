// In-memory state of one cache entry, shared by BlockCache's index and the
// CachedObject handed out for it (internal to the cache).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cache/block_buffer.h"
#include "cache/block_cache.h"

namespace nacre::cache::detail {

enum class BlockState : uint8_t {
  kAbsent,
  kUnverified,  // recorded present by an earlier process; CRC not yet checked
  kWriting,     // one write_block is storing it; others wait on Entry::changed
  kVerified,    // bytes in the data file match crc (checked, or written by us)
};

struct Entry {
  ObjectVersion version;  // immutable after construction, like the fields up to `mu`
  std::string name;       // SHA-256 hex; see entry_format.h
  std::string data_path;
  std::string meta_path;
  uint32_t block_size = 0;
  uint64_t block_count = 0;
  uint64_t records_offset = 0;

  // Leaf lock, except that BlockCache::mu_ may be held when taking it (never the reverse).
  std::mutex mu;
  std::condition_variable changed;  // a kWriting block left that state
  std::vector<BlockState> state;    // GUARDED_BY(mu)
  std::vector<uint32_t> crc;        // GUARDED_BY(mu): per block, valid unless kAbsent
  uint64_t present_bytes = 0;       // GUARDED_BY(mu): kUnverified + kVerified blocks
  // GUARDED_BY(mu): present_bytes plus writes in flight; the entry's share of
  // BlockCache::used_bytes_. Zeroed when dropped.
  uint64_t charged_bytes = 0;
  bool dropped = false;  // GUARDED_BY(mu): removed from the index, files unlinked
  // Verified blocks kept in memory after they were written (BlockCache::recent_bytes_
  // counts them).
  std::map<uint64_t, std::shared_ptr<const BlockBuffer>> recent;  // GUARDED_BY(mu)

  uint64_t block_length(uint64_t i) const {
    uint64_t start = i * block_size;
    return version.size - start < block_size ? version.size - start : block_size;
  }
};

// Lets go of every recent block of `e` (e.mu held), taking them off `counter`.
inline void drop_recent_locked(Entry& e, std::atomic<uint64_t>& counter) {
  for (auto& [i, block] : e.recent) counter.fetch_sub(block->size());
  e.recent.clear();
}

}  // namespace nacre::cache::detail
