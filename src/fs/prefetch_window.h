// Sequential read-ahead of one open file: the window of blocks fetched ahead
// of a reader starts at `initial` bytes and doubles on every read that
// continues where the last one ended, up to `max`; any other read resets it.
// Not thread-safe: the owner (a file handle) holds its own lock.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <utility>

namespace nacre::fs {

class PrefetchWindow {
 public:
  PrefetchWindow(uint64_t initial, uint64_t max) : initial_(initial), max_(max), window_(initial) {}

  // Records a read of [offset, offset + length) (length > 0) of a file of
  // `block_count` blocks of `block_size` bytes, and returns the blocks to
  // start fetching ahead of it, first and last inclusive, or nothing. A block
  // is returned once per sequential stream: what was asked for is not asked
  // again.
  std::optional<std::pair<uint64_t, uint64_t>> advance(uint64_t offset, uint64_t length,
                                                       uint64_t block_size, uint64_t block_count) {
    std::optional<std::pair<uint64_t, uint64_t>> ahead;
    const bool sequential = offset == next_offset_ && offset != 0;
    if (offset == 0 || sequential) {
      if (sequential) window_ = std::min(window_ * 2, max_);
      const uint64_t last = (offset + length - 1) / block_size;
      const uint64_t ahead_last =
          std::min<uint64_t>((offset + length + window_ - 1) / block_size, block_count - 1);
      const uint64_t from = std::max(last + 1, prefetched_to_);
      if (ahead_last >= from) ahead = std::make_pair(from, ahead_last);
      prefetched_to_ = std::max(prefetched_to_, ahead_last + 1);
    } else {
      window_ = initial_;
      prefetched_to_ = 0;
    }
    next_offset_ = offset + length;
    return ahead;
  }

  // Forgets what was asked for (the blocks were dropped, e.g. by a release).
  void reset() { prefetched_to_ = 0; }

  uint64_t window() const { return window_; }

 private:
  uint64_t initial_;
  uint64_t max_;
  uint64_t window_;
  uint64_t next_offset_ = 0;    // where a sequential read continues
  uint64_t prefetched_to_ = 0;  // first block not yet requested ahead
};

}  // namespace nacre::fs
