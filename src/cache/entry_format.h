// The on-disk layout of a cache entry, as pure functions (no I/O).
//
//   <dir>/v1/LOCK                      flock'ed by the process using the cache
//   <dir>/v1/<h[0:2]>/<h>.data         sparse; block i at offset i * block_size
//   <dir>/v1/<h[0:2]>/<h>.meta         header, then one 8-byte record per block
// where h = lowercase hex SHA-256 of bucket '\0' key '\0' etag.
//
// Metadata header, little-endian:
//   0  char[8]  magic "NACRBC1\n"
//   8  u32      format version (1)
//   12 u32      block size
//   16 u64      object size
//   24 u32      bucket length   28 u32 key length   32 u32 etag length
//   36 u32      CRC-32C of bytes [0, 36) followed by the names
//   40 bytes    bucket, key, etag; then zero padding to a multiple of 8
// Block record i at records_offset + 8 * i: u32 CRC-32C of the block's bytes,
// u32 tag (kPresentTag when present; anything else means absent).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "cache/block_cache.h"
#include "common/error.h"

namespace nacre::cache::format {

inline constexpr std::string_view kMagic{"NACRBC1\n", 8};
inline constexpr uint32_t kFormatVersion = 1;
inline constexpr uint32_t kPresentTag = 0x50524553;  // "SERP" read as bytes
inline constexpr size_t kFixedHeaderSize = 40;
inline constexpr size_t kRecordSize = 8;
inline constexpr uint32_t kMaxNameLength = 4096;  // S3 keys are at most 1024 bytes

// Lowercase hex SHA-256 of bucket '\0' key '\0' etag: the file name stem.
std::string entry_name(const ObjectVersion& v);

uint64_t block_count(uint64_t size, uint32_t block_size);

// Where block records start: the header length rounded up to 8.
uint64_t records_offset(const ObjectVersion& v);

// Size of a complete metadata file for this version and block size.
uint64_t meta_size(const ObjectVersion& v, uint32_t block_size);

// The header, padded to records_offset(v).
std::string encode_header(const ObjectVersion& v, uint32_t block_size);

struct MetaHeader {
  ObjectVersion version;
  uint32_t block_size = 0;
  uint64_t records_offset = 0;
  uint64_t block_count = 0;
};

// Parses and validates a whole metadata file: magic, format version, name lengths,
// header CRC, a non-zero block size, and that the file is exactly meta_size() long.
// Errors: kMalformedResponse naming what is wrong.
Result<MetaHeader> decode_header(std::string_view file);

struct BlockRecord {
  uint32_t crc = 0;
  bool present = false;
};

std::array<char, kRecordSize> encode_record(BlockRecord r);
BlockRecord decode_record(const char* bytes);

}  // namespace nacre::cache::format
