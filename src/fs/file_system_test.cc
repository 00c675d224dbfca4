// The file system core over the in-memory object store and a real cache in a
// temporary directory: no FUSE, no network.
#include "fs/file_system.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <random>
#include <set>
#include <thread>

#include "cache/test_util.h"
#include "fs/errno_map.h"
#include "fs/mount_source.h"
#include "fs/read_result_bytes.h"
#include "s3/faulty_object_client.h"
#include "s3/memory_object_client.h"

namespace nacre::fs {
namespace {

using namespace std::chrono_literals;

std::string random_bytes(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

// Options under which reads fetch exactly the 1 MiB blocks they touch: no
// hydration, no prefetch beyond one block, one block per GET.
FsOptions block_by_block() {
  FsOptions o;
  o.hydrate_min_size = 1ull << 40;
  o.max_window = o.initial_window = 1 << 20;
  o.part_size = 1 << 20;
  return o;
}

class FileSystemTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/nacre-fs-test-XXXXXX";
    dir_ = mkdtemp(tmpl);
    store_.create_bucket("b");
  }
  void TearDown() override {
    fs_.reset();
    pool_.reset();
    cache_.reset();
    std::filesystem::remove_all(dir_);
  }
  void put(const std::string& key, const std::string& data, s3::UserMetadata meta = {}) {
    ASSERT_TRUE(store_.put_object({"b", key, s3::Body::from_memory(data), std::move(meta), ""}));
  }
  FileSystem& mount(FsOptions o = {}) {
    fs_.reset();
    pool_.reset();
    cache_.reset();
    cache::CacheOptions co;
    co.dir = cache_dir_.empty() ? dir_ : cache_dir_;
    co.max_bytes = cache_max_bytes_;
    co.min_free_bytes = 0;
    co.memory_bytes = cache_memory_bytes_;
    auto cache = cache::BlockCache::open(co);
    EXPECT_TRUE(cache) << cache.error().describe();
    cache_ = std::move(*cache);
    pool_ = std::make_unique<FetchPool>(4);
    pool_->start();
    o.bucket = "b";
    if (o.prefix.empty()) o.prefix = "p/";
    o.uid = 1000;
    o.gid = 1000;
    fs_ = std::make_unique<FileSystem>(client_, *cache_, *pool_, metrics_, o);
    return *fs_;
  }
  std::string read_all(FileSystem& fs, Ino ino, size_t chunk = 1 << 20) {
    auto h = fs.open(ino, O_RDONLY);
    EXPECT_TRUE(h) << h.error().describe();
    std::string out;
    for (uint64_t off = 0;; off += chunk) {
      auto r = fs.read(h->fh, off, chunk);
      EXPECT_TRUE(r) << r.error().describe();
      if (!r || r->length == 0) break;
      out += pread_result(*r);
    }
    fs.release(h->fh);
    return out;
  }
  static std::string pread_result(const ReadResult& r) { return read_result_bytes(r); }
  Ino lookup_path(FileSystem& fs, const std::string& path) {
    Ino ino = kRootIno;
    size_t pos = 0;
    while (pos < path.size()) {
      size_t slash = path.find('/', pos);
      auto a = fs.lookup(ino, path.substr(pos, slash - pos));
      if (!a) return 0;
      ino = a->ino;
      if (slash == std::string::npos) break;
      pos = slash + 1;
    }
    return ino;
  }

