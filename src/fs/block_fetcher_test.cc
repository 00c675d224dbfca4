// BlockFetcher and FetchPool over the in-memory object store and a real cache in a
// temporary directory (4 KiB blocks, 4-block parts): single-flight, priorities and
// promotion, shutdown, short bodies, a full cache, version pinning and lazy
// verification of blocks an earlier process left.
//
// Tests that need "thread T is now waiting inside ensure()" do not sleep and hope:
// they watch T's current system call in /proc until it is parked in a futex wait
// (the future of its blocks), see wait_until_parked().
#include "fs/block_fetcher.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <latch>
#include <optional>
#include <random>
#include <thread>

#include "cache/entry_format.h"
#include "cache/test_util.h"
#include "s3/faulty_object_client.h"
#include "s3/memory_object_client.h"

namespace nacre::fs {
namespace {

using namespace std::chrono_literals;
using cache::testing::TempDir;

constexpr uint32_t kBlock = 4096;
constexpr uint64_t kPart = 4 * kBlock;  // one GET: 4 blocks

std::string random_bytes(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

// The memory store, plus what the fetcher tests need to steer: a log of GET ranges,
// holding one GET at a gate until released, and bodies cut short without an error
// (a store answering fewer bytes than asked).
class TestStore : public s3::MemoryObjectClient {
 public:
  struct Get {
    uint64_t offset = 0;
    uint64_t length = 0;
    bool operator==(const Get&) const = default;
    friend std::ostream& operator<<(std::ostream& os, const Get& g) {
      return os << "GET bytes " << g.offset << "+" << g.length;
    }
  };

  // The next GET waits until release_held(); wait_held() returns once it arrived.
  void hold_next_get() {
    std::lock_guard lock(mu_);
    hold_armed_ = true;
  }
  void wait_held() {
    std::unique_lock lock(mu_);
    ASSERT_TRUE(cv_.wait_for(lock, 20s, [&] { return held_; })) << "no GET arrived";
  }
  void release_held() {
    {
      std::lock_guard lock(mu_);
      held_ = false;
    }
    cv_.notify_all();
  }
  // The next GET delivers only `bytes` bytes and then reports success.
  void short_next_get(uint64_t bytes) {
    std::lock_guard lock(mu_);
    short_ = bytes;
  }
  std::vector<Get> gets() const {
    std::lock_guard lock(mu_);
    return gets_;
  }
  // Bytes asked for by all GETs so far. Unlike bytes_served(), which a GET adds after
  // its last chunk reached the fetcher (so after its waiters may have returned), this
  // is exact as soon as ensure() returns.
  uint64_t requested_bytes() const {
    std::lock_guard lock(mu_);
    uint64_t n = 0;
    for (const auto& g : gets_) n += g.length;
    return n;
  }
  // Waits until `n` GETs have arrived (for jobs that run after the waiters returned).
  bool wait_for_gets(size_t n) const {
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (gets().size() < n) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(1ms);
    }
    return true;
  }

  Result<s3::GetObjectResult> get_object(const s3::GetObjectRequest& req,
                                         const s3::DataSink& sink) override {
    std::optional<uint64_t> limit;
    {
      std::unique_lock lock(mu_);
      gets_.push_back({req.offset, req.length.value_or(UINT64_MAX)});
      if (hold_armed_) {
        hold_armed_ = false;
        held_ = true;
        cv_.notify_all();
        cv_.wait(lock, [&] { return !held_; });
      }
      limit = short_;
      short_.reset();
    }
    if (!limit) return MemoryObjectClient::get_object(req, sink);
    uint64_t passed = 0;
    auto r = MemoryObjectClient::get_object(req, [&](std::string_view chunk) -> Status {
      chunk = chunk.substr(0, std::min<uint64_t>(chunk.size(), *limit - passed));
      passed += chunk.size();
      return chunk.empty() ? Status{} : sink(chunk);
    });
    if (r) r->bytes = passed;
    return r;
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Get> gets_;  // GUARDED_BY(mu_)
  bool hold_armed_ = false;
  bool held_ = false;
  std::optional<uint64_t> short_;
};

// Whether thread `tid` of this process is parked in a futex wait and stays there for a
// while. In the tests below the only futex a thread inside ensure() can park on for
// long is the one of the future it waits for (no other thread holds the fetcher's or
// the pool's mutex meanwhile), so this tells that ensure() has registered and
// submitted everything and is waiting. Written without allocating, so that this
// thread never competes with the watched one for a malloc arena lock.
bool wait_until_parked(pid_t tid) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/self/task/%d/syscall", static_cast<int>(tid));
  int stable = 0;
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (std::chrono::steady_clock::now() < deadline) {
    int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      // No /proc (or not readable): fall back to a generous pause.
      std::this_thread::sleep_for(500ms);
      return true;
    }
    char buf[32] = {};
    ssize_t n = ::read(fd, buf, sizeof buf - 1);
    ::close(fd);
    const bool in_futex =
        n > 0 && buf[0] >= '0' && buf[0] <= '9' && std::strtol(buf, nullptr, 10) == SYS_futex;
    stable = in_futex ? stable + 1 : 0;
    if (stable == 5) return true;
    std::this_thread::sleep_for(2ms);
  }
  return false;
}

// ensure() in a thread of its own, so the test can act while it waits.
class AsyncEnsure {
 public:
  AsyncEnsure(std::shared_ptr<BlockFetcher> fetcher, uint64_t first, uint64_t last)
      : done_(result_.get_future()) {
    thread_ = std::thread([this, fetcher, first, last] {
      tid_ = static_cast<pid_t>(::syscall(SYS_gettid));
      result_.set_value(fetcher->ensure(first, last));
    });
  }
  ~AsyncEnsure() {
    if (thread_.joinable()) {
      // A waiter that never returns is the bug some of these tests look for: end the
      // process with a message rather than hang until the ctest timeout.
      if (done_.wait_for(20s) != std::future_status::ready) {
        std::fprintf(stderr, "ensure() never returned\n");
        std::abort();
      }
      thread_.join();
    }
  }
  // Returns once the thread waits inside ensure().
  void wait_parked() {
    while (tid_ == 0) std::this_thread::yield();
    ASSERT_TRUE(wait_until_parked(tid_)) << "ensure() did not start waiting";
  }
  Status get() {
    if (done_.wait_for(20s) != std::future_status::ready) {
      std::fprintf(stderr, "ensure() never returned\n");
      std::abort();
    }
    thread_.join();
    return done_.get();
  }

