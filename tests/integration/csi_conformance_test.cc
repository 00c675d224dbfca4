// CSI conformance of `nacre csi` (issue 7): a real driver (`--mode all`,
// `--log-level debug`) on a unix socket in a temporary directory, real gRPC,
// the fixture's Ceph RGW and real FUSE mounts (root, /dev/fuse). Each test
// checks the MUSTs and error codes of the CSI specification (v1) for the
// RPCs the driver serves: Identity, Controller (CreateVolume, DeleteVolume,
// ValidateVolumeCapabilities, ControllerGetCapabilities; the rest
// UNIMPLEMENTED) and Node (stage, publish, unpublish, unstage, stats,
// capabilities, info), every call repeated for idempotency, and secrets kept
// out of the logs.
//
// Usage: csi_conformance_test NACRE_BINARY RGW_ENV_FILE [gtest flags]
// (or NACRE_BINARY and NACRE_S3_ENV in the environment).
//
// Each test has its own directory /tmp/csi-conformance-XXXXXX (socket, state,
// cache, staging and target paths, the driver's log) and its own S3 prefix
// csi-conformance-PID/TEST/. TearDown unpublishes and unstages what the test
// left, stops the driver, detaches every mount left under the directory
// (umount -l), kills every process whose command line names the directory
// (the `nacre mount` daemons the driver started), checks that the driver's log
// holds no secret, and removes the directory and the S3 objects.
#include <fcntl.h>
#include <google/protobuf/util/message_differencer.h>
#include <grp.h>
#include <grpcpp/generic/generic_stub.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "s3/s3_client.h"
#include "tests/integration/csi_client.h"
#include "tests/integration/rgw_env.h"

namespace nacre::csi_test {

using nacre::testing::random_bytes;
namespace {

namespace stdfs = std::filesystem;
using Mode = csi::v1::VolumeCapability::AccessMode;
using StringMap = std::map<std::string, std::string>;

// Set by main().
std::string g_nacre;       // the nacre binary
std::string g_bucket;      // NACRE_TEST_BUCKET
std::string g_endpoint;    // AWS_ENDPOINT_URL
std::string g_region;      // AWS_REGION
std::string g_access_key;  // the RGW's keys (env file)
std::string g_secret_key;
std::string g_run_prefix;  // csi-conformance-PID/

const std::vector<Mode::Mode> kAllModes = {
    Mode::SINGLE_NODE_WRITER,       Mode::SINGLE_NODE_READER_ONLY, Mode::MULTI_NODE_READER_ONLY,
    Mode::MULTI_NODE_SINGLE_WRITER, Mode::MULTI_NODE_MULTI_WRITER, Mode::SINGLE_NODE_SINGLE_WRITER,
    Mode::SINGLE_NODE_MULTI_WRITER};

const char* code_name(grpc::StatusCode c) {
  switch (c) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return "?";
  }
}

// The spec's Error Scheme: the code asked for, a human-readable message with
// every non-OK code, and empty details.
::testing::AssertionResult HasCode(const grpc::Status& s, grpc::StatusCode want) {
  if (s.error_code() != want) {
    return ::testing::AssertionFailure() << "got " << code_name(s.error_code()) << " \""
                                         << s.error_message() << "\", expected " << code_name(want);
  }
  if (!s.ok() && s.error_message().empty()) {
    return ::testing::AssertionFailure()
           << code_name(want) << " without a message (the status message MUST describe it)";
  }
  if (!s.error_details().empty()) {
    return ::testing::AssertionFailure() << "status details are not empty (they MUST be)";
  }
  return ::testing::AssertionSuccess();
}
#define EXPECT_CODE(status, code) EXPECT_TRUE(HasCode((status), grpc::StatusCode::code))
#define ASSERT_CODE(status, code) ASSERT_TRUE(HasCode((status), grpc::StatusCode::code))

// ---------------------------------------------------------------- local helpers

std::vector<MountLine> mounts_under(const std::string& dir) {
  std::vector<MountLine> out;
  for (auto& m : read_mounts()) {
    if (m.point == dir || m.point.starts_with(dir + "/")) out.push_back(m);
  }
  return out;
}

// The topmost mount at exactly `path`.
std::optional<MountLine> mount_at(const std::string& path) {
  std::optional<MountLine> found;
  for (auto& m : read_mounts()) {
    if (m.point == path) found = m;
  }
  return found;
}

std::vector<std::string> cmdline(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> args;
  std::string cur;
  for (char c : all) {
    if (c == '\0') {
      args.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) args.push_back(cur);
  return args;
}

bool alive(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  if (!std::getline(stat, text)) return false;
  size_t paren = text.rfind(')');
  return !(paren != std::string::npos && paren + 2 < text.size() && text[paren + 2] == 'Z');
}

// Processes (not this one) whose command line names something under `dir`;
// with `mounts_only`, only `nacre mount` daemons.
std::vector<pid_t> processes_under(const std::string& dir, bool mounts_only) {
  std::vector<pid_t> out;
  std::error_code ec;
  for (const auto& e : stdfs::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    pid_t pid = static_cast<pid_t>(std::stol(name));
    if (pid == ::getpid() || !alive(pid)) continue;
    auto args = cmdline(pid);
    bool mentions = false;
    for (const auto& a : args) mentions = mentions || a.find(dir + "/") != std::string::npos;
    if (!mentions) continue;
    if (mounts_only && (args.size() < 2 || args[1] != "mount")) continue;
    out.push_back(pid);
  }
  return out;
}

bool wait_gone(const std::vector<pid_t>& pids, std::chrono::milliseconds limit) {
  auto end = std::chrono::steady_clock::now() + limit;
  for (;;) {
    bool any = false;
    for (pid_t p : pids) any = any || alive(p);
    if (!any) return true;
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

std::optional<std::string> slurp(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  std::string out;
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      ::close(fd);
      return std::nullopt;
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

// 0, or the errno of the first step that failed (open, write or close).
int write_file(const std::string& path, const std::string& data) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return errno;
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      return err;
    }
    done += static_cast<size_t>(n);
  }
  if (::close(fd) != 0) return errno;
  return 0;
}

std::string file_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

csi::v1::VolumeCapability cap(Mode::Mode mode = Mode::SINGLE_NODE_WRITER,
                              std::vector<std::string> flags = {}, const std::string& group = "") {
  return mount_capability(mode, std::move(flags), group);
}

// An RPC through the generic stub: methods csi.proto does not declare.
grpc::Status call_generic(const std::shared_ptr<grpc::Channel>& channel,
                          const std::string& method) {
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  auto ctx = Client::ctx(20);
  grpc::Slice empty(std::string{});
  grpc::ByteBuffer request(&empty, 1);
  grpc::ByteBuffer response;
  grpc::Status status;
  auto call = stub.PrepareUnaryCall(ctx.get(), method, request, &cq);
  call->StartCall();
  call->Finish(&response, &status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  cq.Next(&tag, &ok);
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  return status;
}

// ---------------------------------------------------------------- fixture

struct DriverSetup {
  std::string mode = "all";
  std::string state = "state";     // under the test's directory
  bool strip_credentials = false;  // no AWS_* keys in the driver's environment
};

class CsiConformance : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/csi-conformance-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr) << std::strerror(errno);
    dir_ = tmpl;
    socket_ = dir_ + "/csi/csi.sock";
    log_ = dir_ + "/driver.log";
    test_ = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    base_ = g_run_prefix + test_;
    auto c = s3::S3Client::create(
        s3::S3Config::from_environment(s3::CredentialsEnvironment::from_environment()));
    ASSERT_TRUE(c) << c.error().describe();
    s3_ = std::move(*c);
    ASSERT_NO_FATAL_FAILURE(start_driver());
  }

  void TearDown() override {
    if (HasFailure()) {
      std::string log = file_text(log_);
      if (log.size() > 12000) log = "...\n" + log.substr(log.size() - 12000);
      std::printf("---- driver log (%s), last part ----\n%s---- end of driver log ----\n",
                  log_.c_str(), log.c_str());
    }
    // What the test left staged or published, through the driver as kubelet would.
    if (client_ && setup_.mode != "controller") {
      for (auto it = published_.rbegin(); it != published_.rend(); ++it) {
        csi::v1::NodeUnpublishVolumeRequest r;
        r.set_volume_id(it->first);
        r.set_target_path(it->second);
        (void)NodeUnpublishVolume(r);
      }
      for (auto it = staged_.rbegin(); it != staged_.rend(); ++it) {
        csi::v1::NodeUnstageVolumeRequest r;
        r.set_volume_id(it->first);
        r.set_staging_target_path(it->second);
        (void)NodeUnstageVolume(r);
      }
    }
    stop_driver();
    // Whatever is still mounted under the test's directory: detached, deepest first.
    for (int round = 0; round < 20; ++round) {
      auto left = mounts_under(dir_);
      if (left.empty()) break;
      std::sort(left.begin(), left.end(), [](const MountLine& a, const MountLine& b) {
        return a.point.size() > b.point.size();
      });
      for (const auto& m : left) {
        if (round == 0)
          ADD_FAILURE() << "mount left after the test: " << m.point << " (" << m.type << ")";
        ::umount2(m.point.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW);
      }
    }
    // The `nacre mount` daemons (and anything else) started for this directory.
    auto pids = processes_under(dir_, false);
    for (pid_t p : pids) {
      auto args = cmdline(p);
      ADD_FAILURE() << "process left after the test: " << p << " "
                    << (args.empty() ? std::string("?") : args[0])
                    << (args.size() > 1 ? " " + args[1] : "");
      ::kill(p, SIGTERM);
    }
    if (!wait_gone(pids, std::chrono::seconds(5))) {
      for (pid_t p : pids) ::kill(p, SIGKILL);
      wait_gone(pids, std::chrono::seconds(5));
    }
    // Secrets never reach the log (the driver runs with --log-level debug).
    const std::string log = file_text(log_);
    EXPECT_EQ(log.find(g_secret_key), std::string::npos) << "the secret key is in " << log_;
    for (const auto& canary : canaries_) {
      EXPECT_EQ(log.find(canary), std::string::npos) << "the canary secret is in " << log_;
    }
    if (mounts_under(dir_).empty()) {
      std::error_code ec;
      stdfs::remove_all(dir_, ec);
    } else {
      ADD_FAILURE() << "mounts remain under " << dir_ << ": the directory is kept";
    }
    delete_prefix(base_ + "/");
  }

  // -------------------------------------------------------------- the driver

  void start_driver(DriverSetup setup = {}) {
    setup_ = setup;
    std::vector<std::string> args = {"csi",
                                     "--endpoint",
                                     "unix://" + socket_,
                                     "--node-id",
                                     "csi-conformance-node",
                                     "--mode",
                                     setup.mode,
                                     "--state-dir",
                                     dir_ + "/" + setup.state,
                                     "--cache-dir",
                                     dir_ + "/cache",
                                     "--s3-endpoint-url",
                                     g_endpoint,
                                     "--s3-region",
                                     g_region,
                                     "--log-level",
                                     "debug"};
    std::string binary = g_nacre;
    if (setup.strip_credentials) {
      // env(1) execs the driver in the same process, without the keys.
      args.insert(args.begin(), {"-u", "AWS_ACCESS_KEY_ID", "-u", "AWS_SECRET_ACCESS_KEY", "-u",
                                 "AWS_SESSION_TOKEN", g_nacre});
      binary = "/usr/bin/env";
    }
    driver_ = std::make_unique<DriverProcess>(binary, args, socket_, log_);
    ASSERT_TRUE(driver_->start(60)) << "nacre csi did not become ready; its log:\n"
                                    << file_text(log_);
    client_ = std::make_unique<Client>(socket_);
  }

