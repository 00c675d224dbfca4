#include "cache/entry_format.h"

#include <gtest/gtest.h>

namespace nacre::cache::format {
namespace {

ObjectVersion sample() {
  return {"models", "mistral/model-00001.safetensors", "abc-3", 5000};
}

std::string whole_file(const ObjectVersion& v, uint32_t block_size) {
  std::string f = encode_header(v, block_size);
  f.resize(meta_size(v, block_size), '\0');
  return f;
}

TEST(EntryFormat, HeaderRoundTrips) {
  auto h = decode_header(whole_file(sample(), 1024));
  ASSERT_TRUE(h.has_value()) << h.error().describe();
  EXPECT_EQ(h->version.bucket, "models");
  EXPECT_EQ(h->version.key, "mistral/model-00001.safetensors");
  EXPECT_EQ(h->version.etag, "abc-3");
  EXPECT_EQ(h->version.size, 5000u);
  EXPECT_EQ(h->block_size, 1024u);
  EXPECT_EQ(h->block_count, 5u);
  EXPECT_EQ(h->records_offset % 8, 0u);
}

TEST(EntryFormat, RejectsDamage) {
  const std::string good = whole_file(sample(), 1024);
  auto damaged = [&](size_t at) {
    std::string f = good;
    f[at] ^= 0x01;
    return decode_header(f).has_value();
  };
  EXPECT_FALSE(damaged(0));   // magic
  EXPECT_FALSE(damaged(8));   // format version
  EXPECT_FALSE(damaged(12));  // block size: header checksum
  EXPECT_FALSE(damaged(16));  // object size
  EXPECT_FALSE(damaged(45));  // a name byte
  EXPECT_FALSE(decode_header(good.substr(0, good.size() - 1)).has_value());
  EXPECT_FALSE(decode_header(good + std::string(8, '\0')).has_value());
  EXPECT_FALSE(decode_header("").has_value());
  EXPECT_FALSE(decode_header(std::string(4096, '\x5a')).has_value());
}

TEST(EntryFormat, NameIsSha256OfVersion) {
  ObjectVersion v = sample();
  std::string name = entry_name(v);
  EXPECT_EQ(name.size(), 64u);
  EXPECT_EQ(name.find_first_not_of("0123456789abcdef"), std::string::npos);
  v.etag = "abc-4";
  EXPECT_NE(entry_name(v), name);
  // bucket "ab" + key "c" must not collide with bucket "a" + key "bc".
  EXPECT_NE(entry_name({"ab", "c", "e", 0}), entry_name({"a", "bc", "e", 0}));
  EXPECT_EQ(entry_name({"b", "k", "e", 0}),
            "65bfebcd5a0444f6e09f9d2c7fda867ef28d59db2d9664aff6dd4e969cd06b1c");
}

TEST(EntryFormat, RecordsRoundTripAndGarbageIsAbsent) {
  auto bytes = encode_record({0xDEADBEEF, true});
  BlockRecord r = decode_record(bytes.data());
  EXPECT_TRUE(r.present);
  EXPECT_EQ(r.crc, 0xDEADBEEFu);
  EXPECT_FALSE(decode_record(encode_record({}).data()).present);
  const char garbage[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  EXPECT_FALSE(decode_record(garbage).present);
}

TEST(EntryFormat, BlockCount) {
  EXPECT_EQ(block_count(0, 4096), 0u);
  EXPECT_EQ(block_count(1, 4096), 1u);
  EXPECT_EQ(block_count(4096, 4096), 1u);
  EXPECT_EQ(block_count(4097, 4096), 2u);
}

}  // namespace
}  // namespace nacre::cache::format