  std::string dir_;
  std::string cache_dir_;  // default: dir_
  uint64_t cache_max_bytes_ = 1ull << 30;
  uint64_t cache_memory_bytes_ = 96ull << 20;
  s3::MemoryObjectClient store_;
  s3::FaultyObjectClient client_{store_};
  Metrics metrics_;
  std::unique_ptr<cache::BlockCache> cache_;
  std::unique_ptr<FetchPool> pool_;
  std::unique_ptr<FileSystem> fs_;
};

TEST_F(FileSystemTest, ReaddirIsOneListAndHidesKeysThatCannotBeNames) {
  put("p/a", "1");
  put("p/d/x", "2");
  put("p/empty/", "");
  put("p/bad//k", "3");
  put("p/c/./d", "4");
  put("p/" + std::string(256, 'n'), "5");
  put("p/same", "file");
  put("p/same/inner", "dir wins");
  put("q/outside", "never");
  auto& fs = mount();
  auto entries = fs.readdir(kRootIno);
  ASSERT_TRUE(entries) << entries.error().describe();
  std::map<std::string, mode_t> names;
  for (auto& e : *entries) names[e.name] = e.type;
  EXPECT_EQ(names, (std::map<std::string, mode_t>{{"a", S_IFREG},
                                                  {"bad", S_IFDIR},
                                                  {"c", S_IFDIR},
                                                  {"d", S_IFDIR},
                                                  {"empty", S_IFDIR},
                                                  {"same", S_IFDIR}}));
  EXPECT_EQ(store_.request_count("ListObjectsV2"), 1);
  EXPECT_EQ(store_.request_count("HeadObject"), 0);
  EXPECT_GE(metrics_.hidden_keys.load(), 1u);
  EXPECT_EQ(metrics_.shadowed_keys.load(), 1u);
  // The bad key's directory holds nothing a name can reach.
  Ino bad = lookup_path(fs, "bad");
  ASSERT_NE(bad, 0u);
  EXPECT_TRUE(fs.readdir(bad)->empty());
  Ino c = lookup_path(fs, "c");
  EXPECT_TRUE(fs.readdir(c)->empty()) << "'c/./d' must stay hidden";
  EXPECT_FALSE(fs.lookup(kRootIno, "..")) << "no name leads out of the mount";
}

TEST_F(FileSystemTest, LookupWithoutListingUsesHeadAndAppliesFsxMetadata) {
  put("p/weights", "data",
      {{"file-permissions", "0100600"},
       {"file-owner", "1234"},
       {"file-group", "99"},
       {"file-mtime", "1700000000123456789ns"}});
  put("p/link", "weights", {{"file-permissions", "0120777"}});
  auto& fs = mount();
  auto a = fs.lookup(kRootIno, "weights");
  ASSERT_TRUE(a) << a.error().describe();
  EXPECT_EQ(a->mode, S_IFREG | 0600);
  EXPECT_EQ(a->uid, 1234u);
  EXPECT_EQ(a->gid, 99u);
  EXPECT_EQ(a->mtime.tv_sec, 1700000000);
  EXPECT_EQ(a->mtime.tv_nsec, 123456789);
  EXPECT_EQ(store_.request_count("HeadObject"), 1);
  auto l = fs.lookup(kRootIno, "link");
  ASSERT_TRUE(l);
  EXPECT_EQ(l->mode & S_IFMT, static_cast<mode_t>(S_IFLNK));
  EXPECT_EQ(*fs.readlink(l->ino), "weights");
  auto missing = fs.lookup(kRootIno, "nope");
  ASSERT_FALSE(missing);
  EXPECT_EQ(to_errno(missing.error()), ENOENT);
  int heads = store_.request_count("HeadObject");
  EXPECT_FALSE(fs.lookup(kRootIno, "nope"));
  EXPECT_EQ(store_.request_count("HeadObject"), heads) << "negative lookups are cached for the TTL";
}

TEST_F(FileSystemTest, ReadsMatchTheObjectAtEveryOffset) {
  std::string data = random_bytes(5 * 1048576 + 12345, 7);
  put("p/f", data);
  auto& fs = mount();
  Ino ino = lookup_path(fs, "f");
  EXPECT_TRUE(read_all(fs, ino) == data);
  auto h = fs.open(ino, O_RDONLY);
  std::mt19937 rng(42);
  for (int i = 0; i < 200; ++i) {
    uint64_t off = rng() % data.size();
    size_t len = 1 + rng() % 300000;
    auto r = fs.read(h->fh, off, len);
    ASSERT_TRUE(r);
    ASSERT_TRUE(pread_result(*r) == data.substr(off, len)) << "offset " << off << " length " << len;
  }
  fs.release(h->fh);
}

TEST_F(FileSystemTest, ConcurrentReadersOfAColdFileFetchItOnce) {
  std::string data = random_bytes(24 * 1048576, 3);
  put("p/big", data);
  FsOptions o;
  o.hydrate_min_size = 1ull << 40;  // no hydration: readers alone drive fetches
  auto& fs = mount(o);
  Ino ino = lookup_path(fs, "big");
  std::vector<std::thread> readers;
  std::atomic<int> good{0};
  for (int t = 0; t < 4; ++t) {
    readers.emplace_back([&] {
      if (read_all(fs, ino, 128 * 1024) == data) ++good;
    });
  }
  for (auto& r : readers) r.join();
  EXPECT_EQ(good, 4);
  EXPECT_EQ(store_.bytes_served(), data.size()) << "single-flight: one GET per block";
}

TEST_F(FileSystemTest, RemoteOverwriteNeverMixesVersions) {
  std::string v1 = random_bytes(4 * 1048576, 1), v2 = random_bytes(4 * 1048576, 2);
  put("p/f", v1);
  auto& fs = mount(block_by_block());
  Ino ino = lookup_path(fs, "f");
  auto h = fs.open(ino, O_RDONLY);
  ASSERT_TRUE(h);
  auto first = fs.read(h->fh, 0, 1 << 20);
  ASSERT_TRUE(first);
  EXPECT_TRUE(pread_result(*first) == v1.substr(0, 1 << 20));
  put("p/f", v2);
  // Far from what was read or prefetched: needs a new GET of a gone version.
  // The outcome is deterministic: block 3 was never fetched, its version is gone from
  // the store, and the GET pinned by If-Match fails. Never bytes of v2.
  auto later = fs.read(h->fh, 3 * 1048576, 1 << 20);
  ASSERT_FALSE(later.has_value()) << "read bytes although the version is gone";
  EXPECT_EQ(later.error().code, ErrorCode::kPreconditionFailed) << later.error().describe();
  EXPECT_EQ(to_errno(later.error()), EIO);
  // What was cached of v1 is still served to this handle.
  auto again = fs.read(h->fh, 0, 1 << 20);
  ASSERT_TRUE(again);
  EXPECT_TRUE(pread_result(*again) == v1.substr(0, 1 << 20));
  fs.release(h->fh);
}

TEST_F(FileSystemTest, ImportPolicyDecidesWhatChangesBecomeVisible) {
  put("p/keep", "old");
  put("p/gone", "x");
  FsOptions o;
  o.metadata_ttl = 0ms;
  o.import = {false, false, false};
  auto& fs = mount(o);
  ASSERT_EQ(fs.readdir(kRootIno)->size(), 2u);
  put("p/new", "n");
  put("p/keep", "changed!");
  ASSERT_TRUE(store_.delete_object("b", "p/gone"));
  auto after = fs.readdir(kRootIno);
  ASSERT_TRUE(after);
  std::set<std::string> names;
  for (auto& e : *after) names.insert(e.name);
  EXPECT_EQ(names, (std::set<std::string>{"gone", "keep"}));
  EXPECT_EQ(fs.lookup(kRootIno, "keep")->size, 3u) << "CHANGED is off: the old version stays";

  // With everything imported the same changes show (another prefix, same store).
  fs_.reset();
  put("r/keep", "old");
  put("r/gone", "x");
  FsOptions all;
  all.prefix = "r/";
  all.metadata_ttl = 0ms;
  auto& fs2 = mount(all);
  ASSERT_EQ(fs2.readdir(kRootIno)->size(), 2u);
  put("r/new", "n");
  put("r/keep", "changed!");
  ASSERT_TRUE(store_.delete_object("b", "r/gone"));
  names.clear();
  auto listed = fs2.readdir(kRootIno);
  ASSERT_TRUE(listed);
  for (auto& e : *listed) names.insert(e.name);
  EXPECT_EQ(names, (std::set<std::string>{"keep", "new"}));
  EXPECT_EQ(fs2.lookup(kRootIno, "keep")->size, 8u);
}

TEST_F(FileSystemTest, WritesAreRefusedWithErofs) {
  put("p/f", "x");
  auto& fs = mount();
  Ino ino = lookup_path(fs, "f");
  auto w = fs.open(ino, O_WRONLY);
  ASSERT_FALSE(w);
  EXPECT_EQ(to_errno(w.error()), EROFS);
  EXPECT_FALSE(fs.open(ino, O_RDONLY | O_TRUNC));
}

TEST_F(FileSystemTest, S3OutageGivesEioAfterRetriesWhileCachedDataIsServed) {
  std::string data = random_bytes(3 * 1048576, 5);
  put("p/f", data);
  auto& fs = mount(block_by_block());
  Ino ino = lookup_path(fs, "f");
  auto h = fs.open(ino, O_RDONLY);
  ASSERT_TRUE(fs.read(h->fh, 0, 1 << 20));
  client_.fail_all(Error{ErrorCode::kNetwork, "injected outage", "", "", 0});
  auto cached = fs.read(h->fh, 0, 4096);
  ASSERT_TRUE(cached) << "cached blocks keep being served";
  EXPECT_TRUE(pread_result(*cached) == data.substr(0, 4096));
  auto cold = fs.read(h->fh, 2 * 1048576 + 5, 4096);
  ASSERT_FALSE(cold);
  EXPECT_EQ(to_errno(cold.error()), EIO);
  fs.release(h->fh);
}

TEST_F(FileSystemTest, ReleaseDropsCachedDataAndTheFileStillReads) {
  std::string data = random_bytes(2 * 1048576, 9);
  put("p/f", data);
  auto& fs = mount();
  Ino ino = lookup_path(fs, "f");
  EXPECT_TRUE(read_all(fs, ino) == data);
  EXPECT_EQ(*fs.getxattr(ino, "user.nacre.cached_bytes"), std::to_string(data.size()));
  ASSERT_TRUE(fs.setxattr(ino, "user.nacre.release", "1"));
  EXPECT_EQ(*fs.getxattr(ino, "user.nacre.cached_bytes"), "0");
  EXPECT_TRUE(read_all(fs, ino) == data);
  EXPECT_EQ(*fs.getxattr(ino, "user.nacre.s3_url"), "s3://b/p/f");
}

TEST_F(FileSystemTest, ASymlinkFirstSeenInAListingGetsANewInodeNotANewType) {
  put("p/link", "target", {{"file-permissions", "0120777"}});
  FsOptions o;
  o.metadata_ttl = 0ms;
  auto& fs = mount(o);
  auto entries = fs.readdir(kRootIno);
  ASSERT_TRUE(entries);
  ASSERT_EQ(entries->size(), 1u);
  Ino listed = (*entries)[0].ino;
  EXPECT_EQ((*entries)[0].type, static_cast<mode_t>(S_IFREG)) << "LIST carries no metadata";
  auto a = fs.lookup(kRootIno, "link");  // TTL 0: a HEAD reads the metadata
  ASSERT_TRUE(a);
  EXPECT_EQ(a->mode & S_IFMT, static_cast<mode_t>(S_IFLNK));
  EXPECT_NE(a->ino, listed) << "an inode must never change type under the kernel";
  EXPECT_EQ(*fs.readlink(a->ino), "target");
}

TEST_F(FileSystemTest, ReadingADeletedVersionIsEioNotEnoent) {
  put("p/f", random_bytes(3 * 1048576, 4));
  auto& fs = mount(block_by_block());
  Ino ino = lookup_path(fs, "f");
  auto h = fs.open(ino, O_RDONLY);
  ASSERT_TRUE(fs.read(h->fh, 0, 4096));
  ASSERT_TRUE(store_.delete_object("b", "p/f"));
  auto r = fs.read(h->fh, 2 * 1048576, 4096);
  ASSERT_FALSE(r);
  EXPECT_EQ(to_errno(r.error()), EIO) << r.error().describe();
  fs.release(h->fh);
}

TEST_F(FileSystemTest, ADirectoryReplacedByAFileBecomesAFileUnderANewInode) {
  put("p/x/inner", "1");
  FsOptions o;
  o.metadata_ttl = 0ms;
  auto& fs = mount(o);
  auto before = fs.readdir(kRootIno);
  ASSERT_TRUE(before);
  ASSERT_EQ(before->size(), 1u);
  EXPECT_EQ((*before)[0].type, static_cast<mode_t>(S_IFDIR));
  ASSERT_TRUE(store_.delete_object("b", "p/x/inner"));
  put("p/x", "now a file");
  auto after = fs.readdir(kRootIno);
  ASSERT_TRUE(after);
  ASSERT_EQ(after->size(), 1u);
  EXPECT_EQ((*after)[0].type, static_cast<mode_t>(S_IFREG));
  EXPECT_NE((*after)[0].ino, (*before)[0].ino);
}

TEST(MountSource, Parses) {
  EXPECT_EQ(parse_mount_source("s3://bkt/models/mistral")->prefix, "models/mistral/");
  EXPECT_EQ(parse_mount_source("bkt")->prefix, "");
  EXPECT_EQ(parse_mount_source("s3://bkt/")->bucket, "bkt");
  EXPECT_FALSE(parse_mount_source("s3://bkt/a/../c"));
  EXPECT_FALSE(parse_mount_source("s3://"));
  // The bucket forms the default cache directory's path: no path tricks.
  EXPECT_FALSE(parse_mount_source("s3://../etc"));
  EXPECT_FALSE(parse_mount_source("s3://.."));
  EXPECT_FALSE(parse_mount_source("s3://a..b/p"));
}

TEST(MountSource, MissingBucketOrPrefixFailsTheCheck) {
  s3::MemoryObjectClient store;
  store.create_bucket("b");
  ASSERT_TRUE(store.put_object({"b", "models/x", s3::Body::from_memory("1"), {}, ""}));
  EXPECT_TRUE(check_mount_source(store, {"b", "models/"}, true));
  EXPECT_TRUE(check_mount_source(store, {"b", ""}, true));
  auto no_prefix = check_mount_source(store, {"b", "nothing/"}, true);
  ASSERT_FALSE(no_prefix);
  EXPECT_NE(no_prefix.error().message.find("holds no objects"), std::string::npos);
  EXPECT_EQ(check_mount_source(store, {"nobucket", ""}, false).error().code,
            ErrorCode::kNoSuchBucket);
}

TEST(MountSource, EmptyPrefixMountsReadWriteOnly) {
  s3::MemoryObjectClient store;
  store.create_bucket("b");
  EXPECT_TRUE(check_mount_source(store, {"b", "fresh-volume/"}, false));
  EXPECT_FALSE(check_mount_source(store, {"b", "fresh-volume/"}, true));
}

// ------------------------------------------------------------------------
// Regressions from the outside review of the read path (issue: "the read path
// never serves a wrong byte"). Each is named after what broke.

// A reply spliced from a bare fd that a concurrent release (or a version change)
// closed mid-reply: EBADF, or another file's bytes once the number was reused.
TEST_F(FileSystemTest, ReplyKeepsTheCacheFileOpenWhileAReleaseSwapsTheFetcher) {
  std::string data = random_bytes(2 * 1048576, 11);
  put("p/f", data);
  cache_memory_bytes_ = 0;  // no block kept in memory: replies are spliced from the file
  auto& fs = mount(block_by_block());
  Ino ino = lookup_path(fs, "f");
  auto h = fs.open(ino, O_RDONLY);
  ASSERT_TRUE(h);
  auto reply = fs.read(h->fh, 0, 1 << 20);  // the adapter is "still splicing" this
  ASSERT_TRUE(reply);
  ASSERT_GE(reply->fd, 0);
  ASSERT_TRUE(fs.setxattr(ino, "user.nacre.release", "1"));
  auto next = fs.read(h->fh, 1 << 20, 1 << 20);  // swaps the handle's fetcher
  ASSERT_TRUE(next);
  fs.release(h->fh);  // drops every other reference to the old cache object
  // Other files opened meanwhile would reuse a closed fd number.
  int other = ::open("/dev/zero", O_RDONLY);
  EXPECT_NE(other, reply->fd) << "the reply's fd was closed and its number reused";
  EXPECT_TRUE(pread_result(*reply) == data.substr(0, 1 << 20));
  ::close(other);
}

TEST_F(FileSystemTest, ReplyFromMemoryKeepsItsBlocksWhileAReleaseDropsThem) {
  std::string data = random_bytes(2 * 1048576, 13);
  put("p/f", data);
  auto& fs = mount(block_by_block());
  Ino ino = lookup_path(fs, "f");
  auto h = fs.open(ino, O_RDONLY);
  ASSERT_TRUE(h);
  // Straddles the two blocks: a view of each, both just fetched and kept in memory.
  auto reply = fs.read(h->fh, 1000, 1 << 20);
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->fd, -1);
  ASSERT_EQ(reply->pieces.size(), 2u) << "the reply is not served from the blocks in memory";
  ASSERT_TRUE(fs.setxattr(ino, "user.nacre.release", "1"));  // drops the entry's memory
  fs.release(h->fh);
  // Another file fetched meanwhile takes block buffers from the pool: one handed back
  // while the reply still pointed into it would now hold g's bytes.
  put("p/g", random_bytes(4 * 1048576, 15));
  Ino g = lookup_path(fs, "g");
  ASSERT_EQ(read_all(fs, g).size(), 4u * 1048576);
  EXPECT_TRUE(pread_result(*reply) == data.substr(1000, 1 << 20));
}

