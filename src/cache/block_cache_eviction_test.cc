// Eviction: the byte budget, the free-space floor (through the probe hook and on a
// real, tiny tmpfs) and a full disk.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <random>
#include <thread>

#include "cache/block_cache.h"
#include "cache/test_util.h"

namespace nacre::cache {
namespace {

using testing::block_bytes;
using testing::fill;
using testing::open_cache;
using testing::options;
using testing::TempDir;
using testing::TmpfsMount;
using testing::version;

constexpr uint64_t kBlock = 4096;

// File mtimes come from a coarse kernel clock; spacing steps out keeps their order.
void tick() {
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
}

// Regression: an open that failed for want of fds (EMFILE) was taken for "the files were
// removed" and dropped the whole entry with its cached blocks.
TEST(BlockCacheEviction, NoFdLeftKeepsTheEntryAndItsBlocks) {
  TempDir dir;
  auto cache = open_cache(options(dir.path()));
  const ObjectVersion v = version("a", 2 * kBlock);
  fill(**cache->open_object(v));  // the object is let go at once: the next open opens files
  rlimit saved{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &saved), 0);
  const int lowest_free = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(lowest_free, 0);
  ::close(lowest_free);
  rlimit tight = saved;
  tight.rlim_cur = static_cast<rlim_t>(lowest_free) + 1;  // room for one fd, not for five
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &tight), 0);
  auto starved = cache->open_object(v);
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &saved), 0);
  ASSERT_FALSE(starved.has_value()) << "an open with one fd left cannot open the entry's files";
  EXPECT_EQ(starved.error().code, ErrorCode::kIo);
  EXPECT_NE(starved.error().message.find("Too many open files"), std::string::npos)
      << starved.error().describe();
  EXPECT_EQ(cache->cached_bytes(v), 2 * kBlock) << "the entry and its blocks are kept";
  auto again = cache->open_object(v);
  ASSERT_TRUE(again.has_value()) << again.error().describe();
  std::string got(kBlock, '\0');
  ASSERT_TRUE((*again)->read(kBlock, kBlock, got.data()).has_value());
  EXPECT_EQ(got, block_bytes("a", 1, kBlock));
  EXPECT_EQ((*again)->reply_fd(), (*again)->data_fd())
      << "a whole entry needs no fd without read-ahead";
}

TEST(BlockCacheEviction, RemovedFilesStartANewEntry) {
  TempDir dir;
  auto cache = open_cache(options(dir.path()));
  const ObjectVersion v = version("a", 2 * kBlock);
  fill(**cache->open_object(v));
  for (const auto& f : std::filesystem::recursive_directory_iterator(dir.path())) {
    if (f.is_regular_file() && f.path().extension() == ".data") std::filesystem::remove(f);
  }
  auto again = cache->open_object(v);
  ASSERT_TRUE(again.has_value()) << again.error().describe();
  EXPECT_EQ(cache->cached_bytes(v), 0u) << "a new, empty entry";
}

TEST(BlockCacheEviction, EvictsLeastRecentlyUsedUnheldEntry) {
  TempDir dir;
  CacheOptions o = options(dir.path());
  o.max_bytes = 3 * 2 * kBlock;  // three objects of two blocks
  auto cache = open_cache(o);
  for (const char* key : {"a", "b", "c"}) fill(**cache->open_object(version(key, 2 * kBlock)));
  (void)*cache->open_object(version("a", 2 * kBlock));  // a is now the most recent
  fill(**cache->open_object(version("d", 2 * kBlock)));
  EXPECT_EQ(cache->cached_bytes(version("b", 2 * kBlock)), 0u);
  EXPECT_EQ(cache->cached_bytes(version("a", 2 * kBlock)), 2 * kBlock);
  EXPECT_EQ(cache->cached_bytes(version("c", 2 * kBlock)), 2 * kBlock);
  EXPECT_EQ(cache->cached_bytes(version("d", 2 * kBlock)), 2 * kBlock);
  EXPECT_EQ(cache->stats().evictions, 1u);
  EXPECT_LE(cache->stats().used_bytes, o.max_bytes);
  EXPECT_EQ(cache->stats().refused_writes, 0u);
}

