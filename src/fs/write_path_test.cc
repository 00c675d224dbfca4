// The write path of the fs core (write_path.cc, namespace_change.cc): staging,
// export on flush/fsync (PUT, multipart, parts streamed while writing), failed
// exports and their retry, crash recovery of staged files, namespace changes
// and the export policy. Over the in-memory object store (wrapped in the
// fault injector), a real cache and a real staging store in a temporary
// directory: no FUSE, no network.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fs.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <random>
#include <set>
#include <thread>

#include "fs/errno_map.h"
#include "fs/file_system.h"
#include "fs/read_result_bytes.h"
#include "s3/faulty_object_client.h"
#include "s3/memory_object_client.h"
#include "staging/staging_store.h"

namespace nacre::fs {
namespace {

using namespace std::chrono_literals;

constexpr uint64_t kMiB = 1ull << 20;
constexpr uint64_t kPart = 5 * kMiB;  // S3's smallest part, used as the part size
constexpr uint64_t kFiveTiB = 5ull << 40;

std::string random_bytes(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

Error network_error() {
  return Error{ErrorCode::kNetwork, "injected: connection reset", "", "", 0};
}
Error access_denied() {
  return Error{ErrorCode::kAccessDenied, "injected: access denied", "AccessDenied", "tx-1", 403};
}

// Polls `pred` until it holds or `limit` passes; returns its last answer.
template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit = 10s) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > end) return pred();
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

class WritePathTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/nacre-write-test-XXXXXX";
    dir_ = mkdtemp(tmpl);
    staging_dir_ = dir_ + "/staging";
    store_.create_bucket("b");
    auto st = staging::StagingStore::open(staging_dir_);
    ASSERT_TRUE(st) << st.error().describe();
    staging_ = std::move(*st);
  }
  void TearDown() override {
    fs_.reset();
    pool_.reset();
    cache_.reset();
    staging_.reset();
    std::filesystem::remove_all(dir_);
  }

  // A read-write FileSystem over bucket "b", prefix "p/", staging in staging_dir_.
  // `start`: call start_write_path() (streaming, retries, crash recovery).
  FileSystem& mount(FsOptions o = {}, bool start = true) {
    fs_.reset();
    pool_.reset();
    cache_.reset();
    cache::CacheOptions co;
    co.dir = dir_ + "/cache";
    co.max_bytes = 1ull << 30;
    co.min_free_bytes = 0;
    auto cache = cache::BlockCache::open(co);
    EXPECT_TRUE(cache) << cache.error().describe();
    cache_ = std::move(*cache);
    pool_ = std::make_unique<FetchPool>(4);
    pool_->start();
    o.bucket = std::string("b");
    if (o.prefix.empty()) o.prefix = "p/";
    o.uid = 1000;
    o.gid = 1000;
    o.staging = staging_.get();
    fs_ = std::make_unique<FileSystem>(client_, *cache_, *pool_, metrics_, o);
    if (start) {
      Status st = fs_->start_write_path();
      EXPECT_TRUE(st) << st.error().describe();
    }
    return *fs_;
  }
  static FsOptions multipart_options() {
    FsOptions o;
    o.part_size = kPart;
    o.export_retry = 50ms;
    return o;
  }

  void put(const std::string& key, const std::string& data, s3::UserMetadata meta = {},
           std::string content_type = "") {
    ASSERT_TRUE(store_.put_object(
        {"b", key, s3::Body::from_memory(data), std::move(meta), std::move(content_type)}));
  }
  // The object's bytes in the store, nullopt when there is no such key.
  std::optional<std::string> object(const std::string& key) {
    std::string out;
    auto r = store_.get_object({"b", key, 0, std::nullopt, ""}, [&](std::string_view c) -> Status {
      out.append(c);
      return {};
    });
    if (!r) return std::nullopt;
    return out;
  }
  std::optional<s3::ObjectInfo> head(const std::string& key) {
    auto h = store_.head_object("b", key);
    if (!h) return std::nullopt;
    return *h;
  }
  // Every key in the bucket under `prefix`.
  std::set<std::string> keys(const std::string& prefix = "") {
    std::set<std::string> out;
    auto page = store_.list_objects({"b", prefix, "", "", "", 1000});
    EXPECT_TRUE(page);
    if (page) {
      for (auto& o : page->objects) out.insert(o.key);
    }
    return out;
  }
  // File names in the staging directory.
  std::set<std::string> staging_files() {
    std::set<std::string> out;
    for (auto& e : std::filesystem::directory_iterator(staging_dir_)) {
      out.insert(e.path().filename().string());
    }
    return out;
  }
  // Whether the staging directory becomes empty. Exporter threads may hold a
  // staged file a moment after its export (a finished task, a retry round),
  // so its files go when they let go of it.
  bool staging_empties() {
    return eventually([&] { return staging_files().empty(); }, 5s);
  }
  size_t staged_data_files() {
    size_t n = 0;
    for (auto& f : staging_files()) n += f.ends_with(".data");
    return n;
  }
  std::string read_all(FileSystem& fs, Ino ino) {
    auto h = fs.open(ino, O_RDONLY);
    EXPECT_TRUE(h) << h.error().describe();
    if (!h) return "<open failed>";
    std::string out;
    for (uint64_t off = 0;; off += kMiB) {
      auto r = fs.read(h->fh, off, kMiB);
      EXPECT_TRUE(r) << r.error().describe();
      if (!r || r->length == 0) break;
      out += bytes_of(*r);
    }
    fs.release(h->fh);
    return out;
  }
  static std::string bytes_of(const ReadResult& r) { return read_result_bytes(r); }
  // The ids of the multipart uploads in progress for exactly `key`.
  std::set<std::string> uploads_of(const std::string& key) {
    std::set<std::string> out;
    auto page = store_.list_multipart_uploads("b", key, "", "");
    EXPECT_TRUE(page);
    if (page) {
      for (auto& u : page->uploads) {
        if (u.key == key) out.insert(u.upload_id);
      }
    }
    return out;
  }
  // A staged file written by hand, as a crashed process leaves it.
  staging::Manifest stage_by_hand(const std::string& key, const std::string& data, bool complete) {
    staging::Manifest m;
    m.bucket = std::string("b");
    m.key = key;
    m.complete = complete;
    m.metadata = {{"file-permissions", "0100600"}, {"file-owner", "77"}};
    auto fd = staging_->create(m);
    EXPECT_TRUE(fd) << fd.error().describe();
    if (!fd) return m;
    EXPECT_EQ(pwrite(*fd, data.data(), data.size(), 0), static_cast<ssize_t>(data.size()));
    ::close(*fd);
    return m;
  }
  std::optional<staging::Manifest> manifest(const std::string& id) {
    auto listed = staging_->list();
    EXPECT_TRUE(listed);
    if (!listed) return std::nullopt;
    for (auto& m : *listed) {
      if (m.id == id) return m;
    }
    return std::nullopt;
  }
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
  // create + sequential writes of `data` in `chunk`-byte pieces; returns the handle.
  uint64_t create_and_write(FileSystem& fs, const std::string& name, const std::string& data,
                            size_t chunk = kMiB, Caller caller = {1000, 1000}) {
    auto c = fs.create(kRootIno, name, 0644, O_WRONLY | O_CREAT, caller);
    EXPECT_TRUE(c) << c.error().describe();
    if (!c) return 0;
    for (size_t off = 0; off < data.size(); off += chunk) {
      auto w = fs.write(c->second.fh, off, std::string_view(data).substr(off, chunk));
      EXPECT_TRUE(w) << w.error().describe();
    }
    return c->second.fh;
  }

  std::string dir_, staging_dir_;
  s3::MemoryObjectClient store_;
  s3::FaultyObjectClient client_{store_};
  Metrics metrics_;
  std::unique_ptr<staging::StagingStore> staging_;
  std::unique_ptr<cache::BlockCache> cache_;
  std::unique_ptr<FetchPool> pool_;
  std::unique_ptr<FileSystem> fs_;
};

// ---------------------------------------------------------------------------
// create, write, flush

TEST_F(WritePathTest, CreateWriteFlushExportsBytesAndFsxMetadataAndReleaseRemovesStaging) {
  auto& fs = mount();
  auto c = fs.create(kRootIno, "f", 0640, O_WRONLY | O_CREAT, Caller{1234, 5678});
  ASSERT_TRUE(c) << c.error().describe();
  EXPECT_EQ(c->first.mode, static_cast<mode_t>(S_IFREG | 0640));
  EXPECT_EQ(c->first.uid, 1234u);
  EXPECT_EQ(c->first.gid, 5678u);
  ASSERT_EQ(*fs.write(c->second.fh, 0, "hello "), 6u);
  ASSERT_EQ(*fs.write(c->second.fh, 6, "world"), 5u);
  EXPECT_FALSE(object("p/f")) << "nothing reaches S3 before flush";
  EXPECT_EQ(staged_data_files(), 1u) << "the written file is staged on disk";
  Status st = fs.flush(c->second.fh);
  ASSERT_TRUE(st) << st.error().describe();
  EXPECT_EQ(object("p/f"), "hello world");
  auto h = head("p/f");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->metadata["file-permissions"], "0100640");
  EXPECT_EQ(h->metadata["file-owner"], "1234");
  EXPECT_EQ(h->metadata["file-group"], "5678");
  EXPECT_TRUE(h->metadata["file-mtime"].ends_with("ns")) << h->metadata["file-mtime"];
  EXPECT_GT(h->metadata["file-mtime"].size(), 2u);
  EXPECT_EQ(store_.request_count("PutObject"), 1);
  fs.release(c->second.fh);
  EXPECT_TRUE(staging_empties()) << "release after a successful export removes the staged "
                                    "files; left: "
                                 << staging_files().size();
  // The file reads back through the mount from S3.
  Ino ino = lookup_path(fs, "f");
  ASSERT_NE(ino, 0u);
  EXPECT_EQ(read_all(fs, ino), "hello world");
}