  void stop_driver() {
    client_.reset();
    if (driver_) driver_->stop();
    driver_.reset();
  }

  void restart_driver(DriverSetup setup) {
    stop_driver();
    ASSERT_NO_FATAL_FAILURE(start_driver(setup));
  }

  // -------------------------------------------------------------- RPCs

#define CSI_RPC(SERVICE, RPC)                                                               \
  grpc::Status RPC(const csi::v1::RPC##Request& r, csi::v1::RPC##Response* out = nullptr) { \
    csi::v1::RPC##Response ignored;                                                         \
    auto ctx = Client::ctx(180);                                                            \
    return client_->SERVICE->RPC(ctx.get(), r, out ? out : &ignored);                       \
  }
  CSI_RPC(identity, GetPluginInfo)
  CSI_RPC(identity, GetPluginCapabilities)
  CSI_RPC(identity, Probe)
  CSI_RPC(controller, CreateVolume)
  CSI_RPC(controller, DeleteVolume)
  CSI_RPC(controller, ValidateVolumeCapabilities)
  CSI_RPC(controller, ControllerGetCapabilities)
  CSI_RPC(node, NodeStageVolume)
  CSI_RPC(node, NodeUnstageVolume)
  CSI_RPC(node, NodePublishVolume)
  CSI_RPC(node, NodeUnpublishVolume)
  CSI_RPC(node, NodeGetVolumeStats)
  CSI_RPC(node, NodeGetCapabilities)
  CSI_RPC(node, NodeGetInfo)
#undef CSI_RPC

  StringMap fresh_params() const {
    return {{"bucketName", g_bucket}, {"basePrefix", base_}};
  }

  static csi::v1::CreateVolumeRequest create_req(
      const std::string& name, const StringMap& params,
      std::vector<csi::v1::VolumeCapability> caps = {cap()}, int64_t required = 0,
      int64_t limit = 0) {
    csi::v1::CreateVolumeRequest r;
    r.set_name(name);
    for (auto& c : caps) *r.add_volume_capabilities() = c;
    r.mutable_parameters()->insert(params.begin(), params.end());
    if (required || limit) {
      r.mutable_capacity_range()->set_required_bytes(required);
      r.mutable_capacity_range()->set_limit_bytes(limit);
    }
    return r;
  }

  void create_ok(const std::string& name, const StringMap& params, csi::v1::Volume* out,
                 std::vector<csi::v1::VolumeCapability> caps = {cap()}) {
    csi::v1::CreateVolumeResponse resp;
    ASSERT_CODE(CreateVolume(create_req(name, params, std::move(caps)), &resp), OK);
    ASSERT_FALSE(resp.volume().volume_id().empty());
    *out = resp.volume();
  }
  // A fresh volume's S3 prefix (with a trailing '/').
  std::string volume_prefix(const std::string& name) const {
    return base_ + "/" + name + "/";
  }

  static csi::v1::ValidateVolumeCapabilitiesRequest validate_req(
      const std::string& id, std::vector<csi::v1::VolumeCapability> caps) {
    csi::v1::ValidateVolumeCapabilitiesRequest r;
    r.set_volume_id(id);
    for (auto& c : caps) *r.add_volume_capabilities() = c;
    return r;
  }

  std::string staging_dir(const std::string& name) {
    std::string p =
        dir_ + "/kubelet/plugins/kubernetes.io/csi/nacre.csi.dev/" + name + "/globalmount";
    stdfs::create_directories(p);  // the CO creates it (spec)
    return p;
  }
  // The pod's target path: its parent exists, the path itself does not.
  std::string target_dir(const std::string& pod) {
    std::string parent = dir_ + "/kubelet/pods/" + pod + "/volumes/kubernetes.io~csi/pv";
    stdfs::create_directories(parent);
    return parent + "/mount";
  }

  static csi::v1::NodeStageVolumeRequest stage_req(const csi::v1::Volume& v,
                                                   const std::string& staging,
                                                   const csi::v1::VolumeCapability& c,
                                                   const StringMap& secrets = {}) {
    csi::v1::NodeStageVolumeRequest r;
    r.set_volume_id(v.volume_id());
    r.set_staging_target_path(staging);
    *r.mutable_volume_capability() = c;
    *r.mutable_volume_context() = v.volume_context();
    r.mutable_secrets()->insert(secrets.begin(), secrets.end());
    return r;
  }
  static csi::v1::NodePublishVolumeRequest publish_req(const csi::v1::Volume& v,
                                                       const std::string& staging,
                                                       const std::string& target,
                                                       const csi::v1::VolumeCapability& c,
                                                       bool readonly) {
    csi::v1::NodePublishVolumeRequest r;
    r.set_volume_id(v.volume_id());
    r.set_staging_target_path(staging);
    r.set_target_path(target);
    *r.mutable_volume_capability() = c;
    r.set_readonly(readonly);
    *r.mutable_volume_context() = v.volume_context();
    return r;
  }
  // Stage and publish, remembered for TearDown.
  grpc::Status stage(const csi::v1::NodeStageVolumeRequest& r) {
    staged_.emplace_back(r.volume_id(), r.staging_target_path());
    return NodeStageVolume(r);
  }
  grpc::Status publish(const csi::v1::NodePublishVolumeRequest& r) {
    published_.emplace_back(r.volume_id(), r.target_path());
    return NodePublishVolume(r);
  }
  grpc::Status unstage(const std::string& id, const std::string& staging) {
    csi::v1::NodeUnstageVolumeRequest r;
    r.set_volume_id(id);
    r.set_staging_target_path(staging);
    return NodeUnstageVolume(r);
  }
  grpc::Status unpublish(const std::string& id, const std::string& target) {
    csi::v1::NodeUnpublishVolumeRequest r;
    r.set_volume_id(id);
    r.set_target_path(target);
    return NodeUnpublishVolume(r);
  }
  grpc::Status stats(const std::string& id, const std::string& path,
                     csi::v1::NodeGetVolumeStatsResponse* out = nullptr,
                     const std::string& staging = "") {
    csi::v1::NodeGetVolumeStatsRequest r;
    r.set_volume_id(id);
    r.set_volume_path(path);
    r.set_staging_target_path(staging);
    return NodeGetVolumeStats(r, out);
  }

  void expect_healthy_stats(const std::string& id, const std::string& path,
                            const std::string& staging = "") {
    SCOPED_TRACE("NodeGetVolumeStats of " + path);
    csi::v1::NodeGetVolumeStatsResponse resp;
    ASSERT_CODE(stats(id, path, &resp, staging), OK);
    std::set<int> units;
    for (const auto& u : resp.usage()) {
      units.insert(u.unit());
      EXPECT_GE(u.total(), 0);  // the spec: MUST NOT be negative
      EXPECT_GE(u.available(), 0);
      EXPECT_GE(u.used(), 0);
    }
    EXPECT_TRUE(units.contains(csi::v1::VolumeUsage::BYTES)) << resp.ShortDebugString();
    EXPECT_TRUE(units.contains(csi::v1::VolumeUsage::INODES)) << resp.ShortDebugString();
    // VOLUME_CONDITION is advertised: the condition MUST be there, message REQUIRED.
    ASSERT_TRUE(resp.has_volume_condition()) << resp.ShortDebugString();
    EXPECT_FALSE(resp.volume_condition().abnormal()) << resp.volume_condition().message();
    EXPECT_FALSE(resp.volume_condition().message().empty());
  }

  std::vector<pid_t> mount_processes() {
    return processes_under(dir_, true);
  }

  // -------------------------------------------------------------- S3

  void put(const std::string& key, const std::string& data) {
    auto r = s3_->put_object({g_bucket, key, s3::Body::from_memory(data), {}, ""});
    ASSERT_TRUE(r) << "put " << key << ": " << r.error().describe();
  }
  std::optional<s3::ObjectInfo> head(const std::string& key) {
    auto r = s3_->head_object(g_bucket, key);
    if (!r) return std::nullopt;
    return *r;
  }
  std::optional<std::string> get(const std::string& key) {
    std::string out;
    auto r =
        s3_->get_object({g_bucket, key, 0, std::nullopt, ""}, [&](std::string_view c) -> Status {
          out.append(c);
          return {};
        });
    if (!r) return std::nullopt;
    return out;
  }
  // Every key under `prefix` with its ETag, sorted.
  std::map<std::string, std::string> objects(const std::string& prefix) {
    std::map<std::string, std::string> out;
    s3::ListRequest req{g_bucket, prefix, "", "", "", 1000};
    for (;;) {
      auto page = s3_->list_objects(req);
      EXPECT_TRUE(page) << page.error().describe();
      if (!page) break;
      for (auto& o : page->objects) out[o.key] = o.etag;
      if (page->next_continuation_token.empty()) break;
      req.continuation_token = page->next_continuation_token;
    }
    return out;
  }
  void delete_prefix(const std::string& prefix) {
    if (!s3_) return;
    s3::ListRequest req{g_bucket, prefix, "", "", "", 1000};
    for (int i = 0; i < 100; ++i) {
      auto page = s3_->list_objects(req);
      if (!page || page->objects.empty()) break;
      std::vector<std::string> keys;
      for (auto& o : page->objects) keys.push_back(o.key);
      (void)s3_->delete_objects(g_bucket, keys);
    }
  }

  std::string dir_, socket_, log_, test_;
  std::string base_;  // this test's S3 prefix, without the trailing '/'
  DriverSetup setup_;
  std::unique_ptr<DriverProcess> driver_;
  std::unique_ptr<Client> client_;
  std::unique_ptr<s3::S3Client> s3_;
  std::vector<std::pair<std::string, std::string>> staged_, published_;  // (volume, path)
  std::vector<std::string> canaries_;  // secrets that must never be logged
};

// ================================================================ Identity

TEST_F(CsiConformance, IdentityPluginInfoCapabilitiesProbe) {
  std::string version_output;
  {
    FILE* p = ::popen((g_nacre + " --version").c_str(), "r");
    ASSERT_NE(p, nullptr);
    char buf[256];
    while (std::fgets(buf, sizeof buf, p)) version_output += buf;
    ::pclose(p);
  }
  for (int i = 0; i < 2; ++i) {
    csi::v1::GetPluginInfoResponse info;
    ASSERT_CODE(GetPluginInfo({}, &info), OK);
    EXPECT_EQ(info.name(), "nacre.csi.dev");
    // Domain-name notation, 63 characters or less, alphanumerics at both ends,
    // dashes, dots and alphanumerics between.
    EXPECT_LE(info.name().size(), 63u);
    EXPECT_TRUE(
        std::regex_match(info.name(), std::regex("^[a-zA-Z0-9]([a-zA-Z0-9.-]*[a-zA-Z0-9])?$")))
        << info.name();
    EXPECT_FALSE(info.vendor_version().empty());
    EXPECT_NE(version_output.find(info.vendor_version()), std::string::npos)
        << "vendor_version " << info.vendor_version()
        << " vs `nacre --version`: " << version_output;

    csi::v1::GetPluginCapabilitiesResponse caps;
    ASSERT_CODE(GetPluginCapabilities({}, &caps), OK);
    bool controller = false;
    for (const auto& c : caps.capabilities()) {
      if (c.has_service() &&
          c.service().type() == csi::v1::PluginCapability::Service::CONTROLLER_SERVICE) {
        controller = true;
      }
      // Nothing the driver does not serve (no topology, group snapshots, expansion).
      EXPECT_TRUE(c.has_service() &&
                  c.service().type() == csi::v1::PluginCapability::Service::CONTROLLER_SERVICE)
          << c.ShortDebugString();
    }
    EXPECT_TRUE(controller) << caps.ShortDebugString();

    csi::v1::ProbeResponse probe;
    ASSERT_CODE(Probe({}, &probe), OK);
    ASSERT_TRUE(probe.has_ready());
    EXPECT_TRUE(probe.ready().value());
  }
}