TEST(BlockCacheEviction, NeverEvictsHeldEntries) {
  TempDir dir;
  CacheOptions o = options(dir.path());
  o.max_bytes = 2 * 2 * kBlock;
  auto cache = open_cache(o);
  auto held = *cache->open_object(version("held", 2 * kBlock));  // the least recently used
  fill(*held);
  fill(**cache->open_object(version("b", 2 * kBlock)));
  fill(**cache->open_object(version("c", 2 * kBlock)));
  EXPECT_EQ(cache->cached_bytes(version("b", 2 * kBlock)), 0u);
  EXPECT_TRUE(held->has_block(0));
  EXPECT_TRUE(held->has_block(1));
  EXPECT_FALSE(held->released());

  // Nothing evictable left: the bound is hard. The write is refused (the caller serves
  // those bytes uncached), counted, and nothing held is touched.
  auto c = *cache->open_object(version("c", 2 * kBlock));
  auto d = *cache->open_object(version("d", 2 * kBlock));
  auto refused = d->write_block(0, block_bytes("d", 0, kBlock));
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code, ErrorCode::kCacheFull) << refused.error().describe();
  EXPECT_FALSE(d->has_block(0));
  EXPECT_EQ(cache->stats().used_bytes, 4 * kBlock);
  EXPECT_EQ(cache->stats().refused_writes, 1u);
  EXPECT_TRUE(c->has_block(1));
  EXPECT_TRUE(held->has_block(1));
}

// Regression: a held model larger than the cache (14.5 GB with a 10 GiB cache) was
// hydrated past --cache-size until the disk filled.
TEST(BlockCacheEviction, HeldObjectLargerThanTheCacheStaysWithinTheBound) {
  TempDir dir;
  CacheOptions o = options(dir.path());
  o.max_bytes = 4 * kBlock;
  auto cache = open_cache(o);
  auto big = *cache->open_object(version("big", 10 * kBlock));
  uint64_t stored = 0;
  for (uint64_t i = 0; i < big->block_count(); ++i) {
    auto r = big->write_block(i, block_bytes("big", i, kBlock));
    if (r) {
      ++stored;
    } else {
      EXPECT_EQ(r.error().code, ErrorCode::kCacheFull) << r.error().describe();
    }
    ASSERT_LE(cache->stats().used_bytes, o.max_bytes);
  }
  EXPECT_EQ(stored, 4u);
  EXPECT_EQ(cache->stats().refused_writes, 6u);
}

TEST(BlockCacheEviction, UsedBytesStayWithinBudgetUnderRandomUse) {
  TempDir dir;
  CacheOptions o = options(dir.path());
  o.max_bytes = 10 * kBlock;
  auto cache = open_cache(o);
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  for (int step = 0; step < 300; ++step) {
    // Not "k" + std::to_string(...): g++ 12 at -O3 raises a false -Werror=restrict
    // inside that operator+ (GCC bugs 105329, 105651).
    std::string key = "k";
    key += std::to_string(rng() % 12);
    auto object = *cache->open_object(version(key, 3 * kBlock + 5));
    uint64_t i = rng() % object->block_count();
    ASSERT_TRUE(object->write_block(i, block_bytes(key, i, object->block_length(i))).has_value());
    ASSERT_LE(cache->stats().used_bytes, o.max_bytes);
    std::string out(object->block_length(i), '\0');
    ASSERT_TRUE(object->read(i * kBlock, out.size(), out.data()).has_value());
    ASSERT_EQ(out, block_bytes(key, i, out.size()));
  }
  EXPECT_EQ(cache->stats().refused_writes, 0u);
  EXPECT_GT(cache->stats().evictions, 0u);
}

TEST(BlockCacheEviction, LruOrderSurvivesRestart) {
  TempDir dir;
  CacheOptions o = options(dir.path());
  {
    auto cache = open_cache(o);
    for (const char* key : {"a", "b", "c"}) {
      fill(**cache->open_object(version(key, kBlock)));
      tick();
    }
    (void)*cache->open_object(version("a", kBlock));
  }
  o.max_bytes = 2 * kBlock;  // a smaller budget is enforced at open, oldest first
  auto cache = open_cache(o);
  EXPECT_EQ(cache->cached_bytes(version("b", kBlock)), 0u);
  EXPECT_EQ(cache->cached_bytes(version("a", kBlock)), kBlock);
  EXPECT_EQ(cache->cached_bytes(version("c", kBlock)), kBlock);
}