TEST_F(WritePathTest, FsyncExportsWhileTheFileStaysOpenAndFlushExportsTheRest) {
  auto& fs = mount();
  uint64_t fh = create_and_write(fs, "f", "first");
  ASSERT_TRUE(fs.fsync(fh));
  EXPECT_EQ(object("p/f"), "first");
  ASSERT_TRUE(fs.write(fh, 5, "+second"));
  ASSERT_TRUE(fs.flush(fh));
  EXPECT_EQ(object("p/f"), "first+second");
  int puts = store_.request_count("PutObject");
  ASSERT_TRUE(fs.flush(fh));
  EXPECT_EQ(store_.request_count("PutObject"), puts) << "an unchanged file is not exported again";
  fs.release(fh);
  EXPECT_TRUE(staging_empties());
}

TEST_F(WritePathTest, SequentialWriteStreamsMultipartPartsBeforeFlush) {
  auto& fs = mount(multipart_options());
  const std::string data = random_bytes(3 * kPart + kMiB + 12345, 1);
  uint64_t fh = create_and_write(fs, "big", data);
  // The three full parts are uploaded while the file is still open, before any flush.
  EXPECT_TRUE(eventually([&] { return store_.request_count("UploadPart") >= 3; }))
      << "UploadPart requests before flush: " << store_.request_count("UploadPart");
  const int before_flush = store_.request_count("UploadPart");
  EXPECT_GT(before_flush, 0) << "no part was streamed before flush";
  EXPECT_EQ(store_.request_count("CreateMultipartUpload"), 1);
  EXPECT_FALSE(object("p/big")) << "no object before the upload is completed";
  Status st = fs.flush(fh);
  ASSERT_TRUE(st) << st.error().describe();
  auto got = object("p/big");
  ASSERT_TRUE(got);
  EXPECT_TRUE(*got == data) << "exported " << got->size() << " bytes, wrote " << data.size();
  EXPECT_EQ(store_.request_count("UploadPart"), 4) << "3 streamed parts + the last one";
  EXPECT_EQ(store_.request_count("CompleteMultipartUpload"), 1);
  EXPECT_EQ(store_.request_count("PutObject"), 0);
  EXPECT_EQ(store_.request_count("AbortMultipartUpload"), 0);
  EXPECT_TRUE(head("p/big")->etag.ends_with("-4")) << head("p/big")->etag;
  fs.release(fh);
  EXPECT_TRUE(staging_empties());
}

TEST_F(WritePathTest, WithoutStartWritePathALargeFileIsUploadedOnlyAtFlush) {
  auto& fs = mount(multipart_options(), /*start=*/false);
  const std::string data = random_bytes(3 * kPart + kMiB + 7, 2);
  uint64_t fh = create_and_write(fs, "big", data);
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(store_.request_count("UploadPart"), 0) << "no exporter threads: nothing streamed";
  EXPECT_EQ(store_.request_count("CreateMultipartUpload"), 0);
  ASSERT_TRUE(fs.flush(fh));
  auto got = object("p/big");
  ASSERT_TRUE(got);
  EXPECT_TRUE(*got == data);
  EXPECT_EQ(store_.request_count("CreateMultipartUpload"), 1) << "multipart above the part size";
  EXPECT_EQ(store_.request_count("UploadPart"), 4);
  EXPECT_EQ(store_.request_count("PutObject"), 0);
  fs.release(fh);
  EXPECT_TRUE(staging_empties());
}

TEST_F(WritePathTest, RandomOrderWritesThenFlushGiveTheRightBytes) {
  auto& fs = mount(multipart_options());
  const size_t size = 2 * kPart + 3 * kMiB + 999;
  std::string model(size, '\0');
  const std::string src = random_bytes(size, 3);
  auto c = fs.create(kRootIno, "r", 0644, O_RDWR | O_CREAT, Caller{});
  ASSERT_TRUE(c);
  const uint64_t fh = c->second.fh;
  // Chunks of 256 KiB in a shuffled order, then overlapping small writes.
  std::vector<size_t> offs;
  for (size_t off = 0; off < size; off += 256 * 1024) offs.push_back(off);
  std::mt19937 rng(11);
  std::shuffle(offs.begin(), offs.end(), rng);
  for (size_t off : offs) {
    std::string_view piece = std::string_view(src).substr(off, 256 * 1024);
    ASSERT_EQ(*fs.write(fh, off, piece), piece.size());
    model.replace(off, piece.size(), piece);
  }
  for (int i = 0; i < 50; ++i) {
    size_t off = rng() % size;
    std::string piece = random_bytes(1 + rng() % 70000, 100 + i);
    ASSERT_TRUE(fs.write(fh, off, piece));
    if (off + piece.size() > model.size()) model.resize(off + piece.size());
    model.replace(off, piece.size(), piece);
  }
  {
    // A reader of the same handle sees the staged bytes before the export. (The
    // result holds the staged file open while it lives, as for the kernel's reply.)
    auto r = fs.read(fh, 1234, 5000);
    ASSERT_TRUE(r);
    EXPECT_TRUE(bytes_of(*r) == model.substr(1234, 5000));
  }
  Status st = fs.flush(fh);
  ASSERT_TRUE(st) << st.error().describe();
  auto got = object("p/r");
  ASSERT_TRUE(got);
  EXPECT_EQ(got->size(), model.size());
  EXPECT_TRUE(*got == model) << "exported bytes differ from what was written";
  fs.release(fh);
  EXPECT_TRUE(staging_empties());
}

TEST_F(WritePathTest, WriteBelowStreamedPartsBreaksTheStreamAndTheExportIsStillRight) {
  auto& fs = mount(multipart_options());
  std::string data = random_bytes(3 * kPart + 100, 4);
  uint64_t fh = create_and_write(fs, "f", data);
  ASSERT_TRUE(eventually([&] { return store_.request_count("UploadPart") >= 3; }))
      << "parts were not streamed";
  // Rewrite bytes inside the first (already uploaded) part.
  ASSERT_TRUE(fs.write(fh, 100, "REWRITTEN"));
  data.replace(100, 9, "REWRITTEN");
  Status st = fs.flush(fh);
  ASSERT_TRUE(st) << st.error().describe();
  auto got = object("p/f");
  ASSERT_TRUE(got);
  EXPECT_TRUE(*got == data) << "the streamed part with the old bytes was used";
  EXPECT_GE(store_.request_count("AbortMultipartUpload"), 1) << "the broken upload is aborted";
  fs.release(fh);
  EXPECT_TRUE(staging_empties());
}

// The exporter's threads start while start_write_path() runs and stop at
// stop_write_path() / destruction; a retry thread that reached the exporter
// through FileSystem::exporter_ before it was assigned (or after it was reset)
// crashed. Many short-lived mounts, each started, some stopped explicitly, must
// neither crash nor hang, and start_write_path() is refused a second time.
TEST_F(WritePathTest, StartingAndStoppingTheWritePathRepeatedlyDoesNotCrash) {
  FsOptions o = multipart_options();
  o.export_retry = 1ms;
  for (int i = 0; i < 200; ++i) {
    auto& fs = mount(o, /*start=*/true);
    if (i % 2 == 0) fs.stop_write_path();
  }
  auto& fs = mount(o, /*start=*/true);
  EXPECT_FALSE(fs.start_write_path()) << "start_write_path() is called once";
  uint64_t fh = create_and_write(fs, "f", "still works");
  ASSERT_TRUE(fs.flush(fh));
  fs.release(fh);
  EXPECT_EQ(object("p/f"), "still works");
}

// ---------------------------------------------------------------------------
// open for writing of existing objects, truncate

TEST_F(WritePathTest, OpenForWriteWithoutTruncStagesTheObjectAndPwriteChangesOnlyItsBytes) {
  std::string old = random_bytes(3 * kMiB + 17, 5);
  put("p/f", old);
  auto& fs = mount();
  Ino ino = lookup_path(fs, "f");
  ASSERT_NE(ino, 0u);
  auto w = fs.open(ino, O_RDWR);
  ASSERT_TRUE(w) << w.error().describe();
  ASSERT_TRUE(fs.write(w->fh, kMiB + 3, "CHANGED"));
  old.replace(kMiB + 3, 7, "CHANGED");
  // Another handle of the same inode reads the staged bytes.
  auto rd = fs.open(ino, O_RDONLY);
  ASSERT_TRUE(rd);
  {
    auto r = fs.read(rd->fh, kMiB, 16);
    ASSERT_TRUE(r);
    EXPECT_EQ(bytes_of(*r), old.substr(kMiB, 16));
  }
  fs.release(rd->fh);
  ASSERT_TRUE(fs.flush(w->fh));
  auto got = object("p/f");
  ASSERT_TRUE(got);
  EXPECT_EQ(got->size(), old.size());
  EXPECT_TRUE(*got == old) << "the object must be the old bytes with the change";
  fs.release(w->fh);
  EXPECT_TRUE(staging_empties());
  auto a = fs.getattr(ino);
  ASSERT_TRUE(a);
  EXPECT_EQ(a->size, old.size());
}