 private:
  std::promise<Status> result_;
  std::future<Status> done_;
  std::atomic<pid_t> tid_{0};
  std::thread thread_;
};

class BlockFetcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_.create_bucket("b");
    open_cache();
  }

  void open_cache(uint64_t max_bytes = 1ull << 30) {
    cache_.reset();
    cache::CacheOptions o = cache::testing::options(dir_.path(), kBlock);
    o.max_bytes = max_bytes;
    cache_ = cache::testing::open_cache(o);
    ASSERT_NE(cache_, nullptr);
  }

  cache::ObjectVersion put(const std::string& key, const std::string& data) {
    auto etag = store_.put_object({"b", key, s3::Body::from_memory(data), {}, ""});
    EXPECT_TRUE(etag) << etag.error().describe();
    return {"b", key, etag ? *etag : "", data.size()};
  }

  std::shared_ptr<BlockFetcher> fetcher(FetchPool& pool, const cache::ObjectVersion& v,
                                        s3::ObjectClient* client = nullptr) {
    auto object = cache_->open_object(v);
    EXPECT_TRUE(object) << object.error().describe();
    if (!object) return nullptr;
    return std::make_shared<BlockFetcher>(client ? *client : store_, pool, *object, metrics_,
                                          kPart);
  }

  // The bytes the cache holds for block i, or nullopt when it is not present.
  static std::optional<std::string> cached_block(cache::CachedObject& o, uint64_t i) {
    if (!o.has_block(i)) return std::nullopt;
    std::string out(o.block_length(i), '\0');
    if (!o.read(i * kBlock, out.size(), out.data())) return std::nullopt;
    return out;
  }
  static std::string block_of(const std::string& data, uint64_t i) {
    return data.substr(i * kBlock, kBlock);
  }

  std::string data_path(const cache::ObjectVersion& v) const {
    std::string h = cache::format::entry_name(v);
    return dir_.path() + "/v1/" + h.substr(0, 2) + "/" + h + ".data";
  }

  TempDir dir_;
  TestStore store_;
  Metrics metrics_;
  std::unique_ptr<cache::BlockCache> cache_;
};

