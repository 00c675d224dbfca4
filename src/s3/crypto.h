// Hashes and encodings SigV4 and the S3 protocol need, on OpenSSL.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace nacre::s3 {

using Sha256Digest = std::array<uint8_t, 32>;

Sha256Digest sha256(std::string_view data);
Sha256Digest hmac_sha256(std::string_view key, std::string_view data);
std::string hex(const uint8_t* data, size_t size);
inline std::string hex(const Sha256Digest& d) { return hex(d.data(), d.size()); }
std::string sha256_hex(std::string_view data);
std::string base64(std::string_view data);
// Base64 of the MD5 of `data`, as the Content-MD5 header wants it.
std::string content_md5(std::string_view data);

}  // namespace nacre::s3