TEST_F(WritePathTest, OpenWithTruncStagesEmptyThenTheWrittenBytes) {
  put("p/f", "old content that must go");
  auto& fs = mount();
  Ino ino = lookup_path(fs, "f");
  ASSERT_NE(ino, 0u);
  auto w = fs.open(ino, O_WRONLY | O_TRUNC);
  ASSERT_TRUE(w) << w.error().describe();
  EXPECT_EQ(fs.getattr(ino)->size, 0u);
  ASSERT_TRUE(fs.flush(w->fh));
  EXPECT_EQ(object("p/f"), "") << "open(O_TRUNC) + close empties the object";
  ASSERT_TRUE(fs.write(w->fh, 0, "new"));
  ASSERT_TRUE(fs.flush(w->fh));
  EXPECT_EQ(object("p/f"), "new");
  fs.release(w->fh);
  EXPECT_TRUE(staging_empties());
  EXPECT_EQ(read_all(fs, ino), "new");
}

TEST_F(WritePathTest, SetattrSizeWithNoHandleOpenExportsAtOnce) {
  put("p/t", "0123456789");
  auto& fs = mount();
  Ino ino = lookup_path(fs, "t");
  ASSERT_NE(ino, 0u);
  SetAttr down;
  down.size = 4;
  auto a = fs.setattr(ino, down, std::nullopt);
  ASSERT_TRUE(a) << a.error().describe();
  EXPECT_EQ(a->size, 4u);
  EXPECT_EQ(object("p/t"), "0123") << "truncate(2) down is exported before it returns";
  EXPECT_TRUE(staging_empties());
  SetAttr up;
  up.size = 8;
  a = fs.setattr(ino, up, std::nullopt);
  ASSERT_TRUE(a) << a.error().describe();
  EXPECT_EQ(a->size, 8u);
  EXPECT_EQ(object("p/t"), std::string("0123\0\0\0\0", 8)) << "truncate up fills with zeros";
  EXPECT_TRUE(staging_empties());
  EXPECT_EQ(read_all(fs, ino), std::string("0123\0\0\0\0", 8));
  SetAttr zero;
  zero.size = 0;
  ASSERT_TRUE(fs.setattr(ino, zero, std::nullopt));
  EXPECT_EQ(object("p/t"), "");
}

TEST_F(WritePathTest, SetattrModeOwnerMtimeCopiesWithReplacedMetadataKeepingTheRest) {
  put("p/m", "payload",
      {{"custom", "keep"},
       {"file-permissions", "0100644"},
       {"file-owner", "1"},
       {"file-group", "2"}},
      "text/plain");
  auto& fs = mount();
  Ino ino = lookup_path(fs, "m");
  ASSERT_NE(ino, 0u);
  SetAttr chmod;
  chmod.mode = 0600;
  auto a = fs.setattr(ino, chmod, std::nullopt);
  ASSERT_TRUE(a) << a.error().describe();
  EXPECT_EQ(a->mode, static_cast<mode_t>(S_IFREG | 0600));
  EXPECT_EQ(store_.request_count("CopyObject"), 1);
  auto h = head("p/m");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->metadata["file-permissions"], "0100600");
  EXPECT_EQ(h->metadata["custom"], "keep") << "other user metadata is kept";
  EXPECT_EQ(h->content_type, "text/plain") << "the content type is kept";
  EXPECT_EQ(h->metadata["file-owner"], "1");
  // A second change works: the inode follows the copy's new ETag (If-Match).
  SetAttr chown;
  chown.uid = 42;
  chown.gid = 43;
  a = fs.setattr(ino, chown, std::nullopt);
  ASSERT_TRUE(a) << a.error().describe();
  EXPECT_EQ(a->uid, 42u);
  EXPECT_EQ(a->gid, 43u);
  SetAttr touch;
  touch.mtime = timespec{1700000000, 5};
  a = fs.setattr(ino, touch, std::nullopt);
  ASSERT_TRUE(a) << a.error().describe();
  EXPECT_EQ(a->mtime.tv_sec, 1700000000);
  EXPECT_EQ(a->mtime.tv_nsec, 5);
  EXPECT_EQ(store_.request_count("CopyObject"), 3);
  h = head("p/m");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->metadata["file-permissions"], "0100600");
  EXPECT_EQ(h->metadata["file-owner"], "42");
  EXPECT_EQ(h->metadata["file-group"], "43");
  EXPECT_EQ(h->metadata["file-mtime"], "1700000000000000005ns");
  EXPECT_EQ(h->metadata["custom"], "keep");
  EXPECT_EQ(h->content_type, "text/plain");
  EXPECT_EQ(object("p/m"), "payload");
  EXPECT_EQ(store_.request_count("PutObject"), 1) << "metadata changes copy, never re-upload";
  EXPECT_TRUE(staging_files().empty()) << "a metadata change of an unstaged object stages nothing";
}

// ---------------------------------------------------------------------------
// Failed exports and their retry

TEST_F(WritePathTest, FlushFailingWithNetworkErrorKeepsDataStagedAndTheRetryExportsIt) {
  auto& fs = mount(multipart_options());
  client_.fail_all(network_error(), "PutObject");
  uint64_t fh = create_and_write(fs, "f", "precious bytes");
  Status st = fs.flush(fh);
  ASSERT_FALSE(st) << "the export failed: flush must say so";
  EXPECT_EQ(st.error().code, ErrorCode::kNetwork);
  EXPECT_EQ(to_errno(st.error()), EIO);
  EXPECT_EQ(staged_data_files(), 1u) << "the data stays staged";
  EXPECT_EQ(fs.pending_exports(), 1u) << "a failed export is pending until S3 has it "
                                         "(see PendingExportsCountsAFileWhoseRetryIsInFlight)";
  EXPECT_FALSE(object("p/f"));
  // Released while S3 still fails: the staged file must survive the handle.
  fs.release(fh);
  EXPECT_EQ(staged_data_files(), 1u);
  client_.clear();
  EXPECT_TRUE(eventually([&] { return object("p/f") == "precious bytes"; }))
      << "the retry never exported it";
  EXPECT_TRUE(eventually([&] { return fs.pending_exports() == 0; }));
  EXPECT_TRUE(eventually([&] { return staging_files().empty(); }))
      << "after the retry exported it with no handle open, the staged files go";
}

TEST_F(WritePathTest, FlushFailingWithAccessDeniedReturnsAccessDenied) {
  auto& fs = mount(multipart_options());
  client_.fail_all(access_denied(), "PutObject");
  uint64_t fh = create_and_write(fs, "f", "x");
  Status st = fs.flush(fh);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, ErrorCode::kAccessDenied);
  EXPECT_EQ(to_errno(st.error()), EACCES);
  EXPECT_EQ(staged_data_files(), 1u);
  client_.clear();
  EXPECT_TRUE(eventually([&] { return fs.pending_exports() == 0 && object("p/f") == "x"; }));
  fs.release(fh);
  EXPECT_TRUE(staging_empties());
}

TEST_F(WritePathTest, FlushFailingInUploadPartKeepsDataStagedAndTheRetryExportsIt) {
  auto& fs = mount(multipart_options());
  client_.fail_all(network_error(), "UploadPart");
  const std::string data = random_bytes(2 * kPart + kMiB, 6);
  uint64_t fh = create_and_write(fs, "f", data);
  Status st = fs.flush(fh);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, ErrorCode::kNetwork);
  EXPECT_EQ(staged_data_files(), 1u);
  EXPECT_FALSE(object("p/f"));
  client_.clear();
  EXPECT_TRUE(eventually([&] { return object("p/f").has_value() && fs.pending_exports() == 0; }))
      << "the retry never exported it";
  auto got = object("p/f");
  ASSERT_TRUE(got);
  EXPECT_TRUE(*got == data);
  fs.release(fh);
  EXPECT_TRUE(staging_empties());
}

TEST_F(WritePathTest, FlushFailingInCompleteMultipartUploadReturnsTheErrorAndTheRetryExportsIt) {
  auto& fs = mount(multipart_options());
  client_.fail_all(access_denied(), "CompleteMultipartUpload");
  const std::string data = random_bytes(2 * kPart + kMiB, 7);
  uint64_t fh = create_and_write(fs, "f", data);
  ASSERT_TRUE(eventually([&] { return store_.request_count("UploadPart") >= 2; }));
  Status st = fs.flush(fh);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, ErrorCode::kAccessDenied);
  EXPECT_EQ(staged_data_files(), 1u);
  EXPECT_FALSE(object("p/f"));
  EXPECT_EQ(fs.pending_exports(), 1u) << "a failed export is pending until S3 has it "
                                         "(see PendingExportsCountsAFileWhoseRetryIsInFlight)";
  client_.clear();
  EXPECT_TRUE(eventually([&] { return object("p/f").has_value() && fs.pending_exports() == 0; }))
      << "the retry never exported it";
  auto got = object("p/f");
  ASSERT_TRUE(got);
  EXPECT_TRUE(*got == data);
  EXPECT_GE(store_.request_count("AbortMultipartUpload"), 1)
      << "the upload whose completion failed is aborted before the next try";
  fs.release(fh);
  EXPECT_TRUE(staging_empties());
}

