#include "csi/server.h"

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include "csi.grpc.pb.h"

namespace nacre::csi {

namespace {

using grpc::ServerContext;
using grpc::StatusCode;

grpc::Status to_grpc(const Error& e) {
  StatusCode code = StatusCode::INTERNAL;
  switch (e.code) {
    case ErrorCode::kInvalidArgument:
    case ErrorCode::kNoSuchBucket:
    case ErrorCode::kNotSupported:
      code = StatusCode::INVALID_ARGUMENT;
      break;
    case ErrorCode::kNotFound:
    case ErrorCode::kNoSuchKey:
      code = StatusCode::NOT_FOUND;
      break;
    case ErrorCode::kExists:
      code = StatusCode::ALREADY_EXISTS;
      break;
    case ErrorCode::kPreconditionFailed:
      code = StatusCode::FAILED_PRECONDITION;
      break;
    case ErrorCode::kInvalidRange:
      code = StatusCode::OUT_OF_RANGE;
      break;
    case ErrorCode::kCancelled:  // another operation holds the node: retry
      code = StatusCode::ABORTED;
      break;
    case ErrorCode::kAccessDenied:
      code = StatusCode::PERMISSION_DENIED;
      break;
    case ErrorCode::kInvalidCredentials:
      // The spec's "Not authenticated": the secrets (or the driver's own
      // credentials) are not valid keys at all.
      code = StatusCode::UNAUTHENTICATED;
      break;
    case ErrorCode::kNetwork:
    case ErrorCode::kThrottled:
    case ErrorCode::kServerError:
    case ErrorCode::kRequestTimeout:
    case ErrorCode::kCredentialsUnavailable:
      code = StatusCode::UNAVAILABLE;
      break;
    default:
      break;
  }
  return grpc::Status(code, e.describe());
}

// Logs a call without its secrets: every field named "secrets" is cleared
// from a copy before the request is printed.
template <typename Request>
void log_call(const char* method, const Request& req) {
  if (!spdlog::should_log(spdlog::level::debug)) {
    spdlog::info("{}", method);
    return;
  }
  Request copy = req;
  const auto* field = copy.GetDescriptor()->FindFieldByName("secrets");
  if (field) copy.GetReflection()->ClearField(&copy, field);
  spdlog::debug("{} {}", method, copy.ShortDebugString());
}

template <typename T>
grpc::Status finish(const char* method, const Result<T>& r) {
  if (r) return grpc::Status::OK;
  spdlog::warn("{} failed: {}", method, r.error().describe());
  return to_grpc(r.error());
}

Capability to_capability(const ::csi::v1::VolumeCapability& c) {
  Capability cap;
  cap.block = c.has_block();
  cap.has_access_type = c.has_block() || c.has_mount();
  if (c.has_mount()) {
    cap.fs_type = c.mount().fs_type();
    cap.mount_flags.assign(c.mount().mount_flags().begin(), c.mount().mount_flags().end());
    cap.mount_group = c.mount().volume_mount_group();
  }
  cap.access_mode = c.has_access_mode() ? static_cast<int>(c.access_mode().mode()) : 0;
  return cap;
}

StringMap to_map(const google::protobuf::Map<std::string, std::string>& m) {
  return StringMap(m.begin(), m.end());
}

class IdentityService final : public ::csi::v1::Identity::Service {
 public:
  IdentityService(const ServerOptions& o, const std::atomic<bool>& ready) : o_(o), ready_(ready) {}

  grpc::Status GetPluginInfo(ServerContext*, const ::csi::v1::GetPluginInfoRequest*,
                             ::csi::v1::GetPluginInfoResponse* resp) override {
    resp->set_name(kDriverName);
    resp->set_vendor_version(o_.version);
    return grpc::Status::OK;
  }
  grpc::Status GetPluginCapabilities(ServerContext*, const ::csi::v1::GetPluginCapabilitiesRequest*,
                                     ::csi::v1::GetPluginCapabilitiesResponse* resp) override {
    // "The grand sum of all capabilities of all instances": the same answer
    // in every --mode (the spec: regardless of which RPCs an instance serves).
    resp->add_capabilities()->mutable_service()->set_type(
        ::csi::v1::PluginCapability::Service::CONTROLLER_SERVICE);
    return grpc::Status::OK;
  }
  grpc::Status Probe(ServerContext*, const ::csi::v1::ProbeRequest*,
                     ::csi::v1::ProbeResponse* resp) override {
    resp->mutable_ready()->set_value(ready_.load());
    return grpc::Status::OK;
  }

