// BlockCache::start_check: the check, after a restart, of the whole entries an earlier
// process left (see block_cache.h).
#include <spdlog/spdlog.h>

#include <chrono>

#include "cache/block_cache.h"
#include "cache/entry.h"

namespace nacre::cache {

void BlockCache::start_check(uint64_t max_bytes) {
  start_check_running_ = true;
  start_checker_ = std::jthread([this, max_bytes](std::stop_token stop) {
    run_start_check(max_bytes, stop);
    start_check_running_ = false;
  });
}

void BlockCache::run_start_check(uint64_t max_bytes, std::stop_token stop) {
  const auto began = std::chrono::steady_clock::now();
  std::vector<std::string> keys;
  {
    std::lock_guard lk(mu_);
    keys.assign(lru_.rbegin(), lru_.rend());  // most recently used first
  }
  uint64_t budget = max_bytes;
  uint64_t checked = 0;
  uint64_t entries = 0;
  uint64_t skipped = 0;
  for (const std::string& key : keys) {
    if (stop.stop_requested()) break;
    std::shared_ptr<CachedObject> object;
    uint64_t unverified = 0;
    {
      std::lock_guard lk(mu_);
      auto it = index_.find(key);
      if (it == index_.end()) continue;  // evicted or superseded meanwhile
      detail::Entry& e = *it->second.entry;
      {
        std::lock_guard entry_lk(e.mu);
        // An entry with holes cannot go to passthrough: its blocks are checked as
        // they are read.
        if (e.dropped || e.present_bytes < e.version.size) continue;
        for (uint64_t i = 0; i < e.block_count; ++i) {
          if (e.state[i] == detail::BlockState::kUnverified) unverified += e.block_length(i);
        }
      }
      if (unverified == 0) continue;
      if (unverified > budget) {
        ++skipped;
        continue;
      }
      // Held while checked, so it is not evicted under the check; not marked used.
      object = it->second.live.lock();
      if (!object) {
        auto opened = open_files(it->second);
        if (!opened) {
          spdlog::warn("cache check at start: {}", opened.error().describe());
          continue;
        }
        object = std::move(*opened);
      }
    }
    budget -= unverified;
    // A false answer (a bad block was dropped, or the entry was released) leaves the
    // rest to the reads: nothing to report beyond the bad-block count.
    (void)object->verify_all(stop);
    if (stop.stop_requested()) break;
    checked += unverified;
    ++entries;
  }
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count();
  spdlog::info(
      "cache check at start: {} entries, {} MiB checked in {:.1f} s{}{}", entries, checked >> 20,
      secs,
      skipped ? fmt::format(", {} entries left to their first open (over the bound)", skipped) : "",
      stop.stop_requested() ? ", stopped early" : "");
}

}  // namespace nacre::cache
