// Transfers over the in-memory client, with failures injected by the
// fault-injecting wrapper.
#include "s3/transfer.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <future>
#include <random>
#include <thread>

#include "s3/faulty_object_client.h"
#include "s3/memory_object_client.h"

namespace nacre::s3 {
namespace {

class TempFile {
 public:
  explicit TempFile(const std::string& content = "") {
    char tmpl[] = "/tmp/nacre-transfer-XXXXXX";
    fd_ = mkstemp(tmpl);
    path_ = tmpl;
    if (!content.empty()) {
      EXPECT_EQ(write(fd_, content.data(), content.size()), (ssize_t)content.size());
    }
  }
  ~TempFile() {
    close(fd_);
    unlink(path_.c_str());
  }
  int fd() const { return fd_; }
  std::string read_all() const {
    std::string out(static_cast<size_t>(lseek(fd_, 0, SEEK_END)), '\0');
    EXPECT_EQ(pread(fd_, out.data(), out.size(), 0), (ssize_t)out.size());
    return out;
  }

 private:
  int fd_;
  std::string path_;
};

std::string random_bytes(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

TransferOptions small_parts() {
  TransferOptions o;
  o.part_size = kMinPartSize;
  o.concurrency = 4;
  return o;
}

TEST(Transfer, PartSizeKeepsWithinTenThousandParts) {
  EXPECT_EQ(part_size_for(1 * kGiB, 8 * kMiB), 8 * kMiB);
  EXPECT_EQ(part_size_for(1 * kGiB, 1 * kMiB), kMinPartSize);
  uint64_t huge = 5ull * 1024 * kGiB;  // 5 TiB, the S3 maximum
  uint64_t p = part_size_for(huge, 8 * kMiB);
  EXPECT_LE((huge + p - 1) / p, static_cast<uint64_t>(kMaxParts));
}

TEST(Transfer, MultipartUploadThenParallelDownloadRoundTrips) {
  MemoryObjectClient mem;
  mem.create_bucket("b");
  std::string data = random_bytes(3 * kMinPartSize + 12345, 1);
  TempFile src(data);
  uint64_t progressed = 0;
  TransferOptions opt = small_parts();
  std::mutex mu;
  opt.progress = [&](uint64_t n) {
    std::lock_guard lock(mu);
    progressed += n;
  };

  auto etag = upload_from_fd(mem, src.fd(), data.size(),
                             {"b", "big", Body::empty(), {{"k", "v"}}, ""}, opt);
  ASSERT_TRUE(etag) << etag.error().describe();
  EXPECT_TRUE(etag->ends_with("-4")) << *etag;
  EXPECT_EQ(mem.request_count("UploadPart"), 4);
  EXPECT_EQ(progressed, data.size());
  std::string stored;
  ASSERT_TRUE(mem.get_object({"b", "big", 0, std::nullopt, ""}, [&](std::string_view c) -> Status {
    stored.append(c);
    return {};
  }));
  ASSERT_TRUE(stored == data) << "the multipart upload stored other bytes";

  TempFile dst;
  auto info = download_to_fd(mem, "b", "big", dst.fd(), small_parts());
  ASSERT_TRUE(info) << info.error().describe();
  EXPECT_EQ(info->size, data.size());
  std::string got = dst.read_all();
  ASSERT_EQ(got.size(), data.size());
  size_t first_diff = std::mismatch(got.begin(), got.end(), data.begin()).first - got.begin();
  EXPECT_EQ(first_diff, got.size()) << "downloaded bytes differ from offset " << first_diff;
  EXPECT_EQ(mem.request_count("GetObject"), 5);  // 1 check above + 4 parts
}

TEST(Transfer, SmallUploadIsOnePut) {
  MemoryObjectClient mem;
  mem.create_bucket("b");
  TempFile src("tiny");
  ASSERT_TRUE(upload_from_fd(mem, src.fd(), 4, {"b", "t", Body::empty(), {}, ""}, small_parts()));
  EXPECT_EQ(mem.request_count("PutObject"), 1);
  EXPECT_EQ(mem.request_count("CreateMultipartUpload"), 0);
}

TEST(Transfer, EmptyObjectDownloads) {
  MemoryObjectClient mem;
  mem.create_bucket("b");
  ASSERT_TRUE(mem.put_object({"b", "empty", Body::from_memory(""), {}, ""}));
  TempFile dst("stale");
  ASSERT_EQ(ftruncate(dst.fd(), 0), 0);
  auto info = download_to_fd(mem, "b", "empty", dst.fd(), small_parts());
  ASSERT_TRUE(info) << info.error().describe();
  EXPECT_EQ(info->size, 0u);
}

TEST(Transfer, FailedPartAbortsTheUpload) {
  MemoryObjectClient mem;
  mem.create_bucket("b");
  FaultyObjectClient faulty(mem);
  faulty.fail_nth(2, Error{ErrorCode::kServerError, "injected", "InternalError", "r", 500},
                  "UploadPart");
  std::string data = random_bytes(2 * kMinPartSize + 1, 2);
  TempFile src(data);
  auto etag = upload_from_fd(faulty, src.fd(), data.size(), {"b", "k", Body::empty(), {}, ""},
                             small_parts());
  ASSERT_FALSE(etag);
  EXPECT_EQ(etag.error().code, ErrorCode::kServerError);
  EXPECT_EQ(mem.request_count("AbortMultipartUpload"), 1);
  EXPECT_FALSE(mem.head_object("b", "k")) << "a failed upload must not create the object";
}

TEST(Transfer, ObjectReplacedDuringDownloadFailsInsteadOfMixingVersions) {
  MemoryObjectClient mem;
  mem.create_bucket("b");
  std::string v1 = random_bytes(3 * kMinPartSize, 3);
  ASSERT_TRUE(mem.put_object({"b", "k", Body::from_memory(v1), {}, ""}));
  // Replace the object after the first part has been fetched.
  class Replacing : public FaultyObjectClient {
   public:
    Replacing(MemoryObjectClient& m) : FaultyObjectClient(m), mem_(m) {}
    Result<GetObjectResult> get_object(const GetObjectRequest& r, const DataSink& s) override {
      auto res = FaultyObjectClient::get_object(r, s);
      if (r.offset == 0) (void)mem_.put_object({"b", "k", Body::from_memory("v2"), {}, ""});
      return res;
    }
    MemoryObjectClient& mem_;
  } replacing(mem);
  TempFile dst;
  auto info = download_to_fd(replacing, "b", "k", dst.fd(), small_parts());
  ASSERT_FALSE(info);
  EXPECT_EQ(info.error().code, ErrorCode::kPreconditionFailed);
}

TEST(Transfer, MultipartCopyAboveTheThresholdKeepsMetadata) {
  MemoryObjectClient mem;
  mem.create_bucket("b");
  std::string data = random_bytes(3 * kMinPartSize, 4);
  ASSERT_TRUE(mem.put_object(
      {"b", "src", Body::from_memory(data), {{"file-owner", "1000"}}, "application/x"}));
  TransferOptions opt = small_parts();
  opt.multipart_copy_threshold = kMinPartSize;
  opt.copy_part_size = kMinPartSize;
  auto etag = copy_any_size(mem, {"b", "src", "", "b", "dst", {}, ""}, data.size(), opt);
  ASSERT_TRUE(etag) << etag.error().describe();
  EXPECT_EQ(mem.request_count("UploadPartCopy"), 3);
  auto info = mem.head_object("b", "dst");
  ASSERT_TRUE(info);
  EXPECT_EQ(info->metadata.at("file-owner"), "1000");
  std::string copied;
  ASSERT_TRUE(mem.get_object({"b", "dst", 0, std::nullopt, ""}, [&](std::string_view c) -> Status {
    copied.append(c);
    return {};
  }));
  EXPECT_TRUE(copied == data);
}

TEST(MemoryObjectClient, ListPagesWithDelimiter) {
  MemoryObjectClient mem;
  mem.create_bucket("b");
  for (std::string k : {"p/a", "p/b", "p/d/1", "p/d/2", "p/e", "q"}) {
    ASSERT_TRUE(mem.put_object({"b", k, Body::from_memory("x"), {}, ""}));
  }
  std::vector<std::string> seen;
  ListRequest req{"b", "p/", "/", "", "", 2};
  int pages = 0;
  do {
    auto page = mem.list_objects(req);
    ASSERT_TRUE(page);
    for (auto& o : page->objects) seen.push_back(o.key);
    for (auto& p : page->common_prefixes) seen.push_back(p);
    req.continuation_token = page->next_continuation_token;
    ++pages;
  } while (!req.continuation_token.empty());
  std::sort(seen.begin(), seen.end());
  EXPECT_EQ(seen, (std::vector<std::string>{"p/a", "p/b", "p/d/", "p/e"}));
  EXPECT_EQ(pages, 2);
}

// ---- the partial file of `nacre cp` ----

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/nacre-partial-XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(Transfer, PartialFileNeverFollowsASymlinkPlantedAtItsName) {
  TempDir dir;
  std::string victim = dir / "victim";
  std::ofstream(victim) << "precious";
  std::string partial = dir / "dest.nacre-partial";
  ASSERT_EQ(symlink(victim.c_str(), partial.c_str()), 0);
  auto fd = create_partial_file(partial);
  ASSERT_FALSE(fd) << "opened through a symlink";
  EXPECT_EQ(fd.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(fd.error().message.find("remove it"), std::string::npos) << fd.error().message;
  EXPECT_NE(fd.error().message.find(partial), std::string::npos) << fd.error().message;
  EXPECT_EQ(slurp(victim), "precious") << "the symlink's target was written";
  struct stat st {};
  ASSERT_EQ(lstat(partial.c_str(), &st), 0);
  EXPECT_TRUE(S_ISLNK(st.st_mode)) << "the planted symlink is reported, not silently replaced";

  // A dangling symlink must not create its target either.
  std::string dangling = dir / "other.nacre-partial";
  std::string nowhere = dir / "created-through-the-link";
  ASSERT_EQ(symlink(nowhere.c_str(), dangling.c_str()), 0);
  EXPECT_FALSE(create_partial_file(dangling));
  EXPECT_FALSE(std::filesystem::exists(nowhere));
}

TEST(Transfer, PartialFileReplacesALeftoverRegularFileOnly) {
  TempDir dir;
  std::string partial = dir / "dest.nacre-partial";
  std::ofstream(partial) << "left by a killed download";
  auto fd = create_partial_file(partial);
  ASSERT_TRUE(fd) << fd.error().describe();
  struct stat st {};
  ASSERT_EQ(fstat(*fd, &st), 0);
  EXPECT_EQ(st.st_size, 0) << "a fresh file, not the leftover one";
  EXPECT_EQ(write(*fd, "new", 3), 3);
  close(*fd);
  EXPECT_EQ(slurp(partial), "new");

  std::string is_dir = dir / "d.nacre-partial";
  ASSERT_EQ(mkdir(is_dir.c_str(), 0755), 0);
  auto refused = create_partial_file(is_dir);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::kInvalidArgument);
  EXPECT_TRUE(std::filesystem::is_directory(is_dir));
}

// ---- cancel_all of the fake and the fault injector ----

TEST(MemoryObjectClient, RequestsAfterCancelAllFail) {
  MemoryObjectClient mem;
  mem.create_bucket("b");
  ASSERT_TRUE(mem.put_object({"b", "k", Body::from_memory("data"), {}, ""}));
  mem.cancel_all();
  auto head = mem.head_object("b", "k");
  ASSERT_FALSE(head);
  EXPECT_EQ(head.error().code, ErrorCode::kCancelled);
  std::string out;
  auto get = mem.get_object({"b", "k", 0, std::nullopt, ""}, [&](std::string_view c) -> Status {
    out.append(c);
    return {};
  });
  ASSERT_FALSE(get);
  EXPECT_EQ(get.error().code, ErrorCode::kCancelled);
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(mem.request_count("GetObject"), 1);
}

TEST(FaultyObjectClient, CancelAllEndsAnInjectedDelayAndReachesTheWrappedClient) {
  MemoryObjectClient mem;
  mem.create_bucket("b");
  ASSERT_TRUE(mem.put_object({"b", "k", Body::from_memory("data"), {}, ""}));
  FaultyObjectClient faulty(mem);
  faulty.delay_each(std::chrono::seconds(30));
  auto pending = std::async(std::launch::async, [&] { return faulty.head_object("b", "k"); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  auto start = std::chrono::steady_clock::now();
  faulty.cancel_all();
  ASSERT_EQ(pending.wait_for(std::chrono::seconds(1)), std::future_status::ready)
      << "the injected delay outlived cancel_all()";
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
  auto r = pending.get();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kCancelled);
  // Forwarded: the wrapped client is shut down too.
  auto inner = mem.head_object("b", "k");
  ASSERT_FALSE(inner);
  EXPECT_EQ(inner.error().code, ErrorCode::kCancelled);
  auto later = faulty.list_objects({"b", "", "/", "", "", 10});
  ASSERT_FALSE(later);
  EXPECT_EQ(later.error().code, ErrorCode::kCancelled);
}

}  // namespace
}  // namespace nacre::s3
