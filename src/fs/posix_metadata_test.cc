#include "fs/posix_metadata.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

namespace nacre::fs {

TEST(PosixMetadata, DecodesFsxForLustreMetadata) {
  auto p = decode_posix_metadata({{"file-permissions", "0100640"},
                                  {"file-owner", "1000"},
                                  {"file-group", "100"},
                                  {"file-mtime", "1700000000000000001ns"}});
  EXPECT_EQ(*p.mode, static_cast<mode_t>(S_IFREG | 0640));
  EXPECT_EQ(*p.uid, 1000u);
  EXPECT_EQ(*p.gid, 100u);
  EXPECT_EQ(*p.mtime_ns, 1700000000000000001);
}

TEST(PosixMetadata, IgnoresGarbage) {
  auto p = decode_posix_metadata({{"file-permissions", "rwxr-xr-x"},
                                  {"file-owner", "-1x"},
                                  {"file-mtime", "17000"},  // no "ns" suffix
                                  {"file-group", ""}});
  EXPECT_FALSE(p.mode);
  EXPECT_FALSE(p.uid);
  EXPECT_FALSE(p.gid);
  EXPECT_FALSE(p.mtime_ns);
  EXPECT_FALSE(decode_posix_metadata({{"file-permissions", "0060644"}}).mode)
      << "block devices are not objects";
}

TEST(PosixMetadata, RoundTrips) {
  PosixMetadata in;
  in.mode = S_IFLNK | 0777;
  in.uid = 5;
  in.gid = 6;
  in.mtime_ns = 42;
  s3::UserMetadata meta;
  encode_posix_metadata(in, meta);
  EXPECT_EQ(meta["file-permissions"], "0120777");
  EXPECT_EQ(meta["file-mtime"], "42ns");
  auto out = decode_posix_metadata(meta);
  EXPECT_EQ(*out.mode, *in.mode);
  EXPECT_EQ(*out.uid, 5u);
}

}  // namespace nacre::fs