// pending_exports() is what unmount reports as "not exported yet": it must not
// read 0 while a retry is still uploading a file S3 does not have.
TEST_F(WritePathTest, PendingExportsCountsAFileWhoseRetryIsInFlight) {
  auto& fs = mount(multipart_options());
  client_.fail_all(network_error(), "PutObject");
  uint64_t fh = create_and_write(fs, "f", "slow retry");
  ASSERT_FALSE(fs.flush(fh));
  ASSERT_EQ(fs.pending_exports(), 1u);
  client_.clear();
  client_.delay_each(300ms);  // every request, the retry's PUT too, takes 300 ms
  int zero_while_absent = 0;
  bool exported = eventually([&] {
    size_t pending = fs.pending_exports();
    bool absent = !object("p/f").has_value();  // read after `pending`
    if (pending == 0 && absent) ++zero_while_absent;
    return !absent;
  });
  ASSERT_TRUE(exported) << "the retry never exported it";
  EXPECT_EQ(zero_while_absent, 0)
      << "pending_exports() read 0 while the file was not in S3 (its retry was in flight)";
  client_.delay_each(0ms);
  EXPECT_TRUE(eventually([&] { return fs.pending_exports() == 0; }));
  fs.release(fh);
}

TEST_F(WritePathTest, WithoutStartWritePathAFailedFlushIsNotRetriedButTheNextFlushExports) {
  FsOptions o = multipart_options();
  auto& fs = mount(o, /*start=*/false);
  client_.fail_all(network_error(), "PutObject");
  uint64_t fh = create_and_write(fs, "f", "data");
  ASSERT_FALSE(fs.flush(fh));
  EXPECT_EQ(fs.pending_exports(), 0u) << "no exporter: nothing is scheduled";
  client_.clear();
  std::this_thread::sleep_for(200ms);
  EXPECT_FALSE(object("p/f")) << "no retry thread without start_write_path()";
  EXPECT_EQ(staged_data_files(), 1u);
  ASSERT_TRUE(fs.flush(fh));
  EXPECT_EQ(object("p/f"), "data");
  fs.release(fh);
  EXPECT_TRUE(staging_empties());
}

// ---------------------------------------------------------------------------
// Crash recovery

TEST_F(WritePathTest, StagedFilesLeftByACrashAreRecoveredAbortedAndExportedOnlyWhenComplete) {
  auto stage_with = [&](const std::string& key, const std::string& data, bool complete,
                        bool with_upload) -> staging::Manifest {
    staging::Manifest m = stage_by_hand(key, data, complete);
    if (with_upload) {
      auto id = store_.create_multipart_upload("b", key, {}, "");
      EXPECT_TRUE(id);
      EXPECT_TRUE(store_.upload_part("b", key, *id, 1, s3::Body::from_memory("stale part")));
      m.upload_id = *id;
    }
    EXPECT_TRUE(staging_->save(m));
    return m;
  };
  const std::string done_data = random_bytes(300000, 8);
  auto done = stage_with("p/dir/recovered", done_data, /*complete=*/true, /*with_upload=*/true);
  auto writing = stage_with("p/incomplete", "half written", /*complete=*/false, true);
  auto other = stage_with("q/other-prefix", "not ours", /*complete=*/true, false);
  const int aborts_before = store_.request_count("AbortMultipartUpload");

  auto& fs = mount(multipart_options());
  EXPECT_EQ(store_.request_count("AbortMultipartUpload") - aborts_before, 2)
      << "both uploads left in flight are aborted at start";
  for (auto* m : {&done, &writing}) {
    auto part = store_.upload_part("b", m->key, m->upload_id, 2, s3::Body::from_memory("x"));
    ASSERT_FALSE(part) << "upload " << m->upload_id << " of " << m->key << " still exists";
    EXPECT_EQ(part.error().code, ErrorCode::kNoSuchUpload);
  }
  EXPECT_TRUE(eventually([&] { return object("p/dir/recovered").has_value(); }))
      << "the complete staged file was not exported";
  EXPECT_TRUE(object("p/dir/recovered") == done_data);
  auto h = head("p/dir/recovered");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->metadata["file-permissions"], "0100600");
  EXPECT_EQ(h->metadata["file-owner"], "77");
  EXPECT_TRUE(eventually([&] { return fs.pending_exports() == 0; }));
  EXPECT_TRUE(eventually([&] { return !std::filesystem::exists(staging_->data_path(done.id)); }))
      << "the exported file's staged data is removed";

  std::this_thread::sleep_for(200ms);  // a few retry periods
  EXPECT_FALSE(object("p/incomplete"))
      << "a file still being written at the crash is never exported";
  EXPECT_TRUE(std::filesystem::exists(staging_->data_path(writing.id)));
  EXPECT_TRUE(std::filesystem::exists(staging_dir_ + "/" + writing.id + ".json"));
  EXPECT_FALSE(object("q/other-prefix")) << "another prefix's staged file is not this mount's";
  EXPECT_TRUE(std::filesystem::exists(staging_->data_path(other.id)));
  auto listed = staging_->list();
  ASSERT_TRUE(listed);
  bool found_writing = false;
  for (auto& m : *listed) {
    if (m.id == writing.id) {
      found_writing = true;
      EXPECT_TRUE(m.upload_id.empty()) << "the aborted upload id is cleared from the manifest";
      EXPECT_FALSE(m.complete);
    }
  }
  EXPECT_TRUE(found_writing);
  // The recovered file is a file of the mount.
  Ino ino = lookup_path(fs, "dir/recovered");
  ASSERT_NE(ino, 0u);
  EXPECT_EQ(fs.getattr(ino)->mode, static_cast<mode_t>(S_IFREG | 0600));
}

int64_t wall_ns(std::chrono::system_clock::time_point t = std::chrono::system_clock::now()) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