TEST_F(FileSystemTest, ASequentialReaderLetsGoOfTheBlocksItHasRead) {
  std::string data = random_bytes(4 * 1048576, 14);
  put("p/f", data);
  auto& fs = mount(block_by_block());
  Ino ino = lookup_path(fs, "f");
  auto h = fs.open(ino, O_RDONLY);
  ASSERT_TRUE(h);
  auto first = fs.read(h->fh, 0, 1 << 20);  // the whole of block 0
  ASSERT_TRUE(first);
  ASSERT_EQ(first->pieces.size(), 1u);
  first = {};
  // Block 0 was let go of once read to its end: read again, it comes from the file.
  auto again = fs.read(h->fh, 0, 4096);
  ASSERT_TRUE(again);
  EXPECT_GE(again->fd, 0) << "block 0 is still held in memory after its reader had it";
  EXPECT_TRUE(pread_result(*again) == data.substr(0, 4096));
  fs.release(h->fh);
}

// `nacre release` during reads turned into EIO (the fetcher's blocks were dropped).
TEST_F(FileSystemTest, ReleaseDuringReadsIsNotAnError) {
  std::string data = random_bytes(8 * 1048576, 12);
  put("p/f", data);
  auto& fs = mount(block_by_block());
  Ino ino = lookup_path(fs, "f");
  auto h = fs.open(ino, O_RDONLY);
  std::atomic<bool> stop{false};
  std::thread releaser([&] {
    while (!stop) {
      (void)fs.setxattr(ino, "user.nacre.release", "1");
      std::this_thread::sleep_for(1ms);
    }
  });
  std::string out;
  for (uint64_t off = 0; off < data.size(); off += 256 * 1024) {
    auto r = fs.read(h->fh, off, 256 * 1024);
    ASSERT_TRUE(r) << "offset " << off << ": " << r.error().describe();
    out += pread_result(*r);
  }
  stop = true;
  releaser.join();
  EXPECT_TRUE(out == data);
  fs.release(h->fh);
}

