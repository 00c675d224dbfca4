// What a mount reads: a bucket and a key prefix.
#pragma once

#include <string>

#include "common/error.h"
#include "s3/object_client.h"

namespace nacre::fs {

struct MountSource {
  std::string bucket;
  std::string prefix;  // "" or ending in '/'
};

// "s3://bucket/some/prefix", "bucket/some/prefix/" or "bucket" → source.
[[nodiscard]] Result<MountSource> parse_mount_source(const std::string& text);

// Checks that the bucket answers with these credentials and that the prefix
// holds at least one object, so a bad mount fails before it daemonises.
[[nodiscard]] Status check_mount_source(s3::ObjectClient& client, const MountSource& source);

}  // namespace nacre::fs
