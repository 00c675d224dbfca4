#include "csi/controller.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "s3/faulty_object_client.h"
#include "s3/memory_object_client.h"

namespace nacre::csi {
namespace {

class ControllerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/nacre-controller-XXXXXX";
    ASSERT_TRUE(::mkdtemp(dir));
    dir_ = dir;
    s3_.create_bucket("bkt");
    s3_.create_bucket("models");
    ASSERT_TRUE(
        s3_.put_object({"models", "mistral/config.json", s3::Body::from_memory("{}"), {}, ""}));
    controller_ = open_controller();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::unique_ptr<Controller> open_controller() {
    ControllerOptions o;
    o.state_dir = dir_;
    o.defaults = {"http://127.0.0.1:7480", "us-east-1", ""};
    o.make_client = [this](const VolumeSpec&,
                           const Secrets& secrets) -> Result<std::unique_ptr<s3::ObjectClient>> {
      last_secrets_ = secrets;
      // A pass-through wrapper: every controller call reaches the one store.
      return std::unique_ptr<s3::ObjectClient>(new s3::FaultyObjectClient(s3_));
    };
    return std::move(*Controller::open(o));
  }

  Result<CreatedVolume> create(const std::string& name, const StringMap& params,
                               int64_t required = 1 << 30) {
    Capability cap;
    cap.has_access_type = true;
    cap.access_mode = 5;
    return controller_->create(name, required, 0, {cap}, params, {}, false);
  }

  size_t objects_under(const std::string& bucket, const std::string& prefix) {
    s3::ListRequest req;
    req.bucket = bucket;
    req.prefix = prefix;
    return s3_.list_objects(req)->objects.size();
  }

  std::string dir_;
  s3::MemoryObjectClient s3_;
  Secrets last_secrets_;
  std::unique_ptr<Controller> controller_;
};

TEST_F(ControllerTest, FreshVolumeIsAPrefixWithAMarkerAndRepeatsAreIdempotent) {
  const StringMap params = {{"bucketName", "bkt"}, {"basePrefix", "volumes"}};
  auto v = create("pvc-1", params);
  ASSERT_TRUE(v) << v.error().message;
  EXPECT_EQ(v->volume_id, "fresh:bkt/volumes/pvc-1;n=" + name_tag("pvc-1"));
  EXPECT_EQ(v->capacity_bytes, 1 << 30);
  EXPECT_EQ(v->context.at("prefix"), "volumes/pvc-1");
  auto marker = s3_.head_object("bkt", "volumes/pvc-1/");
  ASSERT_TRUE(marker);
  EXPECT_EQ(marker->metadata.at("nacre-volume-name"), "pvc-1");
  EXPECT_EQ(marker->metadata.at("file-permissions"), "0040755");
  auto again = create("pvc-1", params);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->volume_id, v->volume_id);
  EXPECT_EQ(again->context, v->context);
  EXPECT_EQ(create("pvc-1", params, int64_t{2} << 30).error().code, ErrorCode::kExists);
  EXPECT_EQ(create("pvc-1", {{"bucketName", "bkt"}, {"basePrefix", "volumes"}, {"cacheSize", "5G"}})
                .error()
                .code,
            ErrorCode::kExists);
}

TEST_F(ControllerTest, TheMarkerAnswersForAVolumeWhenTheRecordsAreLost) {
  const StringMap params = {{"bucketName", "bkt"}};
  ASSERT_TRUE(create("pvc-2", params));
  std::filesystem::remove(dir_ + "/controller.json");
  controller_ = open_controller();
  EXPECT_TRUE(create("pvc-2", params));
  EXPECT_EQ(create("pvc-2", params, 5).error().code, ErrorCode::kExists);
  // A prefix that another volume owns is refused.
  EXPECT_EQ(create("other", {{"bucketName", "bkt"}, {"pathPattern", "pvc-2"}}).error().code,
            ErrorCode::kExists);
}