TEST_F(CsiConformance, SocketIsMode0600) {
  struct stat st {};
  ASSERT_EQ(::stat(socket_.c_str(), &st), 0) << socket_;
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u) << std::oct << (st.st_mode & 07777);
}

// A node-only and a controller-only instance: GetPluginCapabilities is "the
// grand sum of all capabilities of all instances" and "All instances of the
// same version ... SHALL return the same set of capabilities, regardless of
// ... which RPCs an instance is serving"; the RPCs of the service an instance
// does not run are "disabled in the Plugin's current mode": UNIMPLEMENTED.
TEST_F(CsiConformance, ModesNodeAndControllerOnly) {
  ASSERT_NO_FATAL_FAILURE(restart_driver({.mode = "node"}));
  {
    SCOPED_TRACE("--mode node");
    csi::v1::GetPluginCapabilitiesResponse caps;
    ASSERT_CODE(GetPluginCapabilities({}, &caps), OK);
    bool controller = false;
    for (const auto& c : caps.capabilities()) {
      controller = controller ||
                   (c.has_service() &&
                    c.service().type() == csi::v1::PluginCapability::Service::CONTROLLER_SERVICE);
    }
    EXPECT_TRUE(controller) << "same capabilities as the controller instance: "
                            << caps.ShortDebugString();
    csi::v1::ProbeResponse probe;
    EXPECT_CODE(Probe({}, &probe), OK);
    EXPECT_TRUE(probe.ready().value());
    EXPECT_CODE(CreateVolume(create_req("pvc-node-mode", fresh_params())), UNIMPLEMENTED);
    EXPECT_CODE(ControllerGetCapabilities({}), UNIMPLEMENTED);
    csi::v1::NodeGetInfoResponse info;
    EXPECT_CODE(NodeGetInfo({}, &info), OK);
    EXPECT_EQ(info.node_id(), "csi-conformance-node");
  }
  ASSERT_NO_FATAL_FAILURE(restart_driver({.mode = "controller"}));
  {
    SCOPED_TRACE("--mode controller");
    csi::v1::GetPluginCapabilitiesResponse caps;
    ASSERT_CODE(GetPluginCapabilities({}, &caps), OK);
    ASSERT_EQ(caps.capabilities_size(), 1);
    EXPECT_EQ(caps.capabilities(0).service().type(),
              csi::v1::PluginCapability::Service::CONTROLLER_SERVICE);
    EXPECT_CODE(ControllerGetCapabilities({}), OK);
    EXPECT_CODE(NodeGetCapabilities({}), UNIMPLEMENTED);
    EXPECT_CODE(NodeGetInfo({}), UNIMPLEMENTED);
  }
  EXPECT_TRUE(objects(base_ + "/").empty()) << "node mode wrote to S3";
}

// ================================================================ Controller

TEST_F(CsiConformance, ControllerGetCapabilities) {
  using RPC = csi::v1::ControllerServiceCapability::RPC;
  for (int i = 0; i < 2; ++i) {
    csi::v1::ControllerGetCapabilitiesResponse resp;
    ASSERT_CODE(ControllerGetCapabilities({}, &resp), OK);
    std::set<int> types;
    for (const auto& c : resp.capabilities()) {
      ASSERT_TRUE(c.has_rpc()) << c.ShortDebugString();
      types.insert(c.rpc().type());
    }
    EXPECT_TRUE(types.contains(RPC::CREATE_DELETE_VOLUME)) << resp.ShortDebugString();
    // Only what is served: CreateVolume/DeleteVolume (and the access-mode
    // capability SINGLE_NODE_MULTI_WRITER, which needs no RPC).
    for (int t : types) {
      EXPECT_TRUE(t == RPC::CREATE_DELETE_VOLUME || t == RPC::SINGLE_NODE_MULTI_WRITER)
          << "advertises " << RPC::Type_Name(static_cast<RPC::Type>(t))
          << " but does not implement it";
    }
  }
}

TEST_F(CsiConformance, CreateVolumeFreshAndIdempotent) {
  const std::string name = "pvc-fresh-1";
  StringMap params = fresh_params();
  // csi-provisioner --extra-create-metadata keys: accepted, not in the context.
  params["csi.storage.k8s.io/pvc/name"] = "claim";
  params["csi.storage.k8s.io/pvc/namespace"] = "default";
  params["csi.storage.k8s.io/pv/name"] = name;
  const int64_t gib = int64_t{1} << 30;
  auto req = create_req(name, params, {cap(Mode::SINGLE_NODE_WRITER)}, gib, 0);

  csi::v1::CreateVolumeResponse first;
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_CODE(CreateVolume(req, &first), OK);
  auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  EXPECT_LT(ms, 1000) << "CreateVolume took " << ms << " ms (the issue: well under a second)";
  const auto& v = first.volume();
  // The id ends in ";n=" and 8 hex digits of the name's SHA-256 (ownership).
  EXPECT_TRUE(v.volume_id().starts_with("fresh:" + g_bucket + "/" + base_ + "/" + name + ";n="))
      << v.volume_id();
  EXPECT_EQ(v.volume_id().size(), ("fresh:" + g_bucket + "/" + base_ + "/" + name).size() + 11);
  EXPECT_LE(v.volume_id().size(), 128u);
  EXPECT_EQ(v.capacity_bytes(), gib);
  EXPECT_FALSE(v.has_content_source());
  EXPECT_EQ(v.volume_context().at("bucketName"), g_bucket);
  EXPECT_EQ(v.volume_context().at("prefix"), base_ + "/" + name);
  EXPECT_EQ(v.volume_context().at("basePrefix"), base_);
  for (const auto& [k, val] : v.volume_context()) {
    EXPECT_FALSE(k.starts_with("csi.storage.k8s.io/")) << k;
  }
  // The marker object says whose prefix it is.
  auto marker = head(volume_prefix(name));
  ASSERT_TRUE(marker) << "no marker object s3://" << g_bucket << "/" << volume_prefix(name);
  EXPECT_EQ(marker->metadata["nacre-volume-name"], name);
  EXPECT_EQ(marker->metadata["nacre-volume-capacity"], std::to_string(gib));
  EXPECT_FALSE(marker->metadata["nacre-volume-params"].empty());
  {
    const std::string perms = marker->metadata["file-permissions"];
    mode_t mode = static_cast<mode_t>(std::strtoul(perms.c_str(), nullptr, 8));
    EXPECT_TRUE(!perms.empty() && S_ISDIR(mode)) << "FSx directory metadata: '" << perms << "'";
  }
  EXPECT_EQ(objects(base_ + "/").size(), 1u) << "CreateVolume writes one marker object";

  // Same request again: the same volume.
  for (int i = 0; i < 2; ++i) {
    csi::v1::CreateVolumeResponse again;
    ASSERT_CODE(CreateVolume(req, &again), OK);
    EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(again.volume(), v))
        << again.volume().ShortDebugString() << "\nvs\n"
        << v.ShortDebugString();
  }
  // Compatible requests (a range that holds the volume, other capabilities the
  // volume supports): OK with the same volume (the spec's MUST).
  {
    auto compatible = create_req(name, params, {cap(Mode::MULTI_NODE_READER_ONLY)}, gib, 2 * gib);
    csi::v1::CreateVolumeResponse again;
    EXPECT_CODE(CreateVolume(compatible, &again), OK);
    EXPECT_EQ(again.volume().volume_id(), v.volume_id());
    EXPECT_EQ(again.volume().capacity_bytes(), gib);
  }
  // Same name, another capacity: ALREADY_EXISTS.
  EXPECT_CODE(CreateVolume(create_req(name, params, {cap()}, 2 * gib, 0)), ALREADY_EXISTS);
  EXPECT_CODE(CreateVolume(create_req(name, params, {cap()}, 0, 0)), ALREADY_EXISTS);
  // Same name, other parameters: ALREADY_EXISTS.
  {
    StringMap other = params;
    other["metadataTtl"] = "60";
    EXPECT_CODE(CreateVolume(create_req(name, other, {cap()}, gib, 0)), ALREADY_EXISTS);
    other = params;
    other["basePrefix"] = base_ + "/elsewhere";
    EXPECT_CODE(CreateVolume(create_req(name, other, {cap()}, gib, 0)), ALREADY_EXISTS);
  }
  // A controller that lost its records (new state directory) finds the volume
  // through its marker: same answer, same conflicts.
  ASSERT_NO_FATAL_FAILURE(restart_driver({.state = "state-2"}));
  {
    csi::v1::CreateVolumeResponse again;
    ASSERT_CODE(CreateVolume(req, &again), OK);
    EXPECT_EQ(again.volume().volume_id(), v.volume_id());
    EXPECT_EQ(again.volume().capacity_bytes(), gib);
    EXPECT_CODE(CreateVolume(create_req(name, params, {cap()}, 3 * gib, 0)), ALREADY_EXISTS);
    StringMap other = params;
    other["cacheSize"] = "1G";
    EXPECT_CODE(CreateVolume(create_req(name, other, {cap()}, gib, 0)), ALREADY_EXISTS);
  }
  // Another volume whose prefix would be this one's: refused.
  {
    StringMap other = fresh_params();
    other["pathPattern"] = name;
    EXPECT_CODE(CreateVolume(create_req("pvc-other", other, {cap()}, gib, 0)), ALREADY_EXISTS);
  }
}

TEST_F(CsiConformance, CreateVolumePathPattern) {
  StringMap params = fresh_params();
  params["pathPattern"] = "${pvc.metadata.namespace}/${pvc.metadata.name}";
  params["csi.storage.k8s.io/pvc/namespace"] = "team-a";
  params["csi.storage.k8s.io/pvc/name"] = "models";
  params["csi.storage.k8s.io/pv/name"] = "pvc-1234";
  csi::v1::CreateVolumeResponse resp;
  ASSERT_CODE(CreateVolume(create_req("pvc-1234", params), &resp), OK);
  EXPECT_EQ(resp.volume().volume_context().at("prefix"), base_ + "/team-a/models");
  EXPECT_TRUE(head(base_ + "/team-a/models/")) << "marker of the templated prefix";
  // The template needs the provisioner's metadata.
  StringMap missing = fresh_params();
  missing["pathPattern"] = "${pvc.metadata.namespace}/${pvc.metadata.name}";
  EXPECT_CODE(CreateVolume(create_req("pvc-5678", missing)), INVALID_ARGUMENT);
}

