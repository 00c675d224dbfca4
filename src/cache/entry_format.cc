#include "cache/entry_format.h"

#include <openssl/evp.h>

#include <bit>
#include <cstring>

#include "cache/crc32c.h"

namespace nacre::cache::format {
namespace {

static_assert(std::endian::native == std::endian::little, "the format is little-endian");

void put32(std::string& s, size_t at, uint32_t v) {
  std::memcpy(s.data() + at, &v, 4);
}
void put64(std::string& s, size_t at, uint64_t v) {
  std::memcpy(s.data() + at, &v, 8);
}
uint32_t get32(std::string_view s, size_t at) {
  uint32_t v;
  std::memcpy(&v, s.data() + at, 4);
  return v;
}
uint64_t get64(std::string_view s, size_t at) {
  uint64_t v;
  std::memcpy(&v, s.data() + at, 8);
  return v;
}

uint64_t round_up8(uint64_t n) {
  return (n + 7) & ~uint64_t{7};
}

uint32_t header_crc(std::string_view fixed, std::string_view names) {
  return crc32c_extend(crc32c(fixed.substr(0, 36)), names.data(), names.size());
}

}  // namespace

std::string entry_name(const ObjectVersion& v) {
  std::string input = v.bucket;
  input.push_back('\0');
  input += v.key;
  input.push_back('\0');
  input += v.etag;
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int md_len = 0;
  EVP_Digest(input.data(), input.size(), md, &md_len, EVP_sha256(), nullptr);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned int i = 0; i < md_len; ++i) {
    hex.push_back(kHex[md[i] >> 4]);
    hex.push_back(kHex[md[i] & 0xf]);
  }
  return hex;
}

uint64_t block_count(uint64_t size, uint32_t block_size) {
  return size / block_size + (size % block_size != 0 ? 1 : 0);
}

uint64_t records_offset(const ObjectVersion& v) {
  return round_up8(kFixedHeaderSize + v.bucket.size() + v.key.size() + v.etag.size());
}

uint64_t meta_size(const ObjectVersion& v, uint32_t block_size) {
  return records_offset(v) + kRecordSize * block_count(v.size, block_size);
}

std::string encode_header(const ObjectVersion& v, uint32_t block_size) {
  std::string h(records_offset(v), '\0');
  std::memcpy(h.data(), kMagic.data(), kMagic.size());
  put32(h, 8, kFormatVersion);
  put32(h, 12, block_size);
  put64(h, 16, v.size);
  put32(h, 24, static_cast<uint32_t>(v.bucket.size()));
  put32(h, 28, static_cast<uint32_t>(v.key.size()));
  put32(h, 32, static_cast<uint32_t>(v.etag.size()));
  std::string names = v.bucket + v.key + v.etag;
  std::memcpy(h.data() + kFixedHeaderSize, names.data(), names.size());
  put32(h, 36, header_crc(h, names));
  return h;
}

Result<MetaHeader> decode_header(std::string_view file) {
  if (file.size() < kFixedHeaderSize) return fail(ErrorCode::kMalformedResponse, "short header");
  if (file.substr(0, kMagic.size()) != kMagic) {
    return fail(ErrorCode::kMalformedResponse, "not a Nacre cache metadata file (bad magic)");
  }
  if (uint32_t version = get32(file, 8); version != kFormatVersion) {
    return fail(ErrorCode::kMalformedResponse,
                "unsupported format version " + std::to_string(version));
  }
  MetaHeader h;
  h.block_size = get32(file, 12);
  h.version.size = get64(file, 16);
  uint32_t lens[3] = {get32(file, 24), get32(file, 28), get32(file, 32)};
  if (h.block_size == 0) return fail(ErrorCode::kMalformedResponse, "zero block size");
  for (uint32_t len : lens) {
    if (len == 0 || len > kMaxNameLength) {
      return fail(ErrorCode::kMalformedResponse, "bad name length " + std::to_string(len));
    }
  }
  uint64_t names_len = uint64_t{lens[0]} + lens[1] + lens[2];
  if (file.size() < kFixedHeaderSize + names_len) {
    return fail(ErrorCode::kMalformedResponse, "header shorter than its names");
  }
  std::string_view names = file.substr(kFixedHeaderSize, names_len);
  if (header_crc(file, names) != get32(file, 36)) {
    return fail(ErrorCode::kMalformedResponse, "header checksum mismatch");
  }
  h.version.bucket = names.substr(0, lens[0]);
  h.version.key = names.substr(lens[0], lens[1]);
  h.version.etag = names.substr(lens[0] + lens[1], lens[2]);
  h.records_offset = records_offset(h.version);
  h.block_count = block_count(h.version.size, h.block_size);
  // Checked by division so that a garbage object size cannot overflow the product.
  if (file.size() < h.records_offset || (file.size() - h.records_offset) % kRecordSize != 0 ||
      (file.size() - h.records_offset) / kRecordSize != h.block_count) {
    return fail(ErrorCode::kMalformedResponse, "file size does not match the object size");
  }
  return h;
}

std::array<char, kRecordSize> encode_record(BlockRecord r) {
  std::array<char, kRecordSize> out{};
  uint32_t tag = r.present ? kPresentTag : 0;
  std::memcpy(out.data(), &r.crc, 4);
  std::memcpy(out.data() + 4, &tag, 4);
  return out;
}

BlockRecord decode_record(const char* bytes) {
  BlockRecord r;
  uint32_t tag;
  std::memcpy(&r.crc, bytes, 4);
  std::memcpy(&tag, bytes + 4, 4);
  r.present = tag == kPresentTag;
  return r;
}

}  // namespace nacre::cache::format