// What a process killed between CreateMultipartUpload's answer and saving the
// upload's id leaves: the manifest's window, and an upload S3 knows of.
TEST_F(WritePathTest, UploadACrashLeftUnrecordedIsAbortedByTheNextStartAndOthersAreLeftAlone) {
  const std::string data = random_bytes(3 * kPart, 9);
  auto big = stage_by_hand("p/big", data, /*complete=*/true);
  const int64_t sent = wall_ns();
  auto lost = store_.create_multipart_upload("b", "p/big", {}, "");
  ASSERT_TRUE(lost);
  big.upload_windows = {{"p/big", sent - 1'000'000'000, sent}};
  ASSERT_TRUE(staging_->save(big));
  // Not this file's: another key's upload, and one of a kept file's key whose
  // window was two hours ago (someone else's upload of that key, now).
  auto other_key = store_.create_multipart_upload("b", "p/big2", {}, "");
  ASSERT_TRUE(other_key);
  auto kept = stage_by_hand("p/kept", "half written", /*complete=*/false);
  const int64_t two_hours_ago = wall_ns(std::chrono::system_clock::now() - 2h);
  kept.upload_windows = {{"p/kept", two_hours_ago, two_hours_ago}};
  ASSERT_TRUE(staging_->save(kept));
  auto someone_elses = store_.create_multipart_upload("b", "p/kept", {}, "");
  ASSERT_TRUE(someone_elses);
  // A file still being written at the crash is never exported: only the start
  // can abort its upload.
  auto writing = stage_by_hand("p/writing", "half", /*complete=*/false);
  auto lost_writing = store_.create_multipart_upload("b", "p/writing", {}, "");
  ASSERT_TRUE(lost_writing);
  writing.upload_windows = {{"p/writing", sent, wall_ns()}};
  ASSERT_TRUE(staging_->save(writing));

  auto& fs = mount(multipart_options());
  EXPECT_TRUE(uploads_of("p/writing").empty())
      << "upload " << *lost_writing << " of a kept file is still in S3 after the start";
  EXPECT_TRUE(eventually([&] { return object("p/big") == data; }))
      << "the recovered file was not exported";
  EXPECT_TRUE(eventually([&] { return uploads_of("p/big").empty(); }))
      << "upload " << *lost << " the crash left is still in S3";
  EXPECT_EQ(uploads_of("p/big2"), std::set<std::string>{*other_key});
  EXPECT_EQ(uploads_of("p/kept"), std::set<std::string>{*someone_elses})
      << "an upload initiated outside the window is not this file's";
  auto after = manifest(kept.id);
  ASSERT_TRUE(after) << "the incomplete file is kept";
  EXPECT_TRUE(after->upload_windows.empty()) << "its window was looked at: nothing is left open";
  EXPECT_TRUE(eventually([&] { return fs.pending_exports() == 0; }));
}

TEST_F(WritePathTest, UploadWindowsStayInTheManifestWhileS3CannotListUploads) {
  auto kept = stage_by_hand("p/kept", "half written", /*complete=*/false);
  const int64_t sent = wall_ns();
  auto lost = store_.create_multipart_upload("b", "p/kept", {}, "");
  ASSERT_TRUE(lost);
  kept.upload_windows = {{"p/kept", sent, sent}};
  ASSERT_TRUE(staging_->save(kept));

  client_.fail_all(access_denied(), "ListMultipartUploads");
  mount(multipart_options());
  auto after = manifest(kept.id);
  ASSERT_TRUE(after);
  EXPECT_EQ(after->upload_windows, kept.upload_windows) << "nothing was resolved: the window stays";
  EXPECT_EQ(uploads_of("p/kept"), std::set<std::string>{*lost});

  client_.clear();
  const int lists = store_.request_count("ListMultipartUploads");  // uploads_of() counts too
  mount(multipart_options());                                      // the next start
  EXPECT_EQ(store_.request_count("ListMultipartUploads"), lists + 1);
  EXPECT_TRUE(uploads_of("p/kept").empty()) << "the next start aborts it";
  after = manifest(kept.id);
  ASSERT_TRUE(after);
  EXPECT_TRUE(after->upload_windows.empty());
}

TEST_F(WritePathTest, AnUploadWhoseCreateAnswerWasLostIsAbortedOnceTheFileIsExported) {
  auto& fs = mount(multipart_options());
  // A file of one PUT creates no upload and looks for none; a multipart export
  // looks once, and aborts nothing when nothing was left.
  uint64_t fh = create_and_write(fs, "small", "small");
  ASSERT_TRUE(fs.flush(fh));
  fs.release(fh);
  EXPECT_EQ(store_.request_count("ListMultipartUploads"), 0);
  const std::string plain = random_bytes(3 * kPart, 10);
  fh = create_and_write(fs, "plain", plain);
  ASSERT_TRUE(fs.flush(fh));
  fs.release(fh);
  EXPECT_EQ(object("p/plain"), plain);
  EXPECT_EQ(store_.request_count("ListMultipartUploads"), 1);
  const int aborts = store_.request_count("AbortMultipartUpload");
  EXPECT_EQ(aborts, 0);

  client_.lose_next_create_answer();  // the streamed upload's create
  const std::string data = random_bytes(3 * kPart, 11);
  fh = create_and_write(fs, "f", data);
  Status st = fs.flush(fh);
  ASSERT_TRUE(st) << st.error().describe();
  fs.release(fh);
  EXPECT_EQ(object("p/f"), data);
  EXPECT_TRUE(uploads_of("p/f").empty()) << "the upload whose answer was lost is left in S3";
  EXPECT_EQ(store_.request_count("AbortMultipartUpload"), aborts + 1);
  EXPECT_TRUE(staging_empties());
}

TEST_F(WritePathTest, AWholeFileUploadSavesItsWindowBeforeItsCreate) {
  auto& fs = mount(multipart_options(), /*start=*/false);  // no retry thread
  // Written backwards: not streamed, so the export is one whole-file upload,
  // whose id is never recorded. Its completion fails: the window must be on
  // disk, as a kill during the upload would find it.
  client_.fail_all(network_error(), "CompleteMultipartUpload");
  const std::string data = random_bytes(3 * kPart, 12);
  auto c = fs.create(kRootIno, "back", 0644, O_WRONLY | O_CREAT, {1000, 1000});
  ASSERT_TRUE(c);
  for (size_t off = data.size(); off > 0;) {
    const size_t len = std::min<size_t>(kMiB, off);
    off -= len;
    ASSERT_TRUE(fs.write(c->second.fh, off, std::string_view(data).substr(off, len)));
  }
  const int64_t before = wall_ns();
  // What a kill at the create would leave on disk.
  std::optional<std::vector<staging::UploadWindow>> on_disk;
  client_.before_create([&] {
    auto m = staging_->list();
    if (m && m->size() == 1) on_disk = (*m)[0].upload_windows;
  });
  ASSERT_FALSE(fs.flush(c->second.fh));
  ASSERT_TRUE(on_disk) << "the create was not sent";
  ASSERT_EQ(on_disk->size(), 1u) << "no window on disk when the create was sent";
  EXPECT_EQ((*on_disk)[0].key, "p/back");
  auto listed = staging_->list();
  ASSERT_TRUE(listed);
  ASSERT_EQ(listed->size(), 1u);
  ASSERT_EQ((*listed)[0].upload_windows.size(), 1u);
  const auto& w = (*listed)[0].upload_windows[0];
  EXPECT_EQ(w.key, "p/back");
  EXPECT_GE(w.to_ns, before);
  EXPECT_EQ(store_.request_count("CreateMultipartUpload"), 1) << "one whole-file upload";

  client_.clear();
  ASSERT_TRUE(fs.flush(c->second.fh));
  fs.release(c->second.fh);
  EXPECT_EQ(object("p/back"), data);
  EXPECT_TRUE(uploads_of("p/back").empty());
  EXPECT_TRUE(staging_empties());
}

TEST_F(WritePathTest, TheLookForUploadsLeftLeavesAnotherFilesLiveUploadOfTheKeyAlone) {
  auto& fs = mount(multipart_options());
  // A streams an upload to p/k, then is renamed to p/k2 before it is closed:
  // its window names p/k.
  const std::string a_data = random_bytes(3 * kPart, 14);
  uint64_t a = create_and_write(fs, "k", a_data);
  std::set<std::string> a_upload;
  ASSERT_TRUE(eventually([&] {
    a_upload = uploads_of("p/k");
    return a_upload.size() == 1;
  }));
  ASSERT_TRUE(fs.rename(kRootIno, "k", kRootIno, "k2", 0));
  // B, a new p/k, streams its own upload to p/k and stays open.
  const std::string b_data = random_bytes(3 * kPart, 15);
  uint64_t b = create_and_write(fs, "k", b_data);
  std::set<std::string> b_upload;
  ASSERT_TRUE(eventually([&] {
    b_upload.clear();
    for (const auto& id : uploads_of("p/k")) {
      if (!a_upload.contains(id)) b_upload.insert(id);
    }
    return b_upload.size() == 1;
  })) << "B's streamed upload";
  // A's export aborts its own upload of p/k and looks for uploads of p/k left
  // behind: B's is live.
  ASSERT_TRUE(fs.flush(a));
  fs.release(a);
  EXPECT_EQ(object("p/k2"), a_data);
  EXPECT_EQ(uploads_of("p/k"), b_upload) << "A's look aborted B's upload";
  const int creates = store_.request_count("CreateMultipartUpload");
  ASSERT_TRUE(fs.flush(b));
  fs.release(b);
  EXPECT_EQ(object("p/k"), b_data);
  EXPECT_EQ(store_.request_count("CreateMultipartUpload"), creates)
      << "B completed its streamed upload, not a new one";
}

TEST_F(WritePathTest, AnExportSucceedsWhenS3CannotListUploads) {
  auto& fs = mount(multipart_options());
  client_.fail_all(access_denied(), "ListMultipartUploads");
  const std::string data = random_bytes(3 * kPart, 13);
  uint64_t fh = create_and_write(fs, "f", data);
  Status st = fs.flush(fh);
  ASSERT_TRUE(st) << "looking for uploads left behind is not part of the export: "
                  << st.error().describe();
  fs.release(fh);
  EXPECT_EQ(object("p/f"), data);
  EXPECT_TRUE(uploads_of("p/f").empty());
}

TEST_F(WritePathTest, StagedFileMarkedWriteFailedIsKeptAndNeverExported) {
  staging::Manifest m;
  m.bucket = std::string("b");
  m.key = std::string("p/failed");
  m.complete = true;  // even so: its write failed, its bytes are not what the writer meant
  m.write_failed = true;
  auto fd = staging_->create(m);
  ASSERT_TRUE(fd);
  ASSERT_EQ(pwrite(*fd, "partial", 7, 0), 7);
  ::close(*fd);
  ASSERT_TRUE(staging_->save(m));
  put("p/failed", "the old object");

  auto& fs = mount(multipart_options());
  std::this_thread::sleep_for(300ms);  // several retry periods
  EXPECT_EQ(object("p/failed"), "the old object") << "the old object stays in S3";
  EXPECT_EQ(store_.request_count("PutObject"), 1) << "only the test's own PUT";
  EXPECT_EQ(fs.pending_exports(), 0u);
  EXPECT_TRUE(std::filesystem::exists(staging_->data_path(m.id)));
  EXPECT_TRUE(std::filesystem::exists(staging_dir_ + "/" + m.id + ".json"));
}

// ---------------------------------------------------------------------------
// unlink, mkdir, rmdir, symlink

TEST_F(WritePathTest, UnlinkOfAnExportedFileDeletesTheObject) {
  put("p/f", "bytes");
  auto& fs = mount();
  ASSERT_NE(lookup_path(fs, "f"), 0u);
  Status st = fs.unlink(kRootIno, "f");
  ASSERT_TRUE(st) << st.error().describe();
  EXPECT_EQ(store_.request_count("DeleteObject"), 1);
  EXPECT_FALSE(object("p/f"));
  auto l = fs.lookup(kRootIno, "f");
  ASSERT_FALSE(l);
  EXPECT_EQ(l.error().code, ErrorCode::kNotFound);
}

TEST_F(WritePathTest, UnlinkOfANewFileStillOpenForWritingExportsNothing) {
  auto& fs = mount();
  uint64_t fh = create_and_write(fs, "f", "never published");
  ASSERT_TRUE(fs.unlink(kRootIno, "f"));
  ASSERT_TRUE(fs.write(fh, 15, " (still writable)")) << "an unlinked open file stays writable";
  ASSERT_TRUE(fs.flush(fh));
  EXPECT_FALSE(object("p/f")) << "an unlinked file's flush must export nothing";
  fs.release(fh);
  EXPECT_FALSE(object("p/f"));
  EXPECT_EQ(store_.request_count("PutObject"), 0);
  EXPECT_TRUE(staging_empties()) << "an unlinked file's staged data is removed at release";
}

TEST_F(WritePathTest, UnlinkOfAnExistingObjectBeingRewrittenDeletesItAndFlushKeepsItAbsent) {
  put("p/f", "old");
  auto& fs = mount();
  Ino ino = lookup_path(fs, "f");
  auto w = fs.open(ino, O_RDWR);
  ASSERT_TRUE(w);
  ASSERT_TRUE(fs.write(w->fh, 0, "new bytes"));
  ASSERT_TRUE(fs.unlink(kRootIno, "f"));
  EXPECT_EQ(store_.request_count("DeleteObject"), 1);
  ASSERT_TRUE(fs.flush(w->fh));
  fs.release(w->fh);
  EXPECT_FALSE(object("p/f")) << "the unlinked file came back at flush";
  EXPECT_TRUE(staging_empties());
}

TEST_F(WritePathTest, MkdirRmdirAndSymlinkWriteFsxObjects) {
  auto& fs = mount();
  auto d = fs.mkdir(kRootIno, "d", 0750, Caller{7, 8});
  ASSERT_TRUE(d) << d.error().describe();
  EXPECT_EQ(d->mode, static_cast<mode_t>(S_IFDIR | 0750));
  auto marker = head("p/d/");
  ASSERT_TRUE(marker) << "mkdir must PUT the marker p/d/";
  EXPECT_EQ(marker->size, 0u);
  EXPECT_EQ(marker->metadata["file-permissions"], "0040750");
  EXPECT_EQ(marker->metadata["file-owner"], "7");
  EXPECT_EQ(marker->metadata["file-group"], "8");
  auto again = fs.mkdir(kRootIno, "d", 0755, Caller{});
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, ErrorCode::kExists);

  // A file staged in it (not exported yet) makes it non-empty.
  auto c = fs.create(d->ino, "x", 0644, O_WRONLY | O_CREAT, Caller{});
  ASSERT_TRUE(c);
  ASSERT_TRUE(fs.write(c->second.fh, 0, "x"));
  Status st = fs.rmdir(kRootIno, "d");
  ASSERT_FALSE(st) << "rmdir of a directory holding a staged file";
  EXPECT_EQ(st.error().code, ErrorCode::kNotEmpty);
  ASSERT_TRUE(fs.flush(c->second.fh));
  fs.release(c->second.fh);
  EXPECT_EQ(object("p/d/x"), "x");
  st = fs.rmdir(kRootIno, "d");
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, ErrorCode::kNotEmpty);
  EXPECT_TRUE(head("p/d/")) << "a failed rmdir keeps the marker";
  ASSERT_TRUE(fs.unlink(d->ino, "x"));
  st = fs.rmdir(kRootIno, "d");
  ASSERT_TRUE(st) << st.error().describe();
  EXPECT_FALSE(head("p/d/")) << "rmdir deletes the marker";
  EXPECT_EQ(fs.lookup(kRootIno, "d").error().code, ErrorCode::kNotFound);

  auto l = fs.symlink(kRootIno, "l", "../some/target", Caller{7, 8});
  ASSERT_TRUE(l) << l.error().describe();
  EXPECT_EQ(l->mode & S_IFMT, static_cast<mode_t>(S_IFLNK));
  EXPECT_EQ(object("p/l"), "../some/target");
  auto lh = head("p/l");
  ASSERT_TRUE(lh);
  EXPECT_EQ(lh->metadata["file-permissions"], "0120777");
  EXPECT_EQ(lh->metadata["file-owner"], "7");
  auto target = fs.readlink(l->ino);
  ASSERT_TRUE(target) << target.error().describe();
  EXPECT_EQ(*target, "../some/target");
  // A fresh mount reads the same symlink from S3.
  auto& fs2 = mount();
  auto l2 = fs2.lookup(kRootIno, "l");
  ASSERT_TRUE(l2);
  EXPECT_EQ(l2->mode, static_cast<mode_t>(S_IFLNK | 0777));
  EXPECT_EQ(*fs2.readlink(l2->ino), "../some/target");
  auto d2 = fs2.mkdir(kRootIno, "e", 0700, Caller{});
  ASSERT_TRUE(d2);
  EXPECT_TRUE(fs2.readdir(d2->ino)->empty());
}

