#include "fs/prefetch_window.h"

#include <gtest/gtest.h>

namespace nacre::fs {
namespace {

constexpr uint64_t kMiB = 1 << 20;

TEST(PrefetchWindow, GrowsOnSequentialReadsUpToTheMaximum) {
  PrefetchWindow w(2 * kMiB, 8 * kMiB);
  auto first = w.advance(0, kMiB, kMiB, 100);
  ASSERT_TRUE(first);
  EXPECT_EQ(*first, std::make_pair(uint64_t{1}, uint64_t{2}));  // 2 MiB ahead of block 0
  auto second = w.advance(kMiB, kMiB, kMiB, 100);               // window 4 MiB
  ASSERT_TRUE(second);
  EXPECT_EQ(*second, std::make_pair(uint64_t{3}, uint64_t{5}));
  EXPECT_EQ(w.window(), 4 * kMiB);
  for (uint64_t i = 2; i < 10; ++i) (void)w.advance(i * kMiB, kMiB, kMiB, 100);
  EXPECT_EQ(w.window(), 8 * kMiB);
}

TEST(PrefetchWindow, NeverAsksForABlockTwiceInOneStream) {
  PrefetchWindow w(4 * kMiB, 4 * kMiB);
  uint64_t asked_to = 0;
  for (uint64_t i = 0; i < 50; ++i) {
    auto ahead = w.advance(i * kMiB, kMiB, kMiB, 60);
    if (!ahead) continue;
    EXPECT_GE(ahead->first, asked_to);
    EXPECT_LE(ahead->second, 59u);
    asked_to = ahead->second + 1;
  }
  EXPECT_EQ(asked_to, 54u);
}

TEST(PrefetchWindow, RandomReadResetsTheWindow) {
  PrefetchWindow w(kMiB, 16 * kMiB);
  (void)w.advance(0, kMiB, kMiB, 100);
  (void)w.advance(kMiB, kMiB, kMiB, 100);
  EXPECT_EQ(w.window(), 2 * kMiB);
  EXPECT_FALSE(w.advance(50 * kMiB, kMiB, kMiB, 100));
  EXPECT_EQ(w.window(), kMiB);
  // The stream picks up again from the random position.
  auto ahead = w.advance(51 * kMiB, kMiB, kMiB, 100);
  ASSERT_TRUE(ahead);
  EXPECT_EQ(ahead->first, 52u);
}

TEST(PrefetchWindow, StopsAtTheLastBlock) {
  PrefetchWindow w(8 * kMiB, 8 * kMiB);
  auto ahead = w.advance(0, kMiB, kMiB, 3);
  ASSERT_TRUE(ahead);
  EXPECT_EQ(*ahead, std::make_pair(uint64_t{1}, uint64_t{2}));
  EXPECT_FALSE(w.advance(kMiB, kMiB, kMiB, 3));
}

}  // namespace
}  // namespace nacre::fs
