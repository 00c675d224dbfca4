// BlockCache::start_check: the check, after a restart, of the whole entries an earlier
// process left (see block_cache.h).
#include <spdlog/spdlog.h>

#include <chrono>
#include <exception>

#include "cache/block_cache.h"
#include "cache/entry.h"

namespace nacre::cache {

void BlockCache::start_check(uint64_t max_bytes, uint64_t min_entry_bytes) {
  if (start_checker_.joinable() || max_bytes == 0) return;
  start_check_running_ = true;
  try {
    start_checker_ = std::jthread([this, max_bytes, min_entry_bytes](std::stop_token stop) {
      try {
        run_start_check(max_bytes, min_entry_bytes, stop);
      } catch (const std::exception& e) {  // no memory: the rest is left to the opens
        spdlog::warn("cache check at start ended early: {}", e.what());
      }
      start_check_running_ = false;
    });
  } catch (const std::exception& e) {  // no thread (a pids limit): an optional step
    start_check_running_ = false;
    spdlog::warn("cache check at start not run: {}", e.what());
  }
}

void BlockCache::run_start_check(uint64_t max_bytes, uint64_t min_entry_bytes,
                                 std::stop_token stop) {
  const auto began = std::chrono::steady_clock::now();
  const uint64_t checked_before = checked_bytes_.load();
  std::vector<std::string> keys;
  {
    std::lock_guard lk(mu_);
    keys.assign(lru_.rbegin(), lru_.rend());  // most recently used first
  }
  uint64_t budget = max_bytes;
  uint64_t entries = 0;
  uint64_t skipped = 0;
  for (const std::string& key : keys) {
    if (stop.stop_requested()) break;
    std::shared_ptr<CachedObject> object;
    {
      std::lock_guard lk(mu_);
      auto it = index_.find(key);
      if (it == index_.end()) continue;  // evicted or superseded meanwhile
      detail::Entry& e = *it->second.entry;
      if (e.version.size < min_entry_bytes) continue;  // never served by passthrough
      uint64_t unverified = 0;
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
      // An object of the check's own, never the one opens share (open_files' `share`),
      // so the check does not pin the entry: eviction and a new version may drop it
      // meanwhile, which ends its check (verify_all sees the entry dropped). Not marked
      // used.
      auto opened = open_files(it->second, /*share=*/false);
      if (!opened) {
        spdlog::warn("cache check at start: {}", opened.error().describe());
        continue;
      }
      object = std::move(*opened);
      budget -= unverified;
    }
    // A false answer (a bad block was dropped, or the entry went) leaves the rest of the
    // file to its reads: the bad-block count says what was found.
    (void)object->verify_all(stop);
    if (stop.stop_requested()) break;
    ++entries;
  }
  if (entries == 0 && skipped == 0) return;
  // The bytes count every check of an earlier process's blocks meanwhile, the opens' too.
  spdlog::info(
      "cache check at start: {} files checked in {:.1f} s ({} MiB read back by all "
      "checks meanwhile){}{}",
      entries, std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count(),
      (checked_bytes_.load() - checked_before) >> 20,
      stop.stop_requested() ? ", stopped early" : "",
      skipped ? "; " + std::to_string(skipped) +
                    " files over --cache-check-at-start left to their first open"
              : std::string());
}

}  // namespace nacre::cache
