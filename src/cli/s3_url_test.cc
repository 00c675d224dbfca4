#include "cli/s3_url.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

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

TEST(S3Url, RejectsBucketNamesS3DoesNotAllow) {
  for (const std::string& bad :
       std::vector<std::string>{"ab", std::string(64, 'a'), "Models", "my_bucket", "-models",
                                "models-", ".models", "models.", "a..b", "..", "...", "a.%2e.b",
                                "bad bucket", std::string("mod\0els", 7), "mod\\els", "mod:els"}) {
    auto u = parse_s3_url("s3://" + bad + "/key");
    ASSERT_FALSE(u) << "bucket '" << bad << "' accepted";
    EXPECT_EQ(u.error().code, ErrorCode::kInvalidArgument);
    EXPECT_NE(u.error().message.find("bucket name"), std::string::npos) << u.error().message;
  }
  // A bucket of ".." written as a path segment never gets past the parser.
  EXPECT_FALSE(parse_s3_url("s3://../etc/passwd"));
  EXPECT_FALSE(parse_s3_url("s3://./x"));
}

TEST(S3Url, AcceptsBucketNamesS3Allows) {
  for (const std::string& ok : std::vector<std::string>{"abc", std::string(63, 'a'), "my.bucket-1",
                                                        "0models9", "a-b.c-d"}) {
    auto u = parse_s3_url("s3://" + ok + "/k");
    ASSERT_TRUE(u) << ok << ": " << u.error().describe();
    EXPECT_EQ(u->bucket, ok);
  }
}

}  // namespace nacre::cli