void flip_byte(const std::string& path, uint64_t offset) {
  int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0) << path;
  char c;
  ASSERT_EQ(::pread(fd, &c, 1, static_cast<off_t>(offset)), 1);
  c ^= 0x20;
  ASSERT_EQ(::pwrite(fd, &c, 1, static_cast<off_t>(offset)), 1);
  ::close(fd);
}

// --- single-flight ---------------------------------------------------------------------

TEST_F(BlockFetcherTest, ConcurrentEnsuresOfTheSameColdBlocksGetEachBlockOnce) {
  const std::string data = random_bytes(10 * kBlock + 100, 1);  // 11 blocks, the last short
  const auto v = put("obj", data);
  FetchPool pool(4);
  pool.start();
  auto f = fetcher(pool, v);
  ASSERT_NE(f, nullptr);

  constexpr int kThreads = 8;
  std::latch go(kThreads);
  std::vector<std::future<Status>> results;
  for (int t = 0; t < kThreads; ++t) {
    results.push_back(std::async(std::launch::async, [&] {
      go.arrive_and_wait();
      return f->ensure(0, 10);
    }));
  }
  for (auto& r : results) {
    Status st = r.get();
    EXPECT_TRUE(st) << st.error().describe();
  }
  // Parts of 4 blocks: [0,3], [4,7], [8,10]; every byte downloaded once.
  EXPECT_EQ(store_.gets().size(), 3u);
  EXPECT_EQ(store_.requested_bytes(), data.size());
  for (uint64_t i = 0; i < f->object()->block_count(); ++i) {
    EXPECT_EQ(cached_block(*f->object(), i), block_of(data, i)) << "block " << i;
  }
  // Present blocks need no GET.
  EXPECT_TRUE(f->ensure(0, 10));
  EXPECT_EQ(store_.gets().size(), 3u);
}

TEST_F(BlockFetcherTest, ConcurrentOverlappingRangesDownloadEveryByteOnce) {
  const std::string data = random_bytes(64 * kBlock, 2);
  const auto v = put("obj", data);
  FetchPool pool(3);
  pool.start();
  auto f = fetcher(pool, v);
  ASSERT_NE(f, nullptr);

  constexpr int kThreads = 6;
  std::latch go(kThreads);
  std::vector<std::future<int>> failures;
  for (int t = 0; t < kThreads; ++t) {
    failures.push_back(std::async(std::launch::async, [&, t] {
      std::mt19937 rng(100 + t);
      go.arrive_and_wait();
      int failed = 0;
      for (int i = 0; i < 40; ++i) {
        uint64_t a = rng() % 64, b = rng() % 64;
        if (a > b) std::swap(a, b);
        if (rng() % 3 == 0) {
          f->prefetch(a, b, rng() % 2 ? FetchPriority::kPrefetch : FetchPriority::kHydrate);
        } else if (!f->ensure(a, b)) {
          ++failed;
        }
      }
      return failed;
    }));
  }
  for (auto& r : failures) EXPECT_EQ(r.get(), 0);
  EXPECT_TRUE(f->ensure(0, 63));
  EXPECT_EQ(store_.requested_bytes(), data.size()) << "a block was asked for twice";
  for (uint64_t i = 0; i < 64; ++i) {
    EXPECT_EQ(cached_block(*f->object(), i), block_of(data, i)) << "block " << i;
  }
}

// --- priorities ------------------------------------------------------------------------