// One cache entry per key: opening a new version deleted the old version's entry
// while a reader held it, and the old reader's next fill deleted the new one.
TEST_F(FileSystemTest, OldAndNewVersionReadersKeepTheirCacheEntries) {
  std::string v1 = random_bytes(4 * 1048576, 13), v2 = random_bytes(4 * 1048576, 14);
  put("p/f", v1);
  FsOptions o = block_by_block();
  o.metadata_ttl = 0ms;
  auto& fs = mount(o);
  Ino old_ino = lookup_path(fs, "f");
  auto a = fs.open(old_ino, O_RDONLY);
  ASSERT_TRUE(a);
  ASSERT_TRUE(fs.read(a->fh, 0, 1 << 20));
  put("p/f", v2);
  Ino new_ino = lookup_path(fs, "f");
  EXPECT_EQ(read_all(fs, new_ino), v2);
  const uint64_t served = store_.bytes_served();
  // The old reader goes on with what it has cached...
  auto again = fs.read(a->fh, 0, 1 << 20);
  ASSERT_TRUE(again) << again.error().describe();
  EXPECT_TRUE(pread_result(*again) == v1.substr(0, 1 << 20));
  // ...and the new version's entry is intact: read again without a GET.
  EXPECT_EQ(read_all(fs, new_ino), v2);
  EXPECT_EQ(store_.bytes_served(), served) << "the new version was refetched";
  EXPECT_EQ(cache_->stats().entries, 2u) << "both versions coexist while held";
  fs.release(a->fh);
}

// The page cache belongs to the inode: an old handle reading after an open saw a new
// ETag filled pages that new handles then read. A new version with handles of the old
// one open now gets a new inode (the kernel re-walks the path on ESTALE).
TEST_F(FileSystemTest, ANewVersionWhileOpenGetsANewInodeAndTheOldOneIsStale) {
  std::string v1 = random_bytes(1048576, 15), v2 = random_bytes(2 * 1048576, 16);
  put("p/f", v1);
  FsOptions o = block_by_block();
  o.metadata_ttl = 0ms;
  auto& fs = mount(o);
  Ino old_ino = lookup_path(fs, "f");
  auto a = fs.open(old_ino, O_RDONLY);
  ASSERT_TRUE(a);
  put("p/f", v2);
  Ino new_ino = lookup_path(fs, "f");
  EXPECT_NE(new_ino, old_ino);
  auto reopen = fs.open(old_ino, O_RDONLY);
  ASSERT_FALSE(reopen);
  EXPECT_EQ(to_errno(reopen.error()), ESTALE) << reopen.error().describe();
  auto b = fs.open(new_ino, O_RDONLY);
  ASSERT_TRUE(b);
  // fstat of the old handle: its own version's attributes.
  EXPECT_EQ(fs.getattr(old_ino)->size, v1.size());
  EXPECT_EQ(fs.getattr(new_ino)->size, v2.size());
  fs.release(a->fh);
  fs.release(b->fh);
  // With no handle of the old version open, a change keeps the inode.
  put("p/f", v1);
  EXPECT_EQ(lookup_path(fs, "f"), new_ino);
}

