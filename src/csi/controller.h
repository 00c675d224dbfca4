// The CSI Controller service without gRPC: a volume is a prefix, so
// provisioning is a few HEADs, a LIST and one PUT (a fresh prefix) or one
// LIST (a volume linked to an existing dataset).
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "csi/volume_spec.h"
#include "s3/object_client.h"

namespace nacre::csi {

struct ControllerOptions {
  std::string state_dir;
  DriverDefaults defaults;
  ClientFactory make_client;  // S3 clients for the volumes' endpoints and secrets
};

struct CreatedVolume {
  std::string volume_id;
  int64_t capacity_bytes = 0;
  StringMap context;
};

class Controller {
 public:
  [[nodiscard]] static Result<std::unique_ptr<Controller>> open(ControllerOptions options);

  [[nodiscard]] Result<CreatedVolume> create(const std::string& name, int64_t required_bytes,
                                             int64_t limit_bytes,
                                             const std::vector<Capability>& caps,
                                             const StringMap& params, const StringMap& secrets,
                                             bool has_content_source);
  [[nodiscard]] Status remove(const std::string& volume_id, const StringMap& secrets);
  // Empty message: confirmed; otherwise why not.
  [[nodiscard]] Result<std::string> validate(const std::string& volume_id,
                                             const std::vector<Capability>& caps,
                                             const StringMap& secrets);

 private:
  explicit Controller(ControllerOptions options) : options_(std::move(options)) {}
  std::string state_file() const { return options_.state_dir + "/controller.json"; }
  [[nodiscard]] Result<std::unique_ptr<s3::ObjectClient>> client_for(const VolumeId& id,
                                                                     const StringMap& secrets);

  ControllerOptions options_;
  std::mutex mu_;  // CreateVolume/DeleteVolume one at a time (the state file)
};

}  // namespace nacre::csi