// ---------------------------------------------------------------------------
// rename

TEST_F(WritePathTest, RenameOfAFileCopiesThenDeletes) {
  put("p/a", "AAA");
  auto& fs = mount();
  ASSERT_NE(lookup_path(fs, "a"), 0u);
  Status st = fs.rename(kRootIno, "a", kRootIno, "b", 0);
  ASSERT_TRUE(st) << st.error().describe();
  EXPECT_EQ(store_.request_count("CopyObject"), 1);
  EXPECT_EQ(store_.request_count("DeleteObject"), 1);
  EXPECT_EQ(object("p/b"), "AAA");
  EXPECT_FALSE(object("p/a"));
  EXPECT_EQ(fs.lookup(kRootIno, "a").error().code, ErrorCode::kNotFound);
  Ino b = lookup_path(fs, "b");
  ASSERT_NE(b, 0u);
  EXPECT_EQ(read_all(fs, b), "AAA");
}

TEST_F(WritePathTest, RenameOverAnExistingFileReplacesIt) {
  put("p/c", "CCC");
  put("p/d", "DDDDDD");
  auto& fs = mount();
  ASSERT_NE(lookup_path(fs, "c"), 0u);
  ASSERT_NE(lookup_path(fs, "d"), 0u);
  auto noreplace = fs.rename(kRootIno, "c", kRootIno, "d", RENAME_NOREPLACE);
  ASSERT_FALSE(noreplace);
  EXPECT_EQ(noreplace.error().code, ErrorCode::kExists);
  Status st = fs.rename(kRootIno, "c", kRootIno, "d", 0);
  ASSERT_TRUE(st) << st.error().describe();
  EXPECT_EQ(object("p/d"), "CCC");
  EXPECT_FALSE(object("p/c"));
  Ino d = lookup_path(fs, "d");
  ASSERT_NE(d, 0u);
  EXPECT_EQ(fs.getattr(d)->size, 3u);
  EXPECT_EQ(read_all(fs, d), "CCC");
}

TEST_F(WritePathTest, RenameOfADirectoryMovesEveryKey) {
  put("p/dir/", "");
  put("p/dir/x", "X");
  put("p/dir/sub/y", "Y");
  put("p/dirt", "not inside");
  auto& fs = mount();
  ASSERT_NE(lookup_path(fs, "dir"), 0u);
  ASSERT_NE(lookup_path(fs, "dir/x"), 0u);
  Status st = fs.rename(kRootIno, "dir", kRootIno, "moved", 0);
  ASSERT_TRUE(st) << st.error().describe();
  EXPECT_EQ(keys("p/"),
            (std::set<std::string>{"p/dirt", "p/moved/", "p/moved/sub/y", "p/moved/x"}));
  EXPECT_EQ(object("p/moved/x"), "X");
  EXPECT_EQ(object("p/moved/sub/y"), "Y");
  EXPECT_EQ(fs.lookup(kRootIno, "dir").error().code, ErrorCode::kNotFound);
  Ino y = lookup_path(fs, "moved/sub/y");
  ASSERT_NE(y, 0u);
  EXPECT_EQ(read_all(fs, y), "Y");
  Ino x = lookup_path(fs, "moved/x");
  ASSERT_NE(x, 0u);
  EXPECT_EQ(read_all(fs, x), "X");
}

TEST_F(WritePathTest, RenameOfANewFileStillBeingWrittenExportsUnderTheNewKeyOnly) {
  auto& fs = mount();
  uint64_t fh = create_and_write(fs, "w", "data");
  Status st = fs.rename(kRootIno, "w", kRootIno, "w2", 0);
  ASSERT_TRUE(st) << st.error().describe();
  ASSERT_TRUE(fs.write(fh, 4, "+more"));
  ASSERT_TRUE(fs.flush(fh));
  EXPECT_EQ(object("p/w2"), "data+more");
  EXPECT_FALSE(object("p/w")) << "the old name must not appear in S3";
  fs.release(fh);
  EXPECT_EQ(keys("p/"), (std::set<std::string>{"p/w2"}));
  EXPECT_TRUE(staging_empties());
}