TEST_F(BlockFetcherTest, QueuedHydrationIsPromotedWhenAReaderWaitsForIt) {
  const std::string data = random_bytes(16 * kBlock, 3);
  const auto v = put("obj", data);
  FetchPool pool(1);
  pool.start();
  auto f = fetcher(pool, v);
  ASSERT_NE(f, nullptr);

  // The one worker takes the first hydration part and is held inside its GET; the three
  // other parts wait in the hydration queue.
  store_.hold_next_get();
  f->prefetch(0, 15, FetchPriority::kHydrate);
  store_.wait_held();
  // A reader wants the last part: its wait must move that part ahead of the others.
  AsyncEnsure reader(f, 13, 14);
  reader.wait_parked();
  store_.release_held();
  Status st = reader.get();
  EXPECT_TRUE(st) << st.error().describe();
  ASSERT_TRUE(store_.wait_for_gets(4));
  EXPECT_TRUE(f->ensure(0, 15));

  const auto gets = store_.gets();
  ASSERT_EQ(gets.size(), 4u);
  EXPECT_EQ(gets[0], (TestStore::Get{0, kPart}));
  EXPECT_EQ(gets[1], (TestStore::Get{12 * kBlock, kPart})) << "the reader's part was not promoted";
  EXPECT_EQ(gets[2], (TestStore::Get{4 * kBlock, kPart}));
  EXPECT_EQ(gets[3], (TestStore::Get{8 * kBlock, kPart}));
  for (uint64_t i = 0; i < 16; ++i) {
    EXPECT_EQ(cached_block(*f->object(), i), block_of(data, i)) << "block " << i;
  }
}

TEST_F(BlockFetcherTest, PoolRunsDemandBeforePrefetchBeforeHydration) {
  const std::string data = random_bytes(12 * kBlock, 4);
  const auto v = put("obj", data);
  FetchPool pool(1);  // not started: everything below queues
  auto f = fetcher(pool, v);
  ASSERT_NE(f, nullptr);
  f->prefetch(0, 3, FetchPriority::kHydrate);
  f->prefetch(4, 7, FetchPriority::kPrefetch);
  AsyncEnsure reader(f, 8, 11);
  reader.wait_parked();
  pool.start();
  EXPECT_TRUE(reader.get());
  ASSERT_TRUE(store_.wait_for_gets(3));  // before ensure() below could promote anything
  EXPECT_TRUE(f->ensure(0, 11));
  const auto gets = store_.gets();
  ASSERT_EQ(gets.size(), 3u);
  EXPECT_EQ(gets[0].offset, 8 * kBlock);
  EXPECT_EQ(gets[1].offset, 4 * kBlock);
  EXPECT_EQ(gets[2].offset, 0u);
}

// --- shutdown --------------------------------------------------------------------------

TEST_F(BlockFetcherTest, QueuedJobsFailTheirWaitersWithCancelledWhenThePoolIsDestroyed) {
  const std::string data = random_bytes(12 * kBlock, 5);
  const auto v = put("obj", data);
  auto pool = std::make_unique<FetchPool>(2);  // never started: jobs stay queued
  auto f = fetcher(*pool, v);
  ASSERT_NE(f, nullptr);
  f->prefetch(0, 7, FetchPriority::kHydrate);  // no waiter
  AsyncEnsure promoted(f, 2, 5);               // waits for the queued hydration parts
  AsyncEnsure demand(f, 8, 11);                // a demand part of its own
  promoted.wait_parked();
  demand.wait_parked();
  pool.reset();
  Status a = promoted.get(), b = demand.get();
  ASSERT_FALSE(a);
  EXPECT_EQ(a.error().code, ErrorCode::kCancelled) << a.error().describe();
  ASSERT_FALSE(b);
  EXPECT_EQ(b.error().code, ErrorCode::kCancelled) << b.error().describe();
  EXPECT_TRUE(store_.gets().empty());
  for (uint64_t i = 0; i < 12; ++i) {
    EXPECT_EQ(f->object()->presence(i), cache::BlockPresence::kAbsent) << "block " << i;
  }
}

// --- bodies that end early -------------------------------------------------------------

