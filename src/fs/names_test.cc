#include "fs/names.h"

#include <gtest/gtest.h>

namespace nacre::fs {
namespace {

TEST(Names, ValidNames) {
  EXPECT_TRUE(is_valid_name("model.safetensors"));
  EXPECT_FALSE(is_valid_name(""));
  EXPECT_FALSE(is_valid_name("."));
  EXPECT_FALSE(is_valid_name(".."));
  EXPECT_FALSE(is_valid_name("a/b"));
  EXPECT_FALSE(is_valid_name(std::string_view("a\0b", 3)));
  EXPECT_TRUE(is_valid_name(std::string(255, 'x')));
  EXPECT_FALSE(is_valid_name(std::string(256, 'x')));
}

TEST(Names, SymlinksThatStayInsideTheMount) {
  EXPECT_TRUE(symlink_stays_inside(0, "b"));
  EXPECT_TRUE(symlink_stays_inside(1, "../b"));
  EXPECT_TRUE(symlink_stays_inside(2, "../../shards/a"));
  EXPECT_TRUE(symlink_stays_inside(0, "dir//b/"));
}

TEST(Names, SymlinksThatLeaveTheMount) {
  EXPECT_FALSE(symlink_stays_inside(0, "/etc/shadow"));
  EXPECT_FALSE(symlink_stays_inside(5, "/models"));
  EXPECT_FALSE(symlink_stays_inside(0, ".."));
  EXPECT_FALSE(symlink_stays_inside(0, "../x"));
  EXPECT_FALSE(symlink_stays_inside(1, "../../x"));
  // Climbing out and back in by name is still out: the name above the root is the node's.
  EXPECT_FALSE(symlink_stays_inside(0, "../mnt/x"));
  EXPECT_FALSE(symlink_stays_inside(1, "a/../../../x"));
  EXPECT_FALSE(symlink_stays_inside(0, ""));
}

// Regression (review): ".." is resolved physically. With d/s -> ".." (allowed: it
// climbs one real level from d), x -> "d/s/.." resolves to the mount root's parent,
// although counting levels lexically said it stays inside.
TEST(Names, DotDotAfterANamedComponentIsRefused) {
  EXPECT_TRUE(symlink_stays_inside(1, ".."));
  EXPECT_FALSE(symlink_stays_inside(0, "d/s/.."));
  EXPECT_FALSE(symlink_stays_inside(0, "./dir/../b"));
  EXPECT_FALSE(symlink_stays_inside(3, "a/../b"));
  EXPECT_TRUE(symlink_stays_inside(2, "../../a/b/./c"));
}

}  // namespace
}  // namespace nacre::fs
