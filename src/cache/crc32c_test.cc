#include "cache/crc32c.h"

#include <gtest/gtest.h>

#include <random>
#include <string>

namespace nacre::cache {
namespace {

using crc32c_internal::extend_hardware;
using crc32c_internal::extend_software;
using crc32c_internal::hardware_available;

TEST(Crc32c, StandardCheckValue) {
  const std::string check = "123456789";
  EXPECT_EQ(crc32c(check), 0xE3069283u);
  EXPECT_EQ(extend_software(0, check.data(), check.size()), 0xE3069283u);
  if (hardware_available()) {
    EXPECT_EQ(extend_hardware(0, check.data(), check.size()), 0xE3069283u);
  }
}

// RFC 3720 (iSCSI) appendix B.4 test vectors.
TEST(Crc32c, Rfc3720Vectors) {
  std::string zeros(32, '\0'), ones(32, '\xff'), ascending(32, '\0');
  for (int i = 0; i < 32; ++i) ascending[i] = static_cast<char>(i);
  EXPECT_EQ(crc32c(zeros), 0x8A9136AAu);
  EXPECT_EQ(crc32c(ones), 0x62A8AB43u);
  EXPECT_EQ(crc32c(ascending), 0x46DD794Eu);
  EXPECT_EQ(crc32c(""), 0u);
}

TEST(Crc32c, ExtendComposes) {
  const std::string a = "hello, ", b = "world";
  EXPECT_EQ(crc32c_extend(crc32c(a), b.data(), b.size()), crc32c(a + b));
}

TEST(Crc32c, HardwareAndSoftwareAgreeOnRandomData) {
  if (!hardware_available()) GTEST_SKIP() << "no SSE4.2 on this CPU";
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  std::string data(1 << 20, '\0');
  for (auto& c : data) c = static_cast<char>(rng());
  EXPECT_EQ(extend_hardware(0, data.data(), data.size()),
            extend_software(0, data.data(), data.size()));
  for (int round = 0; round < 2000; ++round) {
    // Unaligned starts and odd lengths exercise the head and tail loops.
    size_t offset = rng() % 64, len = rng() % 4096;
    uint32_t seed_crc = rng();
    ASSERT_EQ(extend_hardware(seed_crc, data.data() + offset, len),
              extend_software(seed_crc, data.data() + offset, len))
        << "offset " << offset << " len " << len;
  }
  for (int round = 0; round < 200; ++round) {
    // Past three 4 KiB stripes: the interleaved streams and their combination.
    size_t offset = rng() % 64, len = 3 * 4096 + rng() % 100000;
    uint32_t seed_crc = rng();
    ASSERT_EQ(extend_hardware(seed_crc, data.data() + offset, len),
              extend_software(seed_crc, data.data() + offset, len))
        << "offset " << offset << " len " << len;
  }
}

}  // namespace
}  // namespace nacre::cache
