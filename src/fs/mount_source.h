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
// `read_only`: an empty (or not yet existing) prefix is refused only for read-only
// mounts, where it can only be a mistake; a read-write mount of it is how a fresh
// volume starts.
[[nodiscard]] Status check_mount_source(s3::ObjectClient& client, const MountSource& source,
                                        bool read_only);

}  // namespace nacre::fs
