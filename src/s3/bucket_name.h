// S3 bucket-name rules, checked where a user's text becomes a bucket name,
// before the name can form a request or any local path (the cache directory
// of a mount is named after its bucket).
#pragma once

#include <string_view>

#include "common/error.h"

namespace nacre::s3 {

// The S3 general-purpose bucket rules: 3 to 63 characters of lower-case
// letters, digits, '.' and '-', starting and ending with a letter or digit,
// and no ".." (so neither "/", "..", NUL nor any path trick gets through).
// kInvalidArgument naming the bucket and the rule it breaks. Legacy us-east-1
// names with capitals or '_' are refused too: S3 has not allowed new ones
// since 2018 and they cannot be reached virtual-hosted.
[[nodiscard]] Status check_bucket_name(std::string_view bucket);

}  // namespace nacre::s3
