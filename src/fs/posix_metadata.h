// POSIX attributes in S3 user metadata, in the format of Amazon FSx for
// Lustre data repositories, so data moves between Nacre and FSx without loss:
//   x-amz-meta-file-permissions  octal st_mode with the type bits ("0100644")
//   x-amz-meta-file-owner        uid (decimal)
//   x-amz-meta-file-group        gid (decimal)
//   x-amz-meta-file-mtime        nanoseconds since the epoch with "ns" suffix
//   x-amz-meta-file-atime        likewise
// Values that do not parse are ignored (the mount's defaults apply).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>

#include "s3/object_client.h"

namespace nacre::fs {

struct PosixMetadata {
  std::optional<mode_t> mode;  // including S_IFMT bits
  std::optional<uid_t> uid;
  std::optional<gid_t> gid;
  std::optional<int64_t> mtime_ns;
  std::optional<int64_t> atime_ns;
};

PosixMetadata decode_posix_metadata(const s3::UserMetadata& meta);
void encode_posix_metadata(const PosixMetadata& posix, s3::UserMetadata& meta);

}  // namespace nacre::fs
