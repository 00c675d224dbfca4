#include "fs/block_fetcher.h"

#include <spdlog/spdlog.h>

namespace nacre::fs {

struct BlockFetcher::Run {
  uint64_t first = 0;
  uint64_t last = 0;
  std::atomic<bool> started{false};
};

void FetchPool::start() {
  for (int i = 0; i < workers_; ++i) threads_.emplace_back([this] { work(); });
}

FetchPool::~FetchPool() {
  std::array<std::deque<Job>, 3> left;
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    left.swap(queues_);
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
  for (auto& q : left) {
    for (auto& job : q) job(false);
  }
}

void FetchPool::submit(FetchPriority priority, Job job) {
  {
    std::lock_guard lock(mu_);
    if (!stopping_) {
      queues_[static_cast<int>(priority)].push_back(std::move(job));
      // Notified under the lock, so no gap exists in which the pool could be
      // destroyed under a submitter still using it.
      cv_.notify_one();
      return;
    }
  }
  job(false);
}

void FetchPool::work() {
  for (;;) {
    Job job;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] {
        return stopping_ ||
               std::any_of(queues_.begin(), queues_.end(), [](auto& q) { return !q.empty(); });
      });
      if (stopping_) return;
      for (auto& q : queues_) {
        if (!q.empty()) {
          job = std::move(q.front());
          q.pop_front();
          break;
        }
      }
    }
    // A job must not end the worker (and with it the pool's capacity): each one fails
    // its own waiters on error, and this is the last line of defence.
    try {
      job(true);
    } catch (const std::exception& e) {
      spdlog::error("fetch job failed: {}", e.what());
    } catch (...) {
      spdlog::error("fetch job failed with an unknown exception");
    }
  }
}

BlockFetcher::BlockFetcher(s3::ObjectClient& client, FetchPool& pool,
                           std::shared_ptr<cache::CachedObject> object, Metrics& metrics,
                           uint64_t part_size)
    : client_(client),
      pool_(pool),
      object_(std::move(object)),
      metrics_(metrics),
      blocks_per_part_(std::max<uint64_t>(1, part_size / object_->block_size())) {}

std::vector<BlockFetcher::Pending> BlockFetcher::request(uint64_t first, uint64_t last,
                                                         FetchPriority priority) {
  std::vector<Pending> wait;
  std::vector<std::shared_ptr<Run>> runs;
  uint64_t count = object_->block_count();
  if (count == 0) return wait;
  last = std::min(last, count - 1);
  {
    std::lock_guard lock(mu_);
    std::shared_ptr<Run> open_run;
    for (uint64_t b = first; b <= last; ++b) {
      if (auto it = in_flight_.find(b); it != in_flight_.end()) {
        wait.push_back(it->second.second);
        open_run = nullptr;
        continue;
      }
      // No I/O under the lock: blocks an earlier process left (unverified) are checked
      // by the run, in a worker, so opening a large cached file after a restart neither
      // reads it whole nor blocks other readers of it.
      if (object_->presence(b) == cache::BlockPresence::kVerified) {
        metrics_.cache_hit_blocks++;
        open_run = nullptr;
        continue;
      }
      // Runs break at part boundaries so that GETs of a sequential stream
      // line up whoever asked first.
      if (!open_run || b % blocks_per_part_ == 0) {
        open_run = std::make_shared<Run>();
        open_run->first = b;
        runs.push_back(open_run);
      }
      open_run->last = b;
      auto promise = std::make_shared<std::promise<Status>>();
      Pending p{promise->get_future().share(), open_run};
      in_flight_.emplace(b, std::make_pair(promise, p));
      wait.push_back(p);
    }
  }
  std::weak_ptr<BlockFetcher> self = weak_from_this();
  for (auto& run : runs) {
    pool_.submit(priority, [self, run](bool go) {
      auto fetcher = self.lock();
      if (!fetcher) return;
      if (!go) {
        if (!run->started.exchange(true)) {
          fetcher->finish_run(*run, fail(ErrorCode::kCancelled, "the mount is shutting down"));
        }
        return;
      }
      fetcher->run_guarded(run);
    });
  }
  return wait;
}

void BlockFetcher::run_guarded(const std::shared_ptr<Run>& run) {
  try {
    execute(run);
  } catch (const std::exception& e) {
    // Waiters must never hang: whatever the run had not finished fails.
    finish_run(*run,
               fail(ErrorCode::kIo, std::string("internal error while fetching: ") + e.what()));
  } catch (...) {
    finish_run(*run, fail(ErrorCode::kIo, "internal error while fetching"));
  }
}

void BlockFetcher::finish(uint64_t block, const Status& status) {
  std::shared_ptr<std::promise<Status>> promise;
  {
    std::lock_guard lock(mu_);
    auto it = in_flight_.find(block);
    if (it == in_flight_.end()) return;
    promise = it->second.first;
    in_flight_.erase(it);
  }
  promise->set_value(status);
}

void BlockFetcher::finish_run(const Run& run, const Status& status) {
  std::vector<std::shared_ptr<std::promise<Status>>> promises;
  {
    std::lock_guard lock(mu_);
    for (uint64_t b = run.first; b <= run.last; ++b) {
      // Only blocks still in flight for this run: one finished meanwhile may have been
      // asked for again, by a new run whose waiters are not ours to fail.
      auto it = in_flight_.find(b);
      if (it == in_flight_.end() || it->second.second.run.get() != &run) continue;
      promises.push_back(it->second.first);
      in_flight_.erase(it);
    }
  }
  for (auto& p : promises) p->set_value(status);
}