TEST_F(CsiConformance, CreateVolumeInvalidRequests) {
  const StringMap params = fresh_params();
  // Missing name, missing capabilities.
  EXPECT_CODE(CreateVolume(create_req("", params)), INVALID_ARGUMENT);
  EXPECT_CODE(CreateVolume(create_req("pvc-bad", params, {})), INVALID_ARGUMENT);
  // Block volumes, and a capability naming neither block nor mount.
  EXPECT_CODE(
      CreateVolume(create_req("pvc-bad", params, {block_capability(Mode::SINGLE_NODE_WRITER)})),
      INVALID_ARGUMENT);
  EXPECT_CODE(CreateVolume(create_req("pvc-bad", params,
                                      {cap(), block_capability(Mode::MULTI_NODE_READER_ONLY)})),
              INVALID_ARGUMENT);
  {
    csi::v1::VolumeCapability neither;
    neither.mutable_access_mode()->set_mode(Mode::SINGLE_NODE_WRITER);
    EXPECT_CODE(CreateVolume(create_req("pvc-bad", params, {neither})), INVALID_ARGUMENT);
  }
  // Access mode UNKNOWN, another file system, a mount flag off the allow-list.
  EXPECT_CODE(CreateVolume(create_req("pvc-bad", params, {cap(Mode::UNKNOWN)})), INVALID_ARGUMENT);
  {
    auto ext4 = cap();
    ext4.mutable_mount()->set_fs_type("ext4");
    EXPECT_CODE(CreateVolume(create_req("pvc-bad", params, {ext4})), INVALID_ARGUMENT);
  }
  {
    auto st = CreateVolume(
        create_req("pvc-bad", params, {cap(Mode::SINGLE_NODE_WRITER, {"allow_other"})}));
    EXPECT_CODE(st, INVALID_ARGUMENT);
    EXPECT_NE(st.error_message().find("allow_other"), std::string::npos) << st.error_message();
  }
  // An unknown parameter: INVALID_ARGUMENT naming it.
  {
    StringMap bad = params;
    bad["fooBarUnknown"] = "1";
    auto st = CreateVolume(create_req("pvc-bad", bad));
    EXPECT_CODE(st, INVALID_ARGUMENT);
    EXPECT_NE(st.error_message().find("fooBarUnknown"), std::string::npos) << st.error_message();
  }
  // No bucket; bad values.
  EXPECT_CODE(CreateVolume(create_req("pvc-bad", {{"basePrefix", base_}})), INVALID_ARGUMENT);
  for (const auto& [k, val] :
       std::vector<std::pair<std::string, std::string>>{{"deleteData", "maybe"},
                                                        {"autoImportPolicy", "SOMETIMES"},
                                                        {"autoExportPolicy", "NEW,SOMETIMES"},
                                                        {"metadataTtl", "soon"},
                                                        {"cacheSize", "big"},
                                                        {"uid", "-1"},
                                                        {"fileMode", "999"},
                                                        {"addressingStyle", "sideways"},
                                                        {"preloadWaitSeconds", "-3"},
                                                        {"preload", "/etc/*"},
                                                        {"caBundle", "not a certificate"},
                                                        {"prefix", "static-only"}}) {
    StringMap bad = params;
    bad[k] = val;
    auto st = CreateVolume(create_req("pvc-bad", bad));
    EXPECT_CODE(st, INVALID_ARGUMENT) << k << "=" << val;
  }
  // Prefixes that climb out with "..": refused.
  for (const auto& [k, val] :
       std::vector<std::pair<std::string, std::string>>{{"basePrefix", base_ + "/../escape"},
                                                        {"basePrefix", "../escape"},
                                                        {"basePrefix", base_ + "/.."},
                                                        {"pathPattern", ".."},
                                                        {"pathPattern", "a/../../b"}}) {
    StringMap bad = params;
    bad[k] = val;
    EXPECT_CODE(CreateVolume(create_req("pvc-dotdot", bad)), INVALID_ARGUMENT) << k << "=" << val;
  }
  EXPECT_CODE(CreateVolume(create_req(
                  "pvc-dotdot", {{"s3ImportPath", "s3://" + g_bucket + "/" + base_ + "/../x"}})),
              INVALID_ARGUMENT);
  // A name that would make the volume id pass 128 bytes.
  EXPECT_CODE(CreateVolume(create_req(std::string(130, 'n'), params)), INVALID_ARGUMENT);
  // Capacity: limit below required is OUT_OF_RANGE; negative is invalid.
  EXPECT_CODE(CreateVolume(create_req("pvc-range", params, {cap()}, 2 << 20, 1 << 20)),
              OUT_OF_RANGE);
  EXPECT_CODE(CreateVolume(create_req("pvc-range", params, {cap()}, -1, 0)), INVALID_ARGUMENT);
  EXPECT_CODE(CreateVolume(create_req("pvc-range", params, {cap()}, 0, -1)), INVALID_ARGUMENT);
  // Content sources (snapshots, clones): a prefix has none.
  {
    auto r = create_req("pvc-src", params);
    r.mutable_volume_content_source()->mutable_snapshot()->set_snapshot_id("snap-1");
    EXPECT_CODE(CreateVolume(r), INVALID_ARGUMENT);
    auto c = create_req("pvc-src", params);
    c.mutable_volume_content_source()->mutable_volume()->set_volume_id("fresh:" + g_bucket + "/" +
                                                                       base_ + "/other");
    EXPECT_CODE(CreateVolume(c), INVALID_ARGUMENT);
  }
  // Linked volumes take none of the fresh-volume parameters.
  EXPECT_CODE(
      CreateVolume(create_req(
          "pvc-bad", {{"s3ImportPath", "s3://" + g_bucket + "/" + base_}, {"deleteData", "true"}})),
      INVALID_ARGUMENT);
  EXPECT_CODE(
      CreateVolume(create_req("pvc-bad", {{"s3ImportPath", "s3://" + g_bucket + "/" + base_},
                                          {"s3ExportPath", "s3://" + g_bucket + "/other"}})),
      INVALID_ARGUMENT);
  // Nothing of it reached S3.
  EXPECT_TRUE(objects(base_ + "/").empty());
  EXPECT_FALSE(head("escape/"));
}

TEST_F(CsiConformance, CreateVolumeAcceptsAllSevenAccessModes) {
  for (auto m : kAllModes) {
    SCOPED_TRACE(Mode::Mode_Name(m));
    const std::string name = "pvc-mode-" + std::to_string(static_cast<int>(m));
    csi::v1::CreateVolumeResponse resp;
    EXPECT_CODE(CreateVolume(create_req(name, fresh_params(), {cap(m)}), &resp), OK);
    EXPECT_TRUE(head(volume_prefix(name)));
  }
  std::vector<csi::v1::VolumeCapability> all;
  for (auto m : kAllModes) all.push_back(cap(m));
  EXPECT_CODE(CreateVolume(create_req("pvc-all-modes", fresh_params(), all)), OK);
}

TEST_F(CsiConformance, CreateVolumeLinkedWritesNothing) {
  const std::string dataset = base_ + "/dataset";
  ASSERT_NO_FATAL_FAILURE(put(dataset + "/model.safetensors", random_bytes(100000, 1)));
  ASSERT_NO_FATAL_FAILURE(put(dataset + "/config.json", "{\"dim\": 4096}\n"));
  const auto before = objects(base_ + "/");
  const StringMap params = {{"s3ImportPath", "s3://" + g_bucket + "/" + dataset},
                            {"s3ExportPath", "s3://" + g_bucket + "/" + dataset},
                            {"autoImportPolicy", "NEW_CHANGED"}};
  csi::v1::CreateVolumeResponse resp;
  ASSERT_CODE(
      CreateVolume(create_req("pvc-linked", params, {cap(Mode::MULTI_NODE_READER_ONLY)}), &resp),
      OK);
  const auto& v = resp.volume();
  EXPECT_TRUE(v.volume_id().starts_with("linked:")) << v.volume_id();
  EXPECT_EQ(v.volume_id(), "linked:" + g_bucket + "/" + dataset + ";v=pvc-linked");
  EXPECT_EQ(v.volume_context().at("bucketName"), g_bucket);
  EXPECT_EQ(v.volume_context().at("s3ImportPath"), "s3://" + g_bucket + "/" + dataset);
  csi::v1::CreateVolumeResponse again;
  ASSERT_CODE(
      CreateVolume(create_req("pvc-linked", params, {cap(Mode::MULTI_NODE_READER_ONLY)}), &again),
      OK);
  EXPECT_EQ(again.volume().volume_id(), v.volume_id());
  EXPECT_EQ(objects(base_ + "/"), before) << "a linked CreateVolume wrote to S3";

  csi::v1::ValidateVolumeCapabilitiesResponse val;
  EXPECT_CODE(ValidateVolumeCapabilities(
                  validate_req(v.volume_id(), {cap(Mode::MULTI_NODE_READER_ONLY)}), &val),
              OK);
  EXPECT_TRUE(val.has_confirmed());

  // DeleteVolume never touches a linked dataset.
  csi::v1::DeleteVolumeRequest del;
  del.set_volume_id(v.volume_id());
  EXPECT_CODE(DeleteVolume(del), OK);
  EXPECT_CODE(DeleteVolume(del), OK);
  EXPECT_EQ(objects(base_ + "/"), before) << "DeleteVolume of a linked volume changed the dataset";

  // A dataset in a bucket that does not exist: refused, nothing created.
  EXPECT_CODE(CreateVolume(create_req("pvc-linked-nobucket",
                                      {{"s3ImportPath", "s3://nacre-no-such-bucket-" +
                                                            std::to_string(::getpid()) + "/x"}})),
              INVALID_ARGUMENT);
}

