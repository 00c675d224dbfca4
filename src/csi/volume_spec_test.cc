#include "csi/volume_spec.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace nacre::csi {
namespace {

const DriverDefaults kDefaults{"http://127.0.0.1:7480", "us-east-1", ""};

Capability mount_cap(int mode, std::vector<std::string> flags = {}) {
  Capability c;
  c.has_access_type = true;
  c.access_mode = mode;
  c.mount_flags = std::move(flags);
  return c;
}

bool has(const std::vector<std::string>& v, const std::string& a, const std::string& b) {
  for (size_t i = 0; i + 1 < v.size(); ++i) {
    if (v[i] == a && v[i + 1] == b) return true;
  }
  return false;
}

TEST(VolumeSpec, EveryAccessModeIsKnownAndOnlyReaderModesAreReadOnly) {
  for (int mode = 1; mode <= 7; ++mode) {
    auto ro = access_mode_read_only(mode);
    ASSERT_TRUE(ro) << mode;
    EXPECT_EQ(*ro, mode == 2 || mode == 3) << mode;
  }
  EXPECT_FALSE(access_mode_read_only(0));
  EXPECT_FALSE(access_mode_read_only(8));
}

TEST(VolumeSpec, BlockAndForeignFileSystemsAreRefused) {
  Capability block = mount_cap(1);
  block.block = true;
  EXPECT_EQ(check_capability(block).error().code, ErrorCode::kInvalidArgument);
  Capability ext4 = mount_cap(1);
  ext4.fs_type = "ext4";
  EXPECT_EQ(check_capability(ext4).error().code, ErrorCode::kInvalidArgument);
  Capability none;
  none.access_mode = 1;
  EXPECT_FALSE(check_capability(none));
  Capability fuse = mount_cap(5);
  fuse.fs_type = "fuse.nacre";
  EXPECT_TRUE(check_capability(fuse));
}

TEST(VolumeSpec, MountOptionsOutsideTheAllowListAreNamed) {
  for (const char* bad : {"allow_other", "cache-dir=/etc", "suid", "dev", "max_read=1"}) {
    auto r = check_mount_option(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_NE(r.error().message.find(bad), std::string::npos) << r.error().message;
  }
  EXPECT_EQ(*check_mount_option("metadata_ttl=60"), "metadata-ttl=60");
  EXPECT_EQ(*check_mount_option("ro"), "ro");
  EXPECT_EQ(*check_mount_option("cache_check_at_start=off"), "cache-check-at-start=off");
  EXPECT_EQ(*check_mount_option("cache-check-at-start=100G"), "cache-check-at-start=100G");
  EXPECT_FALSE(check_mount_option("cache-check-at-start=lots"));
  EXPECT_FALSE(check_mount_option("uid"));      // needs a value
  EXPECT_FALSE(check_mount_option("ro=true"));  // takes none
}

TEST(VolumeSpec, AttributesUseFsxAndNacreNames) {
  auto spec = parse_volume_attributes({{"s3ImportPath", "s3://models/mistral/"},
                                       {"autoImportPolicy", "NEW_CHANGED"},
                                       {"autoExportPolicy", "NONE"},
                                       {"metadataTtl", "forever"},
                                       {"cacheSize", "20G"},
                                       {"preload", "*.safetensors, *.json"},
                                       {"csi.storage.k8s.io/pod.name", "x"}},
                                      kDefaults);
  ASSERT_TRUE(spec) << spec.error().message;
  EXPECT_EQ(spec->bucket, "models");
  EXPECT_EQ(spec->prefix, "mistral");
  EXPECT_EQ(spec->import_policy, "NEW,CHANGED");
  EXPECT_EQ(spec->export_policy, "NONE");
  EXPECT_EQ(spec->preload, (std::vector<std::string>{"*.safetensors", "*.json"}));
  EXPECT_EQ(spec->endpoint_url, kDefaults.endpoint_url);
}

TEST(VolumeSpec, BadAttributesAreInvalidArgumentsNamingThem) {
  const std::vector<StringMap> bad = {
      {{"bucketName", "bkt"}, {"colour", "red"}},
      {{"bucketName", "bkt"}, {"autoImportPolicy", "ALL"}},
      {{"bucketName", "bkt"}, {"cacheSize", "lots"}},
      {{"bucketName", "bkt"}, {"fileMode", "999"}},
      {{"bucketName", "bkt"}, {"uid", "-5"}},
      {{"bucketName", "bkt"}, {"preload", "../etc/*"}},
      {{"bucketName", "bkt"}, {"preloadWaitSeconds", "soon"}},
      {{"bucketName", "bkt"}, {"caBundle", "not a certificate"}},
      {{"s3ImportPath", "s3://bkt/p"}, {"s3ExportPath", "s3://bkt/elsewhere"}},
      {{"s3ImportPath", "b/p"}},
      {{"prefix", "p"}},  // no bucket
  };
  for (const auto& attrs : bad) {
    auto r = parse_volume_attributes(attrs, kDefaults);
    ASSERT_FALSE(r) << attrs.rbegin()->first;
    EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
  }
  auto r = parse_volume_attributes({{"bucketName", "bkt"}, {"colour", "red"}}, kDefaults);
  EXPECT_NE(r.error().message.find("colour"), std::string::npos);
}

TEST(VolumeSpec, CapabilitySetsReadOnlyMountOptionsAndMountGroup) {
  auto spec = parse_volume_attributes({{"bucketName", "bkt"}, {"prefix", "/data/"}}, kDefaults);
  ASSERT_TRUE(spec);
  EXPECT_EQ(spec->prefix, "data");
  Capability cap = mount_cap(3, {"metadata-ttl=60", "fetch_threads=8"});
  cap.mount_group = "2000";
  ASSERT_TRUE(apply_capability(*spec, cap));
  EXPECT_TRUE(spec->read_only);
  EXPECT_EQ(spec->gid, "2000");
  EXPECT_EQ(spec->dir_mode, "0775");
  auto args = mount_arguments(*spec, "/m", "/c", "");
  EXPECT_EQ(args[0], "mount");
  EXPECT_EQ(args[1], "s3://bkt/data");
  EXPECT_TRUE(std::find(args.begin(), args.end(), "--read-only") != args.end());
  EXPECT_TRUE(std::find(args.begin(), args.end(), "--allow-other") != args.end());
  EXPECT_TRUE(has(args, "-o", "metadata-ttl=60"));
  EXPECT_TRUE(has(args, "--fetch-threads", "8"));
  EXPECT_TRUE(has(args, "--gid", "2000"));
  EXPECT_TRUE(has(args, "--cache-dir", "/c"));
}

TEST(VolumeSpec, MountKeySharesOnlyTheSameDatasetSettingsAndCredentials) {
  auto a = *parse_volume_attributes({{"s3ImportPath", "s3://models/ds"}}, kDefaults);
  auto b = a;
  Secrets s1{"AK1", "SK1", "", ""}, s2{"AK2", "SK2", "", ""};
  EXPECT_EQ(mount_key(a, s1), mount_key(b, s1));
  EXPECT_NE(mount_key(a, s1), mount_key(b, s2));
  b.read_only = true;
  EXPECT_NE(mount_key(a, s1), mount_key(b, s1));
  b = a;
  b.prefix = "other";
  EXPECT_NE(mount_key(a, s1), mount_key(b, s1));
  EXPECT_EQ(mount_key(a, s1).size(), 16u);
}

TEST(VolumeSpec, SecretsNeedBothKeysAndAcceptAwsNames) {
  EXPECT_FALSE(parse_secrets({{"accessKeyId", "AK"}}));
  auto s = parse_secrets(
      {{"AWS_ACCESS_KEY_ID", "AK"}, {"AWS_SECRET_ACCESS_KEY", "SK"}, {"unrelated", "x"}});
  ASSERT_TRUE(s);
  EXPECT_EQ(s->access_key_id, "AK");
  EXPECT_TRUE(parse_secrets({})->empty());
}

TEST(VolumeSpec, VolumeIdsRoundTripAndStayWithin128Bytes) {
  VolumeId id;
  id.kind = VolumeId::Kind::kLinked;
  id.bucket = "models";
  id.prefix = "mistral/v1";
  id.name = "pvc-1";
  id.endpoint_url = "http://rgw:7480";
  auto text = encode_volume_id(id);
  ASSERT_TRUE(text);
  EXPECT_EQ(*text, "linked:models/mistral/v1;v=pvc-1;e=http://rgw:7480");
  auto back = decode_volume_id(*text);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->kind, VolumeId::Kind::kLinked);
  EXPECT_EQ(back->prefix, "mistral/v1");
  EXPECT_EQ(back->name, "pvc-1");
  EXPECT_EQ(back->endpoint_url, "http://rgw:7480");
  id.prefix = std::string(130, 'p');
  EXPECT_FALSE(encode_volume_id(id));
  id.prefix = "a;b";
  EXPECT_FALSE(encode_volume_id(id));
  for (const char* bad :
       {"", "fs-0123", "fresh:", "fresh:bucket", "fresh:bkt/", "linked:bkt/p;x=1"}) {
    EXPECT_FALSE(decode_volume_id(bad)) << bad;
  }
  EXPECT_FALSE(decode_volume_id("fresh+delete:bkt/volumes/pvc-2"));  // no name tag
  auto fresh = decode_volume_id("fresh+delete:bkt/volumes/pvc-2;n=0a1b2c3d");
  ASSERT_TRUE(fresh);
  EXPECT_TRUE(fresh->delete_data);
}

TEST(VolumeSpec, FreshVolumesGetAPrefixFromThePathPattern) {
  StringMap params = {{"bucketName", "bkt"},
                      {"basePrefix", "/volumes/"},
                      {"pathPattern", "${pvc.metadata.namespace}/${pvc.metadata.name}"},
                      {"csi.storage.k8s.io/pvc/namespace", "ml"},
                      {"csi.storage.k8s.io/pvc/name", "ckpt"},
                      {"deleteData", "true"}};
  auto plan = plan_volume("pvc-9", params, kDefaults);
  ASSERT_TRUE(plan) << plan.error().message;
  EXPECT_EQ(plan->spec.prefix, "volumes/ml/ckpt");
  EXPECT_EQ(*encode_volume_id(plan->id), "fresh+delete:bkt/volumes/ml/ckpt;n=" + name_tag("pvc-9"));
  EXPECT_EQ(plan->context.at("prefix"), "volumes/ml/ckpt");
  EXPECT_FALSE(plan->context.contains("csi.storage.k8s.io/pvc/name"));
  // The default pattern is the volume's (PV's) name.
  auto plain = plan_volume("pvc-9", {{"bucketName", "bkt"}}, kDefaults);
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain->spec.prefix, "pvc-9");
  EXPECT_FALSE(plain->id.delete_data);
  // The same parameters give the same hash; others another.
  EXPECT_EQ(plan_volume("pvc-9", params, kDefaults)->params_hash, plan->params_hash);
  params["deleteData"] = "false";
  EXPECT_NE(plan_volume("pvc-9", params, kDefaults)->params_hash, plan->params_hash);
}

