// Hand-written because no Debian package provides a CRC-32C library for C++
// (and the S3 layer's OpenSSL has none), while the function is small: a
// hardware path for SSE4.2 and a slicing-by-8 table fallback for other CPUs.
// Both are checked against the standard check value and each other in
// crc32c_test.
#include "cache/crc32c.h"

#include <array>
#include <bit>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace nacre::cache {
namespace {

static_assert(std::endian::native == std::endian::little,
              "the slicing-by-8 fallback reads words in little-endian order");

constexpr uint32_t kPolynomial = 0x82F63B78;  // reflected Castagnoli

using Tables = std::array<std::array<uint32_t, 256>, 8>;

// tables[k][b] is the CRC of byte b followed by k zero bytes, which lets the
// loop fold eight input bytes per step.
constexpr Tables make_tables() {
  Tables t{};
  for (uint32_t b = 0; b < 256; ++b) {
    uint32_t crc = b;
    for (int i = 0; i < 8; ++i) crc = (crc >> 1) ^ ((crc & 1) ? kPolynomial : 0);
    t[0][b] = crc;
  }
  for (size_t k = 1; k < 8; ++k) {
    for (uint32_t b = 0; b < 256; ++b) t[k][b] = (t[k - 1][b] >> 8) ^ t[0][t[k - 1][b] & 0xff];
  }
  return t;
}

constexpr Tables kTables = make_tables();

using ExtendFn = uint32_t (*)(uint32_t, const void*, size_t);

ExtendFn choose() {
  return crc32c_internal::hardware_available() ? crc32c_internal::extend_hardware
                                               : crc32c_internal::extend_software;
}

}  // namespace

namespace crc32c_internal {

uint32_t extend_software(uint32_t crc, const void* data, size_t len) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint32_t l = ~crc;
  while (len >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    w ^= l;
    l = kTables[7][w & 0xff] ^ kTables[6][(w >> 8) & 0xff] ^ kTables[5][(w >> 16) & 0xff] ^
        kTables[4][(w >> 24) & 0xff] ^ kTables[3][(w >> 32) & 0xff] ^ kTables[2][(w >> 40) & 0xff] ^
        kTables[1][(w >> 48) & 0xff] ^ kTables[0][w >> 56];
    p += 8;
    len -= 8;
  }
  while (len-- > 0) l = kTables[0][(l ^ *p++) & 0xff] ^ (l >> 8);
  return ~l;
}

#if defined(__x86_64__)

namespace {

// The crc32 instruction has a latency of 3 cycles and a throughput of 1: one
// dependency chain uses a third of it. Large inputs are summed as three
// interleaved streams of kStripe bytes, whose registers are then combined:
// the register after A then B is shift(reg(A), |B|) ^ reg(B from 0), where
// shift multiplies by x^(8 |B|) modulo the polynomial (a linear map, applied
// by table, one 256-entry table per byte of the register).
constexpr size_t kStripe = 4096;

using ShiftTables = std::array<std::array<uint32_t, 256>, 4>;

// The register after feeding `n` zero bytes, starting from `r` (no inversion).
uint32_t feed_zeros(uint32_t r, size_t n) {
  while (n-- > 0) r = kTables[0][r & 0xff] ^ (r >> 8);
  return r;
}

ShiftTables make_shift_tables() {
  // The map is linear: its value on each of the 32 bits, then every byte value.
  std::array<uint32_t, 32> basis{};
  for (int bit = 0; bit < 32; ++bit) basis[bit] = feed_zeros(1u << bit, kStripe);
  ShiftTables t{};
  for (int k = 0; k < 4; ++k) {
    for (uint32_t v = 0; v < 256; ++v) {
      uint32_t out = 0;
      for (int bit = 0; bit < 8; ++bit) {
        if (v & (1u << bit)) out ^= basis[k * 8 + bit];
      }
      t[k][v] = out;
    }
  }
  return t;
}

uint32_t shift_stripe(uint32_t r) {
  static const ShiftTables t = make_shift_tables();
  return t[0][r & 0xff] ^ t[1][(r >> 8) & 0xff] ^ t[2][(r >> 16) & 0xff] ^ t[3][r >> 24];
}

}  // namespace

__attribute__((target("sse4.2"))) uint32_t extend_hardware(uint32_t crc, const void* data,
                                                           size_t len) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint64_t l = ~crc;
  while (len >= 3 * kStripe) {
    uint64_t a = l, b = 0, c = 0;
    for (size_t i = 0; i < kStripe; i += 8) {
      uint64_t wa, wb, wc;
      std::memcpy(&wa, p + i, 8);
      std::memcpy(&wb, p + kStripe + i, 8);
      std::memcpy(&wc, p + 2 * kStripe + i, 8);
      a = _mm_crc32_u64(a, wa);
      b = _mm_crc32_u64(b, wb);
      c = _mm_crc32_u64(c, wc);
    }
    const uint32_t ab = shift_stripe(static_cast<uint32_t>(a)) ^ static_cast<uint32_t>(b);
    l = shift_stripe(ab) ^ static_cast<uint32_t>(c);
    p += 3 * kStripe;
    len -= 3 * kStripe;
  }
  while (len >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    l = _mm_crc32_u64(l, w);
    p += 8;
    len -= 8;
  }
  auto l32 = static_cast<uint32_t>(l);
  while (len-- > 0) l32 = _mm_crc32_u8(l32, *p++);
  return ~l32;
}

bool hardware_available() {
  return __builtin_cpu_supports("sse4.2");
}

#else

uint32_t extend_hardware(uint32_t crc, const void* data, size_t len) {
  return extend_software(crc, data, len);
}

bool hardware_available() {
  return false;
}

#endif

}  // namespace crc32c_internal

uint32_t crc32c_extend(uint32_t crc, const void* data, size_t len) {
  static const ExtendFn extend = choose();
  return extend(crc, data, len);
}

}  // namespace nacre::cache