TEST_F(BlockFetcherTest, ShortBodyFailsMissingBlocksWithMalformedResponseAndKeepsWholeOnes) {
  const std::string data = random_bytes(4 * kBlock, 6);
  const auto v = put("obj", data);
  FetchPool pool(1);  // started once both readers wait on the one part
  auto f = fetcher(pool, v);
  ASSERT_NE(f, nullptr);
  store_.short_next_get(kBlock + kBlock / 2);  // block 0 whole, half of block 1
  f->prefetch(0, 3, FetchPriority::kHydrate);
  AsyncEnsure head(f, 0, 0), tail(f, 1, 3);
  head.wait_parked();
  tail.wait_parked();
  pool.start();
  Status h = head.get(), t = tail.get();
  EXPECT_TRUE(h) << h.error().describe();
  ASSERT_FALSE(t);
  EXPECT_EQ(t.error().code, ErrorCode::kMalformedResponse) << t.error().describe();
  EXPECT_EQ(store_.gets().size(), 1u);

  EXPECT_EQ(cached_block(*f->object(), 0), block_of(data, 0));
  for (uint64_t i = 1; i < 4; ++i) {
    EXPECT_EQ(f->object()->presence(i), cache::BlockPresence::kAbsent) << "block " << i;
  }
  EXPECT_EQ(f->object()->cached_bytes(), kBlock);
  // The next attempt fetches only what is missing, and whole.
  Status again = f->ensure(0, 3);
  EXPECT_TRUE(again) << again.error().describe();
  ASSERT_EQ(store_.gets().size(), 2u);
  EXPECT_EQ(store_.gets()[1], (TestStore::Get{kBlock, 3 * kBlock}));
  for (uint64_t i = 0; i < 4; ++i) {
    EXPECT_EQ(cached_block(*f->object(), i), block_of(data, i)) << "block " << i;
  }
}

TEST_F(BlockFetcherTest, BodyCutByANetworkErrorKeepsTheBlocksReceivedWhole) {
  const std::string data = random_bytes(4 * kBlock, 7);
  const auto v = put("obj", data);
  s3::FaultyObjectClient faulty(store_);
  faulty.truncate_next_get(2 * kBlock + 10);
  FetchPool pool(1);
  pool.start();
  auto f = fetcher(pool, v, &faulty);
  ASSERT_NE(f, nullptr);
  Status st = f->ensure(0, 3);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, ErrorCode::kNetwork) << st.error().describe();
  EXPECT_EQ(cached_block(*f->object(), 0), block_of(data, 0));
  EXPECT_EQ(cached_block(*f->object(), 1), block_of(data, 1));
  EXPECT_EQ(f->object()->presence(2), cache::BlockPresence::kAbsent);
  EXPECT_EQ(f->object()->presence(3), cache::BlockPresence::kAbsent);
  EXPECT_TRUE(f->ensure(0, 1));
  EXPECT_EQ(store_.gets().size(), 1u);  // blocks 0 and 1 are served from the cache
}

// --- a cache that refuses blocks -------------------------------------------------------

TEST_F(BlockFetcherTest, CacheFullFailsWithCacheFullStoresNoWrongBytesAndBacksOff) {
  open_cache(4 * kBlock);
  // Another object holds half the budget and cannot be evicted while held.
  const std::string other = random_bytes(2 * kBlock, 8);
  const auto ov = put("other", other);
  std::shared_ptr<cache::CachedObject> held = *cache_->open_object(ov);
  ASSERT_TRUE(held->write_block(0, block_of(other, 0)));
  ASSERT_TRUE(held->write_block(1, block_of(other, 1)));

  const std::string data = random_bytes(4 * kBlock, 9);
  const auto v = put("obj", data);
  FetchPool pool(2);
  pool.start();
  auto f = fetcher(pool, v);
  ASSERT_NE(f, nullptr);

  const auto failed_at = std::chrono::steady_clock::now();
  Status st = f->ensure(0, 3);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, ErrorCode::kCacheFull) << st.error().describe();
  EXPECT_EQ(store_.gets().size(), 1u);
  EXPECT_GE(cache_->stats().refused_writes, 1u);
  // What the cache took is right; the rest is absent, never wrong.
  EXPECT_EQ(cached_block(*f->object(), 0), block_of(data, 0));
  EXPECT_EQ(cached_block(*f->object(), 1), block_of(data, 1));
  EXPECT_EQ(f->object()->presence(2), cache::BlockPresence::kAbsent);
  EXPECT_EQ(f->object()->presence(3), cache::BlockPresence::kAbsent);
  EXPECT_EQ(f->object()->cached_bytes(), 2 * kBlock);

  // Within the back-off a new attempt fails at once, without downloading again.
  Status again = f->ensure(2, 3);
  const auto again_at = std::chrono::steady_clock::now();
  const bool within_backoff = again_at - failed_at < 900ms;
  if (within_backoff) {
    ASSERT_FALSE(again);
    EXPECT_EQ(again.error().code, ErrorCode::kCacheFull) << again.error().describe();
    EXPECT_EQ(store_.gets().size(), 1u) << "a GET during the back-off";
  }

  // Once the back-off is over and room was made, the blocks are fetched and stored.
  held.reset();
  std::this_thread::sleep_until(again_at + 1100ms);
  Status later = f->ensure(0, 3);
  EXPECT_TRUE(later) << later.error().describe();
  for (uint64_t i = 0; i < 4; ++i) {
    EXPECT_EQ(cached_block(*f->object(), i), block_of(data, i)) << "block " << i;
  }
  ASSERT_FALSE(store_.gets().empty());
  EXPECT_EQ(store_.gets().back(), (TestStore::Get{2 * kBlock, 2 * kBlock}));
}