TEST_F(WritePathTest, RenameOfARewrittenObjectBeforeFlushExportsUnderTheNewKeyOnly) {
  put("p/old", "OLDOLD");
  auto& fs = mount();
  Ino ino = lookup_path(fs, "old");
  auto w = fs.open(ino, O_RDWR);
  ASSERT_TRUE(w);
  ASSERT_TRUE(fs.write(w->fh, 0, "NEW"));
  Status st = fs.rename(kRootIno, "old", kRootIno, "new", 0);
  ASSERT_TRUE(st) << st.error().describe();
  ASSERT_TRUE(fs.flush(w->fh));
  fs.release(w->fh);
  EXPECT_EQ(object("p/new"), "NEWOLD");
  EXPECT_FALSE(object("p/old"));
  EXPECT_EQ(keys("p/"), (std::set<std::string>{"p/new"}));
  EXPECT_TRUE(staging_empties());
}

TEST_F(WritePathTest, RenameOfAStreamingFileRestartsTheUploadUnderTheNewKey) {
  auto& fs = mount(multipart_options());
  const std::string data = random_bytes(3 * kPart + 10, 9);
  uint64_t fh = create_and_write(fs, "s", data);
  ASSERT_TRUE(eventually([&] { return store_.request_count("UploadPart") >= 3; }));
  ASSERT_TRUE(fs.rename(kRootIno, "s", kRootIno, "s2", 0));
  ASSERT_TRUE(fs.flush(fh));
  fs.release(fh);
  auto got = object("p/s2");
  ASSERT_TRUE(got);
  EXPECT_TRUE(*got == data);
  EXPECT_EQ(keys("p/"), (std::set<std::string>{"p/s2"}));
}

// ---------------------------------------------------------------------------
// Export policy, read-only, limits

TEST_F(WritePathTest, ExportPolicyNoneKeepsEveryChangeOnThisMount) {
  put("p/e", "exists");
  FsOptions o;
  o.export_policy = {false, false, false};
  o.metadata_ttl = 0ms;  // every lookup asks S3 again: hiding must not rest on a cache
  auto& fs = mount(o);
  const int puts = store_.request_count("PutObject");

  auto c = fs.create(kRootIno, "f", 0644, O_WRONLY | O_CREAT, Caller{});
  ASSERT_TRUE(c);
  ASSERT_TRUE(fs.write(c->second.fh, 0, "local only"));
  Status st = fs.flush(c->second.fh);
  ASSERT_TRUE(st) << st.error().describe();
  fs.release(c->second.fh);
  EXPECT_EQ(store_.request_count("PutObject"), puts);
  EXPECT_FALSE(object("p/f"));
  EXPECT_EQ(staged_data_files(), 1u) << "the file stays staged on this node";
  Ino f = lookup_path(fs, "f");
  ASSERT_EQ(f, c->first.ino) << "the staged file is still visible on this mount";
  EXPECT_EQ(read_all(fs, f), "local only");

  auto d = fs.mkdir(kRootIno, "d", 0755, Caller{});
  ASSERT_TRUE(d);
  EXPECT_FALSE(head("p/d/"));
  EXPECT_EQ(store_.request_count("PutObject"), puts);

  ASSERT_NE(lookup_path(fs, "e"), 0u);
  ASSERT_TRUE(fs.unlink(kRootIno, "e"));
  EXPECT_EQ(store_.request_count("DeleteObject"), 0);
  EXPECT_EQ(object("p/e"), "exists") << "DELETED not exported: the object stays";
  auto l = fs.lookup(kRootIno, "e");
  ASSERT_FALSE(l) << "the deleted name is hidden on this mount";
  EXPECT_EQ(l.error().code, ErrorCode::kNotFound);
  auto entries = fs.readdir(kRootIno);
  ASSERT_TRUE(entries);
  std::set<std::string> names;
  for (auto& e : *entries) names.insert(e.name);
  EXPECT_EQ(names, (std::set<std::string>{"d", "f"}));

  auto r = fs.rename(kRootIno, "f", kRootIno, "g", 0);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kCrossDevice);
  EXPECT_EQ(to_errno(r.error()), EXDEV);
  EXPECT_EQ(keys(), (std::set<std::string>{"p/e"}));
}

TEST_F(WritePathTest, ReadOnlyMountRefusesEveryChangeWithReadOnly) {
  put("p/f", "x");
  put("p/d/", "");
  FsOptions o;
  o.read_only = true;
  auto& fs = mount(o);
  Ino f = lookup_path(fs, "f");
  ASSERT_NE(f, 0u);
  ASSERT_NE(lookup_path(fs, "d"), 0u);
  auto expect_ro = [](const Error& e, const char* what) {
    EXPECT_EQ(e.code, ErrorCode::kReadOnly) << what << ": " << e.describe();
  };
  auto c = fs.create(kRootIno, "n", 0644, O_WRONLY | O_CREAT, Caller{});
  ASSERT_FALSE(c);
  expect_ro(c.error(), "create");
  for (int flags : {O_WRONLY, O_RDWR, O_RDONLY | O_TRUNC}) {
    auto w = fs.open(f, flags);
    ASSERT_FALSE(w) << "open for writing, flags " << flags;
    expect_ro(w.error(), "open for writing");
  }
  auto rd = fs.open(f, O_RDONLY);
  ASSERT_TRUE(rd);
  auto w = fs.write(rd->fh, 0, "y");
  EXPECT_FALSE(w) << "a write through a read-only handle";
  fs.release(rd->fh);
  auto m = fs.mkdir(kRootIno, "m", 0755, Caller{});
  ASSERT_FALSE(m);
  expect_ro(m.error(), "mkdir");
  auto s = fs.symlink(kRootIno, "s", "f", Caller{});
  ASSERT_FALSE(s);
  expect_ro(s.error(), "symlink");
  auto u = fs.unlink(kRootIno, "f");
  ASSERT_FALSE(u);
  expect_ro(u.error(), "unlink");
  auto rm = fs.rmdir(kRootIno, "d");
  ASSERT_FALSE(rm);
  expect_ro(rm.error(), "rmdir");
  auto rn = fs.rename(kRootIno, "f", kRootIno, "g", 0);
  ASSERT_FALSE(rn);
  expect_ro(rn.error(), "rename");
  SetAttr size;
  size.size = 0;
  auto sa = fs.setattr(f, size, std::nullopt);
  ASSERT_FALSE(sa);
  expect_ro(sa.error(), "setattr size");
  SetAttr mode;
  mode.mode = 0600;
  sa = fs.setattr(f, mode, std::nullopt);
  ASSERT_FALSE(sa);
  expect_ro(sa.error(), "setattr mode");
  EXPECT_EQ(to_errno(sa.error()), EROFS);
  EXPECT_EQ(keys(), (std::set<std::string>{"p/d/", "p/f"}));
  EXPECT_EQ(object("p/f"), "x");
  EXPECT_EQ(store_.request_count("PutObject"), 2);
  EXPECT_EQ(store_.request_count("CopyObject"), 0);
  EXPECT_EQ(store_.request_count("DeleteObject"), 0);
  EXPECT_TRUE(staging_files().empty());
}

TEST_F(WritePathTest, NamesOver255BytesAreTooLongAndExclusiveCreateOfAnExistingNameFails) {
  put("p/exists", "x");
  auto& fs = mount();
  const std::string too_long(256, 'n');
  auto c = fs.create(kRootIno, too_long, 0644, O_WRONLY | O_CREAT, Caller{});
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code, ErrorCode::kNameTooLong);
  auto m = fs.mkdir(kRootIno, too_long, 0755, Caller{});
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().code, ErrorCode::kNameTooLong);
  auto s = fs.symlink(kRootIno, too_long, "t", Caller{});
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, ErrorCode::kNameTooLong);
  ASSERT_NE(lookup_path(fs, "exists"), 0u);
  auto r = fs.rename(kRootIno, "exists", kRootIno, too_long, 0);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kNameTooLong);
  EXPECT_EQ(to_errno(r.error()), ENAMETOOLONG);

  const std::string longest(255, 'l');
  auto ok = fs.create(kRootIno, longest, 0644, O_WRONLY | O_CREAT, Caller{});
  ASSERT_TRUE(ok) << "255 bytes is allowed: " << ok.error().describe();
  ASSERT_TRUE(fs.flush(ok->second.fh));
  fs.release(ok->second.fh);
  EXPECT_TRUE(object("p/" + longest));

  // O_EXCL: an object in S3 the mount has not looked up, and one it made itself.
  auto excl = fs.create(kRootIno, "exists", 0644, O_WRONLY | O_CREAT | O_EXCL, Caller{});
  ASSERT_FALSE(excl);
  EXPECT_EQ(excl.error().code, ErrorCode::kExists);
  EXPECT_EQ(to_errno(excl.error()), EEXIST);
  put("p/unseen", "y");
  excl = fs.create(kRootIno, "unseen", 0644, O_WRONLY | O_CREAT | O_EXCL, Caller{});
  ASSERT_FALSE(excl) << "O_EXCL create over an object the mount had not seen";
  EXPECT_EQ(excl.error().code, ErrorCode::kExists);
  uint64_t fh = create_and_write(fs, "mine", "m");
  excl = fs.create(kRootIno, "mine", 0644, O_WRONLY | O_CREAT | O_EXCL, Caller{});
  ASSERT_FALSE(excl);
  EXPECT_EQ(excl.error().code, ErrorCode::kExists);
  ASSERT_TRUE(fs.flush(fh));
  fs.release(fh);
  EXPECT_EQ(object("p/exists"), "x");
  EXPECT_EQ(object("p/unseen"), "y");
  EXPECT_EQ(object("p/mine"), "m");
}