TEST(VolumeSpec, PathPatternsThatLeaveTheBaseOrLackMetadataAreRefused) {
  EXPECT_FALSE(plan_volume("..", {{"bucketName", "bkt"}}, kDefaults));
  EXPECT_FALSE(plan_volume("x", {{"bucketName", "bkt"}, {"pathPattern", "${pvc.metadata.name}"}},
                           kDefaults));
  EXPECT_FALSE(plan_volume("x", {{"bucketName", "bkt"}, {"pathPattern", "${node}"}}, kDefaults));
  EXPECT_FALSE(plan_volume("x", {{"bucketName", "bkt"}, {"deleteData", "perhaps"}}, kDefaults));
  EXPECT_FALSE(plan_volume("x", {{"bucketName", "bkt"}, {"prefix", "p"}}, kDefaults));
  EXPECT_FALSE(plan_volume("x", {{"s3ImportPath", "s3://bkt/p"}, {"basePrefix", "q"}}, kDefaults));
}

TEST(VolumeSpec, LinkedVolumesCarryTheirNameAndNonDefaultEndpoint) {
  auto plan = plan_volume(
      "pvc-3", {{"s3ImportPath", "s3://models/mistral"}, {"endpointUrl", "https://s3.example.com"}},
      kDefaults);
  ASSERT_TRUE(plan) << plan.error().message;
  EXPECT_EQ(*encode_volume_id(plan->id), "linked:models/mistral;v=pvc-3;e=https://s3.example.com");
  EXPECT_EQ(plan->context.at("s3ImportPath"), "s3://models/mistral");
}

}  // namespace
}  // namespace nacre::csi