TEST_F(CsiConformance, DeleteVolume) {
  csi::v1::DeleteVolumeRequest del;
  // Empty id: INVALID_ARGUMENT. Unknown or malformed ids: OK.
  EXPECT_CODE(DeleteVolume(del), INVALID_ARGUMENT);
  for (const std::string& id :
       {std::string("not-a-nacre-volume"), std::string("fresh:"), std::string("fresh:/x"),
        std::string("linked:;v=x"),
        std::string("fresh:") + g_bucket + "/" + base_ + "/never-created",
        std::string("fresh+delete:") + g_bucket + "/" + base_ + "/never-created",
        std::string("fresh:") + g_bucket + "/x;q=unknown-field",
        std::string("fresh+delete:nacre-no-such-bucket-") + std::to_string(::getpid()) + "/p"}) {
    del.set_volume_id(id);
    EXPECT_CODE(DeleteVolume(del), OK) << id;
  }

  // Default (deleteData absent): the objects stay.
  csi::v1::Volume kept;
  ASSERT_NO_FATAL_FAILURE(create_ok("pvc-keep", fresh_params(), &kept));
  ASSERT_NO_FATAL_FAILURE(put(volume_prefix("pvc-keep") + "a.txt", "a"));
  ASSERT_NO_FATAL_FAILURE(put(volume_prefix("pvc-keep") + "sub/b.txt", "b"));
  const auto kept_before = objects(volume_prefix("pvc-keep"));
  ASSERT_EQ(kept_before.size(), 3u);
  del.set_volume_id(kept.volume_id());
  EXPECT_CODE(DeleteVolume(del), OK);
  EXPECT_CODE(DeleteVolume(del), OK);
  EXPECT_EQ(objects(volume_prefix("pvc-keep")), kept_before) << "deleteData defaults to false";

  // deleteData "true": every object under the prefix goes (more than one
  // LIST page), and nothing beside it.
  StringMap params = fresh_params();
  params["deleteData"] = "true";
  csi::v1::Volume gone;
  ASSERT_NO_FATAL_FAILURE(create_ok("pvc-del", params, &gone));
  EXPECT_TRUE(gone.volume_id().starts_with("fresh+delete:")) << gone.volume_id();
  {
    std::atomic<int> failures{0};
    std::vector<std::thread> writers;
    for (int t = 0; t < 4; ++t) {
      writers.emplace_back([&, t] {
        for (int i = t; i < 1010; i += 4) {
          auto r = s3_->put_object(
              {g_bucket,
               volume_prefix("pvc-del") + "d" + std::to_string(i % 7) + "/f" + std::to_string(i),
               s3::Body::from_memory("x"),
               {},
               ""});
          if (!r) ++failures;
        }
      });
    }
    for (auto& w : writers) w.join();
    ASSERT_EQ(failures.load(), 0);
  }
  ASSERT_NO_FATAL_FAILURE(put(base_ + "/pvc-del-sibling/keep.txt", "sibling"));
  ASSERT_NO_FATAL_FAILURE(put(base_ + "/pvc-del.txt", "neighbour"));
  ASSERT_EQ(objects(volume_prefix("pvc-del")).size(), 1011u);
  del.set_volume_id(gone.volume_id());
  EXPECT_CODE(DeleteVolume(del), OK);
  EXPECT_TRUE(objects(volume_prefix("pvc-del")).empty()) << "deleteData=true left objects";
  EXPECT_CODE(DeleteVolume(del), OK);
  EXPECT_TRUE(head(base_ + "/pvc-del-sibling/keep.txt")) << "a sibling prefix was deleted";
  EXPECT_TRUE(head(base_ + "/pvc-del.txt")) << "a neighbouring key was deleted";
  // The volume is gone for ValidateVolumeCapabilities too, and its name can be used again.
  EXPECT_CODE(ValidateVolumeCapabilities(validate_req(gone.volume_id(), {cap()})), NOT_FOUND);
  csi::v1::Volume reborn;
  ASSERT_NO_FATAL_FAILURE(create_ok("pvc-del", params, &reborn));
  EXPECT_EQ(reborn.volume_id(), gone.volume_id());
}

TEST_F(CsiConformance, ValidateVolumeCapabilities) {
  csi::v1::Volume v;
  ASSERT_NO_FATAL_FAILURE(create_ok("pvc-validate", fresh_params(), &v));
  using google::protobuf::util::MessageDifferencer;
  for (auto m : kAllModes) {
    SCOPED_TRACE(Mode::Mode_Name(m));
    auto req = validate_req(v.volume_id(), {cap(m)});
    for (int i = 0; i < 2; ++i) {
      csi::v1::ValidateVolumeCapabilitiesResponse resp;
      ASSERT_CODE(ValidateVolumeCapabilities(req, &resp), OK);
      ASSERT_TRUE(resp.has_confirmed()) << resp.message();
      ASSERT_EQ(resp.confirmed().volume_capabilities_size(), 1);
      EXPECT_TRUE(MessageDifferencer::Equals(resp.confirmed().volume_capabilities(0), cap(m)));
    }
  }
  {
    std::vector<csi::v1::VolumeCapability> all;
    for (auto m : kAllModes) all.push_back(cap(m, {"metadata-ttl=5"}));
    auto req = validate_req(v.volume_id(), all);
    *req.mutable_volume_context() = v.volume_context();
    (*req.mutable_parameters())["bucketName"] = g_bucket;
    csi::v1::ValidateVolumeCapabilitiesResponse resp;
    ASSERT_CODE(ValidateVolumeCapabilities(req, &resp), OK);
    ASSERT_TRUE(resp.has_confirmed()) << resp.message();
    EXPECT_EQ(resp.confirmed().volume_capabilities_size(), 7);
    // What is confirmed is what was asked (the CO compares them).
    for (int i = 0; i < 7; ++i) {
      EXPECT_TRUE(MessageDifferencer::Equals(resp.confirmed().volume_capabilities(i), all[i]));
    }
  }
  // Block, another file system, a flag off the allow-list: not confirmed, with a message.
  {
    auto ext4 = cap();
    ext4.mutable_mount()->set_fs_type("ext4");
    for (const auto& c : {block_capability(Mode::SINGLE_NODE_WRITER), ext4,
                          cap(Mode::SINGLE_NODE_WRITER, {"allow_other"})}) {
      SCOPED_TRACE(c.ShortDebugString());
      csi::v1::ValidateVolumeCapabilitiesResponse resp;
      ASSERT_CODE(ValidateVolumeCapabilities(validate_req(v.volume_id(), {cap(), c}), &resp), OK);
      EXPECT_FALSE(resp.has_confirmed()) << resp.ShortDebugString();
      EXPECT_FALSE(resp.message().empty());
    }
  }
  // Unknown volumes: NOT_FOUND; missing fields: INVALID_ARGUMENT.
  EXPECT_CODE(ValidateVolumeCapabilities(validate_req("not-a-nacre-volume", {cap()})), NOT_FOUND);
  EXPECT_CODE(ValidateVolumeCapabilities(
                  validate_req("fresh:" + g_bucket + "/" + base_ + "/never-created", {cap()})),
              NOT_FOUND);
  EXPECT_CODE(ValidateVolumeCapabilities(validate_req("", {cap()})), INVALID_ARGUMENT);
  EXPECT_CODE(ValidateVolumeCapabilities(validate_req(v.volume_id(), {})), INVALID_ARGUMENT);
  EXPECT_CODE(ValidateVolumeCapabilities(validate_req("", {})), INVALID_ARGUMENT);
}

TEST_F(CsiConformance, UnimplementedRpcs) {
  for (const char* method :
       {"/csi.v1.Controller/ListVolumes", "/csi.v1.Controller/ControllerPublishVolume",
        "/csi.v1.Controller/ControllerUnpublishVolume", "/csi.v1.Controller/GetCapacity",
        "/csi.v1.Controller/CreateSnapshot", "/csi.v1.Controller/DeleteSnapshot",
        "/csi.v1.Controller/ListSnapshots", "/csi.v1.Controller/GetSnapshot",
        "/csi.v1.Controller/ControllerExpandVolume", "/csi.v1.Controller/ControllerGetVolume",
        "/csi.v1.Controller/ControllerModifyVolume", "/csi.v1.Node/NodeExpandVolume",
        "/csi.v1.GroupController/GroupControllerGetCapabilities"}) {
    EXPECT_CODE(call_generic(client_->channel, method), UNIMPLEMENTED) << method;
  }
}

// ================================================================ Node

TEST_F(CsiConformance, NodeGetCapabilitiesAndInfo) {
  using RPC = csi::v1::NodeServiceCapability::RPC;
  for (int i = 0; i < 2; ++i) {
    csi::v1::NodeGetCapabilitiesResponse caps;
    ASSERT_CODE(NodeGetCapabilities({}, &caps), OK);
    std::set<int> types;
    for (const auto& c : caps.capabilities()) types.insert(c.rpc().type());
    for (int want : {RPC::STAGE_UNSTAGE_VOLUME, RPC::GET_VOLUME_STATS, RPC::VOLUME_CONDITION,
                     RPC::VOLUME_MOUNT_GROUP}) {
      EXPECT_TRUE(types.contains(want)) << RPC::Type_Name(static_cast<RPC::Type>(want));
    }
    for (int t : types) {
      EXPECT_NE(t, RPC::EXPAND_VOLUME) << "NodeExpandVolume is not implemented";
      EXPECT_NE(t, RPC::UNKNOWN);
    }
    csi::v1::NodeGetInfoResponse info;
    ASSERT_CODE(NodeGetInfo({}, &info), OK);
    EXPECT_EQ(info.node_id(), "csi-conformance-node");
    EXPECT_EQ(info.max_volumes_per_node(), 0);
    EXPECT_FALSE(info.has_accessible_topology());
  }
}