 private:
  const ServerOptions& o_;
  const std::atomic<bool>& ready_;
};

// Every RPC no registered service answers (ListVolumes, snapshots,
// NodeExpandVolume..., and the whole Controller or Node service in the other
// --mode): UNIMPLEMENTED with a message, which the spec asks of every error
// (gRPC's own answer to an unknown method has none).
class UnimplementedService final : public grpc::CallbackGenericService {
 public:
  explicit UnimplementedService(const ServerOptions& o) : o_(o) {}

  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext* ctx) override {
    class Reactor final : public grpc::ServerGenericBidiReactor {
     public:
      explicit Reactor(const std::string& message) {
        Finish(grpc::Status(StatusCode::UNIMPLEMENTED, message));
      }
      void OnDone() override { delete this; }
    };
    const std::string& method = ctx->method();
    std::string message = method + " is not implemented by " + kDriverName;
    if (!o_.controller && method.starts_with("/csi.v1.Controller/")) {
      message += ": this instance runs no Controller service (--mode node)";
    } else if (!o_.node && method.starts_with("/csi.v1.Node/")) {
      message += ": this instance runs no Node service (--mode controller)";
    }
    spdlog::info("{}", message);
    return new Reactor(message);
  }

 private:
  const ServerOptions& o_;
};

class ControllerService final : public ::csi::v1::Controller::Service {
 public:
  explicit ControllerService(Controller& c) : c_(c) {}

  grpc::Status CreateVolume(ServerContext*, const ::csi::v1::CreateVolumeRequest* req,
                            ::csi::v1::CreateVolumeResponse* resp) override {
    log_call("CreateVolume", *req);
    std::vector<Capability> caps;
    for (const auto& c : req->volume_capabilities()) caps.push_back(to_capability(c));
    auto r = c_.create(req->name(), req->capacity_range().required_bytes(),
                       req->capacity_range().limit_bytes(), caps, to_map(req->parameters()),
                       to_map(req->secrets()), req->has_volume_content_source());
    if (r) {
      auto* v = resp->mutable_volume();
      v->set_volume_id(r->volume_id);
      v->set_capacity_bytes(r->capacity_bytes);
      v->mutable_volume_context()->insert(r->context.begin(), r->context.end());
    }
    return finish("CreateVolume", r);
  }
  grpc::Status DeleteVolume(ServerContext*, const ::csi::v1::DeleteVolumeRequest* req,
                            ::csi::v1::DeleteVolumeResponse*) override {
    log_call("DeleteVolume", *req);
    return finish("DeleteVolume", c_.remove(req->volume_id(), to_map(req->secrets())));
  }
  grpc::Status ValidateVolumeCapabilities(
      ServerContext*, const ::csi::v1::ValidateVolumeCapabilitiesRequest* req,
      ::csi::v1::ValidateVolumeCapabilitiesResponse* resp) override {
    log_call("ValidateVolumeCapabilities", *req);
    std::vector<Capability> caps;
    for (const auto& c : req->volume_capabilities()) caps.push_back(to_capability(c));
    auto r = c_.validate(req->volume_id(), caps, to_map(req->secrets()));
    if (r && r->empty()) {
      auto* confirmed = resp->mutable_confirmed();
      *confirmed->mutable_volume_context() = req->volume_context();
      *confirmed->mutable_volume_capabilities() = req->volume_capabilities();
      *confirmed->mutable_parameters() = req->parameters();
    } else if (r) {
      resp->set_message(*r);
    }
    return finish("ValidateVolumeCapabilities", r);
  }
  grpc::Status ControllerGetCapabilities(
      ServerContext*, const ::csi::v1::ControllerGetCapabilitiesRequest*,
      ::csi::v1::ControllerGetCapabilitiesResponse* resp) override {
    resp->add_capabilities()->mutable_rpc()->set_type(
        ::csi::v1::ControllerServiceCapability::RPC::CREATE_DELETE_VOLUME);
    return grpc::Status::OK;
  }

