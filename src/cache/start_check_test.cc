// BlockCache::start_check: the background check, after a restart, of the whole entries
// an earlier process left.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <stop_token>
#include <thread>

#include "cache/block_cache.h"
#include "cache/test_util.h"

namespace nacre::cache {
namespace {

using testing::block_bytes;
using testing::entry_path;
using testing::fill;
using testing::flip_byte;
using testing::open_cache;
using testing::options;
using testing::TempDir;
using testing::version;

constexpr uint64_t kBlock = 4096;

// Waits (up to 10 s) for the check's thread to end; false if it did not.
bool wait_for_check(const BlockCache& cache) {
  for (int i = 0; i < 1000 && cache.stats().start_check_running; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return !cache.stats().start_check_running;
}

// Every block of `v`'s entry in `cache` has the presence `want` (opening it reads nothing).
void expect_all(BlockCache& cache, const ObjectVersion& v, BlockPresence want) {
  auto o = cache.open_object(v);
  ASSERT_TRUE(o.has_value()) << o.error().describe();
  for (uint64_t i = 0; i < (*o)->block_count(); ++i) {
    EXPECT_EQ((*o)->presence(i), want) << v.key << " block " << i;
  }
}

// Sets the time of last use (the metadata file's mtime) of v's entry, `age` s ago.
void set_used(const std::string& dir, const ObjectVersion& v, int age) {
  timespec times[2] = {{0, UTIME_OMIT}, {::time(nullptr) - age, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, entry_path(dir, v, ".meta").c_str(), times, 0), 0);
}

timespec used_at(const std::string& dir, const ObjectVersion& v) {
  struct stat st {};
  EXPECT_EQ(::stat(entry_path(dir, v, ".meta").c_str(), &st), 0);
  return st.st_mtim;
}

// A whole entry for v, written by a process gone (its blocks unverified for the next).
void fill_by_a_process_gone(const std::string& dir, const ObjectVersion& v) {
  auto cache = open_cache(options(dir));
  fill(**cache->open_object(v));
}

// Entries "old" then "new" (the most recently used), whole, written by a process gone.
void fill_two(const std::string& dir, const ObjectVersion& old_v, const ObjectVersion& new_v) {
  {
    auto cache = open_cache(options(dir));
    fill(**cache->open_object(old_v));
    fill(**cache->open_object(new_v));
  }
  set_used(dir, old_v, 200);
  set_used(dir, new_v, 100);
}

TEST(StartCheck, ChecksWholeEntriesAnEarlierProcessLeftWithoutOpeningThem) {
  TempDir dir;
  const ObjectVersion a = version("a", 3 * kBlock + 10), b = version("b", 2 * kBlock);
  fill_two(dir.path(), a, b);
  const timespec a_used = used_at(dir.path(), a), b_used = used_at(dir.path(), b);
  auto cache = open_cache(options(dir.path()));
  EXPECT_FALSE(cache->stats().start_check_running);
  cache->start_check(1ull << 30);
  EXPECT_TRUE(cache->stats().start_check_running || cache->stats().checked_bytes > 0)
      << "running from the call on";
  ASSERT_TRUE(wait_for_check(*cache));
  EXPECT_EQ(cache->stats().checked_bytes, a.size + b.size);
  EXPECT_EQ(cache->stats().hits + cache->stats().misses, 0u) << "no read was counted";
  EXPECT_EQ(used_at(dir.path(), a).tv_sec, a_used.tv_sec) << "not marked used";
  EXPECT_EQ(used_at(dir.path(), b).tv_sec, b_used.tv_sec) << "not marked used";
  cache->start_check(1ull << 30);  // a second call does nothing
  ASSERT_TRUE(wait_for_check(*cache));
  EXPECT_EQ(cache->stats().checked_bytes, a.size + b.size);
  expect_all(*cache, a, BlockPresence::kVerified);
  expect_all(*cache, b, BlockPresence::kVerified);
}

TEST(StartCheck, ReadsAtMostItsBoundMostRecentlyUsedFirst) {
  TempDir dir;
  const ObjectVersion old_v = version("old", 2 * kBlock), new_v = version("new", 3 * kBlock);
  fill_two(dir.path(), old_v, new_v);
  auto cache = open_cache(options(dir.path()));
  cache->start_check(3 * kBlock + kBlock / 2);  // room for "new", not for both
  ASSERT_TRUE(wait_for_check(*cache));
  EXPECT_EQ(cache->stats().checked_bytes, new_v.size);
  expect_all(*cache, new_v, BlockPresence::kVerified);
  expect_all(*cache, old_v, BlockPresence::kUnverified);
}

TEST(StartCheck, LeavesEntriesWithHolesToTheirReads) {
  TempDir dir;
  const ObjectVersion whole = version("whole", 3 * kBlock), holes = version("holes", 3 * kBlock);
  {
    auto cache = open_cache(options(dir.path()));
    fill(**cache->open_object(whole));
    auto o = *cache->open_object(holes);
    ASSERT_TRUE(o->write_block(0, block_bytes("holes", 0, kBlock)).has_value());
    ASSERT_TRUE(o->write_block(2, block_bytes("holes", 2, kBlock)).has_value());
  }
  set_used(dir.path(), whole, 200);
  set_used(dir.path(), holes, 100);  // first in line
  auto cache = open_cache(options(dir.path()));
  cache->start_check(whole.size);  // were "holes" taken, "whole" would not fit any more
  ASSERT_TRUE(wait_for_check(*cache));
  EXPECT_EQ(cache->stats().checked_bytes, whole.size);
  expect_all(*cache, whole, BlockPresence::kVerified);
  auto o = *cache->open_object(holes);
  EXPECT_EQ(o->presence(0), BlockPresence::kUnverified);
  EXPECT_EQ(o->presence(2), BlockPresence::kUnverified);
}

TEST(StartCheck, LeavesFilesBelowTheSmallestPassthroughSizeAlone) {
  TempDir dir;
  const ObjectVersion small = version("small", 2 * kBlock), big = version("big", 3 * kBlock);
  fill_two(dir.path(), small, big);
  auto cache = open_cache(options(dir.path()));
  cache->start_check(1ull << 30, 3 * kBlock);
  ASSERT_TRUE(wait_for_check(*cache));
  EXPECT_EQ(cache->stats().checked_bytes, big.size);
  expect_all(*cache, small, BlockPresence::kUnverified);
}

TEST(StartCheck, VerifyAllStopsWhenAsked) {
  TempDir dir;
  const ObjectVersion v = version("a", 4 * kBlock);
  fill_by_a_process_gone(dir.path(), v);
  auto cache = open_cache(options(dir.path()));
  auto o = *cache->open_object(v);
  std::stop_source stop;
  stop.request_stop();
  EXPECT_FALSE(o->verify_all(stop.get_token()));
  EXPECT_EQ(o->presence(0), BlockPresence::kUnverified) << "nothing read once stopped";
  EXPECT_EQ(cache->stats().checked_bytes, 0u);
  EXPECT_TRUE(o->verify_all()) << "a stopped check loses nothing";
}

TEST(StartCheck, DropsACorruptedBlockSoTheFileIsNotHandedToTheKernel) {
  TempDir dir;
  const ObjectVersion v = version("a", 4 * kBlock);
  fill_by_a_process_gone(dir.path(), v);
  flip_byte(entry_path(dir.path(), v, ".data"), 2 * kBlock + 7);
  auto cache = open_cache(options(dir.path()));
  cache->start_check(1ull << 30);
  ASSERT_TRUE(wait_for_check(*cache));
  EXPECT_EQ(cache->stats().bad_blocks, 1u);
  auto o = *cache->open_object(v);
  EXPECT_EQ(o->presence(2), BlockPresence::kAbsent);
  EXPECT_EQ(o->presence(1), BlockPresence::kVerified);
  EXPECT_EQ(o->presence(3), BlockPresence::kUnverified) << "left to its first read";
  EXPECT_FALSE(o->verify_all()) << "a file with a hole never goes to passthrough";
}

TEST(StartCheck, AnOpenDuringTheCheckSeesTheSameAnswer) {
  TempDir dir;
  const ObjectVersion v = version("a", 256 * kBlock);
  fill_by_a_process_gone(dir.path(), v);
  auto cache = open_cache(options(dir.path()));
  cache->start_check(1ull << 30);
  auto o = *cache->open_object(v);  // races the check: both may read a block, one decides
  EXPECT_TRUE(o->verify_all());
  ASSERT_TRUE(wait_for_check(*cache));
  EXPECT_EQ(cache->stats().bad_blocks, 0u);
  EXPECT_EQ(cache->stats().checked_bytes, v.size) << "each block counted once";
}

TEST(StartCheck, DestroyingTheCacheStopsARunningCheck) {
  TempDir dir;
  const ObjectVersion v = version("a", 4096 * kBlock);  // 16 MiB of 4 KiB blocks
  fill_by_a_process_gone(dir.path(), v);
  auto cache = open_cache(options(dir.path()));
  cache->start_check(1ull << 30);
  cache.reset();  // stops and joins the thread: neither hangs nor uses a freed cache
  auto again = open_cache(options(dir.path()));
  ASSERT_NE(again, nullptr) << "the directory lock was let go";
  auto o = *again->open_object(v);
  EXPECT_TRUE(o->verify_all()) << "a stopped check loses nothing";
}

}  // namespace
}  // namespace nacre::cache
