#include "staging/staging_store.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

namespace nacre::staging {
namespace {

class StagingStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("nacre-staging-test-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
};

TEST(ManifestCodec, RoundTripsEveryField) {
  Manifest m;
  m.id = std::string("0123456789abcdef0123456789abcdef");
  m.bucket = std::string("b");
  m.key = std::string("dir/k");
  m.base_etag = std::string("etag1");
  m.complete = true;
  m.write_failed = true;
  m.upload_id = std::string("up-1");
  m.upload_key = std::string("old/k");
  m.modified = true;
  m.metadata = {{"file-mode", "0100644"}};
  m.content_type = std::string("text/plain");
  m.staged_at_ns = 42;
  m.upload_windows = {{"old/k", 10, 20, 1}, {"dir/k", 30, 40, 3}};
  auto back = decode_manifest(encode_manifest(m));
  ASSERT_TRUE(back) << back.error().describe();
  EXPECT_EQ(back->id, m.id);
  EXPECT_EQ(back->key, "dir/k");
  EXPECT_EQ(back->base_etag, "etag1");
  EXPECT_TRUE(back->complete);
  EXPECT_TRUE(back->write_failed);
  EXPECT_EQ(back->upload_id, "up-1");
  EXPECT_EQ(back->upload_key, "old/k");
  EXPECT_TRUE(back->modified);
  EXPECT_EQ(back->metadata.at("file-mode"), "0100644");
  EXPECT_EQ(back->content_type, "text/plain");
  EXPECT_EQ(back->staged_at_ns, 42);
  EXPECT_EQ(back->upload_windows, m.upload_windows);
}

TEST(ManifestCodec, AManifestWithoutUploadWindowsHasNone) {
  Manifest m;
  m.id = std::string("0123456789abcdef0123456789abcdef");
  m.bucket = std::string("b");
  m.key = std::string("k");
  const std::string text = encode_manifest(m);
  EXPECT_EQ(text.find("upload_windows"), std::string::npos);
  auto back = decode_manifest(text);
  ASSERT_TRUE(back) << back.error().describe();
  EXPECT_TRUE(back->upload_windows.empty());
  auto bad = decode_manifest(R"({"version":1,"id":"0123456789abcdef0123456789abcdef","bucket":"b",)"
                             R"("key":"k","base_etag":"","complete":true,"upload_id":"",)"
                             R"("metadata":{},"upload_windows":{"key":"k"}})");
  EXPECT_FALSE(bad) << "upload_windows must be an array";
}

TEST(ManifestCodec, RefusesGarbageAndMissingFields) {
  EXPECT_FALSE(decode_manifest("not json"));
  EXPECT_FALSE(decode_manifest("[]"));
  EXPECT_FALSE(decode_manifest(R"({"version":1,"id":"x"})"));
  EXPECT_FALSE(decode_manifest(R"({"version":2})"));
}

TEST_F(StagingStoreTest, CreatedFilesAreListedAfterReopenAndRemovable) {
  auto store = StagingStore::open(dir_.string());
  ASSERT_TRUE(store) << store.error().describe();
  Manifest m;
  m.bucket = std::string("b");
  m.key = std::string("k");
  m.staged_at_ns = 1;
  auto fd = (*store)->create(m);
  ASSERT_TRUE(fd) << fd.error().describe();
  ASSERT_EQ(::pwrite(*fd, "hello", 5, 0), 5);
  ::close(*fd);
  EXPECT_EQ(std::filesystem::status(dir_).permissions() & std::filesystem::perms::all,
            std::filesystem::perms::owner_all);
  m.complete = true;
  ASSERT_TRUE((*store)->save(m));

  auto again = StagingStore::open(dir_.string());
  ASSERT_TRUE(again);
  // A manifest that cannot be read is skipped, counted, and left in place.
  {
    FILE* f = std::fopen((dir_ / "ffffffffffffffffffffffffffffffff.json").c_str(), "w");
    std::fputs("{broken", f);
    std::fclose(f);
  }
  size_t unreadable = 0;
  auto listed = (*again)->list(&unreadable);
  ASSERT_TRUE(listed);
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ(unreadable, 1u);
  EXPECT_EQ((*listed)[0].id, m.id);
  EXPECT_TRUE((*listed)[0].complete);
  EXPECT_EQ(std::filesystem::file_size((*again)->data_path(m.id)), 5u);
  EXPECT_TRUE(std::filesystem::exists(dir_ / "ffffffffffffffffffffffffffffffff.json"));

  ASSERT_TRUE((*again)->remove(m.id));
  EXPECT_FALSE(std::filesystem::exists((*again)->data_path(m.id)));
  listed = (*again)->list();
  ASSERT_TRUE(listed);
  EXPECT_TRUE(listed->empty());
}

}  // namespace
}  // namespace nacre::staging