 private:
  Controller& c_;
};

class NodeService final : public ::csi::v1::Node::Service {
 public:
  NodeService(const ServerOptions& o, std::unique_ptr<Node>& node, const std::atomic<bool>& ready)
      : o_(o), node_(node), ready_(ready) {}

  grpc::Status NodeStageVolume(ServerContext*, const ::csi::v1::NodeStageVolumeRequest* req,
                               ::csi::v1::NodeStageVolumeResponse*) override {
    log_call("NodeStageVolume", *req);
    if (auto s = not_ready(); !s.ok()) return s;
    Capability cap;
    if (req->has_volume_capability()) cap = to_capability(req->volume_capability());
    if (!req->has_volume_capability() && !req->volume_id().empty() &&
        !req->staging_target_path().empty()) {
      return grpc::Status(StatusCode::INVALID_ARGUMENT, "volume_capability is required");
    }
    return finish("NodeStageVolume",
                  node_->stage(req->volume_id(), req->staging_target_path(), cap,
                               to_map(req->secrets()), to_map(req->volume_context())));
  }
  grpc::Status NodeUnstageVolume(ServerContext*, const ::csi::v1::NodeUnstageVolumeRequest* req,
                                 ::csi::v1::NodeUnstageVolumeResponse*) override {
    log_call("NodeUnstageVolume", *req);
    if (auto s = not_ready(); !s.ok()) return s;
    return finish("NodeUnstageVolume",
                  node_->unstage(req->volume_id(), req->staging_target_path()));
  }
  grpc::Status NodePublishVolume(ServerContext*, const ::csi::v1::NodePublishVolumeRequest* req,
                                 ::csi::v1::NodePublishVolumeResponse*) override {
    log_call("NodePublishVolume", *req);
    if (auto s = not_ready(); !s.ok()) return s;
    Capability cap;
    if (req->has_volume_capability()) cap = to_capability(req->volume_capability());
    if (!req->volume_id().empty() && !req->target_path().empty()) {
      if (!req->has_volume_capability()) {
        return grpc::Status(StatusCode::INVALID_ARGUMENT, "volume_capability is required");
      }
      // The spec's "Staging target path not set" for a plugin with STAGE_UNSTAGE_VOLUME.
      if (req->staging_target_path().empty()) {
        return grpc::Status(StatusCode::FAILED_PRECONDITION,
                            "staging_target_path is not set: the volume is published from its "
                            "NodeStageVolume path (STAGE_UNSTAGE_VOLUME)");
      }
    }
    return finish("NodePublishVolume", node_->publish(req->volume_id(), req->staging_target_path(),
                                                      req->target_path(), cap, req->readonly()));
  }
  grpc::Status NodeUnpublishVolume(ServerContext*, const ::csi::v1::NodeUnpublishVolumeRequest* req,
                                   ::csi::v1::NodeUnpublishVolumeResponse*) override {
    log_call("NodeUnpublishVolume", *req);
    if (auto s = not_ready(); !s.ok()) return s;
    return finish("NodeUnpublishVolume", node_->unpublish(req->volume_id(), req->target_path()));
  }
  grpc::Status NodeGetVolumeStats(ServerContext*, const ::csi::v1::NodeGetVolumeStatsRequest* req,
                                  ::csi::v1::NodeGetVolumeStatsResponse* resp) override {
    if (auto s = not_ready(); !s.ok()) return s;
    auto r = node_->stats(req->volume_id(), req->volume_path());
    if (r) {
      if (!r->abnormal) {
        auto* bytes = resp->add_usage();
        bytes->set_unit(::csi::v1::VolumeUsage::BYTES);
        bytes->set_total(static_cast<int64_t>(r->bytes_total));
        bytes->set_available(static_cast<int64_t>(r->bytes_available));
        bytes->set_used(static_cast<int64_t>(r->bytes_used));
        auto* inodes = resp->add_usage();
        inodes->set_unit(::csi::v1::VolumeUsage::INODES);
        inodes->set_total(static_cast<int64_t>(r->inodes_total));
        inodes->set_available(static_cast<int64_t>(r->inodes_available));
        inodes->set_used(static_cast<int64_t>(r->inodes_used));
      }
      resp->mutable_volume_condition()->set_abnormal(r->abnormal);
      resp->mutable_volume_condition()->set_message(r->message);
      if (r->abnormal) spdlog::warn("volume {}: {}", req->volume_id(), r->message);
    }
    return finish("NodeGetVolumeStats", r);
  }
  grpc::Status NodeGetCapabilities(ServerContext*, const ::csi::v1::NodeGetCapabilitiesRequest*,
                                   ::csi::v1::NodeGetCapabilitiesResponse* resp) override {
    using RPC = ::csi::v1::NodeServiceCapability::RPC;
    for (auto t : {RPC::STAGE_UNSTAGE_VOLUME, RPC::GET_VOLUME_STATS, RPC::VOLUME_CONDITION,
                   RPC::VOLUME_MOUNT_GROUP}) {
      resp->add_capabilities()->mutable_rpc()->set_type(t);
    }
    return grpc::Status::OK;
  }
  grpc::Status NodeGetInfo(ServerContext*, const ::csi::v1::NodeGetInfoRequest*,
                           ::csi::v1::NodeGetInfoResponse* resp) override {
    resp->set_node_id(o_.node_options.node_id);
    return grpc::Status::OK;
  }