// The old inode's forget erased the key map entry that by then named the new inode,
// so the next listing gave the same key a third inode.
TEST_F(FileSystemTest, ForgetOfAnOldInodeKeepsTheNewInodesKey) {
  put("p/f", "one");
  FsOptions o;
  o.metadata_ttl = 0ms;
  auto& fs = mount(o);
  Ino old_ino = lookup_path(fs, "f");
  auto a = fs.open(old_ino, O_RDONLY);
  ASSERT_TRUE(a);
  put("p/f", "two!");
  Ino new_ino = lookup_path(fs, "f");
  ASSERT_NE(new_ino, old_ino);
  fs.release(a->fh);
  fs.forget(old_ino, 1);
  auto entries = fs.readdir(kRootIno);
  ASSERT_TRUE(entries);
  ASSERT_EQ(entries->size(), 1u);
  EXPECT_EQ((*entries)[0].ino, new_ino);
  EXPECT_EQ(lookup_path(fs, "f"), new_ino);
}

// fstat of an open file whose object was deleted failed with ENOENT.
TEST_F(FileSystemTest, FstatOfAnOpenFileWhoseObjectWasDeleted) {
  put("p/f", "12345");
  FsOptions o;
  o.metadata_ttl = 0ms;
  auto& fs = mount(o);
  Ino ino = lookup_path(fs, "f");
  auto h = fs.open(ino, O_RDONLY);
  ASSERT_TRUE(h);
  ASSERT_TRUE(store_.delete_object("b", "p/f"));
  auto a = fs.getattr(ino);
  ASSERT_TRUE(a) << a.error().describe();
  EXPECT_EQ(a->size, 5u);
  auto gone = fs.lookup(kRootIno, "f");
  ASSERT_FALSE(gone);
  EXPECT_EQ(to_errno(gone.error()), ENOENT);
  fs.release(h->fh);
}

// Directories were never revalidated: a deleted prefix stayed visible despite DELETED.
TEST_F(FileSystemTest, DeletedPrefixDisappearsUnderTheDeletedPolicy) {
  put("p/d/x", "1");
  FsOptions o;
  o.metadata_ttl = 0ms;
  auto& fs = mount(o);
  ASSERT_NE(lookup_path(fs, "d"), 0u);
  ASSERT_TRUE(store_.delete_object("b", "p/d/x"));
  auto gone = fs.lookup(kRootIno, "d");
  ASSERT_FALSE(gone) << "a deleted prefix is still visible";
  EXPECT_EQ(to_errno(gone.error()), ENOENT);
  // Without DELETED it stays.
  put("p/e/x", "1");
  o.import.deleted = false;
  auto& kept = mount(o);
  ASSERT_TRUE(kept.readdir(kRootIno));  // imported: from now on only the policy removes
  ASSERT_NE(lookup_path(kept, "e"), 0u);
  ASSERT_TRUE(store_.delete_object("b", "p/e/x"));
  EXPECT_TRUE(kept.lookup(kRootIno, "e"));
}

// EISDIR and ENOTDIR came out as EINVAL; a stale inode as ENOENT.
TEST_F(FileSystemTest, DirectoryMisuseGivesEisdirAndEnotdir) {
  put("p/d/x", "1");
  auto& fs = mount();
  Ino d = lookup_path(fs, "d");
  Ino x = lookup_path(fs, "d/x");
  EXPECT_EQ(to_errno(fs.open(d, O_RDONLY).error()), EISDIR);
  EXPECT_EQ(to_errno(fs.readdir(x).error()), ENOTDIR);
  EXPECT_EQ(to_errno(fs.lookup(x, "y").error()), ENOTDIR);
  EXPECT_EQ(to_errno(fs.getattr(987654).error()), ESTALE);
  EXPECT_EQ(to_errno(fs.read(987654, 0, 1).error()), EBADF);
  EXPECT_EQ(to_errno(fs.getxattr(x, "user.other").error()), ENODATA);
  EXPECT_EQ(to_errno(fs.setxattr(x, "user.other", "1").error()), ENOTSUP);
}

// --cache-size was soft for data in use: hydrating a held model larger than the
// cache wrote until the disk was full.
TEST_F(FileSystemTest, HeldFileLargerThanTheCacheIsServedUncachedWithinTheBound) {
  std::string data = random_bytes(12 * 1048576, 17);
  put("p/big", data);
  cache_max_bytes_ = 4 * 1048576;
  FsOptions o;
  o.hydrate_min_size = 1048576;  // hydrate on open: the worst case
  auto& fs = mount(o);
  Ino ino = lookup_path(fs, "big");
  EXPECT_TRUE(read_all(fs, ino, 128 * 1024) == data);
  EXPECT_LE(cache_->stats().used_bytes, cache_max_bytes_);
  EXPECT_GT(cache_->stats().refused_writes, 0u);
  EXPECT_GT(metrics_.uncached_read_bytes.load(), 0u);
}

// A full cache disk at open became EIO: the file now reads straight from S3.
TEST_F(FileSystemTest, FullCacheDiskAtOpenReadsFromS3) {
  cache::testing::TmpfsMount disk("1m");
  ASSERT_TRUE(disk.ok()) << "cannot mount a tmpfs: this test needs root";
  std::string data = random_bytes(3 * 1048576, 18);
  put("p/f", data);
  cache_dir_ = disk.path() + "/cache";
  auto& fs = mount(block_by_block());
  {  // fill the disk
    int fd = ::open((disk.path() + "/filler").c_str(), O_CREAT | O_WRONLY, 0600);
    std::string chunk(64 * 1024, 'x');
    while (::write(fd, chunk.data(), chunk.size()) > 0) {
    }
    ::close(fd);
  }
  Ino ino = lookup_path(fs, "f");
  EXPECT_TRUE(read_all(fs, ino) == data);
  EXPECT_GT(metrics_.uncached_read_bytes.load(), 0u);
  fs_.reset();
  pool_.reset();
  cache_.reset();
}

// After a restart, open() read and checked the whole cached file synchronously (and
// under the fetcher's lock): a 5 GB shard took its full read before open returned.
TEST_F(FileSystemTest, OpenAfterRestartReadsNothingSynchronously) {
  std::string data = random_bytes(6 * 1048576, 19);
  put("p/f", data);
  FsOptions o;
  o.hydrate_min_size = 1048576;
  {
    auto& fs = mount(o);
    EXPECT_TRUE(read_all(fs, lookup_path(fs, "f")) == data);
  }
  // A new process: the cache is indexed from disk; the pool is not started, so
  // nothing runs in the background either.
  fs_.reset();
  pool_.reset();
  cache_.reset();
  cache::CacheOptions co;
  co.dir = dir_;
  co.min_free_bytes = 0;
  cache_ = std::move(*cache::BlockCache::open(co));
  pool_ = std::make_unique<FetchPool>(2);
  o.bucket = "b";
  o.prefix = "p/";
  fs_ = std::make_unique<FileSystem>(client_, *cache_, *pool_, metrics_, o);
  auto h = fs_->open(lookup_path(*fs_, "f"), O_RDONLY);
  ASSERT_TRUE(h);
  EXPECT_EQ(cache_->stats().hits + cache_->stats().misses, 0u) << "open read cached blocks";
  pool_->start();
  const uint64_t served = store_.bytes_served();
  auto r = fs_->read(h->fh, 5 * 1048576, 1048576);
  ASSERT_TRUE(r);
  EXPECT_TRUE(pread_result(*r) == data.substr(5 * 1048576));
  EXPECT_EQ(store_.bytes_served(), served) << "verified blocks must not be fetched again";
  fs_->release(h->fh);
}

