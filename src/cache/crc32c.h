// CRC-32C (Castagnoli polynomial 0x1EDC6F41, reflected 0x82F63B78), the
// checksum of iSCSI, ext4 metadata and S3's x-amz-checksum-crc32c. The block
// cache stores one per block and checks it before serving cached bytes.
//
// All functions are pure and thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace nacre::cache {

// The CRC-32C of the bytes already summarised by `crc` followed by `data`.
// crc32c_extend(crc32c_extend(0, a), b) == crc32c of a+b.
uint32_t crc32c_extend(uint32_t crc, const void* data, size_t len);

inline uint32_t crc32c(std::string_view data) {
  return crc32c_extend(0, data.data(), data.size());
}

// The two implementations crc32c_extend dispatches between, exposed for tests.
namespace crc32c_internal {
uint32_t extend_software(uint32_t crc, const void* data, size_t len);
// Only valid when hardware_available() is true.
uint32_t extend_hardware(uint32_t crc, const void* data, size_t len);
// SSE4.2 on x86-64; false on other architectures.
bool hardware_available();
}  // namespace crc32c_internal

}  // namespace nacre::cache