TEST_F(ControllerTest, BadRequestsAreRefusedWithTheirCodes) {
  Capability cap;
  cap.has_access_type = true;
  cap.access_mode = 1;
  const StringMap params = {{"bucketName", "bkt"}};
  EXPECT_EQ(controller_->create("", 0, 0, {cap}, params, {}, false).error().code,
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(controller_->create("x", 0, 0, {}, params, {}, false).error().code,
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(controller_->create("x", 0, 0, {cap}, params, {}, true).error().code,
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(controller_->create("x", 10, 5, {cap}, params, {}, false).error().code,
            ErrorCode::kInvalidRange);
  EXPECT_EQ(controller_->create("x", -1, 0, {cap}, params, {}, false).error().code,
            ErrorCode::kInvalidArgument);
  Capability block = cap;
  block.block = true;
  EXPECT_EQ(controller_->create("x", 0, 0, {block}, params, {}, false).error().code,
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(objects_under("bkt", ""), 0u);  // nothing was created
}

TEST_F(ControllerTest, DeleteKeepsDataUnlessAskedAndNeverTouchesALinkedDataset) {
  auto kept = create("keep", {{"bucketName", "bkt"}});
  auto gone = create("gone", {{"bucketName", "bkt"}, {"deleteData", "true"}});
  auto linked = create("lnk", {{"s3ImportPath", "s3://models/mistral"}});
  ASSERT_TRUE(kept && gone && linked);
  EXPECT_EQ(linked->volume_id, "linked:models/mistral;v=lnk");
  ASSERT_TRUE(s3_.put_object({"bkt", "keep/a", s3::Body::from_memory("1"), {}, ""}));
  ASSERT_TRUE(s3_.put_object({"bkt", "gone/a", s3::Body::from_memory("1"), {}, ""}));
  ASSERT_TRUE(s3_.put_object({"bkt", "gone/d/b", s3::Body::from_memory("1"), {}, ""}));
  ASSERT_TRUE(s3_.put_object({"bkt", "gone-not-mine", s3::Body::from_memory("1"), {}, ""}));
  for (const auto* v : {&*kept, &*gone, &*linked}) {
    ASSERT_TRUE(controller_->remove(v->volume_id, {}));
    ASSERT_TRUE(controller_->remove(v->volume_id, {}));  // twice: still OK
  }
  EXPECT_EQ(objects_under("bkt", "keep/"), 2u);  // marker + a
  EXPECT_EQ(objects_under("bkt", "gone/"), 0u);
  EXPECT_EQ(objects_under("bkt", "gone-not-mine"), 1u);
  EXPECT_EQ(objects_under("models", "mistral/"), 1u);
  EXPECT_TRUE(controller_->remove("not-a-nacre-id", {}));
  EXPECT_EQ(controller_->remove("", {}).error().code, ErrorCode::kInvalidArgument);
}

TEST_F(ControllerTest, AFreshVolumeNeverClaimsDataItDidNotCreate) {
  ASSERT_TRUE(s3_.put_object({"bkt", "datasets/llama/w.bin", s3::Body::from_memory("w"), {}, ""}));
  auto taken = create("llama", {{"bucketName", "bkt"}, {"basePrefix", "datasets"}});
  ASSERT_FALSE(taken);
  EXPECT_EQ(taken.error().code, ErrorCode::kExists);
  EXPECT_FALSE(s3_.head_object("bkt", "datasets/llama/"));  // no marker was put
  // Nor a prefix inside another volume: deleting that one would take it along.
  ASSERT_TRUE(create("outer", {{"bucketName", "bkt"}, {"basePrefix", "vols"}}));
  auto inner = create("inner", {{"bucketName", "bkt"}, {"basePrefix", "vols/outer"}});
  ASSERT_FALSE(inner);
  EXPECT_EQ(inner.error().code, ErrorCode::kExists);
}

TEST_F(ControllerTest, ARetriedDeleteNeverTakesTheVolumeThatReusedItsPrefix) {
  const StringMap params = {
      {"bucketName", "bkt"}, {"pathPattern", "shared"}, {"deleteData", "true"}};
  auto first = create("pv-old", params);
  ASSERT_TRUE(first);
  ASSERT_TRUE(controller_->remove(first->volume_id, {}));
  auto second = create("pv-new", params);
  ASSERT_TRUE(second) << second.error().message;
  EXPECT_NE(second->volume_id, first->volume_id);
  ASSERT_TRUE(s3_.put_object({"bkt", "shared/ckpt", s3::Body::from_memory("new data"), {}, ""}));
  ASSERT_TRUE(controller_->remove(first->volume_id, {}));  // a late retry of the old one
  EXPECT_EQ(objects_under("bkt", "shared/"), 2u);          // marker + ckpt, untouched
  EXPECT_EQ(controller_->validate(first->volume_id, {Capability{false, true, "", {}, "", 1}}, {})
                .error()
                .code,
            ErrorCode::kNotFound);
}

TEST_F(ControllerTest, ValidateKnowsItsVolumesAndRefusesBlock) {
  auto v = create("pvc-v", {{"bucketName", "bkt"}});
  ASSERT_TRUE(v);
  Capability cap;
  cap.has_access_type = true;
  for (int mode = 1; mode <= 7; ++mode) {
    cap.access_mode = mode;
    auto r = controller_->validate(v->volume_id, {cap}, {});
    ASSERT_TRUE(r);
    EXPECT_EQ(*r, "") << mode;
  }
  Capability block = cap;
  block.block = true;
  EXPECT_NE(*controller_->validate(v->volume_id, {block}, {}), "");
  EXPECT_EQ(controller_->validate("fresh:bkt/nothing-here;n=01234567", {cap}, {}).error().code,
            ErrorCode::kNotFound);
  EXPECT_EQ(controller_->validate("junk", {cap}, {}).error().code, ErrorCode::kNotFound);
  EXPECT_EQ(controller_->validate("", {cap}, {}).error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(controller_->validate(v->volume_id, {}, {}).error().code, ErrorCode::kInvalidArgument);
}

TEST_F(ControllerTest, ProvisionerSecretsReachTheClient) {
  Capability cap;
  cap.has_access_type = true;
  cap.access_mode = 1;
  ASSERT_TRUE(controller_->create("s", 0, 0, {cap}, {{"bucketName", "bkt"}},
                                  {{"accessKeyId", "AK"}, {"secretAccessKey", "SK"}}, false));
  EXPECT_EQ(last_secrets_.access_key_id, "AK");
  EXPECT_EQ(controller_
                ->create("s2", 0, 0, {cap}, {{"bucketName", "bkt"}}, {{"accessKeyId", "AK"}}, false)
                .error()
                .code,
            ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace nacre::csi