// --- version pinning -------------------------------------------------------------------

TEST_F(BlockFetcherTest, OverwrittenObjectFailsUncachedBlocksAndKeepsServingCachedOnes) {
  const std::string v1 = random_bytes(4 * kBlock, 10);
  const auto v = put("obj", v1);
  FetchPool pool(2);
  pool.start();
  auto f = fetcher(pool, v);
  ASSERT_NE(f, nullptr);
  ASSERT_TRUE(f->ensure(0, 1));

  put("obj", random_bytes(4 * kBlock, 11));  // same size, new ETag
  Status st = f->ensure(2, 3);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, ErrorCode::kPreconditionFailed) << st.error().describe();
  EXPECT_EQ(f->object()->presence(2), cache::BlockPresence::kAbsent);
  EXPECT_EQ(f->object()->presence(3), cache::BlockPresence::kAbsent);
  const size_t gets = store_.gets().size();
  EXPECT_TRUE(f->ensure(0, 1));
  EXPECT_EQ(store_.gets().size(), gets);
  EXPECT_EQ(cached_block(*f->object(), 0), block_of(v1, 0));
  EXPECT_EQ(cached_block(*f->object(), 1), block_of(v1, 1));
}

TEST_F(BlockFetcherTest, DeletedObjectFailsUncachedBlocksWithPreconditionFailed) {
  const std::string v1 = random_bytes(4 * kBlock, 12);
  const auto v = put("obj", v1);
  FetchPool pool(2);
  pool.start();
  auto f = fetcher(pool, v);
  ASSERT_NE(f, nullptr);
  ASSERT_TRUE(f->ensure(0, 0));
  ASSERT_TRUE(store_.delete_object("b", "obj"));
  Status st = f->ensure(0, 3);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, ErrorCode::kPreconditionFailed) << st.error().describe();
  EXPECT_EQ(cached_block(*f->object(), 0), block_of(v1, 0));
}

// --- blocks an earlier process left ----------------------------------------------------

class BlockFetcherRestartTest : public BlockFetcherTest {
 protected:
  static constexpr uint64_t kBlocks = 8;  // two parts

  // Caches the given blocks of a fresh object through a fetcher, then closes the cache
  // as a process exit would.
  void fill(const std::vector<uint64_t>& blocks) {
    data_ = random_bytes(kBlocks * kBlock, 13);
    v_ = put("obj", data_);
    {
      FetchPool pool(2);
      pool.start();
      auto f = fetcher(pool, v_);
      ASSERT_NE(f, nullptr);
      for (uint64_t b : blocks) ASSERT_TRUE(f->ensure(b, b));
    }
    cache_.reset();
  }

  std::string data_;
  cache::ObjectVersion v_;
};