// A server listing keys outside the prefix asked for crashed the daemon (substr).
class OutsideKeyClient : public s3::MemoryObjectClient {
 public:
  Result<s3::ListPage> list_objects(const s3::ListRequest& req) override {
    auto page = MemoryObjectClient::list_objects(req);
    if (page) {
      s3::ObjectInfo bogus;
      bogus.key = "elsewhere/x";
      bogus.etag = "e";
      page->objects.push_back(bogus);
      page->common_prefixes.push_back("q");
    }
    return page;
  }
};

TEST_F(FileSystemTest, ListedKeyOutsideThePrefixIsIgnored) {
  OutsideKeyClient odd;
  odd.create_bucket("b");
  ASSERT_TRUE(odd.put_object({"b", "p/a", s3::Body::from_memory("1"), {}, ""}));
  auto& unused = mount();
  (void)unused;
  FsOptions o;
  o.bucket = "b";
  o.prefix = "p/";
  FileSystem fs(odd, *cache_, *pool_, metrics_, o);
  auto entries = fs.readdir(kRootIno);
  ASSERT_TRUE(entries) << entries.error().describe();
  ASSERT_EQ(entries->size(), 1u);
  EXPECT_EQ((*entries)[0].name, "a");
}

TEST_F(FileSystemTest, ReleaseChildChecksTheCallerAndDropsTheData) {
  std::string data = random_bytes(1048576, 20);
  put("p/d/f", data);
  auto& fs = mount();
  Ino d = lookup_path(fs, "d");
  Ino f = lookup_path(fs, "d/f");
  EXPECT_TRUE(read_all(fs, f) == data);
  EXPECT_EQ(*fs.getxattr(f, "user.nacre.cached_bytes"), std::to_string(data.size()));
  const uid_t stranger = ::getuid() == 0 ? 4242 : ::getuid() + 1;
  EXPECT_EQ(to_errno(fs.release_child(d, "f", stranger).error()), EACCES);
  EXPECT_EQ(to_errno(fs.release_child(d, "nope", 0).error()), ENOENT);
  EXPECT_EQ(to_errno(fs.release_child(kRootIno, "d", 0).error()), EISDIR);
  ASSERT_TRUE(fs.release_child(d, "f", ::getuid()));
  EXPECT_EQ(*fs.getxattr(f, "user.nacre.cached_bytes"), "0");
  EXPECT_TRUE(read_all(fs, f) == data);
}

TEST_F(FileSystemTest, SetuidBitsAreMaskedUnlessTheMountAllowsThem) {
  put("p/tool", "x", {{"file-permissions", "0106755"}});
  auto& fs = mount();
  EXPECT_EQ(fs.lookup(kRootIno, "tool")->mode, S_IFREG | 0755);
  FsOptions o;
  o.allow_suid = true;
  auto& suid = mount(o);
  EXPECT_EQ(suid.lookup(kRootIno, "tool")->mode, S_IFREG | 06755);
}

TEST_F(FileSystemTest, ContainSymlinksRefusesTargetsOutsideTheMount) {
  put("p/abs", "/etc/shadow", {{"file-permissions", "0120777"}});
  put("p/d/up", "../../x", {{"file-permissions", "0120777"}});
  put("p/d/ok", "../abs", {{"file-permissions", "0120777"}});
  FsOptions o;
  o.contain_symlinks = true;
  auto& fs = mount(o);
  EXPECT_EQ(to_errno(fs.readlink(lookup_path(fs, "abs")).error()), EACCES);
  EXPECT_EQ(to_errno(fs.readlink(lookup_path(fs, "d/up")).error()), EACCES);
  EXPECT_EQ(*fs.readlink(lookup_path(fs, "d/ok")), "../abs");
  EXPECT_EQ(metrics_.refused_symlinks.load(), 2u);
  auto& open_fs = mount();
  EXPECT_EQ(*open_fs.readlink(lookup_path(open_fs, "abs")), "/etc/shadow");
}

// A deleted directory that still listed children was kept for them, and they for it:
// inodes of rotated prefixes were never freed.
TEST_F(FileSystemTest, InodesOfADeletedDirectoryTreeAreFreed) {
  put("p/d/e/x", "1");
  put("p/d/y", "2");
  FsOptions o;
  o.metadata_ttl = 0ms;
  auto& fs = mount(o);
  ASSERT_TRUE(fs.readdir(kRootIno));
  Ino d = lookup_path(fs, "d");
  ASSERT_TRUE(fs.readdir(d));
  Ino e = lookup_path(fs, "d/e");
  ASSERT_TRUE(fs.readdir(e));
  EXPECT_EQ(fs.inode_count(), 5u);  // root, d, d/e, d/e/x, d/y
  fs.forget(d, 2);                  // what the kernel looked up, it forgets
  fs.forget(e, 1);
  ASSERT_TRUE(store_.delete_object("b", "p/d/e/x"));
  ASSERT_TRUE(store_.delete_object("b", "p/d/y"));
  ASSERT_TRUE(fs.readdir(kRootIno));
  EXPECT_EQ(fs.inode_count(), 1u) << "the deleted tree's inodes were kept";
}

// A listing that saw a symlink's object replaced by a regular one kept the symlink type
// (LIST has no metadata), and readlink handed the file's body to the kernel as a path.
TEST_F(FileSystemTest, ASymlinkReplacedByAFileIsNotReadAsATarget) {
  put("p/link", "target", {{"file-permissions", "0120777"}});
  FsOptions o;
  o.metadata_ttl = 0ms;
  auto& fs = mount(o);
  Ino link = lookup_path(fs, "link");
  ASSERT_EQ(*fs.readlink(link), "target");
  put("p/link", "../../etc/shadow");  // now a regular file
  ASSERT_TRUE(fs.readdir(kRootIno));
  auto r = fs.readlink(link);
  ASSERT_FALSE(r) << "read the file's body as a symlink target: " << *r;
  EXPECT_EQ(to_errno(r.error()), ESTALE);
  EXPECT_EQ(fs.lookup(kRootIno, "link")->mode & S_IFMT, static_cast<mode_t>(S_IFREG));
}