// The life of a volume on a node, each call twice: stage, publish read-write
// and read-only, write through the pod's path, stats, unpublish, unstage.
TEST_F(CsiConformance, NodeStagePublishUnpublishUnstage) {
  csi::v1::Volume v;
  ASSERT_NO_FATAL_FAILURE(create_ok("pvc-node", fresh_params(), &v));
  const std::string vp = volume_prefix("pvc-node");
  const std::string hello = "hello from S3\n";
  const std::string weights = random_bytes((3 << 20) + 123, 7);
  ASSERT_NO_FATAL_FAILURE(put(vp + "hello.txt", hello));
  ASSERT_NO_FATAL_FAILURE(put(vp + "models/weights.bin", weights));
  ASSERT_NO_FATAL_FAILURE(put(vp + "empty", ""));

  const std::string staging = staging_dir("pv-node");
  const auto capability = cap(Mode::SINGLE_NODE_WRITER);
  auto sreq = stage_req(v, staging, capability);
  ASSERT_CODE(stage(sreq), OK);
  EXPECT_CODE(stage(sreq), OK);
  {
    auto m = mount_at(staging);
    ASSERT_TRUE(m) << staging << " is not a mount point";
    EXPECT_EQ(m->type, "fuse.nacre");
    EXPECT_FALSE(m->read_only);
  }
  EXPECT_EQ(slurp(staging + "/hello.txt"), hello);
  EXPECT_EQ(slurp(staging + "/models/weights.bin"), weights);
  EXPECT_EQ(slurp(staging + "/empty"), "");
  const auto daemons = mount_processes();
  EXPECT_EQ(daemons.size(), 1u) << "one `nacre mount` per staged volume";

  // Read-write publish (the target does not exist yet: the driver creates it).
  const std::string target = target_dir("pod-a");
  auto preq = publish_req(v, staging, target, capability, false);
  ASSERT_CODE(publish(preq), OK);
  EXPECT_CODE(publish(preq), OK);
  {
    auto m = mount_at(target);
    ASSERT_TRUE(m) << target << " is not a mount point";
    EXPECT_EQ(m->type, "fuse.nacre");
    EXPECT_FALSE(m->read_only);
  }
  EXPECT_EQ(slurp(target + "/hello.txt"), hello);
  EXPECT_EQ(write_file(target + "/written-by-pod.txt", "pod output\n"), 0);
  EXPECT_EQ(get(vp + "written-by-pod.txt"), "pod output\n") << "not in S3 after close";
  EXPECT_EQ(::mkdir((target + "/pod-dir").c_str(), 0755), 0) << std::strerror(errno);

  // Read-only publish of the same volume (a second pod).
  const std::string target_ro = target_dir("pod-b");
  auto proreq = publish_req(v, staging, target_ro, capability, true);
  ASSERT_CODE(publish(proreq), OK);
  EXPECT_CODE(publish(proreq), OK);
  {
    auto m = mount_at(target_ro);
    ASSERT_TRUE(m);
    EXPECT_TRUE(m->read_only);
  }
  EXPECT_EQ(slurp(target_ro + "/hello.txt"), hello);
  EXPECT_EQ(write_file(target_ro + "/nope.txt", "x"), EROFS);
  EXPECT_EQ(write_file(target_ro + "/hello.txt", "x"), EROFS);
  EXPECT_EQ(::mkdir((target_ro + "/nope").c_str(), 0755), -1);
  EXPECT_EQ(errno, EROFS);
  EXPECT_EQ(::unlink((target_ro + "/hello.txt").c_str()), -1);
  EXPECT_EQ(errno, EROFS);
  EXPECT_EQ(slurp(target_ro + "/written-by-pod.txt"), "pod output\n");
  EXPECT_FALSE(head(vp + "nope.txt"));

  // The same target with another readonly flag: ALREADY_EXISTS, nothing changed.
  {
    auto conflicting = preq;
    conflicting.set_readonly(true);
    EXPECT_CODE(NodePublishVolume(conflicting), ALREADY_EXISTS);
    auto m = mount_at(target);
    ASSERT_TRUE(m);
    EXPECT_FALSE(m->read_only);
  }

  // Stats on every path of the volume; errors.
  expect_healthy_stats(v.volume_id(), target);
  expect_healthy_stats(v.volume_id(), target_ro, staging);
  expect_healthy_stats(v.volume_id(), staging);
  EXPECT_CODE(stats("fresh:" + g_bucket + "/" + base_ + "/not-staged", target), NOT_FOUND);
  EXPECT_CODE(stats(v.volume_id(), dir_), NOT_FOUND);
  EXPECT_CODE(stats(v.volume_id(), dir_ + "/no/such/path"), NOT_FOUND);
  EXPECT_CODE(stats("", target), INVALID_ARGUMENT);
  EXPECT_CODE(stats(v.volume_id(), ""), INVALID_ARGUMENT);

  // Unpublish, twice each: the targets are gone.
  for (const auto& t : {target, target_ro}) {
    SCOPED_TRACE("unpublish " + t);
    EXPECT_CODE(unpublish(v.volume_id(), t), OK);
    EXPECT_FALSE(mount_at(t));
    EXPECT_FALSE(stdfs::exists(t)) << "the SP MUST delete the directory it created";
    EXPECT_CODE(unpublish(v.volume_id(), t), OK);
  }
  EXPECT_CODE(stats(v.volume_id(), target), NOT_FOUND) << "unpublished target";
  EXPECT_EQ(slurp(staging + "/hello.txt"), hello) << "unpublish broke the staging path";

  // Unstage, twice: no mount and no `nacre mount` left.
  EXPECT_CODE(unstage(v.volume_id(), staging), OK);
  EXPECT_CODE(unstage(v.volume_id(), staging), OK);
  EXPECT_FALSE(mount_at(staging));
  for (const auto& m : mounts_under(dir_))
    ADD_FAILURE() << "still mounted: " << m.point << " " << m.type;
  EXPECT_TRUE(wait_gone(daemons, std::chrono::seconds(2))) << "the `nacre mount` is still running";
  EXPECT_TRUE(mount_processes().empty());
  EXPECT_CODE(stats(v.volume_id(), staging), NOT_FOUND) << "unstaged volume";
  // The data stays in S3.
  EXPECT_EQ(get(vp + "hello.txt"), hello);
  EXPECT_EQ(get(vp + "written-by-pod.txt"), "pod output\n");
  staged_.clear();
  published_.clear();
}

// Reader-only access modes: the stage itself is read-only, and so is every
// publish of it.
TEST_F(CsiConformance, NodeReaderOnlyModesMountReadOnly) {
  for (auto mode : {Mode::SINGLE_NODE_READER_ONLY, Mode::MULTI_NODE_READER_ONLY}) {
    SCOPED_TRACE(Mode::Mode_Name(mode));
    const std::string name = "pvc-ro-" + std::to_string(static_cast<int>(mode));
    csi::v1::Volume v;
    ASSERT_NO_FATAL_FAILURE(create_ok(name, fresh_params(), &v, {cap(mode)}));
    ASSERT_NO_FATAL_FAILURE(put(volume_prefix(name) + "data.txt", "read me\n"));
    const std::string staging = staging_dir(name);
    auto sreq = stage_req(v, staging, cap(mode));
    ASSERT_CODE(stage(sreq), OK);
    EXPECT_CODE(stage(sreq), OK);
    auto m = mount_at(staging);
    ASSERT_TRUE(m);
    EXPECT_TRUE(m->read_only) << "the stage of a reader-only volume is writable";
    EXPECT_EQ(slurp(staging + "/data.txt"), "read me\n");
    EXPECT_EQ(write_file(staging + "/new.txt", "x"), EROFS);
    EXPECT_EQ(write_file(staging + "/data.txt", "x"), EROFS);

    const std::string target = target_dir(name + "-pod");
    auto preq = publish_req(v, staging, target, cap(mode), false);
    ASSERT_CODE(publish(preq), OK);
    EXPECT_CODE(publish(preq), OK);
    auto t = mount_at(target);
    ASSERT_TRUE(t);
    EXPECT_TRUE(t->read_only);
    EXPECT_EQ(write_file(target + "/new.txt", "x"), EROFS);
    EXPECT_EQ(slurp(target + "/data.txt"), "read me\n");
    EXPECT_FALSE(head(volume_prefix(name) + "new.txt"));
    expect_healthy_stats(v.volume_id(), target);

    EXPECT_CODE(unpublish(v.volume_id(), target), OK);
    EXPECT_CODE(unstage(v.volume_id(), staging), OK);
    EXPECT_TRUE(mounts_under(dir_).empty());
  }
  EXPECT_TRUE(wait_gone(mount_processes(), std::chrono::seconds(2)));
  staged_.clear();
  published_.clear();
}

TEST_F(CsiConformance, NodeStageAndPublishInvalidRequests) {
  csi::v1::Volume v;
  ASSERT_NO_FATAL_FAILURE(create_ok("pvc-bad-node", fresh_params(), &v));
  ASSERT_NO_FATAL_FAILURE(put(volume_prefix("pvc-bad-node") + "f.txt", "f"));
  const std::string staging = staging_dir("pvc-bad-node");
  const auto good = stage_req(v, staging, cap());

  // Missing fields.
  {
    auto r = good;
    r.clear_volume_id();
    EXPECT_CODE(NodeStageVolume(r), INVALID_ARGUMENT);
    r = good;
    r.clear_staging_target_path();
    EXPECT_CODE(NodeStageVolume(r), INVALID_ARGUMENT);
    r = good;
    r.clear_volume_capability();
    EXPECT_CODE(NodeStageVolume(r), INVALID_ARGUMENT);
    EXPECT_CODE(NodeStageVolume(csi::v1::NodeStageVolumeRequest{}), INVALID_ARGUMENT);
  }
  // Capabilities the driver cannot serve.
  {
    auto r = good;
    *r.mutable_volume_capability() = block_capability(Mode::SINGLE_NODE_WRITER);
    EXPECT_CODE(NodeStageVolume(r), INVALID_ARGUMENT);
    r = good;
    r.mutable_volume_capability()->mutable_mount()->set_fs_type("ext4");
    EXPECT_CODE(NodeStageVolume(r), INVALID_ARGUMENT);
    r = good;
    r.mutable_volume_capability()->mutable_access_mode()->set_mode(Mode::UNKNOWN);
    EXPECT_CODE(NodeStageVolume(r), INVALID_ARGUMENT);
    r = good;
    r.mutable_volume_capability()->mutable_mount()->set_volume_mount_group("staff");
    EXPECT_CODE(NodeStageVolume(r), INVALID_ARGUMENT);
  }
  // Mount flags off the allow-list: INVALID_ARGUMENT naming the flag.
  for (const std::string flag : {"allow_other", "cache-dir=/x", "suid", "dev", "exec",
                                 "default_permissions", "pid-file=/tmp/x", "nonempty"}) {
    auto r = stage_req(v, staging, cap(Mode::SINGLE_NODE_WRITER, {"metadata-ttl=5", flag}));
    auto st = NodeStageVolume(r);
    EXPECT_CODE(st, INVALID_ARGUMENT) << flag;
    EXPECT_NE(st.error_message().find(flag), std::string::npos)
        << flag << ": " << st.error_message();
  }
  // Allowed flags with values `nacre mount` cannot take: INVALID_ARGUMENT
  // naming the flag at once (not a failed mount the CO retries forever).
  for (const std::string flag :
       {"metadata-ttl=soon", "uid=abc", "gid=-5", "file-mode=999", "dir_mode=rwx",
        "cache-size=lots", "import-policy=SOMETIMES", "export-policy=NEW,SOMETIMES",
        "fetch-threads=0", "fuse-threads=many", "part-size=0", "max-attempts=100",
        "connect-timeout=-1", "stall-timeout=never", "addressing-style=sideways",
        "hydrate-min-size=huge", "log-level=loud"}) {
    auto t0 = std::chrono::steady_clock::now();
    auto st = NodeStageVolume(stage_req(v, staging, cap(Mode::SINGLE_NODE_WRITER, {flag})));
    EXPECT_CODE(st, INVALID_ARGUMENT) << flag;
    EXPECT_NE(st.error_message().find(flag), std::string::npos)
        << flag << ": " << st.error_message();
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10)) << flag;
  }
  // Volume context the driver does not know.
  {
    auto r = good;
    (*r.mutable_volume_context())["mysteryKnob"] = "1";
    auto st = NodeStageVolume(r);
    EXPECT_CODE(st, INVALID_ARGUMENT);
    EXPECT_NE(st.error_message().find("mysteryKnob"), std::string::npos) << st.error_message();
    r = good;
    (*r.mutable_volume_context())["prefix"] = base_ + "/../escape";
    r.mutable_volume_context()->erase("basePrefix");
    EXPECT_CODE(NodeStageVolume(r), INVALID_ARGUMENT) << "a static prefix with '..'";
  }
  // None of it mounted anything.
  EXPECT_TRUE(mounts_under(dir_).empty());
  EXPECT_TRUE(mount_processes().empty());

  // Publish before stage: FAILED_PRECONDITION.
  const std::string target = target_dir("pod-bad");
  const auto pgood = publish_req(v, staging, target, cap(), false);
  EXPECT_CODE(NodePublishVolume(pgood), FAILED_PRECONDITION);
  EXPECT_FALSE(mount_at(target));

  ASSERT_CODE(stage(good), OK);
  // Missing fields. A missing staging path is the spec's "Staging target path
  // not set" (FAILED_PRECONDITION) for a plugin with STAGE_UNSTAGE_VOLUME.
  {
    auto r = pgood;
    r.clear_volume_id();
    EXPECT_CODE(NodePublishVolume(r), INVALID_ARGUMENT);
    r = pgood;
    r.clear_target_path();
    EXPECT_CODE(NodePublishVolume(r), INVALID_ARGUMENT);
    r = pgood;
    r.clear_volume_capability();
    EXPECT_CODE(NodePublishVolume(r), INVALID_ARGUMENT);
    r = pgood;
    r.clear_staging_target_path();
    EXPECT_CODE(NodePublishVolume(r), FAILED_PRECONDITION);
    EXPECT_CODE(NodePublishVolume(csi::v1::NodePublishVolumeRequest{}), INVALID_ARGUMENT);
  }
  // Published with a staging path where it is not staged: FAILED_PRECONDITION.
  {
    auto r = pgood;
    r.set_staging_target_path(staging_dir("elsewhere"));
    EXPECT_CODE(NodePublishVolume(r), FAILED_PRECONDITION);
  }
  // Capabilities and flags as for stage.
  {
    auto r = pgood;
    *r.mutable_volume_capability() = block_capability(Mode::SINGLE_NODE_WRITER);
    EXPECT_CODE(NodePublishVolume(r), INVALID_ARGUMENT);
    r = pgood;
    r.mutable_volume_capability()->mutable_mount()->set_fs_type("ext4");
    EXPECT_CODE(NodePublishVolume(r), INVALID_ARGUMENT);
    r = pgood;
    r.mutable_volume_capability()->mutable_mount()->add_mount_flags("allow_other");
    auto st = NodePublishVolume(r);
    EXPECT_CODE(st, INVALID_ARGUMENT);
    EXPECT_NE(st.error_message().find("allow_other"), std::string::npos) << st.error_message();
  }
  EXPECT_FALSE(mount_at(target)) << "a failed publish left a mount";
  // Unpublish and unstage: missing fields; unknown ones are OK.
  EXPECT_CODE(unpublish("", target), INVALID_ARGUMENT);
  EXPECT_CODE(unpublish(v.volume_id(), ""), INVALID_ARGUMENT);
  EXPECT_CODE(unstage("", staging), INVALID_ARGUMENT);
  EXPECT_CODE(unstage(v.volume_id(), ""), INVALID_ARGUMENT);
  EXPECT_CODE(unpublish(v.volume_id(), target_dir("never-published")), OK);
  EXPECT_CODE(unpublish("fresh:" + g_bucket + "/never-staged", target_dir("never-published")), OK);
  EXPECT_CODE(unstage("fresh:" + g_bucket + "/never-staged", staging_dir("never-staged")), OK);
  // The stage survived all of it.
  EXPECT_EQ(slurp(staging + "/f.txt"), "f");
  EXPECT_CODE(unstage(v.volume_id(), staging), OK);
  EXPECT_TRUE(mounts_under(dir_).empty());
  staged_.clear();
}

