// Transfers over the in-memory client, with failures injected by the
// fault-injecting wrapper.
#include "s3/transfer.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <random>

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

  auto etag = upload_from_fd(mem, src.fd(), data.size(), {"b", "big", Body::empty(), {{"k", "v"}}, ""}, opt);
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
  faulty.fail_nth(2, Error{ErrorCode::kServerError, "injected", "InternalError", "r", 500}, "UploadPart");
  std::string data = random_bytes(2 * kMinPartSize + 1, 2);
  TempFile src(data);
  auto etag = upload_from_fd(faulty, src.fd(), data.size(), {"b", "k", Body::empty(), {}, ""}, small_parts());
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
  ASSERT_TRUE(mem.put_object({"b", "src", Body::from_memory(data), {{"file-owner", "1000"}}, "application/x"}));
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

}  // namespace
}  // namespace nacre::s3
