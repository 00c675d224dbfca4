#include "cli/csi_command.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <fstream>
#include <memory>

#include "csi/mounter.h"
#include "csi/node_state.h"
#include "csi/server.h"
#include "s3/crypto.h"
#include "s3/s3_client.h"

namespace nacre::cli {

namespace {

struct CsiCommand {
  std::string endpoint;
  std::string node_id;
  std::string mode = "all";
  std::string state_dir = "/var/lib/nacre/csi";
  std::string cache_dir = "/var/cache/nacre";
  std::string s3_endpoint_url;
  std::string s3_region;
  std::string ca_bundle;
  std::string mounter_socket;
  std::string log_level = "info";

  int run() {
    spdlog::set_level(spdlog::level::from_str(log_level));
    if (mode == "mounter") {
      if (mounter_socket.empty()) {
        std::fprintf(stderr, "nacre csi: error: --mode mounter needs --mounter-socket PATH\n");
        return 1;
      }
      if (auto st = csi::run_mounter(mounter_socket); !st) {
        std::fprintf(stderr, "nacre csi: error: %s\n", st.error().describe().c_str());
        return 1;
      }
      return 0;
    }
    csi::ServerOptions o;
    o.endpoint = endpoint;
    o.controller = mode == "controller" || mode == "all";
    o.node = mode == "node" || mode == "all";
    o.version = NACRE_VERSION;
    csi::DriverDefaults defaults{s3_endpoint_url, s3_region, ca_bundle};
    if (endpoint.empty() || (o.node && node_id.empty())) {
      std::fprintf(stderr, "nacre csi: error: --endpoint%s required\n",
                   o.node && node_id.empty() ? " and --node-id are" : " is");
      return 1;
    }
    char self[PATH_MAX] = {};
    ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) {
      std::fprintf(stderr, "nacre csi: error: cannot find its own binary (/proc/self/exe)\n");
      return 1;
    }
    o.node_options.node_id = node_id;
    o.node_options.state_dir = state_dir;
    o.node_options.cache_dir = cache_dir;
    // After a package upgrade replaced the binary, the link reads
    // "PATH (deleted)": the new binary at PATH is the one to run.
    std::string binary(self, static_cast<size_t>(n));
    if (binary.ends_with(" (deleted)")) binary.resize(binary.size() - 10);
    o.node_options.nacre_binary = binary;
    o.node_options.defaults = defaults;
    if (!mounter_socket.empty()) o.node_options.launcher = csi::mounter_launcher(mounter_socket);
    o.controller_options.state_dir = state_dir;
    o.controller_options.defaults = defaults;
    // S3 clients of the controller and of the node's existence check, with
    // the volume's endpoint, secrets and CA bundle (a PEM from the volume or
    // its secrets is written once to the state directory, atomically).
    o.controller_options.make_client = o.node_options.make_client =
        [state = state_dir, ca_default = ca_bundle](
            const csi::VolumeSpec& spec,
            const csi::Secrets& secrets) -> Result<std::unique_ptr<s3::ObjectClient>> {
      s3::S3Config config =
          s3::S3Config::from_environment(s3::CredentialsEnvironment::from_environment());
      if (!spec.endpoint_url.empty()) config.endpoint = spec.endpoint_url;
      if (!spec.region.empty()) config.region = spec.region;
      if (!secrets.empty()) {
        config.credentials = s3::Credentials{secrets.access_key_id, secrets.secret_access_key,
                                             secrets.session_token, std::nullopt, "CSI secrets"};
      }
      const std::string& pem =
          !secrets.ca_bundle_pem.empty() ? secrets.ca_bundle_pem : spec.ca_bundle_pem;
      if (!pem.empty()) {
        const std::string file = state + "/ca-" + s3::sha256_hex(pem).substr(0, 16) + ".pem";
        if (::access(file.c_str(), R_OK) != 0) {
          if (auto ok = csi::write_file_atomic(file, pem); !ok) return std::unexpected(ok.error());
        }
        config.http.ca_bundle = file;
      } else if (!ca_default.empty()) {
        config.http.ca_bundle = ca_default;
      }
      config.addressing = spec.addressing_style == "virtual" ? s3::Addressing::kVirtual
                          : spec.addressing_style == "path"  ? s3::Addressing::kPath
                                                             : s3::Addressing::kAuto;
      config.retry.max_attempts = 3;  // the CO retries too; answer in bounded time
      auto client = s3::S3Client::create(std::move(config));
      if (!client) return std::unexpected(client.error());
      return std::unique_ptr<s3::ObjectClient>(std::move(*client));
    };
    if (auto st = csi::run_server(o); !st) {
      std::fprintf(stderr, "nacre csi: error: %s\n", st.error().describe().c_str());
      return 1;
    }
    return 0;
  }
};

}  // namespace

void add_csi_command(CLI::App& app, int& exit_code) {
  auto c = std::make_shared<CsiCommand>();
  CLI::App* cmd = app.add_subcommand(
      "csi",
      "Run the Kubernetes CSI driver (nacre.csi.dev) on a unix socket: controller "
      "(CreateVolume/DeleteVolume), node plugin (stage/publish mounts) or both");
  cmd->add_option("--endpoint", c->endpoint, "gRPC socket, unix:///csi/csi.sock");
  cmd->add_option("--node-id", c->node_id, "this node's name (NodeGetInfo)");
  cmd->add_option("--mode", c->mode,
                  "controller, node or all; mounter: only start the node plugin's mounts "
                  "(a container of its own, so mounts outlive the plugin's container)")
      ->check(CLI::IsMember({"controller", "node", "all", "mounter"}))
      ->capture_default_str();
  cmd->add_option("--state-dir", c->state_dir,
                  "the driver's records (volumes, mounts, per-mount credentials, mode 0700)")
      ->capture_default_str();
  cmd->add_option("--cache-dir", c->cache_dir,
                  "node cache root: each mount caches in a directory under it")
      ->capture_default_str();
  cmd->add_option("--s3-endpoint-url", c->s3_endpoint_url,
                  "S3 endpoint for volumes that name none (default: AWS)");
  cmd->add_option("--s3-region", c->s3_region, "region for volumes that name none");
  cmd->add_option("--ca-bundle", c->ca_bundle,
                  "PEM file of CA certificates for volumes without their own caBundle");
  cmd->add_option("--mounter-socket", c->mounter_socket,
                  "node: start mounts through the mounter listening here; mounter: listen here");
  cmd->add_option("--log-level", c->log_level, "trace, debug, info, warn, error")
      ->capture_default_str();
  cmd->callback([c, &exit_code] { exit_code = c->run(); });
}

}  // namespace nacre::cli