// Staging the same volume at the same path with an incompatible capability:
// ALREADY_EXISTS, and the existing stage is untouched.
TEST_F(CsiConformance, NodeStageIncompatibleCapabilityAlreadyExists) {
  csi::v1::Volume v;
  ASSERT_NO_FATAL_FAILURE(
      create_ok("pvc-incompat", fresh_params(), &v, {cap(Mode::MULTI_NODE_MULTI_WRITER)}));
  ASSERT_NO_FATAL_FAILURE(put(volume_prefix("pvc-incompat") + "f.txt", "f"));
  const std::string staging = staging_dir("pvc-incompat");
  auto sreq = stage_req(v, staging, cap(Mode::SINGLE_NODE_WRITER));
  ASSERT_CODE(stage(sreq), OK);
  for (const auto& other :
       {cap(Mode::SINGLE_NODE_READER_ONLY), cap(Mode::MULTI_NODE_READER_ONLY),
        cap(Mode::SINGLE_NODE_WRITER, {"ro"}), cap(Mode::SINGLE_NODE_WRITER, {"metadata-ttl=600"}),
        cap(Mode::SINGLE_NODE_WRITER, {}, "2000")}) {
    SCOPED_TRACE(other.ShortDebugString());
    auto r = sreq;
    *r.mutable_volume_capability() = other;
    EXPECT_CODE(NodeStageVolume(r), ALREADY_EXISTS);
  }
  auto m = mount_at(staging);
  ASSERT_TRUE(m);
  EXPECT_FALSE(m->read_only);
  EXPECT_EQ(slurp(staging + "/f.txt"), "f");
  EXPECT_EQ(mount_processes().size(), 1u);
  EXPECT_CODE(stage(sreq), OK);
  EXPECT_CODE(unstage(v.volume_id(), staging), OK);
  EXPECT_TRUE(mounts_under(dir_).empty());
  staged_.clear();
}

// Allowed mount flags reach the mount: "ro" makes the stage read-only, uid=
// owns the files; policy lists with commas survive the trip through -o.
TEST_F(CsiConformance, NodeStageAllowedMountFlags) {
  csi::v1::Volume v;
  ASSERT_NO_FATAL_FAILURE(create_ok("pvc-flags", fresh_params(), &v));
  ASSERT_NO_FATAL_FAILURE(put(volume_prefix("pvc-flags") + "f.txt", "f"));
  const std::string staging = staging_dir("pvc-flags");
  auto sreq = stage_req(v, staging,
                        cap(Mode::SINGLE_NODE_WRITER,
                            {"ro", "metadata_ttl=5", "uid=1000", "file-mode=0640", "fuse_threads=4",
                             "import-policy=NEW,CHANGED", "export_policy=NEW,CHANGED",
                             "addressing-style=path", "hydrate-min-size=off", "log-level=info",
                             "max-attempts=3", "connect-timeout=5", "contain-symlinks"}));
  ASSERT_CODE(stage(sreq), OK);
  EXPECT_CODE(stage(sreq), OK);
  auto m = mount_at(staging);
  ASSERT_TRUE(m);
  EXPECT_TRUE(m->read_only);
  struct stat st {};
  ASSERT_EQ(::stat((staging + "/f.txt").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 1000u);
  // file-mode=0640 (the default is 0644; a read-only mount may drop write bits).
  EXPECT_EQ(st.st_mode & 0007, 0u) << std::oct << st.st_mode;
  EXPECT_EQ(st.st_mode & 0440, 0440u) << std::oct << st.st_mode;
  EXPECT_EQ(write_file(staging + "/g.txt", "g"), EROFS);
  EXPECT_CODE(unstage(v.volume_id(), staging), OK);
  staged_.clear();
}

// VOLUME_MOUNT_GROUP (fsGroup): the pod's group owns the files and may write,
// at the volume root too.
TEST_F(CsiConformance, NodeVolumeMountGroup) {
  csi::v1::Volume v;
  ASSERT_NO_FATAL_FAILURE(
      create_ok("pvc-group", fresh_params(), &v, {cap(Mode::SINGLE_NODE_MULTI_WRITER)}));
  ASSERT_NO_FATAL_FAILURE(put(volume_prefix("pvc-group") + "f.txt", "f"));
  ASSERT_NO_FATAL_FAILURE(put(volume_prefix("pvc-group") + "sub/g.txt", "g"));
  ASSERT_EQ(::chmod(dir_.c_str(), 0755), 0);  // mkdtemp's 0700 would stop uid 4321 first
  const std::string staging = staging_dir("pvc-group");
  const auto c = cap(Mode::SINGLE_NODE_MULTI_WRITER, {}, "1234");
  auto sreq = stage_req(v, staging, c);
  ASSERT_CODE(stage(sreq), OK);
  EXPECT_CODE(stage(sreq), OK);
  const std::string target = target_dir("pod-group");
  ASSERT_CODE(publish(publish_req(v, staging, target, c, false)), OK);
  for (const std::string rel : {"f.txt", "sub/g.txt", "sub", ""}) {
    SCOPED_TRACE("/" + rel);
    struct stat st {};
    ASSERT_EQ(::stat((target + "/" + rel).c_str(), &st), 0) << std::strerror(errno);
    EXPECT_EQ(st.st_gid, 1234u);
    EXPECT_TRUE(st.st_mode & S_IWGRP) << "not group-writable: " << std::oct << st.st_mode;
  }
  // A process of the group (not root) writes at the root and in a directory.
  for (const std::string rel : {"by-group.txt", "sub/by-group.txt"}) {
    const std::string path = target + "/" + rel;
    pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      gid_t none[1] = {1234};
      if (::setgroups(1, none) != 0 || ::setgid(1234) != 0 || ::setuid(4321) != 0) ::_exit(100);
      int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0664);
      if (fd < 0) ::_exit(errno & 0x7f);
      if (::write(fd, "grp", 3) != 3) ::_exit(101);
      ::_exit(::close(fd) == 0 ? 0 : 102);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0)
        << "uid 4321 gid 1234 cannot create " << rel << ": "
        << (WEXITSTATUS(status) < 100 ? std::strerror(WEXITSTATUS(status)) : "setup/write failed");
  }
  EXPECT_EQ(get(volume_prefix("pvc-group") + "by-group.txt"), "grp");
  EXPECT_CODE(unpublish(v.volume_id(), target), OK);
  EXPECT_CODE(unstage(v.volume_id(), staging), OK);
  staged_.clear();
  published_.clear();
}