TEST_F(BlockFetcherRestartTest, BlocksFromAnEarlierProcessAreVerifiedLazilyWithoutAGet) {
  fill({0, 1, 2, 3, 4, 5, 6, 7});
  const uint64_t served = store_.requested_bytes();
  const uint64_t served_by_store = store_.bytes_served();  // no GET runs below: exact
  const size_t gets = store_.gets().size();
  open_cache();
  FetchPool pool(2);  // started below, after the prefetch
  auto f = fetcher(pool, v_);
  ASSERT_NE(f, nullptr);
  for (uint64_t i = 0; i < kBlocks; ++i) {
    EXPECT_EQ(f->object()->presence(i), cache::BlockPresence::kUnverified) << "block " << i;
  }

  // Queuing the whole file reads nothing in the caller's thread.
  f->prefetch(0, kBlocks - 1, FetchPriority::kHydrate);
  EXPECT_EQ(cache_->stats().hits + cache_->stats().misses, 0u);
  for (uint64_t i = 0; i < kBlocks; ++i) {
    EXPECT_EQ(f->object()->presence(i), cache::BlockPresence::kUnverified) << "block " << i;
  }

  pool.start();
  Status st = f->ensure(0, kBlocks - 1);
  EXPECT_TRUE(st) << st.error().describe();
  EXPECT_EQ(store_.requested_bytes(), served);
  EXPECT_EQ(store_.bytes_served(), served_by_store);
  EXPECT_EQ(store_.gets().size(), gets);
  EXPECT_EQ(cache_->stats().bad_blocks, 0u);
  EXPECT_EQ(cache_->stats().misses, 0u);
  for (uint64_t i = 0; i < kBlocks; ++i) {
    EXPECT_EQ(f->object()->presence(i), cache::BlockPresence::kVerified) << "block " << i;
    EXPECT_EQ(cached_block(*f->object(), i), block_of(data_, i)) << "block " << i;
  }
}

TEST_F(BlockFetcherRestartTest, CorruptBlockFromAnEarlierProcessIsFetchedAgainAlone) {
  fill({0, 1, 2, 3, 4, 5, 6, 7});
  flip_byte(data_path(v_), 3 * kBlock + 100);  // the last block of the first part
  const uint64_t served = store_.requested_bytes();
  const size_t gets = store_.gets().size();
  open_cache();
  FetchPool pool(2);
  pool.start();
  auto f = fetcher(pool, v_);
  ASSERT_NE(f, nullptr);
  Status st = f->ensure(0, kBlocks - 1);
  EXPECT_TRUE(st) << st.error().describe();
  EXPECT_EQ(cache_->stats().bad_blocks, 1u);
  ASSERT_EQ(store_.gets().size(), gets + 1);
  EXPECT_EQ(store_.gets().back(), (TestStore::Get{3 * kBlock, kBlock}));
  EXPECT_EQ(store_.requested_bytes(), served + kBlock);
  for (uint64_t i = 0; i < kBlocks; ++i) {
    EXPECT_EQ(cached_block(*f->object(), i), block_of(data_, i)) << "block " << i;
  }
}

// After a restart a part whose blocks are cached except one in the middle (a reader
// that faulted pages in random order, or a block that failed its check) must fetch
// that block, not download again the cached blocks behind it.
TEST_F(BlockFetcherRestartTest, MissingBlockInsideACachedPartIsTheOnlyOneFetchedAfterRestart) {
  fill({0, 2, 3, 4, 5, 6, 7});  // block 1 never read
  const uint64_t served = store_.requested_bytes();
  const size_t gets = store_.gets().size();
  open_cache();
  FetchPool pool(2);
  pool.start();
  auto f = fetcher(pool, v_);
  ASSERT_NE(f, nullptr);
  Status st = f->ensure(0, kBlocks - 1);
  EXPECT_TRUE(st) << st.error().describe();
  EXPECT_EQ(store_.requested_bytes(), served + kBlock)
      << "cached blocks downloaded again; GETs after restart:" << [&] {
           std::string s;
           for (size_t i = gets; i < store_.gets().size(); ++i) {
             s += " [" + std::to_string(store_.gets()[i].offset / kBlock) + "+" +
                  std::to_string(store_.gets()[i].length / kBlock) + " blocks]";
           }
           return s;
         }();
  for (uint64_t i = 0; i < kBlocks; ++i) {
    EXPECT_EQ(cached_block(*f->object(), i), block_of(data_, i)) << "block " << i;
  }
}

}  // namespace
}  // namespace nacre::fs
