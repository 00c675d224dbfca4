// Helpers shared by the cache's unit tests (not part of the library).
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <random>
#include <string>

#include "cache/block_cache.h"
#include "cache/entry_format.h"

namespace nacre::cache::testing {

// A fresh directory under /tmp, removed with everything in it at the end of the test.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/nacre-cache-test-XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A tmpfs of `size` mounted on a fresh directory, unmounted (lazily, so open files do not
// keep it busy) and removed at the end, even when the test fails. ok() is false where
// mounting is not allowed (not root): such tests skip.
class TmpfsMount {
 public:
  explicit TmpfsMount(const std::string& size) {
    std::string opts = "size=" + size;
    mounted_ = ::mount("tmpfs", dir_.path().c_str(), "tmpfs", 0, opts.c_str()) == 0;
  }
  ~TmpfsMount() {
    if (mounted_) ::umount2(dir_.path().c_str(), MNT_DETACH);
  }
  bool ok() const { return mounted_; }
  const std::string& path() const { return dir_.path(); }

 private:
  TempDir dir_;
  bool mounted_ = false;
};

// Deterministic bytes for block i of an object, so readers can check what they got.
inline std::string block_bytes(const std::string& key, uint64_t i, uint64_t len) {
  std::mt19937_64 rng(std::hash<std::string>{}(key) ^ (i * 0x9E3779B97F4A7C15ull));
  std::string s(len, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

inline ObjectVersion version(const std::string& key, uint64_t size,
                             const std::string& etag = "e1") {
  return ObjectVersion{"bucket", key, etag, size};
}

inline CacheOptions options(const std::string& dir, uint32_t block_size = 4096) {
  CacheOptions o;
  o.dir = dir;
  o.block_size = block_size;
  o.min_free_bytes = 0;
  return o;
}

inline std::unique_ptr<BlockCache> open_cache(const CacheOptions& o) {
  auto cache = BlockCache::open(o);
  EXPECT_TRUE(cache.has_value()) << (cache ? "" : cache.error().describe());
  return cache ? std::move(*cache) : nullptr;
}

// Writes every block of `object` with block_bytes(key, i).
inline void fill(CachedObject& object) {
  for (uint64_t i = 0; i < object.block_count(); ++i) {
    Status r = object.write_block(i, block_bytes(object.version().key, i, object.block_length(i)));
    ASSERT_TRUE(r.has_value()) << r.error().describe();
  }
}

// The path of an entry's file: suffix ".data" or ".meta".
inline std::string entry_path(const std::string& dir, const ObjectVersion& v, const char* suffix) {
  std::string h = format::entry_name(v);
  return dir + "/v1/" + h.substr(0, 2) + "/" + h + suffix;
}

// Flips one bit of the byte at `offset` of a file (a corrupted cache file).
inline void flip_byte(const std::string& path, uint64_t offset) {
  int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  char c;
  ASSERT_EQ(::pread(fd, &c, 1, static_cast<off_t>(offset)), 1);
  c ^= 0x20;
  ASSERT_EQ(::pwrite(fd, &c, 1, static_cast<off_t>(offset)), 1);
  ::close(fd);
}

}  // namespace nacre::cache::testing
