// csi_bench: times the Nacre CSI driver's calls the way csi-provisioner and
// kubelet make them, over a running `nacre csi` (bench/csi.sh starts it, with
// its own RGW and dataset). Every call is timed with the steady clock, from
// the client's side (gRPC over the unix socket included), over N rounds:
//
//   0. the floor of step 3 in this process: two mount(2) MS_BIND calls and
//      two umount2(MNT_DETACH), without the driver
//   1. CreateVolume of a fresh volume (a new name each round; deleteData
//      "true") and DeleteVolume of it
//   2. CreateVolume of a volume linked to the dataset (s3ImportPath), and its
//      DeleteVolume
//   3. "ready mount": one linked volume (the anchor) is staged and published
//      first, so the dataset is mounted on the node; each round then stages
//      and publishes another linked volume with the same parameters (so the
//      same mount), lists its target, unpublishes and unstages it
//   4. "cold": each round a linked volume with settings of its own (another
//      metadataTtl) is staged and published, so the driver starts a new
//      `nacre mount` with a fresh cache directory; its target is listed, then
//      unpublished and unstaged (the mount is stopped: no volume uses it)
//
// Every published target is checked: a FUSE file system (statfs) listing the
// expected number of entries. A call that fails stops the run with the call,
// what was expected and what came back; what the run staged, published and
// created is undone before exit, whether it succeeded or not.
//
// Usage: csi_bench --socket PATH --env-file RGW_ENV --dataset PREFIX --work DIR
//                  [--rounds 20] [--expect-entries N] [--bucket B] [--endpoint URL]
//                  [--region R] [--base-prefix P] [--tag NAME]
// The env file is scripts/s3-server's (`export NAME=value` lines): endpoint
// (AWS_ENDPOINT_URL), region, keys (given to the driver as provisioner and
// node-stage secrets) and bucket (NACRE_TEST_BUCKET); the flags override it.
// Prints one row per step: n, min, median, max in milliseconds.
#include <dirent.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "tests/integration/csi_client.h"
#include "tests/integration/rgw_env.h"

namespace {

using nacre::csi_test::Client;
using nacre::csi_test::mount_capability;
using Clock = std::chrono::steady_clock;
using AccessMode = csi::v1::VolumeCapability::AccessMode;
using StringMap = std::map<std::string, std::string>;

constexpr long kFuseSuperMagic = 0x65735546;

struct Config {
  std::string socket, env_file, dataset, work;
  std::string bucket, endpoint, region, access_key_id, secret_access_key;
  std::string base_prefix, tag;
  int rounds = 20;
  int expect_entries = -1;  // -1: at least one entry
};

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr,
               "csi_bench: %s\nusage: csi_bench --socket PATH --env-file RGW_ENV --dataset PREFIX "
               "--work DIR [--rounds 20] [--expect-entries N] [--bucket B] [--endpoint URL] "
               "[--region R] [--base-prefix P] [--tag NAME]\n",
               why.c_str());
  std::exit(2);
}

