// The S3 client against a real Ceph RGW on 127.0.0.1: every ObjectClient
// operation, odd keys, and the errors a user meets.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <random>
#include <set>

#include "s3/s3_client.h"
#include "s3/transfer.h"
#include "tests/integration/rgw_env.h"

namespace nacre::s3 {
namespace {

using nacre::testing::random_bytes;

class RgwTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why = nacre::testing::load_rgw_env();
    ASSERT_EQ(why, "");
    bucket_ = std::getenv("NACRE_TEST_BUCKET") ? std::getenv("NACRE_TEST_BUCKET") : "";
    ASSERT_FALSE(bucket_.empty()) << "NACRE_TEST_BUCKET is not set by the S3 server script";
    auto c =
        S3Client::create(S3Config::from_environment(CredentialsEnvironment::from_environment()));
    ASSERT_TRUE(c) << c.error().describe();
    client_ = std::move(*c);
    prefix_ = nacre::testing::unique_prefix(
        ::testing::UnitTest::GetInstance()->current_test_info()->name());
  }
  void TearDown() override {
    if (!client_) return;
    // Remove what the test wrote.
    ListRequest req{bucket_, prefix_, "", "", "", 1000};
    for (;;) {
      auto page = client_->list_objects(req);
      if (!page) break;
      std::vector<std::string> keys;
      for (auto& o : page->objects) keys.push_back(o.key);
      (void)client_->delete_objects(bucket_, keys);
      if (page->next_continuation_token.empty()) break;
      req.continuation_token = page->next_continuation_token;
    }
  }

  std::string get(const std::string& key, uint64_t off = 0, std::optional<uint64_t> len = {},
                  std::string if_match = "") {
    std::string out;
    auto r =
        client_->get_object({bucket_, key, off, len, if_match}, [&](std::string_view c) -> Status {
          out.append(c);
          return {};
        });
    EXPECT_TRUE(r) << r.error().describe();
    return out;
  }

  std::string bucket_;
  std::string prefix_;
  std::unique_ptr<S3Client> client_;
};

TEST_F(RgwTest, PutHeadGetRangeWithMetadata) {
  std::string key = prefix_ + "weights.safetensors";
  std::string data = random_bytes(1 << 20, 1);
  auto etag = client_->put_object({bucket_,
                                   key,
                                   Body::from_memory(data),
                                   {{"file-permissions", "0100644"}, {"file-owner", "1000"}},
                                   "application/octet-stream"});
  ASSERT_TRUE(etag) << etag.error().describe();
  auto info = client_->head_object(bucket_, key);
  ASSERT_TRUE(info) << info.error().describe();
  EXPECT_EQ(info->size, data.size());
  EXPECT_EQ(info->etag, *etag);
  EXPECT_EQ(info->metadata["file-permissions"], "0100644");
  EXPECT_EQ(info->metadata["file-owner"], "1000");
  EXPECT_TRUE(get(key) == data);
  EXPECT_TRUE(get(key, 1000, 5000, *etag) == data.substr(1000, 5000));
  EXPECT_TRUE(get(key, data.size() - 10) == data.substr(data.size() - 10));
}

TEST_F(RgwTest, IfMatchOnAChangedObjectIsPreconditionFailed) {
  std::string key = prefix_ + "changing";
  auto v1 = client_->put_object({bucket_, key, Body::from_memory("version one"), {}, ""});
  ASSERT_TRUE(v1);
  ASSERT_TRUE(client_->put_object({bucket_, key, Body::from_memory("version two"), {}, ""}));
  std::string out;
  auto r =
      client_->get_object({bucket_, key, 0, std::nullopt, *v1}, [&](std::string_view c) -> Status {
        out.append(c);
        return {};
      });
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kPreconditionFailed) << r.error().describe();
  EXPECT_TRUE(out.empty());
}

TEST_F(RgwTest, OddKeysRoundTrip) {
  std::vector<std::string> names = {
      "space name",    "plus+sign",     "percent%41", "unicode-\xc3\xa9\xe2\x82\xac",
      "question?mark", "hash#tag",      "amp&eq=",    "tilde~",
      "dir//double",   "dot/./segment", "star*",      "ctrl-\x01-char",
      "lt<gt>&amp"};
  for (const auto& n : names) {
    std::string key = prefix_ + n;
    ASSERT_TRUE(client_->put_object({bucket_, key, Body::from_memory(n), {}, ""}))
        << "PUT of key '" << n << "'";
    EXPECT_EQ(get(key), n) << "GET of key '" << n << "'";
  }
  std::set<std::string> listed;
  ListRequest req{bucket_, prefix_, "", "", "", 1000};
  auto page = client_->list_objects(req);
  ASSERT_TRUE(page) << page.error().describe();
  for (auto& o : page->objects) listed.insert(o.key.substr(prefix_.size()));
  for (const auto& n : names) EXPECT_TRUE(listed.contains(n)) << "LIST lost key '" << n << "'";
}

