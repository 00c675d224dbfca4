// s3://bucket/key URLs as the command line takes them.
#pragma once

#include <string>

#include "common/error.h"

namespace nacre::cli {

struct S3Url {
  std::string bucket;
  std::string key;  // may be empty (the bucket root) or end in '/' (a prefix)
};

bool is_s3_url(const std::string& s);
// "s3://bucket/some/key" → {bucket, "some/key"}; the key is taken verbatim.
// The bucket must pass s3::check_bucket_name (kInvalidArgument otherwise).
[[nodiscard]] Result<S3Url> parse_s3_url(const std::string& s);

}  // namespace nacre::cli