Config parse_args(int argc, char** argv) {
  Config c;
  StringMap flags;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") usage("times the Nacre CSI driver's calls");
    if (!a.starts_with("--") || i + 1 >= argc) usage("bad argument " + a);
    flags[a.substr(2)] = argv[++i];
  }
  auto take = [&](const char* name, std::string& into) {
    if (auto it = flags.find(name); it != flags.end()) {
      into = it->second;
      flags.erase(it);
    }
  };
  std::string rounds, expect;
  take("socket", c.socket);
  take("env-file", c.env_file);
  take("dataset", c.dataset);
  take("work", c.work);
  take("rounds", rounds);
  take("expect-entries", expect);
  if (!c.env_file.empty()) {
    bool ok = false;
    StringMap env = nacre::testing::read_env_file(c.env_file, &ok);
    if (!ok) usage("cannot read the env file " + c.env_file);
    c.endpoint = env["AWS_ENDPOINT_URL"];
    c.region = env["AWS_REGION"];
    c.access_key_id = env["AWS_ACCESS_KEY_ID"];
    c.secret_access_key = env["AWS_SECRET_ACCESS_KEY"];
    c.bucket = env["NACRE_TEST_BUCKET"];
  }
  take("bucket", c.bucket);
  take("endpoint", c.endpoint);
  take("region", c.region);
  take("base-prefix", c.base_prefix);
  take("tag", c.tag);
  if (!flags.empty()) usage("unknown option --" + flags.begin()->first);
  if (c.socket.empty() || c.dataset.empty() || c.work.empty()) {
    usage("--socket, --dataset and --work are required");
  }
  if (c.bucket.empty() || c.access_key_id.empty() || c.secret_access_key.empty()) {
    usage("no bucket or keys: give --env-file (scripts/s3-server's DIR/env) or --bucket");
  }
  try {
    if (!rounds.empty()) c.rounds = std::stoi(rounds);
    if (!expect.empty()) c.expect_entries = std::stoi(expect);
  } catch (const std::exception&) {
    usage("--rounds and --expect-entries take numbers");
  }
  if (c.rounds < 1) usage("--rounds must be at least 1");
  while (c.dataset.ends_with('/')) c.dataset.pop_back();
  if (c.tag.empty()) c.tag = "csi-bench-" + std::to_string(::getpid());
  if (c.base_prefix.empty()) c.base_prefix = c.tag + "/fresh";
  return c;
}

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

const char* code_name(grpc::StatusCode code) {
  static constexpr std::array<const char*, 17> kNames = {"OK",
                                                         "CANCELLED",
                                                         "UNKNOWN",
                                                         "INVALID_ARGUMENT",
                                                         "DEADLINE_EXCEEDED",
                                                         "NOT_FOUND",
                                                         "ALREADY_EXISTS",
                                                         "PERMISSION_DENIED",
                                                         "RESOURCE_EXHAUSTED",
                                                         "FAILED_PRECONDITION",
                                                         "ABORTED",
                                                         "OUT_OF_RANGE",
                                                         "UNIMPLEMENTED",
                                                         "INTERNAL",
                                                         "UNAVAILABLE",
                                                         "DATA_LOSS",
                                                         "UNAUTHENTICATED"};
  auto i = static_cast<size_t>(code);
  return i < kNames.size() ? kNames[i] : "?";
}

// A call that did not answer OK: what was asked, what was expected, what came.
struct CallFailed : std::runtime_error {
  using std::runtime_error::runtime_error;
};

void check(const grpc::Status& s, const std::string& call) {
  if (s.ok()) return;
  throw CallFailed(call + ": expected OK, got " + code_name(s.error_code()) + " (" +
                   std::to_string(static_cast<int>(s.error_code())) + "): " + s.error_message());
}

// Milliseconds per step, in the order steps were first seen.
class Samples {
 public:
  void add(const std::string& step, double ms) {
    auto it = std::find_if(rows_.begin(), rows_.end(), [&](auto& r) { return r.first == step; });
    if (it == rows_.end()) {
      rows_.emplace_back(step, std::vector<double>{});
      it = std::prev(rows_.end());
    }
    it->second.push_back(ms);
  }
  void print(int rounds) const {
    std::printf("csi_bench: %d round(s); client-side wall time per call (steady clock), ms\n",
                rounds);
    std::printf("%-32s %4s %9s %9s %9s\n", "step", "n", "min", "median", "max");
    for (const auto& [step, v] : rows_) {
      std::vector<double> s = v;
      std::sort(s.begin(), s.end());
      const size_t n = s.size();
      const double median = n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
      std::printf("%-32s %4zu %9.2f %9.2f %9.2f\n", step.c_str(), n, s.front(), median, s.back());
    }
    std::fflush(stdout);
  }

 private:
  std::vector<std::pair<std::string, std::vector<double>>> rows_;
};