// ---------------------------------------------------------------------------
// Kernel passthrough (open's `passthrough`): the fs core's side of the kernel's rules.

// Options under which files of `min_size` bytes or more may be served by passthrough.
FsOptions passthrough_from(uint64_t min_size) {
  FsOptions o = block_by_block();
  o.passthrough_min_size = min_size;
  return o;
}

// `len` bytes of `fd` from offset 0.
std::string pread_fd(int fd, size_t len) {
  std::string buf(len, '\0');
  size_t got = 0;
  while (got < len) {
    ssize_t n = pread(fd, buf.data() + got, len - got, static_cast<off_t>(got));
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  buf.resize(got);
  return buf;
}

bool same_file(int a, int b) {
  struct stat sa {
  }, sb{};
  EXPECT_EQ(fstat(a, &sa), 0);
  EXPECT_EQ(fstat(b, &sb), 0);
  return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

TEST_F(FileSystemTest, PassthroughOpenOfAFullyCachedFileGetsTheCacheFileWithTheObjectsBytes) {
  std::string data = random_bytes(3 * 1048576 + 4321, 31);
  put("p/f", data);
  auto& fs = mount(passthrough_from(1048576));
  Ino ino = lookup_path(fs, "f");
  ASSERT_TRUE(read_all(fs, ino) == data);
  // Counted as a GET starts (bytes_served only once the body is delivered, which
  // may be after the reader that waited for it has its bytes).
  const int gets = store_.request_count("GetObject");
  const uint64_t opens = metrics_.passthrough_opens.load();
  auto h = fs.open(ino, O_RDONLY, /*passthrough=*/true);
  ASSERT_TRUE(h) << h.error().describe();
  ASSERT_GE(h->passthrough_fd, 0);
  EXPECT_FALSE(h->keep_cache) << "no FOPEN_KEEP_CACHE with passthrough";
  EXPECT_TRUE(pread_fd(h->passthrough_fd, data.size()) == data)
      << "the kernel reads the object's bytes from that file";
  EXPECT_EQ(metrics_.passthrough_opens.load(), opens + 1);
  EXPECT_EQ(store_.request_count("GetObject"), gets) << "nothing fetched for a complete copy";
  fs.release(h->fh);
}

TEST_F(FileSystemTest, PassthroughOpenOfAnUncachedFileIsCachedMode) {
  std::string data = random_bytes(3 * 1048576, 32);
  put("p/f", data);
  auto& fs = mount(passthrough_from(1048576));
  Ino ino = lookup_path(fs, "f");
  auto h = fs.open(ino, O_RDONLY, /*passthrough=*/true);
  ASSERT_TRUE(h) << h.error().describe();
  EXPECT_EQ(h->passthrough_fd, -1);
  EXPECT_EQ(metrics_.passthrough_opens.load(), 0u);
  // A cached-mode handle: the daemon serves its reads, which fill the cache...
  std::string got;
  for (uint64_t off = 0; off < data.size(); off += 1048576) {
    auto r = fs.read(h->fh, off, 1048576);
    ASSERT_TRUE(r) << r.error().describe();
    got += pread_result(*r);
  }
  EXPECT_TRUE(got == data);
  fs.release(h->fh);
  // ...after which the next open is passthrough.
  auto again = fs.open(ino, O_RDONLY, /*passthrough=*/true);
  ASSERT_TRUE(again);
  EXPECT_GE(again->passthrough_fd, 0);
  fs.release(again->fh);
}

TEST_F(FileSystemTest, PassthroughOpenOfAPartlyCachedFileIsCachedMode) {
  std::string data = random_bytes(5 * 1048576, 33);
  put("p/f", data);
  auto& fs = mount(passthrough_from(1048576));
  Ino ino = lookup_path(fs, "f");
  {
    auto h = fs.open(ino, O_RDONLY);
    ASSERT_TRUE(h);
    auto r = fs.read(h->fh, 0, 4096);
    ASSERT_TRUE(r);
    fs.release(h->fh);
  }
  ASSERT_NE(*fs.getxattr(ino, "user.nacre.cached_bytes"), std::to_string(data.size()));
  auto h = fs.open(ino, O_RDONLY, /*passthrough=*/true);
  ASSERT_TRUE(h);
  EXPECT_EQ(h->passthrough_fd, -1);
  EXPECT_EQ(metrics_.passthrough_opens.load(), 0u);
  fs.release(h->fh);
}

TEST_F(FileSystemTest, PassthroughIsOnlyForFilesOfTheMinimumSizeOrMore) {
  std::string data = random_bytes(2 * 1048576 + 10, 34);
  put("p/f", data);
  {
    auto& fs = mount(passthrough_from(data.size() + 1));
    Ino ino = lookup_path(fs, "f");
    ASSERT_TRUE(read_all(fs, ino) == data);
    auto h = fs.open(ino, O_RDONLY, /*passthrough=*/true);
    ASSERT_TRUE(h);
    EXPECT_EQ(h->passthrough_fd, -1) << "one byte below the minimum";
    fs.release(h->fh);
  }
  auto& fs = mount(passthrough_from(data.size()));  // the same cache, now warm
  Ino ino = lookup_path(fs, "f");
  auto h = fs.open(ino, O_RDONLY, /*passthrough=*/true);
  ASSERT_TRUE(h);
  EXPECT_GE(h->passthrough_fd, 0) << "exactly the minimum";
  fs.release(h->fh);
  EXPECT_EQ(metrics_.passthrough_opens.load(), 1u);
}

TEST_F(FileSystemTest, OpenWithoutPassthroughIsCachedModeEvenWhenFullyCached) {
  std::string data = random_bytes(2 * 1048576, 35);
  put("p/f", data);
  auto& fs = mount(passthrough_from(1));
  Ino ino = lookup_path(fs, "f");
  ASSERT_TRUE(read_all(fs, ino) == data);
  auto h = fs.open(ino, O_RDONLY, /*passthrough=*/false);
  ASSERT_TRUE(h);
  EXPECT_EQ(h->passthrough_fd, -1);
  EXPECT_EQ(metrics_.passthrough_opens.load(), 0u);
  fs.release(h->fh);
}

TEST_F(FileSystemTest, EveryOpenWhilePassthroughHandlesExistJoinsThemOnTheSameFile) {
  std::string data = random_bytes(2 * 1048576 + 7, 36);
  put("p/f", data);
  auto& fs = mount(passthrough_from(1048576));
  Ino ino = lookup_path(fs, "f");
  ASSERT_TRUE(read_all(fs, ino) == data);
  auto first = fs.open(ino, O_RDONLY, /*passthrough=*/true);
  ASSERT_TRUE(first);
  ASSERT_GE(first->passthrough_fd, 0);
  // The adapter cannot serve passthrough (passthrough=false): the kernel would refuse
  // a cached-mode open of an inode in passthrough mode, so the core refuses it first.
  auto refused = fs.open(ino, O_RDONLY, /*passthrough=*/false);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::kBusy);
  // Joined whatever the cache holds now: the same file as the first handle's.
  auto second = fs.open(ino, O_RDONLY, /*passthrough=*/true);
  ASSERT_TRUE(second) << second.error().describe();
  ASSERT_GE(second->passthrough_fd, 0);
  EXPECT_FALSE(second->keep_cache);
  EXPECT_TRUE(same_file(first->passthrough_fd, second->passthrough_fd))
      << "one backing file per inode";
  auto third = fs.open(ino, O_RDONLY, /*passthrough=*/true);
  ASSERT_TRUE(third);
  ASSERT_GE(third->passthrough_fd, 0);
  EXPECT_TRUE(same_file(first->passthrough_fd, third->passthrough_fd));
  EXPECT_EQ(metrics_.passthrough_opens.load(), 3u);
  // The file stays valid while any passthrough handle lives, whichever goes first.
  fs.release(first->fh);
  EXPECT_TRUE(pread_fd(third->passthrough_fd, data.size()) == data);
  auto fourth = fs.open(ino, O_RDONLY, /*passthrough=*/true);
  ASSERT_TRUE(fourth);
  EXPECT_GE(fourth->passthrough_fd, 0) << "passthrough handles are still open";
  fs.release(second->fh);
  fs.release(third->fh);
  fs.release(fourth->fh);
  // With the last passthrough handle gone the inode is free for cached mode again.
  auto cached = fs.open(ino, O_RDONLY, /*passthrough=*/false);
  ASSERT_TRUE(cached);
  EXPECT_EQ(cached->passthrough_fd, -1);
  fs.release(cached->fh);
  EXPECT_EQ(metrics_.passthrough_opens.load(), 4u);
}

TEST_F(FileSystemTest, ACachedModeOpenKeepsLaterOpensOutOfPassthrough) {
  std::string data = random_bytes(2 * 1048576, 37);
  put("p/f", data);
  auto& fs = mount(passthrough_from(1048576));
  Ino ino = lookup_path(fs, "f");
  ASSERT_TRUE(read_all(fs, ino) == data);
  auto cached = fs.open(ino, O_RDONLY, /*passthrough=*/false);
  ASSERT_TRUE(cached);
  ASSERT_EQ(cached->passthrough_fd, -1);
  auto later = fs.open(ino, O_RDONLY, /*passthrough=*/true);
  ASSERT_TRUE(later);
  EXPECT_EQ(later->passthrough_fd, -1) << "the kernel refuses to mix the modes on one inode";
  EXPECT_EQ(metrics_.passthrough_opens.load(), 0u);
  // The cached-mode handle still reads.
  auto r = fs.read(later->fh, 1048576, 1048576);
  ASSERT_TRUE(r);
  EXPECT_TRUE(pread_result(*r) == data.substr(1048576));
  fs.release(cached->fh);
  fs.release(later->fh);
  auto now = fs.open(ino, O_RDONLY, /*passthrough=*/true);
  ASSERT_TRUE(now);
  EXPECT_GE(now->passthrough_fd, 0) << "no cached-mode handle left";
  fs.release(now->fh);
  EXPECT_EQ(metrics_.passthrough_opens.load(), 1u);
}

TEST_F(FileSystemTest, PassthroughAfterRestartVerifiesWhatTheLastProcessCached) {
  std::string data = random_bytes(3 * 1048576, 38);
  put("p/f", data);
  {
    auto& fs = mount(passthrough_from(1048576));
    ASSERT_TRUE(read_all(fs, lookup_path(fs, "f")) == data);
  }
  auto& fs = mount(passthrough_from(1048576));  // a new process over the same cache
  Ino ino = lookup_path(fs, "f");
  const int gets = store_.request_count("GetObject");
  auto h = fs.open(ino, O_RDONLY, /*passthrough=*/true);
  ASSERT_TRUE(h);
  ASSERT_GE(h->passthrough_fd, 0);
  EXPECT_TRUE(pread_fd(h->passthrough_fd, data.size()) == data);
  EXPECT_EQ(store_.request_count("GetObject"), gets);
  EXPECT_EQ(cache_->stats().bad_blocks, 0u);
  fs.release(h->fh);
}

TEST_F(FileSystemTest, PassthroughAfterRestartWithACorruptedBlockIsCachedModeAndRefetches) {
  std::string data = random_bytes(3 * 1048576, 39);
  put("p/f", data);
  {
    auto& fs = mount(passthrough_from(1048576));
    ASSERT_TRUE(read_all(fs, lookup_path(fs, "f")) == data);
  }
  fs_.reset();
  pool_.reset();
  cache_.reset();
  // The only entry's data file: flip one byte of block 1.
  std::string data_file;
  for (auto& e : std::filesystem::recursive_directory_iterator(dir_)) {
    if (e.path().extension() == ".data") data_file = e.path().string();
  }
  ASSERT_FALSE(data_file.empty());
  {
    int fd = ::open(data_file.c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    char c;
    ASSERT_EQ(pread(fd, &c, 1, 1048576 + 99), 1);
    c ^= 0x40;
    ASSERT_EQ(pwrite(fd, &c, 1, 1048576 + 99), 1);
    ::close(fd);
  }
  auto& fs = mount(passthrough_from(1048576));
  Ino ino = lookup_path(fs, "f");
  auto h = fs.open(ino, O_RDONLY, /*passthrough=*/true);
  ASSERT_TRUE(h);
  EXPECT_EQ(h->passthrough_fd, -1) << "a copy with a bad block is never handed to the kernel";
  EXPECT_EQ(cache_->stats().bad_blocks, 1u);
  EXPECT_EQ(metrics_.passthrough_opens.load(), 0u);
  const int gets = store_.request_count("GetObject");
  auto r = fs.read(h->fh, 1048576, 1048576);
  ASSERT_TRUE(r);
  EXPECT_TRUE(pread_result(*r) == data.substr(1048576, 1048576)) << "the right bytes, refetched";
  EXPECT_EQ(store_.request_count("GetObject"), gets + 1) << "only the bad block is fetched";
  fs.release(h->fh);
  auto again = fs.open(ino, O_RDONLY, /*passthrough=*/true);
  ASSERT_TRUE(again);
  ASSERT_GE(again->passthrough_fd, 0);
  EXPECT_TRUE(pread_fd(again->passthrough_fd, data.size()) == data);
  fs.release(again->fh);
}

}  // namespace
}  // namespace nacre::fs
