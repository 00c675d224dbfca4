// BlockCache basics: storing and reading blocks, restart survival, damaged files on
// disk, ETag changes and release.
#include "cache/block_cache.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "cache/entry_format.h"
#include "cache/test_util.h"

namespace nacre::cache {
namespace {

using testing::block_bytes;
using testing::entry_path;
using testing::fill;
using testing::flip_byte;
using testing::open_cache;
using testing::options;
using testing::TempDir;
using testing::version;

bool exists(const std::string& path) {
  return std::filesystem::exists(path);
}

TEST(BlockCache, WritesReadBackByteExact) {
  TempDir dir;
  auto cache = open_cache(options(dir.path()));
  auto object = cache->open_object(version("a", 3 * 4096 + 100));
  ASSERT_TRUE(object.has_value());
  CachedObject& o = **object;
  EXPECT_EQ(o.block_count(), 4u);
  EXPECT_EQ(o.block_length(0), 4096u);
  EXPECT_EQ(o.block_length(3), 100u);

  ASSERT_TRUE(o.write_block(1, block_bytes("a", 1, 4096)).has_value());
  ASSERT_TRUE(o.write_block(3, block_bytes("a", 3, 100)).has_value());
  EXPECT_FALSE(o.has_block(0));
  EXPECT_TRUE(o.has_block(1));
  EXPECT_FALSE(o.has_block(2));
  EXPECT_TRUE(o.has_block(3));
  EXPECT_FALSE(o.has_block(4));

  std::string out(4096 + 100, '\0');
  EXPECT_FALSE(o.read(2 * 4096, 4096, out.data()).has_value());  // block 2 absent
  ASSERT_TRUE(o.read(4096, 4096, out.data()).has_value());
  EXPECT_EQ(out.substr(0, 4096), block_bytes("a", 1, 4096));
  ASSERT_TRUE(o.read(3 * 4096, 100, out.data()).has_value());
  EXPECT_EQ(out.substr(0, 100), block_bytes("a", 3, 100));

  std::string via_fd(100, '\0');
  ASSERT_EQ(::pread(o.data_fd(), via_fd.data(), 100, 3 * 4096), 100);
  EXPECT_EQ(via_fd, block_bytes("a", 3, 100));

  EXPECT_EQ(o.cached_bytes(), 4096u + 100u);
  EXPECT_EQ(cache->stats().used_bytes, 4096u + 100u);
  EXPECT_EQ(cache->stats().hits, 2u);
  EXPECT_EQ(cache->stats().misses, 3u);
}

TEST(BlockCache, ReadOfMissingBlockIsNotCached) {
  TempDir dir;
  auto cache = open_cache(options(dir.path()));
  auto o = *cache->open_object(version("a", 2 * 4096));
  ASSERT_TRUE(o->write_block(0, block_bytes("a", 0, 4096)).has_value());
  std::string out(8192, '\0');
  auto r = o->read(100, 5000, out.data());  // spans blocks 0 and 1
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::kNotCached);
  EXPECT_EQ(o->read(8000, 500, out.data()).error().code, ErrorCode::kInvalidRange);
  EXPECT_TRUE(o->read(100, 3000, out.data()).has_value());
}

TEST(BlockCache, RejectsWrongLengthAndIndex) {
  TempDir dir;
  auto cache = open_cache(options(dir.path()));
  auto o = *cache->open_object(version("a", 5000));
  EXPECT_EQ(o->write_block(0, std::string(4095, 'x')).error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(o->write_block(1, std::string(4096, 'x')).error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(o->write_block(2, std::string(1, 'x')).error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(cache->stats().used_bytes, 0u);
  EXPECT_EQ(cache->open_object({"b", "", "e", 1}).error().code, ErrorCode::kInvalidArgument);
}

TEST(BlockCache, EmptyObjectHasNoBlocks) {
  TempDir dir;
  auto cache = open_cache(options(dir.path()));
  auto o = *cache->open_object(version("empty", 0));
  EXPECT_EQ(o->block_count(), 0u);
  EXPECT_FALSE(o->has_block(0));
  EXPECT_TRUE(o->read(0, 0, nullptr).has_value());
}

TEST(BlockCache, BlocksSurviveRestartAndAreVerified) {
  TempDir dir;
  const ObjectVersion v = version("model.safetensors", 5 * 4096 + 7);
  {
    auto cache = open_cache(options(dir.path()));
    auto o = *cache->open_object(v);
    fill(*o);
  }
  auto cache = open_cache(options(dir.path()));
  EXPECT_EQ(cache->stats().entries, 1u);
  EXPECT_EQ(cache->stats().used_bytes, v.size);
  EXPECT_EQ(cache->cached_bytes(v), v.size);
  auto o = *cache->open_object(v);
  for (uint64_t i = 0; i < o->block_count(); ++i) {
    EXPECT_TRUE(o->has_block(i)) << i;
    std::string out(o->block_length(i), '\0');
    ASSERT_TRUE(o->read(i * 4096, out.size(), out.data()).has_value());
    EXPECT_EQ(out, block_bytes(v.key, i, out.size()));
  }
  EXPECT_EQ(cache->stats().bad_blocks, 0u);
  // Re-writing a present block is a no-op.
  EXPECT_TRUE(o->write_block(0, block_bytes(v.key, 0, 4096)).has_value());
  EXPECT_EQ(cache->stats().used_bytes, v.size);
}

TEST(BlockCache, CorruptDataByteIsMissAfterRestart) {
  TempDir dir;
  const ObjectVersion v = version("a", 4 * 4096);
  {
    auto cache = open_cache(options(dir.path()));
    fill(**cache->open_object(v));
  }
  flip_byte(entry_path(dir.path(), v, ".data"), 2 * 4096 + 17);
  auto cache = open_cache(options(dir.path()));
  auto o = *cache->open_object(v);
  EXPECT_TRUE(o->has_block(0));
  EXPECT_TRUE(o->has_block(1));
  EXPECT_FALSE(o->has_block(2));
  EXPECT_FALSE(o->has_block(2));  // stays dropped, counted once
  EXPECT_TRUE(o->has_block(3));
  EXPECT_EQ(cache->stats().bad_blocks, 1u);
  EXPECT_EQ(cache->stats().used_bytes, 3u * 4096);
  std::string out(4096, '\0');
  EXPECT_EQ(o->read(2 * 4096, 4096, out.data()).error().code, ErrorCode::kNotCached);
  // The block can be filled again, and the fix survives the next restart.
  ASSERT_TRUE(o->write_block(2, block_bytes("a", 2, 4096)).has_value());
  o.reset();
  cache.reset();
  cache = open_cache(options(dir.path()));
  o = *cache->open_object(v);
  EXPECT_TRUE(o->has_block(2));
  ASSERT_TRUE(o->read(2 * 4096, 4096, out.data()).has_value());
  EXPECT_EQ(out, block_bytes("a", 2, 4096));
}

TEST(BlockCache, CorruptRecordIsMiss) {
  TempDir dir;
  const ObjectVersion v = version("a", 2 * 4096);
  {
    auto cache = open_cache(options(dir.path()));
    fill(**cache->open_object(v));
  }
  flip_byte(entry_path(dir.path(), v, ".meta"), format::records_offset(v) + 1);  // block 0 CRC
  auto cache = open_cache(options(dir.path()));
  auto o = *cache->open_object(v);
  EXPECT_FALSE(o->has_block(0));
  EXPECT_TRUE(o->has_block(1));
  EXPECT_EQ(cache->stats().bad_blocks, 1u);
}

TEST(BlockCache, TruncatedDataFileIsMiss) {
  TempDir dir;
  const ObjectVersion v = version("a", 3 * 4096);
  {
    auto cache = open_cache(options(dir.path()));
    fill(**cache->open_object(v));
  }
  ASSERT_EQ(::truncate(entry_path(dir.path(), v, ".data").c_str(), 4096 + 10), 0);
  auto cache = open_cache(options(dir.path()));
  auto o = *cache->open_object(v);
  EXPECT_TRUE(o->has_block(0));
  EXPECT_FALSE(o->has_block(1));
  EXPECT_FALSE(o->has_block(2));
  EXPECT_EQ(o->cached_bytes(), 4096u);
}

TEST(BlockCache, GarbageMetaDropsEntry) {
  TempDir dir;
  const ObjectVersion a = version("a", 4096), b = version("b", 4096);
  {
    auto cache = open_cache(options(dir.path()));
    fill(**cache->open_object(a));
    fill(**cache->open_object(b));
  }
  std::ofstream(entry_path(dir.path(), a, ".meta"), std::ios::trunc) << "garbage, not a header";
  auto cache = open_cache(options(dir.path()));
  EXPECT_EQ(cache->stats().entries, 1u);
  EXPECT_FALSE(exists(entry_path(dir.path(), a, ".meta")));
  EXPECT_FALSE(exists(entry_path(dir.path(), a, ".data")));
  EXPECT_EQ(cache->cached_bytes(a), 0u);
  EXPECT_EQ(cache->cached_bytes(b), 4096u);
  auto o = *cache->open_object(a);
  EXPECT_FALSE(o->has_block(0));
}

TEST(BlockCache, ForeignFilesAndOtherBlockSizeAreDiscarded) {
  TempDir dir;
  const ObjectVersion v = version("a", 8192);
  {
    auto cache = open_cache(options(dir.path()));
    fill(**cache->open_object(v));
  }
  const std::string sub = dir.path() + "/v1/00/";
  std::filesystem::create_directories(sub);
  std::ofstream(sub + std::string(64, '0') + ".data") << "orphan";
  std::ofstream(sub + "x.meta.tmp") << "interrupted";
  auto cache = open_cache(options(dir.path(), 8192));
  EXPECT_EQ(cache->stats().entries, 0u);
  EXPECT_FALSE(exists(entry_path(dir.path(), v, ".data")));
  EXPECT_FALSE(exists(sub + std::string(64, '0') + ".data"));
  EXPECT_FALSE(exists(sub + "x.meta.tmp"));
}

TEST(BlockCache, NewEtagDropsUnheldOldVersion) {
  TempDir dir;
  auto cache = open_cache(options(dir.path()));
  const ObjectVersion v1 = version("a", 8192, "etag-1"), v2 = version("a", 4096, "etag-2");
  fill(**cache->open_object(v1));
  auto fresh = *cache->open_object(v2);
  EXPECT_FALSE(exists(entry_path(dir.path(), v1, ".data")));
  EXPECT_FALSE(exists(entry_path(dir.path(), v1, ".meta")));
  EXPECT_EQ(cache->cached_bytes(v1), 0u);
  EXPECT_EQ(cache->stats().entries, 1u);
  EXPECT_EQ(cache->stats().used_bytes, 0u);
  EXPECT_FALSE(fresh->has_block(0));
}

// Regression: opening a new version deleted the old version's entry while a reader held
// it, and the old reader's next fill then deleted the new one (a rolling model update
// turned into EIO and cache thrash). Versions now coexist while held.
TEST(BlockCache, HeldVersionsOfOneKeyCoexist) {
  TempDir dir;
  auto cache = open_cache(options(dir.path()));
  const ObjectVersion v1 = version("a", 8192, "etag-1"), v2 = version("a", 8192, "etag-2");
  auto old = *cache->open_object(v1);
  ASSERT_TRUE(old->write_block(0, block_bytes("v1", 0, 4096)).has_value());
  auto fresh = *cache->open_object(v2);
  ASSERT_TRUE(fresh->write_block(0, block_bytes("v2", 0, 4096)).has_value());
  // The old holder goes on filling and reading its version...
  EXPECT_FALSE(old->released());
  ASSERT_TRUE(old->write_block(1, block_bytes("v1", 1, 4096)).has_value());
  std::string out(4096, '\0');
  ASSERT_TRUE(old->read(0, 4096, out.data()).has_value());
  EXPECT_EQ(out, block_bytes("v1", 0, 4096));
  // ...and the new version is untouched by it.
  ASSERT_TRUE(cache->open_object(v2).value()->read(0, 4096, out.data()).has_value());
  EXPECT_EQ(out, block_bytes("v2", 0, 4096));
  EXPECT_EQ(cache->stats().entries, 2u);
  EXPECT_EQ(cache->cached_bytes(v1), 8192u);
  EXPECT_EQ(cache->cached_bytes(v2), 4096u);
  // Unheld, the old version is evictable like any other entry; a release drops both.
  old.reset();
  ASSERT_TRUE(cache->release("bucket", "a").has_value());
  EXPECT_EQ(cache->stats().entries, 0u);
  EXPECT_TRUE(fresh->released());
}

// Both versions survive a restart as entries of their own.
TEST(BlockCache, TwoVersionsSurviveRestart) {
  TempDir dir;
  const ObjectVersion v1 = version("a", 4096, "etag-1"), v2 = version("a", 4096, "etag-2");
  {
    auto cache = open_cache(options(dir.path()));
    auto old = *cache->open_object(v1);
    fill(*old);
    fill(**cache->open_object(v2));
  }
  auto cache = open_cache(options(dir.path()));
  EXPECT_EQ(cache->cached_bytes(v1), 4096u);
  EXPECT_EQ(cache->cached_bytes(v2), 4096u);
}

TEST(BlockCache, FilesArePrivateWhateverTheUmask) {
  TempDir dir;
  ::mkdir((dir.path() + "/shared").c_str(), 0755);  // the user's: kept as it is
  mode_t old_umask = ::umask(0);
  auto cache = open_cache(options(dir.path() + "/c"));
  auto in_shared = open_cache(options(dir.path() + "/shared/tenant/model"));
  auto o = *cache->open_object(version("a", 4096));
  fill(*o);
  ::umask(old_umask);
  auto mode_of = [](const std::string& p) {
    struct stat st {};
    EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
    return st.st_mode & 07777;
  };
  EXPECT_EQ(mode_of(dir.path() + "/c"), 0700u);
  EXPECT_EQ(mode_of(dir.path() + "/c/v1"), 0700u);
  const std::string data = entry_path(dir.path() + "/c", version("a", 4096), ".data");
  EXPECT_EQ(mode_of(data.substr(0, data.rfind('/'))), 0700u);
  EXPECT_EQ(mode_of(data), 0600u);
  EXPECT_EQ(mode_of(entry_path(dir.path() + "/c", version("a", 4096), ".meta")), 0600u);
  // Directories the cache creates are private (bucket and prefix names); one that
  // existed before is left as the user made it.
  EXPECT_EQ(mode_of(dir.path() + "/shared"), 0755u);
  EXPECT_EQ(mode_of(dir.path() + "/shared/tenant"), 0700u);
  EXPECT_EQ(mode_of(dir.path() + "/shared/tenant/model"), 0700u);
}

TEST(BlockCache, ReleaseDropsDataButHolderKeepsItsFd) {
  TempDir dir;
  auto cache = open_cache(options(dir.path()));
  const ObjectVersion v = version("a", 2 * 4096);
  auto o = *cache->open_object(v);
  fill(*o);
  EXPECT_EQ(cache->cached_bytes(v), 2u * 4096);
  ASSERT_TRUE(cache->release("bucket", "a").has_value());
  ASSERT_TRUE(cache->release("bucket", "never-cached").has_value());
  EXPECT_EQ(cache->cached_bytes(v), 0u);
  EXPECT_EQ(cache->stats().used_bytes, 0u);
  EXPECT_EQ(cache->stats().entries, 0u);
  EXPECT_FALSE(exists(entry_path(dir.path(), v, ".data")));
  EXPECT_TRUE(o->released());
  EXPECT_FALSE(o->has_block(0));
  EXPECT_EQ(o->cached_bytes(), 0u);
  std::string out(4096, '\0');
  ASSERT_EQ(::pread(o->data_fd(), out.data(), 4096, 4096), 4096);
  EXPECT_EQ(out, block_bytes("a", 1, 4096));

  // Opening the same version again starts a new, empty entry beside the held old one.
  auto again = *cache->open_object(v);
  EXPECT_NE(again.get(), o.get());
  EXPECT_FALSE(again->has_block(0));
  ASSERT_EQ(::pread(o->data_fd(), out.data(), 4096, 4096), 4096);
  EXPECT_EQ(out, block_bytes("a", 1, 4096));
}

TEST(BlockCache, SameVersionSharesOneObject) {
  TempDir dir;
  auto cache = open_cache(options(dir.path()));
  auto a = *cache->open_object(version("a", 4096));
  auto b = *cache->open_object(version("a", 4096));
  EXPECT_EQ(a.get(), b.get());
  fill(*a);
  a.reset();
  b.reset();
  // Verified state outlives the handles: no re-check, no bad block.
  auto c = *cache->open_object(version("a", 4096));
  EXPECT_TRUE(c->has_block(0));
}

// verify_all: the check made before a cache file is handed to the kernel whole.

TEST(BlockCache, VerifyAllIsTrueForAFullyWrittenEntry) {
  TempDir dir;
  auto cache = open_cache(options(dir.path()));
  auto o = *cache->open_object(version("a", 3 * 4096 + 5));
  fill(*o);
  const CacheStats before = cache->stats();
  EXPECT_TRUE(o->verify_all());
  EXPECT_TRUE(o->verify_all()) << "and again";
  EXPECT_EQ(cache->stats().hits, before.hits) << "verify_all counts no hit";
  EXPECT_EQ(cache->stats().misses, before.misses) << "verify_all counts no miss";
}

TEST(BlockCache, VerifyAllIsFalseAtOnceWhenABlockIsAbsent) {
  TempDir dir;
  auto cache = open_cache(options(dir.path()));
  auto o = *cache->open_object(version("a", 3 * 4096));
  EXPECT_FALSE(o->verify_all()) << "nothing cached";
  ASSERT_TRUE(o->write_block(0, block_bytes("a", 0, 4096)).has_value());
  ASSERT_TRUE(o->write_block(2, block_bytes("a", 2, 4096)).has_value());
  EXPECT_FALSE(o->verify_all()) << "block 1 absent";
  EXPECT_EQ(o->presence(1), BlockPresence::kAbsent);
  EXPECT_EQ(cache->stats().misses, 0u);
  ASSERT_TRUE(o->write_block(1, block_bytes("a", 1, 4096)).has_value());
  EXPECT_TRUE(o->verify_all());
}

TEST(BlockCache, VerifyAllReadsNothingWhenABlockIsAbsent) {
  TempDir dir;
  const ObjectVersion v = version("a", 3 * 4096);
  {
    auto cache = open_cache(options(dir.path()));
    auto o = *cache->open_object(v);
    ASSERT_TRUE(o->write_block(0, block_bytes("a", 0, 4096)).has_value());
    ASSERT_TRUE(o->write_block(1, block_bytes("a", 1, 4096)).has_value());
  }
  flip_byte(entry_path(dir.path(), v, ".data"), 17);  // block 0 is bad, unknown yet
  auto cache = open_cache(options(dir.path()));
  auto o = *cache->open_object(v);
  EXPECT_FALSE(o->verify_all()) << "block 2 was never written";
  EXPECT_EQ(o->presence(0), BlockPresence::kUnverified) << "no block was read back";
  EXPECT_EQ(o->presence(1), BlockPresence::kUnverified);
  EXPECT_EQ(cache->stats().bad_blocks, 0u);
}

TEST(BlockCache, VerifyAllAfterRestartChecksAndAcceptsAnIntactDataFile) {
  TempDir dir;
  const ObjectVersion v = version("a", 4 * 4096 + 1);
  {
    auto cache = open_cache(options(dir.path()));
    fill(**cache->open_object(v));
  }
  auto cache = open_cache(options(dir.path()));
  auto o = *cache->open_object(v);
  for (uint64_t i = 0; i < o->block_count(); ++i) {
    EXPECT_EQ(o->presence(i), BlockPresence::kUnverified) << i;
  }
  EXPECT_TRUE(o->verify_all());
  for (uint64_t i = 0; i < o->block_count(); ++i) {
    EXPECT_EQ(o->presence(i), BlockPresence::kVerified) << i;
  }
  EXPECT_EQ(cache->stats().bad_blocks, 0u);
  EXPECT_EQ(cache->stats().hits, 0u);
  EXPECT_EQ(cache->stats().misses, 0u);
  EXPECT_EQ(cache->stats().used_bytes, v.size);
}

TEST(BlockCache, VerifyAllAfterRestartDropsACorruptedBlockAndIsFalse) {
  TempDir dir;
  const ObjectVersion v = version("a", 4 * 4096);
  {
    auto cache = open_cache(options(dir.path()));
    fill(**cache->open_object(v));
  }
  flip_byte(entry_path(dir.path(), v, ".data"), 1 * 4096 + 100);
  auto cache = open_cache(options(dir.path()));
  auto o = *cache->open_object(v);
  EXPECT_FALSE(o->verify_all());
  EXPECT_EQ(o->presence(1), BlockPresence::kAbsent) << "the bad block is dropped";
  EXPECT_EQ(o->presence(0), BlockPresence::kVerified);
  EXPECT_EQ(cache->stats().bad_blocks, 1u);
  EXPECT_EQ(cache->stats().used_bytes, 3u * 4096);
  EXPECT_FALSE(o->verify_all()) << "still incomplete";
  EXPECT_EQ(cache->stats().bad_blocks, 1u) << "counted once";
  // Filled again, the entry is whole.
  ASSERT_TRUE(o->write_block(1, block_bytes("a", 1, 4096)).has_value());
  EXPECT_TRUE(o->verify_all());
}

// Replies splice from reply_fd(): without read-ahead while blocks are missing (read-ahead
// would zero-fill the holes), the read-ahead fd once the file is whole.
TEST(BlockCache, ReplyFdAvoidsReadAheadOnlyWhileBlocksAreMissing) {
  TempDir dir;
  auto cache = open_cache(options(dir.path()));
  const ObjectVersion v = version("a", 3 * 4096);
  auto o = *cache->open_object(v);
  ASSERT_TRUE(o->write_block(0, block_bytes("a", 0, 4096)).has_value());
  const int sparse = o->reply_fd();
  EXPECT_NE(sparse, o->data_fd()) << "a file with holes is read without read-ahead";
  std::string got(4096, '\0');
  ASSERT_EQ(::pread(sparse, got.data(), got.size(), 0), 4096);
  EXPECT_EQ(got, block_bytes("a", 0, 4096)) << "the same file";
  ASSERT_TRUE(o->write_block(1, block_bytes("a", 1, 4096)).has_value());
  ASSERT_TRUE(o->write_block(2, block_bytes("a", 2, 4096)).has_value());
  EXPECT_EQ(o->reply_fd(), o->data_fd()) << "a whole file is read with read-ahead";
}

TEST(BlockCache, VerifyAllIsFalseAfterRelease) {
  TempDir dir;
  auto cache = open_cache(options(dir.path()));
  auto o = *cache->open_object(version("a", 2 * 4096));
  fill(*o);
  ASSERT_TRUE(o->verify_all());
  ASSERT_TRUE(cache->release("bucket", "a").has_value());
  EXPECT_FALSE(o->verify_all());
}

TEST(BlockCache, SecondOpenOfTheDirectoryIsRefused) {
  TempDir dir;
  auto first = open_cache(options(dir.path()));
  auto second = BlockCache::open(options(dir.path()));
  ASSERT_FALSE(second.has_value());
  EXPECT_NE(second.error().message.find("in use"), std::string::npos);
}

TEST(BlockCache, UncreatableDirectoryFailsClearly) {
  TempDir dir;
  std::ofstream(dir.path() + "/file") << "x";
  auto cache = BlockCache::open(options(dir.path() + "/file/cache"));
  ASSERT_FALSE(cache.has_value());
  EXPECT_EQ(cache.error().code, ErrorCode::kIo);
  EXPECT_NE(cache.error().message.find("cannot create cache directory"), std::string::npos)
      << cache.error().message;
}

}  // namespace
}  // namespace nacre::cache

namespace nacre::cache {
namespace {

std::shared_ptr<const BlockBuffer> buffer_of(CachedObject& o, std::string_view bytes) {
  auto b = o.new_buffer();
  EXPECT_EQ(b->append(bytes), bytes.size());
  return b;
}

TEST(BlockBufferPool, BuffersAreAlignedForDirectIoAndReusedOnceLetGo) {
  auto pool = BlockBufferPool::create(1 << 20);
  auto a = pool->acquire();
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a->data()) % BlockBuffer::kAlign, 0u);
  EXPECT_EQ(a->capacity(), 1u << 20);
  EXPECT_EQ(a->append(std::string(3u << 20, 'x')), 1u << 20) << "append stops at capacity";
  const char* where = a->data();
  a.reset();
  auto again = pool->acquire();
  EXPECT_EQ(again->data(), where) << "a buffer let go is reused, not allocated anew";
  EXPECT_EQ(again->size(), 0u) << "and comes back empty";
}

TEST(BlockCache, BufferedBlocksAreStoredKeptInMemoryAndLetGo) {
  TempDir dir;
  auto o_dir = options(dir.path());
  o_dir.memory_bytes = 2 * 4096;  // two blocks
  auto cache = open_cache(o_dir);
  const auto v = version("a", 3 * 4096 + 100);  // a partial last block, written by pwrite
  auto o = *cache->open_object(v);
  for (uint64_t i = 0; i < 4; ++i) {
    auto bytes = block_bytes("a", i, o->block_length(i));
    ASSERT_TRUE(o->write_block(i, buffer_of(*o, bytes)).has_value());
  }
  // The bound: the first two were kept, the later ones not (no older one dropped).
  ASSERT_NE(o->recent_block(0), nullptr);
  ASSERT_NE(o->recent_block(1), nullptr);
  EXPECT_EQ(o->recent_block(2), nullptr);
  EXPECT_EQ(o->recent_block(3), nullptr);
  EXPECT_TRUE(o->recent_block(1)->view() == block_bytes("a", 1, 4096));
  // Stored on disk whatever was kept: every byte reads back from the file.
  std::string all(v.size, '\0');
  ASSERT_TRUE(o->read(0, v.size, all.data()).has_value());
  for (uint64_t i = 0; i < 4; ++i) {
    EXPECT_TRUE(all.substr(i * 4096, o->block_length(i)) == block_bytes("a", i, o->block_length(i)))
        << "block " << i;
  }
  struct stat st {};
  ASSERT_EQ(::stat(entry_path(dir.path(), v, ".data").c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), v.size) << "the data file ends with the object";
  EXPECT_TRUE(o->verify_all());
  // Letting go of one makes room for another.
  o->forget_recent(0);
  EXPECT_EQ(o->recent_block(0), nullptr);
  auto o2 = *cache->open_object(version("b", 4096));
  ASSERT_TRUE(o2->write_block(0, buffer_of(*o2, block_bytes("b", 0, 4096))).has_value());
  EXPECT_NE(o2->recent_block(0), nullptr);
  // Dropping the entry (release) lets go of its memory; a view held stays valid.
  auto held = o->recent_block(1);
  ASSERT_TRUE(cache->release("bucket", "a").has_value());
  EXPECT_EQ(o->recent_block(1), nullptr);
  EXPECT_TRUE(held->view() == block_bytes("a", 1, 4096));
}

TEST(BlockCache, LastHolderGoneLetsGoOfTheMemory) {
  TempDir dir;
  auto o_dir = options(dir.path());
  o_dir.memory_bytes = 4096;
  auto cache = open_cache(o_dir);
  {
    auto o = *cache->open_object(version("a", 4096));
    ASSERT_TRUE(o->write_block(0, buffer_of(*o, block_bytes("a", 0, 4096))).has_value());
    ASSERT_NE(o->recent_block(0), nullptr);
  }
  // The whole budget is free again: another entry's block is kept.
  auto o2 = *cache->open_object(version("b", 4096));
  ASSERT_TRUE(o2->write_block(0, buffer_of(*o2, block_bytes("b", 0, 4096))).has_value());
  EXPECT_NE(o2->recent_block(0), nullptr);
}

}  // namespace
}  // namespace nacre::cache
