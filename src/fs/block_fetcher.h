// The read path's fetching: ranged GETs that fill the node-local cache.
//
// FetchPool is the one global concurrency budget: a fixed set of worker
// threads, each running one GET at a time and buffering at most one cache
// block, so memory is bounded by workers × block size whatever the number of
// open files. Jobs run by priority: demand reads, then prefetch, then
// whole-file hydration; a queued job that a reader starts waiting for is
// promoted to demand.
//
// BlockFetcher makes blocks of one object version present in the cache,
// single-flight: however many readers want a cold block, one GET fetches it.
// Every GET carries If-Match with the version's ETag, so fetched bytes always
// belong to that version; if it is gone, waiters get kPreconditionFailed.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "cache/block_cache.h"
#include "fs/metrics.h"
#include "s3/object_client.h"

namespace nacre::fs {

enum class FetchPriority { kDemand = 0, kPrefetch = 1, kHydrate = 2 };

class FetchPool {
 public:
  // A job is called with true to run, or false when the pool shuts down
  // before running it (it must then fail its waiters).
  using Job = std::function<void(bool run)>;

  // Threads start with start(), so a process can create the pool and still
  // daemonise (fork) before any thread exists; jobs submitted earlier wait.
  explicit FetchPool(int workers) : workers_(std::max(1, workers)) {}
  void start();
  ~FetchPool();  // runs no further job; calls the queued ones with false
  FetchPool(const FetchPool&) = delete;
  FetchPool& operator=(const FetchPool&) = delete;

  void submit(FetchPriority priority, Job job);
  int workers() const { return workers_; }

 private:
  void work();
  int workers_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::array<std::deque<Job>, 3> queues_;  // GUARDED_BY(mu_), by priority
  bool stopping_ = false;                  // GUARDED_BY(mu_)
  std::vector<std::thread> threads_;
};

class BlockFetcher : public std::enable_shared_from_this<BlockFetcher> {
 public:
  // `part_size` bounds one GET (a multiple of the cache block size).
  BlockFetcher(s3::ObjectClient& client, FetchPool& pool,
               std::shared_ptr<cache::CachedObject> object, Metrics& metrics, uint64_t part_size);

  const std::shared_ptr<cache::CachedObject>& object() const { return object_; }

  // Makes blocks [first, last] present and waits for them. Returns the first
  // error (e.g. kPreconditionFailed when the version is gone).
  [[nodiscard]] Status ensure(uint64_t first, uint64_t last);
  // Starts fetching the blocks of [first, last] that are neither present nor
  // in flight; returns at once.
  void prefetch(uint64_t first, uint64_t last, FetchPriority priority);

 private:
  struct Run;  // one GET's worth of consecutive blocks
  struct Pending {
    std::shared_future<Status> done;
    std::shared_ptr<Run> run;
  };
  // Registers the missing blocks of [first, last] as in flight (grouped into
  // runs of at most part_size) and submits those runs; returns what to wait for.
  std::vector<Pending> request(uint64_t first, uint64_t last, FetchPriority priority);
  void execute(const std::shared_ptr<Run>& run);
  // One GET of blocks [first, last] into the cache, finishing each block's waiters.
  void fetch(uint64_t first, uint64_t last);
  // execute, failing the run's waiters if it throws (no exception leaves a worker).
  void run_guarded(const std::shared_ptr<Run>& run);
  void finish(uint64_t block, const Status& status);
  // Fails the blocks of `run` still in flight for it (cancellation, an exception).
  void finish_run(const Run& run, const Status& status);

  s3::ObjectClient& client_;
  FetchPool& pool_;
  std::shared_ptr<cache::CachedObject> object_;
  Metrics& metrics_;
  uint64_t blocks_per_part_;
  // After the cache refuses a block (kCacheFull / kNoSpace), runs starting within this
  // long fail at once instead of downloading bytes the cache will not take.
  static constexpr std::chrono::seconds kUncacheableBackoff{1};
  std::atomic<int64_t> uncacheable_until_{0};  // steady_clock ticks
  std::mutex mu_;
  std::map<uint64_t, std::pair<std::shared_ptr<std::promise<Status>>, Pending>>
      in_flight_;  // GUARDED_BY(mu_)
};

}  // namespace nacre::fs