 private:
  grpc::Status not_ready() const {
    if (ready_.load() && node_) return grpc::Status::OK;
    return grpc::Status(StatusCode::UNAVAILABLE, "the node plugin is still starting");
  }
  const ServerOptions& o_;
  std::unique_ptr<Node>& node_;
  const std::atomic<bool>& ready_;
};

}  // namespace

Status run_server(const ServerOptions& options) {
  const std::string scheme = "unix://";
  if (!options.endpoint.starts_with(scheme) || options.endpoint.size() <= scheme.size()) {
    return fail(ErrorCode::kInvalidArgument,
                "--endpoint '" + options.endpoint + "': expected unix:///path/to/csi.sock");
  }
  const std::string socket_path = options.endpoint.substr(scheme.size());
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(socket_path).parent_path(), ec);
  if (::unlink(socket_path.c_str()) != 0 && errno != ENOENT) {
    return fail_errno("remove the old socket " + socket_path, errno);
  }

  std::unique_ptr<Controller> controller;
  if (options.controller) {
    auto c = Controller::open(options.controller_options);
    if (!c) return std::unexpected(c.error());
    controller = std::move(*c);
  }
  // SIGTERM and SIGINT are taken by one thread below; every other thread
  // (gRPC's included, started after this) has them blocked.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  std::atomic<bool> ready{false};
  std::unique_ptr<Node> node;
  IdentityService identity(options, ready);
  std::unique_ptr<ControllerService> controller_service;
  std::unique_ptr<NodeService> node_service;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.endpoint, grpc::InsecureServerCredentials());
  builder.RegisterService(&identity);
  if (controller) {
    controller_service = std::make_unique<ControllerService>(*controller);
    builder.RegisterService(controller_service.get());
  }
  if (options.node) {
    node_service = std::make_unique<NodeService>(options, node, ready);
    builder.RegisterService(node_service.get());
  }
  UnimplementedService unimplemented(options);
  builder.RegisterCallbackGenericService(&unimplemented);
  // The socket is created 0600: only root (kubelet, the sidecars) may talk.
  mode_t old_mask = ::umask(0177);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ::umask(old_mask);
  if (!server) return fail(ErrorCode::kIo, "cannot listen on " + options.endpoint);
  ::chmod(socket_path.c_str(), 0600);
  spdlog::info("{} {} serving CSI on {} ({}{}{})", kDriverName, options.version, socket_path,
               options.controller ? "controller" : "",
               options.controller && options.node ? "+" : "", options.node ? "node" : "");

  std::thread stopper([&server, &stop_signals] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    spdlog::info("signal {}: stopping the CSI server; mounts stay up", sig);
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  });
  Status started;
  if (options.node) {
    // Probe answers not-ready until the mounts of the last run are found again.
    auto n = Node::open(options.node_options);
    if (n) {
      node = std::move(*n);
    } else {
      started = std::unexpected(n.error());
      spdlog::error("the node plugin cannot start: {}", n.error().describe());
      ::kill(::getpid(), SIGTERM);
    }
  }
  if (started) ready = true;
  server->Wait();
  stopper.join();
  ::unlink(socket_path.c_str());
  return started;
}

}  // namespace nacre::csi