// Credentials: node-stage and provisioner secrets with a driver that has no
// keys of its own; the driver's own environment without secrets; a wrong
// (canary) secret: refused as not authenticated, and never logged.
TEST_F(CsiConformance, SecretsStageAndNeverLogged) {
  const std::string canary = "canary-secret-" + std::to_string(::getpid()) + "-must-not-be-logged";
  canaries_.push_back(canary);
  const StringMap secrets = {{"accessKeyId", g_access_key}, {"secretAccessKey", g_secret_key}};

  // 1. The driver's own environment (AWS_* keys), no secrets.
  csi::v1::Volume v;
  ASSERT_NO_FATAL_FAILURE(create_ok("pvc-secrets", fresh_params(), &v));
  ASSERT_NO_FATAL_FAILURE(put(volume_prefix("pvc-secrets") + "f.txt", "secret-less\n"));
  {
    const std::string staging = staging_dir("env-creds");
    ASSERT_CODE(stage(stage_req(v, staging, cap())), OK);
    EXPECT_EQ(slurp(staging + "/f.txt"), "secret-less\n");
    EXPECT_CODE(unstage(v.volume_id(), staging), OK);
  }
  staged_.clear();

  // 2. A driver without keys: provisioner and node-stage secrets carry them.
  ASSERT_NO_FATAL_FAILURE(restart_driver({.strip_credentials = true}));
  {
    auto pid = driver_->pid();
    bool has_key = false;
    std::ifstream env("/proc/" + std::to_string(pid) + "/environ", std::ios::binary);
    std::string all((std::istreambuf_iterator<char>(env)), std::istreambuf_iterator<char>());
    has_key = all.find("AWS_SECRET_ACCESS_KEY=") != std::string::npos;
    ASSERT_FALSE(has_key) << "the driver still has AWS_SECRET_ACCESS_KEY";
  }
  {
    auto r = create_req("pvc-secrets-2", fresh_params());
    r.mutable_secrets()->insert(secrets.begin(), secrets.end());
    csi::v1::CreateVolumeResponse resp;
    ASSERT_CODE(CreateVolume(r, &resp), OK);
    ASSERT_NO_FATAL_FAILURE(put(volume_prefix("pvc-secrets-2") + "f.txt", "with secrets\n"));
    const std::string staging = staging_dir("secret-creds");
    auto sreq = stage_req(resp.volume(), staging, cap(), secrets);
    ASSERT_CODE(stage(sreq), OK);
    EXPECT_CODE(stage(sreq), OK);
    EXPECT_EQ(slurp(staging + "/f.txt"), "with secrets\n");
    EXPECT_EQ(write_file(staging + "/out.txt", "written\n"), 0);
    EXPECT_EQ(get(volume_prefix("pvc-secrets-2") + "out.txt"), "written\n");
    // The secret is in no command line and not in node.json.
    for (pid_t p : processes_under(dir_, false)) {
      for (const auto& a : cmdline(p)) {
        EXPECT_EQ(a.find(g_secret_key), std::string::npos) << "secret on the command line of " << p;
      }
    }
    EXPECT_EQ(file_text(dir_ + "/state/node.json").find(g_secret_key), std::string::npos);
    for (const auto& e : stdfs::recursive_directory_iterator(dir_ + "/state")) {
      if (!e.is_regular_file()) continue;
      if (file_text(e.path()).find(g_secret_key) == std::string::npos) continue;
      struct stat st {};
      ASSERT_EQ(::stat(e.path().c_str(), &st), 0);
      EXPECT_EQ(st.st_mode & 0077, 0u) << e.path() << " holds the secret and is readable by others";
    }
    EXPECT_CODE(unstage(resp.volume().volume_id(), staging), OK);
    csi::v1::DeleteVolumeRequest del;
    del.set_volume_id(resp.volume().volume_id());
    del.mutable_secrets()->insert(secrets.begin(), secrets.end());
    EXPECT_CODE(DeleteVolume(del), OK);
  }
  staged_.clear();

  // 3. Wrong secrets (a canary): not authenticated, and the canary is never logged.
  {
    auto r = create_req("pvc-canary", fresh_params());
    (*r.mutable_secrets())["accessKeyId"] = g_access_key;
    (*r.mutable_secrets())["secretAccessKey"] = canary;
    auto st = CreateVolume(r);
    EXPECT_CODE(st, UNAUTHENTICATED) << "provisioner secrets not valid for authentication";
    EXPECT_EQ(st.error_message().find(canary), std::string::npos);
    EXPECT_FALSE(head(volume_prefix("pvc-canary")));
    // The same with ValidateVolumeCapabilities and a deleteData DeleteVolume:
    // refused, and the volume's objects stay.
    StringMap params = fresh_params();
    params["deleteData"] = "true";
    auto ok_req = create_req("pvc-canary-del", params);
    ok_req.mutable_secrets()->insert(secrets.begin(), secrets.end());
    csi::v1::CreateVolumeResponse created;
    ASSERT_CODE(CreateVolume(ok_req, &created), OK);
    auto val = validate_req(created.volume().volume_id(), {cap()});
    *val.mutable_secrets() = r.secrets();
    EXPECT_CODE(ValidateVolumeCapabilities(val), UNAUTHENTICATED);
    csi::v1::DeleteVolumeRequest del;
    del.set_volume_id(created.volume().volume_id());
    *del.mutable_secrets() = r.secrets();
    EXPECT_CODE(DeleteVolume(del), UNAUTHENTICATED);
    EXPECT_TRUE(head(volume_prefix("pvc-canary-del"))) << "a refused DeleteVolume deleted data";
  }
  for (const StringMap& bad :
       {StringMap{{"accessKeyId", g_access_key}, {"secretAccessKey", canary}},
        StringMap{{"accessKeyId", "CANARYKEYID0000000000"}, {"secretAccessKey", canary}}}) {
    SCOPED_TRACE(bad.at("accessKeyId"));
    const std::string staging = staging_dir("canary");
    auto t0 = std::chrono::steady_clock::now();
    auto st = stage(stage_req(v, staging, cap(), bad));
    EXPECT_CODE(st, UNAUTHENTICATED) << "secrets not valid for authentication";
    EXPECT_EQ(st.error_message().find(canary), std::string::npos);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(60));
    EXPECT_FALSE(mount_at(staging));
  }
  // 4. Neither secrets nor keys in the driver: a clear error, no mount.
  {
    const std::string staging = staging_dir("no-creds");
    auto st = stage(stage_req(v, staging, cap()));
    EXPECT_FALSE(st.ok());
    EXPECT_FALSE(st.error_message().empty());
    EXPECT_FALSE(mount_at(staging));
  }
  // A secret with only one of the two keys: INVALID_ARGUMENT.
  EXPECT_CODE(
      NodeStageVolume(stage_req(v, staging_dir("half"), cap(), {{"accessKeyId", g_access_key}})),
      INVALID_ARGUMENT);
  // The debug log has the requests, without their secrets.
  const std::string log = file_text(log_);
  EXPECT_NE(log.find("NodeStageVolume"), std::string::npos) << "no request in the debug log";
  EXPECT_EQ(log.find(canary), std::string::npos);
  EXPECT_EQ(log.find(g_secret_key), std::string::npos);
}

// A volume that does not exist: a fresh volume whose prefix was deleted, a
// static volume in a bucket that does not exist. NOT_FOUND (the spec's
// "Volume does not exist"), nothing mounted.
TEST_F(CsiConformance, NodeStageOfMissingVolumeIsNotFound) {
  StringMap params = fresh_params();
  params["deleteData"] = "true";
  csi::v1::Volume v;
  ASSERT_NO_FATAL_FAILURE(create_ok("pvc-vanished", params, &v));
  csi::v1::DeleteVolumeRequest del;
  del.set_volume_id(v.volume_id());
  ASSERT_CODE(DeleteVolume(del), OK);
  const std::string staging = staging_dir("pvc-vanished");
  EXPECT_CODE(stage(stage_req(v, staging, cap())), NOT_FOUND);
  EXPECT_FALSE(mount_at(staging));

  csi::v1::Volume missing_bucket;
  missing_bucket.set_volume_id("static-missing-bucket");
  (*missing_bucket.mutable_volume_context())["bucketName"] =
      "nacre-no-such-bucket-" + std::to_string(::getpid());
  const std::string staging2 = staging_dir("missing-bucket");
  EXPECT_CODE(stage(stage_req(missing_bucket, staging2, cap(Mode::MULTI_NODE_READER_ONLY))),
              NOT_FOUND);
  EXPECT_FALSE(mount_at(staging2));
  EXPECT_TRUE(mounts_under(dir_).empty());
  EXPECT_TRUE(wait_gone(mount_processes(), std::chrono::seconds(2)));
}

// An S3 endpoint that does not answer: a clear error in bounded time (the CO
// retries), nothing left mounted.
TEST_F(CsiConformance, NodeStageUnreachableS3) {
  csi::v1::Volume v;
  v.set_volume_id("static-unreachable");
  (*v.mutable_volume_context())["bucketName"] = g_bucket;
  (*v.mutable_volume_context())["prefix"] = base_;
  (*v.mutable_volume_context())["endpointUrl"] = "http://127.0.0.1:9";  // discard: closed
  const std::string staging = staging_dir("unreachable");
  auto t0 = std::chrono::steady_clock::now();
  auto st = stage(stage_req(
      v, staging, cap(Mode::MULTI_NODE_READER_ONLY, {"max-attempts=1", "connect-timeout=2"})));
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_CODE(st, UNAVAILABLE);
  EXPECT_LT(took, std::chrono::seconds(60));
  EXPECT_FALSE(mount_at(staging));
  EXPECT_TRUE(wait_gone(mount_processes(), std::chrono::seconds(2)));
}

// The node plugin restarts (SIGTERM, start again with the same state): the
// mounts stay up, kubelet's retried calls are idempotent, and unpublish and
// unstage still clean up everything.
TEST_F(CsiConformance, NodeCallsIdempotentAcrossDriverRestart) {
  csi::v1::Volume v;
  ASSERT_NO_FATAL_FAILURE(create_ok("pvc-restart", fresh_params(), &v));
  ASSERT_NO_FATAL_FAILURE(put(volume_prefix("pvc-restart") + "f.txt", "survives\n"));
  const std::string staging = staging_dir("pvc-restart");
  const std::string target = target_dir("pod-restart");
  auto sreq = stage_req(v, staging, cap());
  auto preq = publish_req(v, staging, target, cap(), false);
  ASSERT_CODE(stage(sreq), OK);
  ASSERT_CODE(publish(preq), OK);
  const auto daemons = mount_processes();
  ASSERT_EQ(daemons.size(), 1u);

  ASSERT_NO_FATAL_FAILURE(restart_driver({}));
  EXPECT_EQ(slurp(target + "/f.txt"), "survives\n");
  EXPECT_EQ(mount_processes(), daemons) << "the restart changed the mount processes";
  EXPECT_CODE(NodeStageVolume(sreq), OK);
  EXPECT_CODE(NodePublishVolume(preq), OK);
  EXPECT_EQ(mount_processes(), daemons);
  expect_healthy_stats(v.volume_id(), target);
  EXPECT_CODE(unpublish(v.volume_id(), target), OK);
  EXPECT_CODE(unstage(v.volume_id(), staging), OK);
  EXPECT_TRUE(mounts_under(dir_).empty());
  EXPECT_TRUE(wait_gone(daemons, std::chrono::seconds(2)));
  staged_.clear();
  published_.clear();
}

}  // namespace
}  // namespace nacre::csi_test

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  using namespace nacre::csi_test;
  const char* binary = argc >= 2 ? argv[1] : std::getenv("NACRE_BINARY");
  if (argc >= 3) setenv("NACRE_S3_ENV", argv[2], 1);
  if (!binary || ::access(binary, X_OK) != 0) {
    std::fprintf(stderr, "usage: %s NACRE_BINARY RGW_ENV_FILE [gtest flags] (nacre binary %s)\n",
                 argv[0], binary ? "not executable" : "missing");
    return 2;
  }
  g_nacre = std::filesystem::absolute(binary);
  std::string why = nacre::testing::load_rgw_env();
  if (!why.empty()) {
    std::fprintf(stderr, "%s\n", why.c_str());
    return 2;
  }
  auto env = [](const char* k) { return std::string(std::getenv(k) ? std::getenv(k) : ""); };
  g_bucket = env("NACRE_TEST_BUCKET");
  g_endpoint = env("AWS_ENDPOINT_URL");
  g_region = env("AWS_REGION").empty() ? "us-east-1" : env("AWS_REGION");
  g_access_key = env("AWS_ACCESS_KEY_ID");
  g_secret_key = env("AWS_SECRET_ACCESS_KEY");
  if (g_bucket.empty() || g_endpoint.empty() || g_secret_key.empty()) {
    std::fprintf(stderr, "the S3 env file lacks NACRE_TEST_BUCKET, AWS_ENDPOINT_URL or keys\n");
    return 2;
  }
  if (::geteuid() != 0 || ::access("/dev/fuse", R_OK | W_OK) != 0) {
    std::fprintf(stderr, "needs root and /dev/fuse (real FUSE and bind mounts)\n");
    return 2;
  }
  g_run_prefix = "csi-conformance-" + std::to_string(::getpid()) + "/";
  ::signal(SIGPIPE, SIG_IGN);
  int rc = RUN_ALL_TESTS();
  // Whatever a test left under the run's prefix.
  auto c = nacre::s3::S3Client::create(
      nacre::s3::S3Config::from_environment(nacre::s3::CredentialsEnvironment::from_environment()));
  if (c) {
    nacre::s3::ListRequest req{g_bucket, g_run_prefix, "", "", "", 1000};
    for (int i = 0; i < 1000; ++i) {
      auto page = (*c)->list_objects(req);
      if (!page || page->objects.empty()) break;
      std::vector<std::string> keys;
      for (auto& o : page->objects) keys.push_back(o.key);
      (void)(*c)->delete_objects(g_bucket, keys);
    }
  }
  return rc;
}