void BlockFetcher::execute(const std::shared_ptr<Run>& run) {
  if (run->started.exchange(true)) return;  // already run at a higher priority
  // Blocks left by an earlier process are checked here (a read and a CRC, in this
  // worker, under no lock); only the stretches that are absent or fail the check are
  // fetched, one GET each.
  uint64_t b = run->first;
  while (b <= run->last) {
    if (object_->presence(b) != cache::BlockPresence::kAbsent && object_->has_block(b)) {
      metrics_.cache_hit_blocks++;
      finish(b, {});
      ++b;
      continue;
    }
    uint64_t end = b;
    while (end < run->last && object_->presence(end + 1) == cache::BlockPresence::kAbsent) ++end;
    fetch(b, end);
    b = end + 1;
  }
}

void BlockFetcher::fetch(uint64_t first, uint64_t last) {
  const auto& v = object_->version();
  uint64_t current = first;
  const int64_t now = std::chrono::steady_clock::now().time_since_epoch().count();
  if (now < uncacheable_until_.load()) {
    // The cache refused blocks a moment ago: the read path serves these bytes straight
    // from S3, so fetching them here would only download them twice.
    for (uint64_t b = current; b <= last; ++b) {
      finish(b, fail(ErrorCode::kCacheFull, "the cache is full of data in use"));
    }
    return;
  }
  for (uint64_t b = current; b <= last; ++b) metrics_.cache_miss_blocks++;
  uint64_t bs = object_->block_size();
  uint64_t offset = current * bs;
  uint64_t length = 0;
  for (uint64_t b = current; b <= last; ++b) length += object_->block_length(b);

  // The one copy the daemon makes of the bytes: out of curl's buffer into an aligned
  // block buffer, which the cache writes with O_DIRECT and keeps for the reader.
  std::shared_ptr<cache::BlockBuffer> buffer = object_->new_buffer();
  metrics_.count_request("GetObject");
  metrics_.s3_bytes_in_flight += static_cast<int64_t>(length);
  int64_t outstanding = static_cast<int64_t>(length);
  auto result = client_.get_object(
      {v.bucket, v.key, offset, length, v.etag}, [&](std::string_view chunk) -> Status {
        metrics_.s3_bytes_fetched += chunk.size();
        metrics_.s3_bytes_in_flight -= static_cast<int64_t>(chunk.size());
        outstanding -= static_cast<int64_t>(chunk.size());
        while (!chunk.empty()) {
          if (current > last) {
            return fail(ErrorCode::kMalformedResponse,
                        "GetObject s3://" + v.bucket + "/" + v.key + " sent more bytes than asked");
          }
          uint64_t want = object_->block_length(current) - buffer->size();
          size_t take = std::min<uint64_t>(want, chunk.size());
          buffer->append(chunk.substr(0, take));
          chunk.remove_prefix(take);
          if (buffer->size() == object_->block_length(current)) {
            Status st = object_->write_block(current, std::move(buffer));
            if (!st) return st;
            // Readers of this block may go on before the rest of the run lands.
            finish(current, {});
            ++current;
            buffer = object_->new_buffer();  // the last one may be kept as a recent block
          }
        }
        return {};
      });
  metrics_.s3_bytes_in_flight -= outstanding;
  Status status = {};
  if (!result) {
    status = std::unexpected(result.error());
    if (result.error().code == ErrorCode::kNoSuchKey) {
      // The handle's version is gone (deleted): like a replaced version, that
      // is a failed read (EIO), not a missing file.
      status = fail(ErrorCode::kPreconditionFailed,
                    "s3://" + v.bucket + "/" + v.key + " (ETag " + v.etag + ") no longer exists");
    }
    if (result.error().code == ErrorCode::kReleased) {
      // `nacre release` dropped the entry mid-fetch: not an S3 failure; the read
      // path serves its reader from S3 and the next read caches anew.
    } else if (result.error().code == ErrorCode::kCacheFull ||
               result.error().code == ErrorCode::kNoSpace) {
      // Not an S3 failure: the cache would not take the bytes (logged by the read path).
      uncacheable_until_ = std::chrono::steady_clock::now().time_since_epoch().count() +
                           std::chrono::nanoseconds(kUncacheableBackoff).count();
    } else {
      metrics_.count_error("GetObject", std::string(to_string(result.error().code)));
      spdlog::warn("fetch of s3://{}/{} bytes {}-{} failed: {}", v.bucket, v.key, offset,
                   offset + length - 1, result.error().describe());
    }
  } else if (current <= last) {
    status = fail(ErrorCode::kMalformedResponse,
                  "GetObject s3://" + v.bucket + "/" + v.key + " returned fewer bytes than asked");
  }
  for (uint64_t b = current; b <= last; ++b) finish(b, status);
}

Status BlockFetcher::ensure(uint64_t first, uint64_t last) {
  auto pending = request(first, last, FetchPriority::kDemand);
  // Promote queued prefetch or hydration runs this reader now waits for.
  std::weak_ptr<BlockFetcher> self = weak_from_this();
  std::shared_ptr<Run> promoted;
  for (auto& p : pending) {
    if (p.run == promoted || p.run->started) continue;
    promoted = p.run;
    pool_.submit(FetchPriority::kDemand, [self, run = p.run](bool go) {
      if (!go) return;  // the original submission fails the waiters
      if (auto fetcher = self.lock()) fetcher->run_guarded(run);
    });
  }
  Status first_error = {};
  for (auto& p : pending) {
    Status st = p.done.get();
    if (!st && first_error) first_error = st;
  }
  return first_error;
}

void BlockFetcher::prefetch(uint64_t first, uint64_t last, FetchPriority priority) {
  (void)request(first, last, priority);
}

}  // namespace nacre::fs
