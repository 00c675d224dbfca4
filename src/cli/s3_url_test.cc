#include "cli/s3_url.h"

#include <gtest/gtest.h>

namespace nacre::cli {

TEST(S3Url, SplitsBucketAndKeyVerbatim) {
  auto u = parse_s3_url("s3://models/mistral//7b/./x");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->bucket, "models");
  EXPECT_EQ(u->key, "mistral//7b/./x");
}

TEST(S3Url, BucketOnly) {
  auto u = parse_s3_url("s3://models");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->key, "");
}

TEST(S3Url, RejectsWhatIsNotAnS3Url) {
  EXPECT_EQ(parse_s3_url("/tmp/x").error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(parse_s3_url("s3:///key").error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(parse_s3_url("s3://bad bucket/k").error().code, ErrorCode::kInvalidArgument);
}

}  // namespace nacre::cli
