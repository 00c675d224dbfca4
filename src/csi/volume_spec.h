// What a CSI volume is to Nacre, without gRPC: the StorageClass parameters and
// PV volume attributes (one set of names, docs/KUBERNETES.md), the volume id
// that carries what DeleteVolume needs, the mount options users may pass, and
// the `nacre mount` command line a staged volume runs.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "s3/object_client.h"

namespace nacre::csi {

using StringMap = std::map<std::string, std::string>;

// Driver-wide defaults (`nacre csi` flags).
struct DriverDefaults {
  std::string endpoint_url;  // empty: AWS in `region`
  std::string region;        // empty: us-east-1
  std::string ca_bundle;     // PEM file for every volume without its own
};

// CSI access modes (csi.proto VolumeCapability.AccessMode.Mode numbers).
enum class AccessMode {
  kUnknown = 0,
  kSingleNodeWriter = 1,
  kSingleNodeReaderOnly = 2,
  kMultiNodeReaderOnly = 3,
  kMultiNodeSingleWriter = 4,
  kMultiNodeMultiWriter = 5,
  kSingleNodeSingleWriter = 6,
  kSingleNodeMultiWriter = 7,
};
// Known modes only; the two reader-only modes mount read-only.
[[nodiscard]] Result<bool> access_mode_read_only(int mode);

// A capability as the driver checks it: only mount volumes of Nacre's type.
struct Capability {
  bool block = false;
  bool has_access_type = false;  // block or mount set
  std::string fs_type;
  std::vector<std::string> mount_flags;
  std::string mount_group;  // VOLUME_MOUNT_GROUP (fsGroup)
  int access_mode = 0;
};
[[nodiscard]] Status check_capability(const Capability& cap);

// Credentials from node-stage or provisioner secrets (accessKeyId,
// secretAccessKey, sessionToken, caBundle); empty: the driver's own chain.
struct Secrets {
  std::string access_key_id, secret_access_key, session_token, ca_bundle_pem;
  bool empty() const { return access_key_id.empty() && secret_access_key.empty(); }
};
[[nodiscard]] Result<Secrets> parse_secrets(const StringMap& secrets);

// Everything a mount of one volume needs, validated.
struct VolumeSpec {
  std::string bucket;
  std::string prefix;  // "" or without a trailing '/'
  std::string endpoint_url, region, addressing_style;
  std::string import_policy = "NEW,CHANGED,DELETED";  // `nacre mount` syntax
  std::string export_policy = "NEW,CHANGED,DELETED";
  std::string cache_size = "10G";
  std::string metadata_ttl = "1";
  std::string uid, gid, file_mode, dir_mode;  // empty: the mount's defaults
  std::string ca_bundle_pem;                  // from the volume (or its secrets)
  std::vector<std::string> preload;           // globs under the volume root
  int preload_wait_seconds = 0;
  std::vector<std::string> mount_options;  // allowed -o options, normalised
  bool read_only = false;
};

// StorageClass parameters / PV attributes → spec. Unknown names (other than
// csi.storage.k8s.io/*) and bad values are INVALID_ARGUMENT naming them.
[[nodiscard]] Result<VolumeSpec> parse_volume_attributes(const StringMap& attrs,
                                                         const DriverDefaults& defaults);
// Applies a capability (mount flags on the allow-list, access mode, mount
// group) to a spec.
[[nodiscard]] Status apply_capability(VolumeSpec& spec, const Capability& cap);

// S3 clients for a volume's endpoint and secrets (tests pass a fake).
using ClientFactory = std::function<Result<std::unique_ptr<s3::ObjectClient>>(
    const VolumeSpec& spec, const Secrets& secrets)>;

// The mount options a user may pass (PV mountOptions / StorageClass
// mountOptions), '-' or '_'; anything else is INVALID_ARGUMENT naming it.
[[nodiscard]] Result<std::string> check_mount_option(const std::string& option);

// The command line after `nacre`: "mount s3://b/p DIR --cache-dir C ...".
std::vector<std::string> mount_arguments(const VolumeSpec& spec, const std::string& mount_dir,
                                         const std::string& cache_dir,
                                         const std::string& ca_bundle_file);
// Volumes with the same key share one mount (and its cache) on a node: the
// same dataset, settings and credentials. 16 hex digits.
std::string mount_key(const VolumeSpec& spec, const Secrets& secrets);

// Volume ids: "fresh:b/p;n=H", "fresh+delete:b/p;n=H", "linked:b/p;v=NAME", each
// with ";e=ENDPOINT" and ";r=REGION" when not the driver's defaults. H is
// name_tag(NAME): DeleteVolume removes a fresh prefix only while its marker
// still names the volume of the id. At most 128 bytes.
struct VolumeId {
  enum class Kind { kFresh, kLinked } kind = Kind::kFresh;
  bool delete_data = false;  // fresh only
  std::string bucket, prefix, name, endpoint_url, region;
  std::string name_tag;  // fresh only
};
// 8 hex digits of the SHA-256 of a volume's name.
std::string name_tag(const std::string& name);
[[nodiscard]] Result<std::string> encode_volume_id(const VolumeId& id);
[[nodiscard]] Result<VolumeId> decode_volume_id(const std::string& text);

// The controller's view of a CreateVolume: a fresh prefix or a linked dataset.
struct ProvisionPlan {
  VolumeId id;
  VolumeSpec spec;
  StringMap context;        // volume_context: the parameters + bucketName + prefix
  std::string params_hash;  // identifies the parameters (idempotency)
};
[[nodiscard]] Result<ProvisionPlan> plan_volume(const std::string& name, const StringMap& params,
                                                const DriverDefaults& defaults);

}  // namespace nacre::csi