TEST_F(RgwTest, ListPaginatesWithDelimiter) {
  // 1003 keys at the top plus a sub-directory: two pages of 1000.
  std::vector<std::string> keys;
  for (int i = 0; i < 1003; ++i) keys.push_back(prefix_ + "f" + std::to_string(i));
  keys.push_back(prefix_ + "sub/inner");
  ASSERT_TRUE(run_parallel(static_cast<int>(keys.size()), 16, [&](int i) -> Status {
    auto r = client_->put_object({bucket_, keys[i], Body::from_memory("x"), {}, ""});
    if (!r) return std::unexpected(r.error());
    return {};
  }));
  ListRequest req{bucket_, prefix_, "/", "", "", 1000};
  size_t objects = 0, prefixes = 0;
  int pages = 0;
  do {
    auto page = client_->list_objects(req);
    ASSERT_TRUE(page) << page.error().describe();
    objects += page->objects.size();
    prefixes += page->common_prefixes.size();
    req.continuation_token = page->next_continuation_token;
    ++pages;
  } while (!req.continuation_token.empty());
  EXPECT_EQ(objects, 1003u);
  EXPECT_EQ(prefixes, 1u);
  EXPECT_EQ(pages, 2);
}

TEST_F(RgwTest, DeleteAndDeleteObjects) {
  for (std::string k : {"a", "b", "c"}) {
    ASSERT_TRUE(client_->put_object({bucket_, prefix_ + k, Body::from_memory(k), {}, ""}));
  }
  ASSERT_TRUE(client_->delete_object(bucket_, prefix_ + "a"));
  EXPECT_TRUE(client_->delete_object(bucket_, prefix_ + "never-existed"))
      << "S3 deletes are idempotent";
  auto failed = client_->delete_objects(bucket_, {prefix_ + "b", prefix_ + "c"});
  ASSERT_TRUE(failed) << failed.error().describe();
  EXPECT_TRUE(failed->empty());
  auto gone = client_->head_object(bucket_, prefix_ + "b");
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, ErrorCode::kNoSuchKey);
}

TEST_F(RgwTest, CopyReplacesMetadata) {
  std::string src = prefix_ + "src", dst = prefix_ + "dst";
  ASSERT_TRUE(
      client_->put_object({bucket_, src, Body::from_memory("payload"), {{"file-owner", "1"}}, ""}));
  auto etag = client_->copy_object(
      {bucket_, src, "", bucket_, dst, UserMetadata{{"file-owner", "2"}}, "text/plain"});
  ASSERT_TRUE(etag) << etag.error().describe();
  auto info = client_->head_object(bucket_, dst);
  ASSERT_TRUE(info);
  EXPECT_EQ(info->metadata["file-owner"], "2");
  EXPECT_EQ(get(dst), "payload");
  // Copying onto itself with REPLACE is how metadata changes in place.
  ASSERT_TRUE(client_->copy_object(
      {bucket_, dst, "", bucket_, dst, UserMetadata{{"file-owner", "3"}}, ""}));
  EXPECT_EQ(client_->head_object(bucket_, dst)->metadata["file-owner"], "3");
}

TEST_F(RgwTest, ParallelMultipartUploadDownloadAndMultipartCopy) {
  std::string data = random_bytes(23 * kMiB + 777, 7);
  char tmpl[] = "/tmp/nacre-it-XXXXXX";
  int fd = mkstemp(tmpl);
  unlink(tmpl);
  ASSERT_EQ(write(fd, data.data(), data.size()), static_cast<ssize_t>(data.size()));
  TransferOptions opt;
  opt.part_size = 5 * kMiB;
  opt.concurrency = 4;
  std::string key = prefix_ + "big";
  auto etag = upload_from_fd(*client_, fd, data.size(),
                             {bucket_, key, Body::empty(), {{"file-owner", "7"}}, ""}, opt);
  close(fd);
  ASSERT_TRUE(etag) << etag.error().describe();
  EXPECT_TRUE(etag->ends_with("-5")) << "5 parts expected, ETag " << *etag;

  char out_tmpl[] = "/tmp/nacre-it-out-XXXXXX";
  int out = mkstemp(out_tmpl);
  unlink(out_tmpl);
  auto info = download_to_fd(*client_, bucket_, key, out, opt);
  ASSERT_TRUE(info) << info.error().describe();
  std::string got(data.size(), '\0');
  ASSERT_EQ(pread(out, got.data(), got.size(), 0), static_cast<ssize_t>(got.size()));
  close(out);
  EXPECT_TRUE(got == data);

  opt.multipart_copy_threshold = 5 * kMiB;  // exercise UploadPartCopy without 5 GiB
  opt.copy_part_size = 8 * kMiB;
  auto copied = copy_any_size(*client_, {bucket_, key, *etag, bucket_, prefix_ + "copy", {}, ""},
                              data.size(), opt);
  ASSERT_TRUE(copied) << copied.error().describe();
  EXPECT_TRUE(copied->ends_with("-3")) << "3 parts expected, ETag " << *copied;
  EXPECT_TRUE(get(prefix_ + "copy") == data);
  EXPECT_EQ(client_->head_object(bucket_, prefix_ + "copy")->metadata["file-owner"], "7");
}

