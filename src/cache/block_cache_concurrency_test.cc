// Many threads on one cache, as the read path will use it (also run under -fsanitize=thread).
#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <thread>
#include <vector>

#include "cache/block_cache.h"
#include "cache/test_util.h"

namespace nacre::cache {
namespace {

using testing::block_bytes;
using testing::open_cache;
using testing::options;
using testing::TempDir;
using testing::version;

constexpr uint64_t kBlock = 4096;
constexpr int kThreads = 8;

// Threads 0-3 share one object, each writing its own blocks and reading everyone's;
// threads 4-7 each fill an object of their own. Stats, cached_bytes and open_object of
// the shared object run alongside.
TEST(BlockCacheConcurrency, WritersAndReadersOfSharedAndOwnObjects) {
  TempDir dir;
  auto cache = open_cache(options(dir.path()));
  const ObjectVersion shared = version("shared", 64 * kBlock + 123);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      ObjectVersion v = t < 4 ? shared : version("own" + std::to_string(t), 40 * kBlock);
      for (int round = 0; round < 3; ++round) {
        auto object = cache->open_object(v);
        if (!object) {
          ++failures;
          return;
        }
        CachedObject& o = **object;
        std::string out;
        for (uint64_t i = 0; i < o.block_count(); ++i) {
          const std::string expected = block_bytes(v.key, i, o.block_length(i));
          if (t >= 4 || static_cast<int>(i % 4) == t) {
            if (!o.write_block(i, expected)) ++failures;
          }
          if (o.has_block(i)) {
            out.assign(expected.size(), '\0');
            if (!o.read(i * kBlock, out.size(), out.data()) || out != expected) ++failures;
          }
          (void)cache->stats();
          (void)cache->cached_bytes(shared);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(cache->cached_bytes(shared), shared.size);
  EXPECT_EQ(cache->stats().used_bytes, shared.size + 4 * 40 * kBlock);
  EXPECT_EQ(cache->stats().bad_blocks, 0u);
}

TEST(BlockCacheConcurrency, SameBlockWrittenByManyThreadsIsStoredOnce) {
  TempDir dir;
  auto cache = open_cache(options(dir.path()));
  auto object = *cache->open_object(version("a", kBlock));
  const std::string bytes = block_bytes("a", 0, kBlock);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      if (!object->write_block(0, bytes) || !object->has_block(0)) ++failures;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(cache->stats().used_bytes, kBlock);
  std::string out(kBlock, '\0');
  ASSERT_TRUE(object->read(0, kBlock, out.data()).has_value());
  EXPECT_EQ(out, bytes);
}

// A budget far below the working set: entries are evicted, released and replaced while
// other threads hold, write and read them. Whatever a reader sees present must be right.
TEST(BlockCacheConcurrency, EvictionReleaseAndNewEtagsNeverServeWrongBytes) {
  TempDir dir;
  CacheOptions o = options(dir.path());
  o.max_bytes = 24 * kBlock;
  auto cache = open_cache(o);
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::atomic<int> wrong{0}, unexpected_errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(seed + t);
      for (int step = 0; step < 400; ++step) {
        // Not "k" + std::to_string(...): g++ 12 at -O3 raises a false -Werror=restrict
        // inside that operator+ (GCC bugs 105329, 105651).
        std::string key = "k";
        key += std::to_string(rng() % 10);
        if (rng() % 25 == 0) {
          if (!cache->release("bucket", key)) ++unexpected_errors;
          continue;
        }
        const std::string etag = rng() % 40 == 0 ? "e2" : "e1";
        auto object = cache->open_object(version(key, 8 * kBlock, etag));
        if (!object) {
          ++unexpected_errors;
          continue;
        }
        CachedObject& obj = **object;
        const std::string content_key = key + etag;
        for (int k = 0; k < 4; ++k) {
          uint64_t i = rng() % obj.block_count();
          std::string expected = block_bytes(content_key, i, kBlock);
          auto w = obj.write_block(i, expected);
          // Released under us, or refused because every other entry is held: both
          // leave the block absent, which the check below accepts.
          if (!w && w.error().code != ErrorCode::kReleased &&
              w.error().code != ErrorCode::kCacheFull) {
            ++unexpected_errors;
          }
          std::string out(kBlock, '\0');
          if (obj.has_block(i) && obj.read(i * kBlock, kBlock, out.data()) && out != expected) {
            ++wrong;
          }
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(unexpected_errors.load(), 0);
  EXPECT_EQ(cache->stats().bad_blocks, 0u);
}

}  // namespace
}  // namespace nacre::cache