class Bench {
 public:
  explicit Bench(Config c) : c_(std::move(c)), client_(c_.socket) {
    secrets_ = {{"accessKeyId", c_.access_key_id}, {"secretAccessKey", c_.secret_access_key}};
    base_params_ = {{"endpointUrl", c_.endpoint}, {"region", c_.region}};
    if (c_.endpoint.empty()) base_params_.erase("endpointUrl");
    if (c_.region.empty()) base_params_.erase("region");
  }

  void run() {
    wait_ready();
    bind_floor();
    fresh_volumes();
    ready_and_linked();
    cold_mounts();
    samples_.print(c_.rounds);
  }

  // Undoes what the run left: unpublish, unstage, DeleteVolume (best effort).
  void teardown() {
    for (auto it = published_.rbegin(); it != published_.rend(); ++it) {
      (void)unpublish(it->first, it->second);
    }
    published_.clear();
    for (auto it = staged_.rbegin(); it != staged_.rend(); ++it) {
      (void)unstage(it->first, it->second);
    }
    staged_.clear();
    for (const auto& id : created_) (void)delete_volume(id);
    created_.clear();
  }

  void print_partial() const { samples_.print(c_.rounds); }

 private:
  void wait_ready() {
    const auto end = Clock::now() + std::chrono::seconds(60);
    grpc::Status last;
    for (;;) {
      csi::v1::ProbeRequest req;
      csi::v1::ProbeResponse resp;
      auto ctx = Client::ctx(5);
      last = client_.identity->Probe(ctx.get(), req, &resp);
      if (last.ok() && resp.ready().value()) return;
      if (Clock::now() >= end) {
        check(
            last.ok() ? grpc::Status(grpc::StatusCode::UNAVAILABLE, "ready=false for 60 s") : last,
            "Probe on " + c_.socket);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }

  // CreateVolume; returns the volume (id and context) and its time in ms.
  std::pair<csi::v1::Volume, double> create(const std::string& name, const StringMap& params,
                                            AccessMode::Mode mode) {
    csi::v1::CreateVolumeRequest req;
    req.set_name(name);
    req.mutable_capacity_range()->set_required_bytes(int64_t{1} << 30);
    *req.add_volume_capabilities() = mount_capability(mode);
    for (const auto& [k, v] : params) (*req.mutable_parameters())[k] = v;
    for (const auto& [k, v] : secrets_) (*req.mutable_secrets())[k] = v;
    csi::v1::CreateVolumeResponse resp;
    auto ctx = Client::ctx();
    const auto t0 = Clock::now();
    grpc::Status s = client_.controller->CreateVolume(ctx.get(), req, &resp);
    const double ms = ms_since(t0);
    check(s, "CreateVolume(name " + name + ")");
    if (resp.volume().volume_id().empty()) {
      throw CallFailed("CreateVolume(name " + name + "): expected a volume_id, got none");
    }
    created_.push_back(resp.volume().volume_id());
    return {resp.volume(), ms};
  }

  grpc::Status delete_volume(const std::string& id) {
    csi::v1::DeleteVolumeRequest req;
    req.set_volume_id(id);
    for (const auto& [k, v] : secrets_) (*req.mutable_secrets())[k] = v;
    csi::v1::DeleteVolumeResponse resp;
    auto ctx = Client::ctx();
    grpc::Status s = client_.controller->DeleteVolume(ctx.get(), req, &resp);
    if (s.ok()) std::erase(created_, id);
    return s;
  }

  double timed_delete(const std::string& id) {
    const auto t0 = Clock::now();
    grpc::Status s = delete_volume(id);
    const double ms = ms_since(t0);
    check(s, "DeleteVolume(" + id + ")");
    return ms;
  }

  double stage(const csi::v1::Volume& v, const std::string& staging) {
    csi::v1::NodeStageVolumeRequest req;
    req.set_volume_id(v.volume_id());
    req.set_staging_target_path(staging);
    *req.mutable_volume_capability() = mount_capability(AccessMode::MULTI_NODE_READER_ONLY);
    for (const auto& [k, val] : secrets_) (*req.mutable_secrets())[k] = val;
    *req.mutable_volume_context() = v.volume_context();
    csi::v1::NodeStageVolumeResponse resp;
    auto ctx = Client::ctx(150);  // a new mount may take the driver's mount deadline (120 s)
    const auto t0 = Clock::now();
    grpc::Status s = client_.node->NodeStageVolume(ctx.get(), req, &resp);
    const double ms = ms_since(t0);
    check(s, "NodeStageVolume(" + v.volume_id() + ", staging " + staging + ")");
    staged_.emplace_back(v.volume_id(), staging);
    return ms;
  }

  double publish(const csi::v1::Volume& v, const std::string& staging, const std::string& target) {
    csi::v1::NodePublishVolumeRequest req;
    req.set_volume_id(v.volume_id());
    req.set_staging_target_path(staging);
    req.set_target_path(target);
    *req.mutable_volume_capability() = mount_capability(AccessMode::MULTI_NODE_READER_ONLY);
    req.set_readonly(true);
    *req.mutable_volume_context() = v.volume_context();
    csi::v1::NodePublishVolumeResponse resp;
    auto ctx = Client::ctx(150);
    const auto t0 = Clock::now();
    grpc::Status s = client_.node->NodePublishVolume(ctx.get(), req, &resp);
    const double ms = ms_since(t0);
    check(s, "NodePublishVolume(" + v.volume_id() + ", target " + target + ")");
    published_.emplace_back(v.volume_id(), target);
    return ms;
  }

  grpc::Status unpublish(const std::string& id, const std::string& target) {
    csi::v1::NodeUnpublishVolumeRequest req;
    req.set_volume_id(id);
    req.set_target_path(target);
    csi::v1::NodeUnpublishVolumeResponse resp;
    auto ctx = Client::ctx();
    grpc::Status s = client_.node->NodeUnpublishVolume(ctx.get(), req, &resp);
    if (s.ok()) std::erase(published_, std::make_pair(id, target));
    return s;
  }

  grpc::Status unstage(const std::string& id, const std::string& staging) {
    csi::v1::NodeUnstageVolumeRequest req;
    req.set_volume_id(id);
    req.set_staging_target_path(staging);
    csi::v1::NodeUnstageVolumeResponse resp;
    auto ctx = Client::ctx();
    grpc::Status s = client_.node->NodeUnstageVolume(ctx.get(), req, &resp);
    if (s.ok()) std::erase(staged_, std::make_pair(id, staging));
    return s;
  }

  // Lists a published target: it must be a FUSE file system holding the
  // dataset's entries. Returns the listing's time in ms.
  double list_target(const std::string& id, const std::string& target) {
    const auto t0 = Clock::now();
    DIR* d = ::opendir(target.c_str());
    if (!d) {
      throw CallFailed("after NodePublishVolume(" + id + "): opendir " + target + ": " +
                       std::strerror(errno));
    }
    int n = 0;
    errno = 0;
    while (dirent* e = ::readdir(d)) {
      if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) ++n;
    }
    const int err = errno;
    ::closedir(d);
    const double ms = ms_since(t0);
    if (err != 0) {
      throw CallFailed("after NodePublishVolume(" + id + "): readdir " + target + ": " +
                       std::strerror(err));
    }
    struct statfs fs {};
    if (::statfs(target.c_str(), &fs) != 0 || fs.f_type != kFuseSuperMagic) {
      throw CallFailed("after NodePublishVolume(" + id + "): " + target +
                       " is not a FUSE mount (statfs)");
    }
    if ((c_.expect_entries >= 0 && n != c_.expect_entries) || (c_.expect_entries < 0 && n == 0)) {
      throw CallFailed("after NodePublishVolume(" + id + "): " + target + " lists " +
                       std::to_string(n) + " entries, expected " +
                       (c_.expect_entries >= 0 ? std::to_string(c_.expect_entries) : "some"));
    }
    return ms;
  }

  std::string staging_path(const std::string& name) const { return c_.work + "/staging/" + name; }
  std::string target_path(const std::string& name) const {
    return c_.work + "/pods/" + name + "/volumes/kubernetes.io~csi/vol/mount";
  }

  StringMap linked_params() const {
    StringMap p = base_params_;
    p["s3ImportPath"] = "s3://" + c_.bucket + "/" + c_.dataset;
    return p;
  }

  // The floor of stage + publish on a ready mount, in this process: two
  // mount(2) MS_BIND calls (staging, then target), and two umount2(MNT_DETACH).
  void bind_floor() {
    const std::string src = c_.work + "/floor/src", stage = c_.work + "/floor/stage",
                      target = c_.work + "/floor/target";
    for (const auto& d : {src, stage, target}) std::filesystem::create_directories(d);
    auto failed = [](const std::string& what) {
      return CallFailed("floor: " + what + ": " + std::strerror(errno));
    };
    for (int i = 0; i < c_.rounds; ++i) {
      const auto t0 = Clock::now();
      if (::mount(src.c_str(), stage.c_str(), nullptr, MS_BIND, nullptr) != 0) {
        throw failed("mount --bind " + src + " " + stage);
      }
      if (::mount(stage.c_str(), target.c_str(), nullptr, MS_BIND, nullptr) != 0) {
        CallFailed e = failed("mount --bind " + stage + " " + target);
        (void)::umount2(stage.c_str(), MNT_DETACH);
        throw e;
      }
      samples_.add("floor: mount(2) MS_BIND x2", ms_since(t0));
      const auto t1 = Clock::now();
      const int a = ::umount2(target.c_str(), MNT_DETACH);
      const int b = ::umount2(stage.c_str(), MNT_DETACH);
      if (a != 0 || b != 0) throw failed("umount2 " + target + " or " + stage);
      samples_.add("floor: umount2(MNT_DETACH) x2", ms_since(t1));
    }
  }

  // 1. fresh volumes: CreateVolume (HEAD + PUT of the marker) and DeleteVolume.
  void fresh_volumes() {
    StringMap p = base_params_;
    p["bucketName"] = c_.bucket;
    p["basePrefix"] = c_.base_prefix;
    p["deleteData"] = "true";  // the run leaves nothing in the bucket
    for (int i = 0; i < c_.rounds; ++i) {
      const std::string name = c_.tag + "-fresh-" + std::to_string(i);
      auto [v, ms] = create(name, p, AccessMode::MULTI_NODE_MULTI_WRITER);
      samples_.add("CreateVolume fresh", ms);
      if (!v.volume_id().starts_with("fresh+delete:")) {
        throw CallFailed("CreateVolume(name " + name + ", deleteData true): expected a volume_id " +
                         "fresh+delete:..., got " + v.volume_id());
      }
      samples_.add("DeleteVolume fresh", timed_delete(v.volume_id()));
    }
  }

  // 2 and 3. The anchor volume mounts the dataset; then each round a new
  // linked volume with the same parameters is created, staged and published
  // on that ready mount, listed, unpublished, unstaged and deleted.
  void ready_and_linked() {
    const StringMap p = linked_params();
    const std::string anchor_name = c_.tag + "-anchor";
    auto [anchor, create_ms] = create(anchor_name, p, AccessMode::MULTI_NODE_READER_ONLY);
    samples_.add("CreateVolume linked", create_ms);
    const std::string a_stage = staging_path(anchor_name), a_target = target_path(anchor_name);
    double first = stage(anchor, a_stage);
    first += publish(anchor, a_stage, a_target);
    samples_.add("first mount: stage+publish", first);
    samples_.add("first mount: ls", list_target(anchor.volume_id(), a_target));

    for (int i = 0; i < c_.rounds; ++i) {
      const std::string name = c_.tag + "-shared-" + std::to_string(i);
      auto [v, ms] = create(name, p, AccessMode::MULTI_NODE_READER_ONLY);
      samples_.add("CreateVolume linked", ms);
      const std::string st = staging_path(name), tg = target_path(name);
      const double s_ms = stage(v, st);
      const double p_ms = publish(v, st, tg);
      samples_.add("ready: NodeStage", s_ms);
      samples_.add("ready: NodePublish", p_ms);
      samples_.add("ready: stage+publish", s_ms + p_ms);
      samples_.add("ready: ls", list_target(v.volume_id(), tg));
      const double u_ms = timed_unpublish(v.volume_id(), tg);
      const double us_ms = timed_unstage(v.volume_id(), st);
      samples_.add("ready: unpublish+unstage", u_ms + us_ms);
      samples_.add("DeleteVolume linked", timed_delete(v.volume_id()));
    }
    // The anchor's mount served every round and still does.
    list_target(anchor.volume_id(), a_target);
    const double u_ms = timed_unpublish(anchor.volume_id(), a_target);
    const double us_ms = timed_unstage(anchor.volume_id(), a_stage);
    samples_.add("last user: unpublish+unstage", u_ms + us_ms);
    samples_.add("DeleteVolume linked", timed_delete(anchor.volume_id()));
  }

  // 4. Each round a volume with a metadataTtl of its own: a new mount.
  void cold_mounts() {
    for (int i = 0; i < c_.rounds; ++i) {
      StringMap p = linked_params();
      p["metadataTtl"] = std::to_string(100 + i);
      const std::string name = c_.tag + "-cold-" + std::to_string(i);
      auto [v, create_ms] = create(name, p, AccessMode::MULTI_NODE_READER_ONLY);
      (void)create_ms;
      const std::string st = staging_path(name), tg = target_path(name);
      const double s_ms = stage(v, st);
      const double p_ms = publish(v, st, tg);
      const double l_ms = list_target(v.volume_id(), tg);
      samples_.add("cold: NodeStage", s_ms);
      samples_.add("cold: NodePublish", p_ms);
      samples_.add("cold: stage+publish", s_ms + p_ms);
      samples_.add("cold: ls", l_ms);
      samples_.add("cold: stage+publish+ls", s_ms + p_ms + l_ms);
      const double u_ms = timed_unpublish(v.volume_id(), tg);
      const double us_ms = timed_unstage(v.volume_id(), st);
      samples_.add("cold: NodeUnpublish", u_ms);
      samples_.add("cold: NodeUnstage, stops mount", us_ms);
      samples_.add("cold: unpublish+unstage", u_ms + us_ms);
      (void)timed_delete(v.volume_id());
    }
  }

  double timed_unpublish(const std::string& id, const std::string& target) {
    const auto t0 = Clock::now();
    grpc::Status s = unpublish(id, target);
    const double ms = ms_since(t0);
    check(s, "NodeUnpublishVolume(" + id + ", target " + target + ")");
    return ms;
  }

  double timed_unstage(const std::string& id, const std::string& staging) {
    const auto t0 = Clock::now();
    grpc::Status s = unstage(id, staging);
    const double ms = ms_since(t0);
    check(s, "NodeUnstageVolume(" + id + ", staging " + staging + ")");
    return ms;
  }

  Config c_;
  Client client_;
  StringMap secrets_, base_params_;
  Samples samples_;
  std::vector<std::pair<std::string, std::string>> staged_, published_;  // (volume_id, path)
  std::vector<std::string> created_;                                     // volume ids
};

}  // namespace

int main(int argc, char** argv) {
  Config config = parse_args(argc, argv);
  Bench bench(config);
  try {
    bench.run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "csi_bench: FAILED: %s\n", e.what());
    std::fprintf(stderr, "csi_bench: what was measured before the failure:\n");
    std::fflush(stderr);
    bench.print_partial();
    bench.teardown();
    return 1;
  }
  bench.teardown();
  return 0;
}