TEST_F(RgwTest, AbortedMultipartUploadLeavesNoObject) {
  std::string key = prefix_ + "aborted";
  auto id = client_->create_multipart_upload(bucket_, key, {}, "");
  ASSERT_TRUE(id) << id.error().describe();
  std::string part = random_bytes(5 * kMiB, 3);
  ASSERT_TRUE(client_->upload_part(bucket_, key, *id, 1, Body::from_memory(part)));
  ASSERT_TRUE(client_->abort_multipart_upload(bucket_, key, *id));
  // An aborted upload takes no more parts.
  auto r = client_->upload_part(bucket_, key, *id, 2, Body::from_memory(part));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kNoSuchUpload) << r.error().describe();
  EXPECT_FALSE(client_->head_object(bucket_, key));
}

TEST_F(RgwTest, UploadsInProgressAreListedByKeyWithTheirTimes) {
  // An odd key, a longer key sharing it as a prefix, and two uploads of the key.
  const std::string key = prefix_ + "up load+&=";
  const auto before = std::chrono::system_clock::now() - std::chrono::seconds(2);
  auto a = client_->create_multipart_upload(bucket_, key, {}, "");
  auto b = client_->create_multipart_upload(bucket_, key, {}, "");
  auto longer = client_->create_multipart_upload(bucket_, key + "x", {}, "");
  ASSERT_TRUE(a && b && longer);
  const auto after = std::chrono::system_clock::now() + std::chrono::seconds(2);
  auto listed = uploads_of_key(*client_, bucket_, key);
  ASSERT_TRUE(listed) << listed.error().describe();
  std::set<std::string> ids;
  for (const auto& u : *listed) {
    ids.insert(u.upload_id);
    EXPECT_EQ(u.key, key);
    EXPECT_TRUE(u.initiated >= before && u.initiated <= after)
        << "Initiated is not the time the upload was created";
  }
  EXPECT_EQ(ids, (std::set<std::string>{*a, *b}));
  for (const auto& id : {*a, *b}) ASSERT_TRUE(client_->abort_multipart_upload(bucket_, key, id));
  ASSERT_TRUE(client_->abort_multipart_upload(bucket_, key + "x", *longer));
  listed = uploads_of_key(*client_, bucket_, key);
  ASSERT_TRUE(listed) << listed.error().describe();
  EXPECT_TRUE(listed->empty());
}

TEST_F(RgwTest, UnknownBucketIsNoSuchBucket) {
  auto r = client_->list_objects({"nacre-no-such-bucket", "", "/", "", "", 1000});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kNoSuchBucket) << r.error().describe();
  EXPECT_FALSE(r.error().request_id.empty()) << "RGW sends a request id";
}

TEST_F(RgwTest, MissingKeyIsNoSuchKey) {
  std::string out;
  auto r = client_->get_object({bucket_, prefix_ + "absent", 0, std::nullopt, ""},
                               [&](std::string_view c) -> Status {
                                 out.append(c);
                                 return {};
                               });
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kNoSuchKey);
  EXPECT_TRUE(out.empty());
}

TEST_F(RgwTest, WrongKeysAreInvalidCredentials) {
  S3Config c = S3Config::from_environment(CredentialsEnvironment::from_environment());
  c.credentials =
      Credentials{std::getenv("AWS_ACCESS_KEY_ID"), "wrong-secret", "", std::nullopt, "test"};
  auto bad = S3Client::create(c);
  ASSERT_TRUE(bad);
  auto r = (*bad)->list_objects({bucket_, "", "/", "", "", 10});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidCredentials) << r.error().describe();
  EXPECT_EQ(r.error().s3_code, "SignatureDoesNotMatch");
  c.credentials = Credentials{"NOSUCHACCESSKEY", "x", "", std::nullopt, "test"};
  auto unknown = (*S3Client::create(c))->head_object(bucket_, "k");
  ASSERT_FALSE(unknown);
  EXPECT_TRUE(unknown.error().code == ErrorCode::kInvalidCredentials ||
              unknown.error().code == ErrorCode::kAccessDenied)
      << unknown.error().describe();
}

}  // namespace
}  // namespace nacre::s3