TEST(BlockCacheEviction, FreeSpaceFloorEvictsThroughProbe) {
  TempDir dir;
  std::atomic<uint64_t> free_bytes{100 * kBlock};
  CacheOptions o = options(dir.path());
  o.min_free_bytes = 10 * kBlock;
  o.free_bytes_probe = [&](const std::string&) { return free_bytes.load(); };
  auto cache = open_cache(o);
  fill(**cache->open_object(version("old", 2 * kBlock)));
  auto held = *cache->open_object(version("held", 2 * kBlock));
  fill(*held);
  EXPECT_EQ(cache->stats().evictions, 0u);

  free_bytes = 10 * kBlock;  // one more block would cross the floor
  auto next = *cache->open_object(version("next", kBlock));
  // "old" is evicted to make room; the probe still says too little, so the block is
  // refused rather than written below the floor.
  auto refused = next->write_block(0, block_bytes("next", 0, kBlock));
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code, ErrorCode::kCacheFull);
  EXPECT_EQ(cache->cached_bytes(version("old", 2 * kBlock)), 0u);
  EXPECT_EQ(cache->stats().evictions, 1u);
  EXPECT_TRUE(held->has_block(0));
  EXPECT_EQ(cache->stats().refused_writes, 1u);
  free_bytes = 100 * kBlock;  // room again: the same block is cached
  EXPECT_TRUE(next->write_block(0, block_bytes("next", 0, kBlock)).has_value());
}

// A tmpfs of 4 MiB filled by one held object: the disk really runs out.
TEST(BlockCacheEviction, FullDiskIsNoSpaceNotACrash) {
  TmpfsMount mount("4m");
  ASSERT_TRUE(mount.ok())
      << "cannot mount a tmpfs: this test needs root (the test command runs as root)";
  constexpr uint32_t kBig = 64 * 1024;
  CacheOptions o = options(mount.path(), kBig);
  o.min_free_bytes = 0;
  auto cache = open_cache(o);
  auto object = *cache->open_object(version("huge", 128 * kBig));  // 8 MiB
  uint64_t stored = 0;
  Status r;
  for (; stored < object->block_count(); ++stored) {
    r = object->write_block(stored, block_bytes("huge", stored, kBig));
    if (!r) break;
  }
  ASSERT_FALSE(r.has_value()) << "8 MiB fit on a 4 MiB tmpfs?";
  EXPECT_EQ(r.error().code, ErrorCode::kNoSpace) << r.error().describe();
  EXPECT_GT(stored, 0u);
  EXPECT_FALSE(object->has_block(stored));
  EXPECT_EQ(cache->stats().used_bytes, stored * kBig);
  std::string out(kBig, '\0');
  for (uint64_t i = 0; i < stored; ++i) {
    ASSERT_TRUE(object->read(i * kBig, kBig, out.data()).has_value());
    ASSERT_EQ(out, block_bytes("huge", i, kBig)) << i;
  }
  // Still full, still an error, not a crash; a release makes room again.
  EXPECT_EQ(object->write_block(stored, block_bytes("huge", stored, kBig)).error().code,
            ErrorCode::kNoSpace);
  object.reset();
  ASSERT_TRUE(cache->release("bucket", "huge").has_value());
  auto small = *cache->open_object(version("small", kBig));
  EXPECT_TRUE(small->write_block(0, block_bytes("small", 0, kBig)).has_value());
}

// On a real file system: the statvfs floor evicts an unheld entry before the disk fills,
// and a real ENOSPC evicts unheld entries before giving up.
TEST(BlockCacheEviction, FloorAndEnospcEvictOnTmpfs) {
  TmpfsMount mount("4m");
  ASSERT_TRUE(mount.ok())
      << "cannot mount a tmpfs: this test needs root (the test command runs as root)";
  constexpr uint32_t kBig = 64 * 1024;
  CacheOptions o = options(mount.path(), kBig);
  o.min_free_bytes = 1 << 20;
  auto cache = open_cache(o);
  fill(**cache->open_object(version("old", 32 * kBig)));  // 2 MiB, not held
  auto next = *cache->open_object(version("next", 32 * kBig));
  fill(*next);
  EXPECT_EQ(cache->cached_bytes(version("old", 32 * kBig)), 0u);
  EXPECT_EQ(cache->stats().evictions, 1u);
  next.reset();

  // With no floor, only ENOSPC tells: "next" (unheld) goes when "last" needs the room.
  o.min_free_bytes = 0;
  cache.reset();
  cache = open_cache(o);
  auto last = *cache->open_object(version("last", 40 * kBig));  // 2.5 MiB
  fill(*last);
  EXPECT_EQ(cache->cached_bytes(version("next", 32 * kBig)), 0u);
  EXPECT_EQ(cache->stats().evictions, 1u);
}

}  // namespace
}  // namespace nacre::cache