TEST_F(WritePathTest, WritesAndTruncatesPastFiveTiBAreFileTooBig) {
  put("p/g", "small");
  auto& fs = mount();
  auto c = fs.create(kRootIno, "f", 0644, O_WRONLY | O_CREAT, Caller{});
  ASSERT_TRUE(c);
  auto w = fs.write(c->second.fh, kFiveTiB, "x");
  ASSERT_FALSE(w) << "a write at offset 5 TiB";
  EXPECT_EQ(w.error().code, ErrorCode::kFileTooBig);
  EXPECT_EQ(to_errno(w.error()), EFBIG);
  w = fs.write(c->second.fh, kFiveTiB - 1, "xy");
  ASSERT_FALSE(w) << "a write ending past 5 TiB";
  EXPECT_EQ(w.error().code, ErrorCode::kFileTooBig);
  auto fa = fs.fallocate(c->second.fh, 0, kFiveTiB, 1);
  ASSERT_FALSE(fa);
  EXPECT_EQ(fa.error().code, ErrorCode::kFileTooBig);
  EXPECT_EQ(fs.getattr(c->first.ino)->size, 0u) << "the failed writes left the file empty";
  ASSERT_TRUE(fs.write(c->second.fh, 0, "ok"));
  ASSERT_TRUE(fs.flush(c->second.fh));
  fs.release(c->second.fh);
  EXPECT_EQ(object("p/f"), "ok");

  Ino g = lookup_path(fs, "g");
  ASSERT_NE(g, 0u);
  SetAttr big;
  big.size = kFiveTiB + 1;
  auto sa = fs.setattr(g, big, std::nullopt);
  ASSERT_FALSE(sa);
  EXPECT_EQ(sa.error().code, ErrorCode::kFileTooBig);
  EXPECT_EQ(object("p/g"), "small");
  EXPECT_TRUE(staging_files().empty());
}

// ---------------------------------------------------------------------------
// Kernel passthrough: while the kernel reads a file's cache file itself, writes
// (which go to a staged file) would never reach those readers, so they wait.

// A mount whose files of 1 MiB or more may be served by passthrough.
FsOptions passthrough_options() {
  FsOptions o;
  o.passthrough_min_size = kMiB;
  o.passthrough_release_wait = std::chrono::milliseconds(20);  // each refusal waits this
  return o;
}

void expect_busy(const Error& e, const std::string& what) {
  EXPECT_EQ(e.code, ErrorCode::kBusy) << what << ": " << e.describe();
  EXPECT_EQ(to_errno(e), ETXTBSY) << what;
}

TEST_F(WritePathTest, WritesAreBusyWhilePassthroughHandlesAreOpenAndWorkAfterTheyClose) {
  std::string data = random_bytes(2 * kMiB + 5, 41);
  put("p/f", data);
  auto& fs = mount(passthrough_options());
  Ino ino = lookup_path(fs, "f");
  ASSERT_NE(ino, 0u);
  ASSERT_TRUE(read_all(fs, ino) == data);
  auto pt = fs.open(ino, O_RDONLY, /*passthrough=*/true);
  ASSERT_TRUE(pt) << pt.error().describe();
  ASSERT_GE(pt->passthrough_fd, 0);
  auto joined = fs.open(ino, O_RDONLY, /*passthrough=*/true);  // joins passthrough
  ASSERT_TRUE(joined);
  ASSERT_GE(joined->passthrough_fd, 0);

  for (int flags : {O_WRONLY, O_RDWR, O_RDONLY | O_TRUNC, O_WRONLY | O_TRUNC, O_RDWR | O_APPEND}) {
    auto w = fs.open(ino, flags);
    ASSERT_FALSE(w) << "open flags " << flags << " while passthrough handles are open";
    expect_busy(w.error(), "open flags " + std::to_string(flags));
  }
  auto c = fs.create(kRootIno, "f", 0644, O_WRONLY | O_CREAT, Caller{1000, 1000});
  ASSERT_FALSE(c) << "create of the existing name opens it for writing";
  expect_busy(c.error(), "create");
  for (uint64_t size : {uint64_t{0}, uint64_t{10}, 4 * kMiB}) {
    SetAttr change;
    change.size = size;
    auto a = fs.setattr(ino, change, std::nullopt);
    ASSERT_FALSE(a) << "truncate to " << size;
    expect_busy(a.error(), "truncate to " + std::to_string(size));
  }
  EXPECT_TRUE(staging_files().empty()) << "nothing was staged";
  EXPECT_TRUE(object("p/f") == data) << "S3 keeps the object as it was";
  EXPECT_EQ(fs.getattr(ino)->size, data.size());
  std::string head(16, '\0');
  ASSERT_EQ(pread(pt->passthrough_fd, head.data(), head.size(), 0), 16);
  EXPECT_EQ(head, data.substr(0, 16)) << "the kernel's file is untouched";

  // One passthrough handle left: still busy.
  fs.release(pt->fh);
  auto still = fs.open(ino, O_RDWR);
  ASSERT_FALSE(still);
  expect_busy(still.error(), "with one passthrough handle left");

  // All gone: writes and truncation work again.
  fs.release(joined->fh);
  auto w = fs.open(ino, O_RDWR);
  ASSERT_TRUE(w) << w.error().describe();
  EXPECT_EQ(w->passthrough_fd, -1);
  ASSERT_TRUE(fs.write(w->fh, 3, "PATCH"));
  ASSERT_TRUE(fs.flush(w->fh));
  fs.release(w->fh);
  data.replace(3, 5, "PATCH");
  EXPECT_TRUE(object("p/f") == data);
  SetAttr down;
  down.size = 10;
  auto a = fs.setattr(ino, down, std::nullopt);
  ASSERT_TRUE(a) << a.error().describe();
  EXPECT_EQ(a->size, 10u);
  EXPECT_EQ(object("p/f"), data.substr(0, 10));
}

// The kernel sends RELEASE after close() returned: a program that closed its
// passthrough reader and then opened the file for writing got ETXTBSY.
TEST_F(WritePathTest, AWriteOpenWaitsForAPassthroughReleaseInFlight) {
  std::string data = random_bytes(2 * kMiB, 43);
  put("p/f", data);
  FsOptions o = passthrough_options();
  o.passthrough_release_wait = std::chrono::seconds(5);
  auto& fs = mount(o);
  Ino ino = lookup_path(fs, "f");
  ASSERT_TRUE(read_all(fs, ino) == data);
  auto pt = fs.open(ino, O_RDONLY, /*passthrough=*/true);
  ASSERT_TRUE(pt);
  ASSERT_GE(pt->passthrough_fd, 0);
  std::thread late_release([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    fs.release(pt->fh);
  });
  auto w = fs.open(ino, O_RDWR);
  late_release.join();
  ASSERT_TRUE(w) << "a write open 100 ms before the reader's RELEASE: " << w.error().describe();
  fs.release(w->fh);
}

TEST_F(WritePathTest, TruncatingOpenIsBusyWhilePassthroughAndWorksAfter) {
  std::string data = random_bytes(kMiB + 1, 42);
  put("p/t", data);
  auto& fs = mount(passthrough_options());
  Ino ino = lookup_path(fs, "t");
  ASSERT_NE(ino, 0u);
  ASSERT_TRUE(read_all(fs, ino) == data);
  auto pt = fs.open(ino, O_RDONLY, /*passthrough=*/true);
  ASSERT_TRUE(pt);
  ASSERT_GE(pt->passthrough_fd, 0);
  auto busy = fs.open(ino, O_WRONLY | O_TRUNC);
  ASSERT_FALSE(busy);
  expect_busy(busy.error(), "O_TRUNC");
  fs.release(pt->fh);
  auto w = fs.open(ino, O_WRONLY | O_TRUNC);
  ASSERT_TRUE(w) << w.error().describe();
  ASSERT_TRUE(fs.write(w->fh, 0, "new"));
  ASSERT_TRUE(fs.flush(w->fh));
  fs.release(w->fh);
  EXPECT_EQ(object("p/t"), "new");
}

TEST_F(WritePathTest, AFileOpenForWritingIsNeverServedByPassthrough) {
  std::string data = random_bytes(2 * kMiB, 43);
  put("p/f", data);
  auto& fs = mount(passthrough_options());
  Ino ino = lookup_path(fs, "f");
  ASSERT_NE(ino, 0u);
  ASSERT_TRUE(read_all(fs, ino) == data);
  auto w = fs.open(ino, O_RDWR);
  ASSERT_TRUE(w) << w.error().describe();
  ASSERT_TRUE(fs.write(w->fh, 0, "XY"));
  auto r = fs.open(ino, O_RDONLY, /*passthrough=*/true);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->passthrough_fd, -1) << "the staged file holds the content, not the cache file";
  auto got = fs.read(r->fh, 0, 4);
  ASSERT_TRUE(got);
  EXPECT_EQ(bytes_of(*got), "XY" + data.substr(2, 2));
  fs.release(r->fh);
  ASSERT_TRUE(fs.flush(w->fh));
  fs.release(w->fh);
  EXPECT_EQ(metrics_.passthrough_opens.load(), 0u);
}

}  // namespace
}  // namespace nacre::fs
