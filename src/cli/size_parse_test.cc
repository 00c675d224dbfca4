#include "cli/size_parse.h"

#include <gtest/gtest.h>

#include "cli/mount_command.h"

namespace nacre::cli {

TEST(SizeParse, Bytes) {
  EXPECT_EQ(*parse_bytes("1048576"), 1048576u);
  EXPECT_EQ(*parse_bytes("10G"), 10ull << 30);
  EXPECT_EQ(*parse_bytes("512Mi"), 512ull << 20);
  EXPECT_EQ(*parse_bytes("2TiB"), 2ull << 40);
  EXPECT_FALSE(parse_bytes("ten"));
  EXPECT_FALSE(parse_bytes("5X"));
  EXPECT_FALSE(parse_bytes(""));
}

TEST(SizeParse, ModesAndTtl) {
  EXPECT_EQ(*parse_mode("0644"), 0644u);
  EXPECT_FALSE(parse_mode("0999"));
  EXPECT_FALSE(parse_mode("17777"));
  EXPECT_FALSE(parse_ttl("forever")->has_value());
  EXPECT_EQ(parse_ttl("1.5")->value().count(), 1500);
  EXPECT_FALSE(parse_ttl("-1"));
  EXPECT_FALSE(parse_ttl("soon"));
}

TEST(SizeParse, ImportPolicy) {
  auto p = parse_import_policy("new,Deleted");
  ASSERT_TRUE(p);
  EXPECT_TRUE(p->new_objects);
  EXPECT_FALSE(p->changed);
  EXPECT_TRUE(p->deleted);
  auto none = parse_import_policy("NONE");
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->new_objects || none->changed || none->deleted);
  EXPECT_FALSE(parse_import_policy("NEW,UPDATED"));
}

TEST(MountHelper, RewritesMountFuse3Invocation) {
  std::vector<std::string> subs = {"ls", "cp", "mount"};
  auto out = rewrite_mount_helper_args({"nacre", "s3://b/p", "/mnt", "-o", "ro"}, subs);
  EXPECT_EQ(out, (std::vector<std::string>{"nacre", "mount", "s3://b/p", "/mnt", "-o", "ro"}));
  auto same = rewrite_mount_helper_args({"nacre", "ls", "s3://b/"}, subs);
  EXPECT_EQ(same, (std::vector<std::string>{"nacre", "ls", "s3://b/"}));
}

// Regression: `-o uid=abc` threw std::invalid_argument out of std::stoul and killed
// `nacre mount` instead of giving a clear error.
TEST(ParseId, RejectsWhatIsNotANumericId) {
  EXPECT_EQ(parse_id("1000", "uid").value(), 1000u);
  EXPECT_EQ(parse_id("0", "uid").value(), 0u);
  for (const char* bad : {"", "abc", "-1", "12x", "4294967295", "99999999999999999999", " 1"}) {
    auto r = parse_id(bad, "uid");
    ASSERT_FALSE(r.has_value()) << bad;
    EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
    EXPECT_NE(r.error().message.find("uid"), std::string::npos);
  }
}

}  // namespace nacre::cli
