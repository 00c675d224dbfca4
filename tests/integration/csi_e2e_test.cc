// The CSI driver end to end, the way kubelet and csi-provisioner drive it
// (issue 7, "Tests"): one controller and two simulated worker nodes (two node
// plugins, each with its own socket, state, cache, staging and pod
// directories), all `nacre csi` processes against the local RGW.
//
//   1. a "model" (3 x 64 MiB + config files) is uploaded to a dataset prefix
//   2. dynamic CreateVolume (bucketName + basePrefix) -> NodeStage and
//      NodePublish on both nodes (MULTI_NODE_MULTI_WRITER)
//   3. a linked volume (s3ImportPath = the dataset) published read-only on
//      node A: a reader loads the model through A's target path while node B
//      writes a file into the fresh volume; A sees it after close + the TTL
//   4. a second NodePublish on node A (a second pod) reads the model with no
//      GET of it reaching S3 (counted in the RGW's access log); a second
//      linked volume with the same parameters shares the one mount and cache
//   5. node A's plugin is SIGKILLed and restarted under an active reader:
//      the reader sees no error, Probe is ready, the volume reports normal
//   6. node A's FUSE process is killed: NodeGetVolumeStats reports abnormal,
//      NodeStageVolume (then, killed again, NodePublishVolume) repairs it;
//      the repaired mount reads the node cache (no GET), and a running pod's
//      container (mountPropagation HostToContainer) sees it without a
//      restart; a frozen mount (SIGSTOP) is reported abnormal too
//   7. unpublish, unstage (no mount and no `nacre mount` left, also with one
//      mount frozen and one dead; one pod's unpublish takes nothing from the
//      others), DeleteVolume: a fresh volume's objects go only with
//      deleteData "true"; the linked dataset is untouched; no secret in logs
//
// Node A runs as the DaemonSet does, plugin + mounter (`--mode mounter`);
// node B's plugin starts its mounts itself. The work dir is an rshared
// mount, like /var/lib/kubelet on a node, so mount propagation between the
// plugin's binds is what it is there.
//
// Usage: csi_e2e_test [gtest flags] NACRE_BINARY RGW_ENV_FILE
// (or NACRE_BINARY / NACRE_S3_ENV in the environment). Needs root and
// /dev/fuse. Everything lives under a fresh /tmp/nacre-csi-e2e.XXXXXX and a
// fresh S3 prefix; TearDown removes both, with every mount and process the
// test started, whether the test passed or not.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "s3/crypto.h"
#include "s3/s3_client.h"
#include "tests/integration/csi_client.h"
#include "tests/integration/rgw_env.h"

namespace nacre::csi_test {
namespace {

using nacre::testing::random_bytes;

namespace stdfs = std::filesystem;
using Clock = std::chrono::steady_clock;
using AccessMode = csi::v1::VolumeCapability::AccessMode;
using StringMap = std::map<std::string, std::string>;

std::string g_nacre_binary;  // from argv or NACRE_BINARY
std::string g_env_file;      // from argv or NACRE_S3_ENV

constexpr size_t kModelFileSize = 64u << 20;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

bool wait_until(const std::function<bool()>& done, std::chrono::milliseconds limit,
                std::chrono::milliseconds step = std::chrono::milliseconds(50)) {
  const auto end = Clock::now() + limit;
  for (;;) {
    if (done()) return true;
    if (Clock::now() >= end) return false;
    std::this_thread::sleep_for(step);
  }
}

std::string describe(const grpc::Status& s) {
  return "gRPC code " + std::to_string(static_cast<int>(s.error_code())) + ": " + s.error_message();
}

// ------------------------------------------------------------------ hashing

class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
  ~Sha256() { EVP_MD_CTX_free(ctx_); }
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const void* data, size_t n) { EVP_DigestUpdate(ctx_, data, n); }
  std::string hex() {
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_DigestFinal_ex(ctx_, d, &n);
    return s3::hex(d, n);
  }

 private:
  EVP_MD_CTX* ctx_;
};

// The sha256 of a file read through the file system (1 MiB reads), or "" and
// `error` set.
std::string sha256_of_file(const std::string& path, uint64_t* size, std::string* error) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    *error = "open " + path + ": " + std::strerror(errno);
    return "";
  }
  Sha256 h;
  std::vector<char> buf(1 << 20);
  uint64_t total = 0;
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      *error = "read " + path + " at " + std::to_string(total) + ": " + std::strerror(errno);
      ::close(fd);
      return "";
    }
    if (n == 0) break;
    h.update(buf.data(), static_cast<size_t>(n));
    total += static_cast<uint64_t>(n);
  }
  if (::close(fd) != 0) {
    *error = "close " + path + ": " + std::strerror(errno);
    return "";
  }
  if (size) *size = total;
  return h.hex();
}

// ------------------------------------------------------------------ mounts and processes

using Mount = nacre::csi_test::MountLine;

// The mounts of this mount namespace at or under `dir` (the tests' own
// reading of /proc/self/mountinfo, not the driver's).
std::vector<Mount> mounts_under(const std::string& dir) {
  std::vector<Mount> out;
  for (auto& m : nacre::csi_test::read_mounts()) {
    if (m.point == dir || m.point.starts_with(dir + "/")) out.push_back(m);
  }
  return out;
}

std::string mount_list(const std::vector<Mount>& mounts) {
  std::string out;
  for (const auto& m : mounts) {
    out += "  " + m.point + " " + m.type + " " + m.dev + (m.read_only ? " ro" : " rw") + "\n";
  }
  return out;
}

std::optional<Mount> mount_at(const std::string& path) {
  std::optional<Mount> found;
  for (auto& m : mounts_under(path)) {
    if (m.point == path) found = m;  // the last one is on top
  }
  return found;
}

std::vector<std::string> cmdline_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> args;
  size_t pos = 0;
  while (pos < all.size()) {
    size_t end = all.find('\0', pos);
    if (end == std::string::npos) end = all.size();
    args.push_back(all.substr(pos, end - pos));
    pos = end + 1;
  }
  return args;
}

// `nacre mount` processes one of whose arguments contains `needle`.
std::vector<pid_t> nacre_mount_pids(const std::string& needle) {
  std::vector<pid_t> out;
  DIR* d = ::opendir("/proc");
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    char* end = nullptr;
    long pid = std::strtol(e->d_name, &end, 10);
    if (pid <= 0 || *end != '\0' || pid == ::getpid()) continue;
    auto args = cmdline_of(static_cast<pid_t>(pid));  // empty for a zombie
    if (args.size() < 2 || args[1] != "mount" || !args[0].ends_with("nacre")) continue;
    for (const auto& a : args) {
      if (a.find(needle) != std::string::npos) {
        out.push_back(static_cast<pid_t>(pid));
        break;
      }
    }
  }
  ::closedir(d);
  return out;
}

// Alive and not a zombie.
bool process_running(pid_t pid) {
  if (pid <= 0 || (::kill(pid, 0) != 0 && errno == ESRCH)) return false;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  std::getline(stat, text);
  size_t paren = text.rfind(')');
  return !(paren != std::string::npos && paren + 2 < text.size() && text[paren + 2] == 'Z');
}

uint64_t cached_bytes(const std::string& path) {
  char value[64] = {0};
  ssize_t n = ::getxattr(path.c_str(), "user.nacre.cached_bytes", value, sizeof value - 1);
  return n <= 0 ? 0 : std::strtoull(value, nullptr, 10);
}

// Runs a command, returns its stdout (the test's own tools only).
std::string run_output(const std::string& command, int* status) {
  std::string out;
  FILE* p = ::popen(command.c_str(), "r");
  if (!p) {
    *status = -1;
    return out;
  }
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  *status = ::pclose(p);
  return out;
}

std::string file_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// ------------------------------------------------------------------ the RGW's access log

// The beast frontend logs one line per request in DIR/log/client.rgw.log:
//   ... "GET /bucket/key HTTP/1.1" 206 8388608 - "agent" - latency=...
// Counting the GETs of the dataset's keys between two points proves what
// reached S3. Requests are logged in order; a GET of a canary object after
// the reads marks where the window ends once it appears.
struct GetCount {
  int requests = 0;
  uint64_t bytes = 0;
  std::vector<std::string> samples;
};

class RgwAccessLog {
 public:
  explicit RgwAccessLog(std::string path) : path_(std::move(path)) {}
  bool available() const { return stdfs::exists(path_); }
  const std::string& path() const { return path_; }
  uint64_t size() const {
    std::error_code ec;
    auto s = stdfs::file_size(path_, ec);
    return ec ? 0 : s;
  }
  std::string since(uint64_t offset) const {
    std::ifstream in(path_, std::ios::binary);
    in.seekg(static_cast<std::streamoff>(offset));
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  // GETs (answered 200 or 206) whose request line contains `needle`.
  static GetCount gets(const std::string& text, const std::string& needle) {
    GetCount c;
    std::istringstream lines(text);
    std::string line;
    while (std::getline(lines, line)) {
      size_t req = line.find("\"GET ");
      if (req == std::string::npos) continue;
      size_t req_end = line.find("\" ", req + 1);
      if (req_end == std::string::npos) continue;
      if (line.substr(req, req_end - req).find(needle) == std::string::npos) continue;
      std::istringstream rest(line.substr(req_end + 2));
      int status = 0;
      uint64_t bytes = 0;
      rest >> status >> bytes;
      if (status != 200 && status != 206) continue;
      ++c.requests;
      c.bytes += bytes;
      if (c.samples.size() < 5) c.samples.push_back(line.substr(req, req_end - req + 1));
    }
    return c;
  }

 private:
  std::string path_;
};

// ------------------------------------------------------------------ the model and its readers

struct ModelFile {
  std::string name;  // relative to the dataset root
  uint64_t size = 0;
  std::string sha256;
};

// Reads every model file through `root` and checks size and sha256, once or
// in a loop until stopped. A thread of the test: a file system that never
// answers blocks it, so TearDown kills the FUSE processes before joining it.
class ModelReader {
 public:
  ModelReader(std::string root, std::vector<ModelFile> files, bool loop)
      : root_(std::move(root)), files_(std::move(files)), loop_(loop) {}
  ~ModelReader() { stop(); }
  void start() {
    thread_ = std::thread([this] {
      const auto t0 = Clock::now();
      do {
        for (const auto& f : files_) {
          if (stop_) break;
          std::string err;
          uint64_t size = 0;
          std::string sum = sha256_of_file(root_ + "/" + f.name, &size, &err);
          if (sum.empty() || size != f.size || sum != f.sha256) {
            std::lock_guard lock(mu_);
            ++failures_;
            if (first_error_.empty()) {
              first_error_ = !err.empty() ? err
                                          : f.name + ": read " + std::to_string(size) +
                                                " bytes with sha256 " + sum + ", expected " +
                                                std::to_string(f.size) + " bytes " + f.sha256;
            }
          }
        }
        if (!stop_) ++passes_;
        if (passes_ == 1) first_pass_seconds_ = seconds_since(t0);
      } while (loop_ && !stop_);
      done_ = true;
    });
  }
  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  bool wait_done(std::chrono::milliseconds limit) {
    return wait_until([this] { return done_.load(); }, limit);
  }
  int passes() const { return passes_; }
  int failures() const {
    std::lock_guard lock(mu_);
    return failures_;
  }
  std::string first_error() const {
    std::lock_guard lock(mu_);
    return first_error_;
  }
  double first_pass_seconds() const { return first_pass_seconds_; }

 private:
  std::string root_;
  std::vector<ModelFile> files_;
  bool loop_;
  std::thread thread_;
  std::atomic<bool> stop_{false}, done_{false};
  std::atomic<int> passes_{0};
  std::atomic<double> first_pass_seconds_{0};
  mutable std::mutex mu_;
  int failures_ = 0;
  std::string first_error_;
};

// A pod's container that mounts the volume with mountPropagation
// HostToContainer: a process in a mount namespace of its own (a slave of the
// node's), with the target path bound (rslave) at its own path, as the
// container runtime does. It reads `file` there every 100 ms and writes what
// `sha256sum` printed (or its error) to `out`.
class ContainerProcess {
 public:
  ~ContainerProcess() { stop(); }
  // `own`: the test's work dir; copies of other tests' FUSE mounts are let go
  // (tests/integration/own_mount_ns.sh says why).
  bool start(const std::string& target, const std::string& dir, const std::string& file,
             const std::string& own) {
    dir_ = dir;
    stdfs::create_directories(dir + "/models");
    const std::string script =
        "mount --bind '" + target + "' '" + dir + "/models' && mount --make-rslave '" + dir +
        "/models' && touch '" + dir + "/ready' && while [ ! -e '" + dir +
        "/stop' ]; do sha256sum '" + dir + "/models/" + file + "' > '" + dir +
        "/out.tmp' 2>&1; mv -f '" + dir + "/out.tmp' '" + dir + "/out'; sleep 0.1; done";
    std::vector<std::string> argv = {
        "unshare", "--mount", "--propagation", "slave", NACRE_OWN_MOUNT_NS, own,
        "sh",      "-c",      script};
    std::vector<char*> c;
    for (auto& a : argv) c.push_back(a.data());
    c.push_back(nullptr);
    if (::posix_spawnp(&pid_, "unshare", nullptr, nullptr, c.data(), environ) != 0) return false;
    return wait_until([&] { return stdfs::exists(dir + "/ready"); }, std::chrono::seconds(10));
  }
  // The checksum the container read last, or what went wrong ("" before any).
  std::string last() const {
    std::string out = file_text(dir_ + "/out");
    return out.substr(0, out.find_first_of(" \n"));
  }
  std::string last_line() const { return file_text(dir_ + "/out"); }
  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);  // its namespace, and the mounts in it, go with it
    while (::waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
  }

 private:
  std::string dir_;
  pid_t pid_ = -1;
};

// `nacre csi --mode mounter`: the node pod's second container, which starts
// the plugin's mounts so they outlive the plugin. It serves no gRPC: ready
// once its socket exists.
class MounterProcess {
 public:
  ~MounterProcess() { signal_and_wait(SIGKILL); }
  bool start(const std::string& binary, const std::string& socket, const std::string& log,
             const std::string& own) {
    // In a mount namespace of its own, as a container: its mounts reach the
    // test's (the plugin's) namespace only by propagation, as on a node, so
    // an unmount that stays in the plugin's namespace is caught.
    // own_mount_ns.sh lets go of the copies of other tests' FUSE mounts.
    std::vector<std::string> argv = {"/usr/bin/unshare",
                                     "--mount",
                                     "--propagation",
                                     "unchanged",
                                     "--",
                                     NACRE_OWN_MOUNT_NS,
                                     own,
                                     binary,
                                     "csi",
                                     "--mode",
                                     "mounter",
                                     "--mounter-socket",
                                     socket};
    std::vector<char*> c;
    for (auto& a : argv) c.push_back(a.data());
    c.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    int rc = ::posix_spawn(&pid_, c[0], &fa, nullptr, c.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) return false;
    return wait_until(
        [&] {
          struct stat st {};
          return ::stat(socket.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
        },
        std::chrono::seconds(30));
  }
  // SIGTERM; true when it exited 0.
  bool stop() { return signal_and_wait(SIGTERM) == 0; }
  void kill() { signal_and_wait(SIGKILL); }
  pid_t pid() const { return pid_; }

 private:
  int signal_and_wait(int sig) {
    if (pid_ <= 0) return -1;
    ::kill(pid_, sig);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  pid_t pid_ = -1;
};

// ------------------------------------------------------------------ the fixture

struct Plugin {
  std::string name;  // node id ("node-a") or "controller"
  std::string root, socket, state_dir, cache_dir, log;
  std::vector<std::string> args;
  std::unique_ptr<DriverProcess> process;
  std::unique_ptr<Client> client;
};

struct Volume {
  std::string name, id;
  StringMap context;
  csi::v1::VolumeCapability cap;
};

class CsiE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(::geteuid(), 0u) << "the CSI end-to-end test mounts file systems: run it as root";
    ASSERT_EQ(::access("/dev/fuse", R_OK | W_OK), 0) << "/dev/fuse is missing";
    ASSERT_FALSE(g_nacre_binary.empty()) << "usage: csi_e2e_test NACRE_BINARY RGW_ENV_FILE";
    ASSERT_EQ(::access(g_nacre_binary.c_str(), X_OK), 0) << g_nacre_binary << " is not executable";
    ::setenv("NACRE_S3_ENV", g_env_file.c_str(), 1);
    ASSERT_EQ(nacre::testing::load_rgw_env(), "");
    auto env = [](const char* k) {
      const char* v = std::getenv(k);
      return std::string(v ? v : "");
    };
    endpoint_ = env("AWS_ENDPOINT_URL");
    region_ = env("AWS_REGION").empty() ? "us-east-1" : env("AWS_REGION");
    bucket_ = env("NACRE_TEST_BUCKET");
    access_key_ = env("AWS_ACCESS_KEY_ID");
    secret_key_ = env("AWS_SECRET_ACCESS_KEY");
    ASSERT_FALSE(endpoint_.empty() || bucket_.empty() || access_key_.empty() || secret_key_.empty())
        << g_env_file << " lacks AWS_ENDPOINT_URL, NACRE_TEST_BUCKET or the keys";
    s3::S3Config config;
    config.endpoint = endpoint_;
    config.region = region_;
    config.credentials = s3::Credentials{access_key_, secret_key_, "", std::nullopt, "test"};
    auto c = s3::S3Client::create(std::move(config));
    ASSERT_TRUE(c) << c.error().describe();
    s3_ = std::move(*c);
    // The drivers get the endpoint from --s3-endpoint-url and the keys from
    // the provisioner and node-stage secrets only: nothing in their environment.
    for (const char* k : {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                          "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"}) {
      ::unsetenv(k);
    }
    rgw_log_ = std::make_unique<RgwAccessLog>(stdfs::path(g_env_file).parent_path().string() +
                                              "/log/client.rgw.log");

    char tmpl[] = "/tmp/nacre-csi-e2e.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr) << std::strerror(errno);
    tmp_ = tmpl;
    // The work dir stands for /var/lib/kubelet, which is an rshared mount on
    // a node (systemd makes / shared; Bidirectional propagation needs it):
    // the plugin's binds live among shared peers, as they do there.
    ASSERT_EQ(::mount(tmp_.c_str(), tmp_.c_str(), nullptr, MS_BIND | MS_REC, nullptr), 0)
        << std::strerror(errno);
    ASSERT_EQ(::mount(nullptr, tmp_.c_str(), nullptr, MS_SHARED | MS_REC, nullptr), 0)
        << std::strerror(errno);
    prefix_ = nacre::testing::unique_prefix("csi-e2e");  // "it-csi-e2e-N/"
    dataset_ = prefix_ + "datasets/mistral-7b-mini";
    std::printf("[ e2e    ] work dir %s, S3 prefix s3://%s/%s\n", tmp_.c_str(), bucket_.c_str(),
                prefix_.c_str());
    // A hung mount must not hang the test past ctest's timeout (1200 s), where
    // nothing would clean up: after 15 minutes the FUSE processes are killed,
    // so every call blocked in one returns, the test fails and TearDown runs.
    watchdog_ = std::thread([this] {
      std::unique_lock lock(watchdog_mu_);
      if (watchdog_cv_.wait_for(lock, std::chrono::minutes(15), [this] { return done_; })) return;
      std::fprintf(stderr, "[ e2e    ] watchdog: 15 minutes passed, killing the mounts\n");
      for (pid_t pid : nacre_mount_pids(tmp_)) ::kill(pid, SIGKILL);
    });
  }

  void TearDown() override {
    if (watchdog_.joinable()) {
      {
        std::lock_guard lock(watchdog_mu_);
        done_ = true;
      }
      watchdog_cv_.notify_all();
      watchdog_.join();
    }
    if (tmp_.empty()) return;
    if (HasFailure()) {
      for (Plugin* p : {&controller_, &node_a_, &node_b_}) {
        if (p->log.empty()) continue;
        if (p == &node_a_) {
          std::printf("---- %s ----\n%s\n", mounter_log_a_.c_str(),
                      file_text(mounter_log_a_).c_str());
        }
        std::string text = file_text(p->log);
        if (text.size() > 6000) text = "..." + text.substr(text.size() - 6000);
        std::printf("---- last lines of %s ----\n%s\n", p->log.c_str(), text.c_str());
      }
    }
    // No driver may repair what is taken down below.
    for (Plugin* p : {&controller_, &node_a_, &node_b_}) {
      if (p->process) p->process->kill();
    }
    mounter_a_.kill();
    container_.stop();
    // Killing the FUSE daemons ends their connections: a reader blocked in
    // one of them returns.
    for (pid_t pid : nacre_mount_pids(tmp_)) ::kill(pid, SIGKILL);
    for (auto& r : readers_) r->stop();
    for (int round = 0; round < 20; ++round) {
      auto left = mounts_under(tmp_);
      if (left.empty()) break;
      std::sort(left.begin(), left.end(),
                [](const Mount& a, const Mount& b) { return a.point.size() > b.point.size(); });
      for (const auto& m : left) (void)::umount2(m.point.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW);
    }
    wait_until([this] { return nacre_mount_pids(tmp_).empty(); }, std::chrono::seconds(10));
    const bool clean = mounts_under(tmp_).empty();
    EXPECT_TRUE(clean) << "mounts left under " << tmp_;
    EXPECT_TRUE(nacre_mount_pids(tmp_).empty()) << "nacre mount processes left";
    if (s3_) {
      s3::ListRequest req;
      req.bucket = bucket_;
      req.prefix = prefix_;
      for (int pages = 0; pages < 100; ++pages) {
        auto page = s3_->list_objects(req);
        if (!page) break;
        std::vector<std::string> keys;
        for (auto& o : page->objects) keys.push_back(o.key);
        if (!keys.empty()) (void)s3_->delete_objects(bucket_, keys);
        if (page->next_continuation_token.empty()) break;
        req.continuation_token = page->next_continuation_token;
      }
    }
    // Only with nothing mounted below it: remove_all must never walk into S3.
    if (clean) {
      std::error_code ec;
      stdfs::remove_all(tmp_, ec);
    }
  }

  // ---------------------------------------------------------------- drivers

  void init_plugin(Plugin& p, const std::string& name, const std::string& mode) {
    p.name = name;
    p.root = tmp_ + "/" + name;
    p.socket = p.root + "/csi.sock";
    p.state_dir = p.root + "/state";
    p.cache_dir = p.root + "/cache";
    p.log = p.root + "/driver.log";
    stdfs::create_directories(p.root);
    p.args = {"csi",         "--endpoint",  "unix://" + p.socket,
              "--node-id",   name,          "--mode",
              mode,          "--state-dir", p.state_dir,
              "--cache-dir", p.cache_dir,   "--s3-endpoint-url",
              endpoint_,     "--s3-region", region_,
              "--log-level", "debug"};
  }

  // Starts (or restarts) the plugin and waits for Probe ready.
  [[nodiscard]] bool start_plugin(Plugin& p) {
    p.client.reset();
    p.process = std::make_unique<DriverProcess>(g_nacre_binary, p.args, p.socket, p.log);
    if (!p.process->start(60)) return false;
    p.client = std::make_unique<Client>(p.socket);  // a fresh channel: no reconnect back-off
    return true;
  }

  StringMap secrets() const {
    return {{"accessKeyId", access_key_}, {"secretAccessKey", secret_key_}};
  }

  // ---------------------------------------------------------------- controller calls

  grpc::Status create_volume(const std::string& name, const StringMap& params,
                             AccessMode::Mode mode, Volume* out) {
    csi::v1::CreateVolumeRequest req;
    req.set_name(name);
    req.mutable_capacity_range()->set_required_bytes(int64_t{1} << 30);
    *req.add_volume_capabilities() = mount_capability(mode);
    for (const auto& [k, v] : params) (*req.mutable_parameters())[k] = v;
    // What csi-provisioner --extra-create-metadata adds.
    (*req.mutable_parameters())["csi.storage.k8s.io/pv/name"] = name;
    (*req.mutable_parameters())["csi.storage.k8s.io/pvc/name"] = "pvc-of-" + name;
    (*req.mutable_parameters())["csi.storage.k8s.io/pvc/namespace"] = "default";
    for (const auto& [k, v] : secrets()) (*req.mutable_secrets())[k] = v;
    csi::v1::CreateVolumeResponse resp;
    auto ctx = Client::ctx(60);
    grpc::Status s = controller_.client->controller->CreateVolume(ctx.get(), req, &resp);
    if (s.ok()) {
      out->name = name;
      out->id = resp.volume().volume_id();
      out->context =
          StringMap(resp.volume().volume_context().begin(), resp.volume().volume_context().end());
      out->cap = mount_capability(mode);
    }
    return s;
  }

  grpc::Status delete_volume(const std::string& id) {
    csi::v1::DeleteVolumeRequest req;
    req.set_volume_id(id);
    for (const auto& [k, v] : secrets()) (*req.mutable_secrets())[k] = v;
    csi::v1::DeleteVolumeResponse resp;
    auto ctx = Client::ctx(120);
    return controller_.client->controller->DeleteVolume(ctx.get(), req, &resp);
  }

  // ---------------------------------------------------------------- node calls (kubelet's)

  std::string staging_path(const Plugin& n, const Volume& v) const {
    // kubelet: plugins/kubernetes.io/csi/DRIVER/sha256(volume handle)/globalmount
    return n.root + "/kubelet/plugins/kubernetes.io/csi/nacre.csi.dev/" + s3::sha256_hex(v.id) +
           "/globalmount";
  }
  std::string target_path(const Plugin& n, const std::string& pod, const Volume& v) const {
    return n.root + "/kubelet/pods/" + pod + "/volumes/kubernetes.io~csi/" + v.name + "/mount";
  }

  grpc::Status stage(Plugin& n, const Volume& v) {
    csi::v1::NodeStageVolumeRequest req;
    req.set_volume_id(v.id);
    req.set_staging_target_path(staging_path(n, v));
    *req.mutable_volume_capability() = v.cap;
    for (const auto& [k, val] : secrets()) (*req.mutable_secrets())[k] = val;
    for (const auto& [k, val] : v.context) (*req.mutable_volume_context())[k] = val;
    // kubelet creates the staging directory's parent (with vol_data.json).
    stdfs::create_directories(stdfs::path(staging_path(n, v)).parent_path());
    csi::v1::NodeStageVolumeResponse resp;
    auto ctx = Client::ctx(180);
    return n.client->node->NodeStageVolume(ctx.get(), req, &resp);
  }

  grpc::Status publish(Plugin& n, const Volume& v, const std::string& pod, bool readonly) {
    csi::v1::NodePublishVolumeRequest req;
    req.set_volume_id(v.id);
    req.set_staging_target_path(staging_path(n, v));
    req.set_target_path(target_path(n, pod, v));
    *req.mutable_volume_capability() = v.cap;
    req.set_readonly(readonly);
    for (const auto& [k, val] : v.context) (*req.mutable_volume_context())[k] = val;
    (*req.mutable_volume_context())["csi.storage.k8s.io/pod.name"] = pod;
    (*req.mutable_volume_context())["csi.storage.k8s.io/pod.namespace"] = "default";
    stdfs::create_directories(stdfs::path(target_path(n, pod, v)).parent_path());
    csi::v1::NodePublishVolumeResponse resp;
    auto ctx = Client::ctx(180);
    return n.client->node->NodePublishVolume(ctx.get(), req, &resp);
  }

  grpc::Status unpublish(Plugin& n, const Volume& v, const std::string& pod) {
    csi::v1::NodeUnpublishVolumeRequest req;
    req.set_volume_id(v.id);
    req.set_target_path(target_path(n, pod, v));
    csi::v1::NodeUnpublishVolumeResponse resp;
    auto ctx = Client::ctx(60);
    return n.client->node->NodeUnpublishVolume(ctx.get(), req, &resp);
  }

  grpc::Status unstage(Plugin& n, const Volume& v) {
    csi::v1::NodeUnstageVolumeRequest req;
    req.set_volume_id(v.id);
    req.set_staging_target_path(staging_path(n, v));
    csi::v1::NodeUnstageVolumeResponse resp;
    auto ctx = Client::ctx(60);
    return n.client->node->NodeUnstageVolume(ctx.get(), req, &resp);
  }

  grpc::Status volume_stats(Plugin& n, const Volume& v, const std::string& path,
                            csi::v1::NodeGetVolumeStatsResponse* resp) {
    csi::v1::NodeGetVolumeStatsRequest req;
    req.set_volume_id(v.id);
    req.set_volume_path(path);
    auto ctx = Client::ctx(30);
    return n.client->node->NodeGetVolumeStats(ctx.get(), req, resp);
  }

  // Checks NodeGetVolumeStats of `path`: its condition, and usage when normal.
  void expect_condition(Plugin& n, const Volume& v, const std::string& path, bool abnormal) {
    SCOPED_TRACE("NodeGetVolumeStats " + path);
    csi::v1::NodeGetVolumeStatsResponse resp;
    grpc::Status s = volume_stats(n, v, path, &resp);
    ASSERT_TRUE(s.ok()) << describe(s);
    ASSERT_TRUE(resp.has_volume_condition());
    EXPECT_EQ(resp.volume_condition().abnormal(), abnormal)
        << "message: " << resp.volume_condition().message();
    if (abnormal) {
      EXPECT_FALSE(resp.volume_condition().message().empty());
    } else {
      bool bytes = false, inodes = false;
      for (const auto& u : resp.usage()) {
        bytes |= u.unit() == csi::v1::VolumeUsage::BYTES;
        inodes |= u.unit() == csi::v1::VolumeUsage::INODES;
      }
      EXPECT_TRUE(bytes && inodes) << "usage lacks BYTES or INODES";
    }
    std::printf("[ e2e    ] %s: abnormal=%d \"%s\"\n", path.c_str(),
                resp.volume_condition().abnormal(), resp.volume_condition().message().c_str());
  }

  // ---------------------------------------------------------------- node state

  nlohmann::json node_state(const Plugin& n) {
    try {
      return nlohmann::json::parse(file_text(n.state_dir + "/node.json"));
    } catch (const std::exception& e) {
      ADD_FAILURE() << n.state_dir << "/node.json: " << e.what();
      return nlohmann::json::object();
    }
  }
  std::string mount_key_of(const Plugin& n, const Volume& v) {
    auto j = node_state(n);
    if (!j.contains("volumes") || !j["volumes"].contains(v.id)) return "";
    return j["volumes"][v.id].value("mount", "");
  }
  pid_t mount_pid_of(const Plugin& n, const Volume& v) {
    std::string key = mount_key_of(n, v);
    auto j = node_state(n);
    if (key.empty() || !j["mounts"].contains(key)) return 0;
    return j["mounts"][key].value("pid", 0);
  }

  // ---------------------------------------------------------------- S3

  std::vector<s3::ObjectInfo> list(const std::string& prefix) {
    std::vector<s3::ObjectInfo> out;
    s3::ListRequest req;
    req.bucket = bucket_;
    req.prefix = prefix;
    for (;;) {
      auto page = s3_->list_objects(req);
      if (!page) {
        ADD_FAILURE() << "list " << prefix << ": " << page.error().describe();
        return out;
      }
      out.insert(out.end(), page->objects.begin(), page->objects.end());
      if (page->next_continuation_token.empty()) break;
      req.continuation_token = page->next_continuation_token;
    }
    return out;
  }

  std::string object_sha256(const std::string& key, uint64_t* size) {
    Sha256 h;
    uint64_t total = 0;
    auto r =
        s3_->get_object({bucket_, key, 0, std::nullopt, ""}, [&](std::string_view c) -> Status {
          h.update(c.data(), c.size());
          total += c.size();
          return {};
        });
    if (!r) {
      ADD_FAILURE() << "get " << key << ": " << r.error().describe();
      return "";
    }
    *size = total;
    return h.hex();
  }

  // Ends a window of the RGW's access log: a GET of the canary, then waits
  // for it to be logged, and returns the GETs of `needle` since `offset`.
  GetCount gets_since(uint64_t offset, const std::string& needle) {
    auto r = s3_->get_object({bucket_, canary_key(), 0, std::nullopt, ""},
                             [](std::string_view) -> Status { return {}; });
    EXPECT_TRUE(r) << r.error().describe();
    std::string text;
    bool logged = wait_until(
        [&] {
          text = rgw_log_->since(offset);
          return text.find(canary_key()) != std::string::npos;
        },
        std::chrono::seconds(20), std::chrono::milliseconds(100));
    EXPECT_TRUE(logged) << "the canary GET never appeared in " << rgw_log_->path();
    return RgwAccessLog::gets(text, needle);
  }
  std::string canary_key() const { return prefix_ + "canary"; }

  ModelReader& new_reader(const std::string& root, const std::vector<ModelFile>& files, bool loop) {
    readers_.push_back(std::make_unique<ModelReader>(root, files, loop));
    return *readers_.back();
  }

  void record(const std::string& what, double seconds) {
    timings_.emplace_back(what, seconds);
    std::printf("[ e2e    ] %-58s %8.3f s\n", what.c_str(), seconds);
  }

  std::string endpoint_, region_, bucket_, access_key_, secret_key_;
  std::unique_ptr<s3::S3Client> s3_;
  std::unique_ptr<RgwAccessLog> rgw_log_;
  std::string tmp_, prefix_, dataset_;
  Plugin controller_, node_a_, node_b_;
  MounterProcess mounter_a_;    // node A runs as in Kubernetes: plugin + mounter
  ContainerProcess container_;  // pod-llm-1's container (HostToContainer)
  std::string mounter_log_a_;
  // Readers belong to the fixture, not to the test body: one blocked in a
  // hung mount is joined only in TearDown, after the FUSE processes are killed.
  std::vector<std::unique_ptr<ModelReader>> readers_;
  std::vector<std::pair<std::string, double>> timings_;
  std::thread watchdog_;
  std::mutex watchdog_mu_;
  std::condition_variable watchdog_cv_;
  bool done_ = false;
};

#define ASSERT_GRPC_OK(expr)                                         \
  do {                                                               \
    grpc::Status status_ = (expr);                                   \
    ASSERT_TRUE(status_.ok()) << #expr << ": " << describe(status_); \
  } while (0)

TEST_F(CsiE2eTest, TwoNodesKubeletFlow) {
  const auto test_start = Clock::now();
  std::vector<ModelFile> model;
  std::map<std::string, std::string> dataset_etags;  // key -> etag, to find it untouched
  Volume fresh, fresh_del, linked, linked2;
  const std::string fresh_class_base = prefix_ + "volumes";
  const std::string dataset_url = "s3://" + bucket_ + "/" + dataset_;

  {
    SCOPED_TRACE("step 0: one controller and two node plugins");
    auto t0 = Clock::now();
    init_plugin(controller_, "controller", "controller");
    init_plugin(node_a_, "node-a", "node");
    init_plugin(node_b_, "node-b", "node");
    // Node A as the DaemonSet runs it: the plugin asks a mounter (a container
    // of its own there) to start the mounts. Node B starts them itself.
    const std::string mounter_socket = node_a_.root + "/mounter/mounter.sock";
    stdfs::create_directories(node_a_.root + "/mounter");
    mounter_log_a_ = node_a_.root + "/mounter.log";
    ASSERT_TRUE(mounter_a_.start(g_nacre_binary, mounter_socket, mounter_log_a_, tmp_))
        << "the mounter did not start: " << file_text(mounter_log_a_);
    node_a_.args.insert(node_a_.args.end(), {"--mounter-socket", mounter_socket});
    ASSERT_TRUE(start_plugin(controller_)) << "the controller did not get ready";
    ASSERT_TRUE(start_plugin(node_a_)) << "node A did not get ready";
    ASSERT_TRUE(start_plugin(node_b_)) << "node B did not get ready";
    for (Plugin* n : {&node_a_, &node_b_}) {
      csi::v1::NodeGetInfoResponse info;
      auto ctx = Client::ctx(10);
      ASSERT_GRPC_OK(n->client->node->NodeGetInfo(ctx.get(), {}, &info));
      EXPECT_EQ(info.node_id(), n->name);
    }
    record("start controller + 2 node plugins (Probe ready)", seconds_since(t0));
  }

  {
    SCOPED_TRACE("step 1: upload the model");
    auto t0 = Clock::now();
    std::vector<std::pair<std::string, std::string>> files;
    for (int i = 1; i <= 3; ++i) {
      files.emplace_back("model-0000" + std::to_string(i) + "-of-00003.safetensors",
                         random_bytes(kModelFileSize, 0xC5100 + i));
    }
    files.emplace_back("config.json",
                       R"({"architectures":["MistralForCausalLM"],"hidden_size":4096,)"
                       R"("num_hidden_layers":32,"vocab_size":32000})");
    files.emplace_back("tokenizer/tokenizer_config.json", R"({"model_max_length":32768})");
    for (const auto& [name, data] : files) {
      auto etag = s3_->put_object({bucket_,
                                   dataset_ + "/" + name,
                                   s3::Body::from_memory(data),
                                   {},
                                   "application/octet-stream"});
      ASSERT_TRUE(etag) << name << ": " << etag.error().describe();
      model.push_back({name, data.size(), s3::sha256_hex(data)});
    }
    auto canary = s3_->put_object({bucket_, canary_key(), s3::Body::from_memory("canary"), {}, ""});
    ASSERT_TRUE(canary) << canary.error().describe();
    for (const auto& o : list(dataset_ + "/")) dataset_etags[o.key] = o.etag;
    ASSERT_EQ(dataset_etags.size(), files.size());
    ASSERT_TRUE(rgw_log_->available())
        << "the RGW's access log " << rgw_log_->path()
        << " is missing: the test counts S3 GETs in it to prove cache hits";
    record("upload the model (3 x 64 MiB + 2 small files)", seconds_since(t0));
  }

  {
    SCOPED_TRACE("step 2: dynamic volume staged and published on both nodes");
    const StringMap fresh_class = {
        {"bucketName", bucket_}, {"basePrefix", fresh_class_base}, {"metadataTtl", "1"}};
    auto t0 = Clock::now();
    ASSERT_GRPC_OK(create_volume("pvc-0a1b2c3d-fresh", fresh_class,
                                 AccessMode::MULTI_NODE_MULTI_WRITER, &fresh));
    const double create_s = seconds_since(t0);
    record("CreateVolume (fresh prefix)", create_s);
    EXPECT_LT(create_s, 1.0) << "CreateVolume should answer well under a second";
    // The id ends in ";n=" and 8 hex digits of the name's SHA-256 (ownership).
    EXPECT_TRUE(fresh.id.starts_with("fresh:" + bucket_ + "/" + fresh_class_base +
                                     "/pvc-0a1b2c3d-fresh;n="))
        << fresh.id;
    EXPECT_EQ(fresh.context["prefix"], fresh_class_base + "/pvc-0a1b2c3d-fresh");
    // The marker object of the fresh prefix.
    auto marker = s3_->head_object(bucket_, fresh_class_base + "/pvc-0a1b2c3d-fresh/");
    EXPECT_TRUE(marker) << "no marker object: " << marker.error().describe();
    {
      Volume again;
      ASSERT_GRPC_OK(create_volume("pvc-0a1b2c3d-fresh", fresh_class,
                                   AccessMode::MULTI_NODE_MULTI_WRITER, &again));
      EXPECT_EQ(again.id, fresh.id) << "CreateVolume is not idempotent";
    }
    // A second class that deletes its volumes' objects.
    StringMap delete_class = fresh_class;
    delete_class["deleteData"] = "true";
    ASSERT_GRPC_OK(create_volume("pvc-9f8e7d6c-scratch", delete_class,
                                 AccessMode::MULTI_NODE_MULTI_WRITER, &fresh_del));
    EXPECT_TRUE(fresh_del.id.starts_with("fresh+delete:")) << fresh_del.id;

    for (Plugin* n : {&node_a_, &node_b_}) {
      auto t1 = Clock::now();
      ASSERT_GRPC_OK(stage(*n, fresh));
      ASSERT_GRPC_OK(publish(*n, fresh, "pod-writer-" + n->name, false));
      record("NodeStage+NodePublish fresh volume on " + n->name + " (new mount)",
             seconds_since(t1));
      auto m = mount_at(target_path(*n, "pod-writer-" + n->name, fresh));
      ASSERT_TRUE(m) << "target not mounted";
      EXPECT_FALSE(m->read_only);
      // kubelet retries: both calls again are OK.
      ASSERT_GRPC_OK(stage(*n, fresh));
      ASSERT_GRPC_OK(publish(*n, fresh, "pod-writer-" + n->name, false));
      expect_condition(*n, fresh, target_path(*n, "pod-writer-" + n->name, fresh), false);
    }
    ASSERT_GRPC_OK(stage(node_b_, fresh_del));
    ASSERT_GRPC_OK(publish(node_b_, fresh_del, "pod-scratch", false));
  }

  const std::string a_fresh = target_path(node_a_, "pod-writer-node-a", fresh);
  const std::string b_fresh = target_path(node_b_, "pod-writer-node-b", fresh);
  std::string a_pod1, a_pod2;  // node A's two pods of the linked volume
  GetCount first_load;

  {
    SCOPED_TRACE("step 3: a reader loads the model on node A while node B writes");
    const StringMap linked_class = {{"s3ImportPath", dataset_url},
                                    {"metadataTtl", "1"},
                                    {"autoImportPolicy", "NEW_CHANGED_DELETED"}};
    ASSERT_GRPC_OK(create_volume("pvc-5e6f7a8b-llm", linked_class,
                                 AccessMode::MULTI_NODE_READER_ONLY, &linked));
    EXPECT_TRUE(linked.id.starts_with("linked:" + bucket_ + "/" + dataset_)) << linked.id;
    const std::string pod1 = target_path(node_a_, "pod-llm-1", linked);
    a_pod1 = pod1;
    a_pod2 = target_path(node_a_, "pod-llm-2", linked);
    const uint64_t log_offset = rgw_log_->size();
    auto t0 = Clock::now();
    ASSERT_GRPC_OK(stage(node_a_, linked));
    ASSERT_GRPC_OK(publish(node_a_, linked, "pod-llm-1", false));
    record("NodeStage+NodePublish linked volume on node-a (new mount)", seconds_since(t0));
    auto m = mount_at(pod1);
    ASSERT_TRUE(m);
    EXPECT_TRUE(m->read_only) << "MULTI_NODE_READER_ONLY must publish read-only";
    // The pod's container, with mountPropagation HostToContainer.
    ASSERT_TRUE(container_.start(pod1, tmp_ + "/containers/pod-llm-1", "config.json", tmp_))
        << "the container process did not start";
    int fd = ::open((pod1 + "/written-by-pod").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    const int create_errno = errno;
    EXPECT_LT(fd, 0) << "created a file in a read-only volume";
    if (fd >= 0) ::close(fd);
    EXPECT_EQ(create_errno, EROFS) << std::strerror(create_errno);

    const std::string name = "from-node-b/checkpoint-0001.bin";
    struct stat st {};

    ModelReader& reader = new_reader(pod1, model, false);
    reader.start();

    const std::string data = random_bytes(24u << 20, 0xB0B);
    const std::string data_sha = s3::sha256_hex(data);
    ASSERT_EQ(::mkdir((b_fresh + "/from-node-b").c_str(), 0755), 0) << std::strerror(errno);
    int wfd =
        ::open((b_fresh + "/" + name).c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ASSERT_GE(wfd, 0) << std::strerror(errno);
    for (size_t off = 0; off < data.size(); off += 1 << 20) {
      ASSERT_EQ(::write(wfd, data.data() + off, 1 << 20), 1 << 20) << std::strerror(errno);
    }
    // Node A looks just before the close: not there yet (nothing is in S3
    // before the close), and a negative entry now has to expire.
    EXPECT_NE(::stat((a_fresh + "/" + name).c_str(), &st), 0) << "seen before node B's close";
    auto t_close = Clock::now();
    ASSERT_EQ(::close(wfd), 0) << "close (the export) failed on node B: " << std::strerror(errno);
    const double close_s = seconds_since(t_close);
    const auto closed = Clock::now();
    // Node A sees it after the close plus the metadata TTL (1 s).
    bool seen = wait_until(
        [&] {
          return ::stat((a_fresh + "/" + name).c_str(), &st) == 0 &&
                 static_cast<size_t>(st.st_size) == data.size();
        },
        std::chrono::seconds(10), std::chrono::milliseconds(20));
    const double seen_s = seconds_since(closed);
    ASSERT_TRUE(seen) << "node A never saw node B's file";
    record("node B close() of a 24 MiB file (export)", close_s);
    record("node A sees it after node B's close (TTL 1 s)", seen_s);
    EXPECT_LE(seen_s, 1.0 + 2.0) << "visible later than the metadata TTL allows";
    std::string err;
    uint64_t size = 0;
    EXPECT_EQ(sha256_of_file(a_fresh + "/" + name, &size, &err), data_sha) << err;
    EXPECT_TRUE(stdfs::exists(a_fresh + "/from-node-b")) << "not in node A's listing";
    auto obj = s3_->head_object(bucket_, fresh.context["prefix"] + "/" + name);
    EXPECT_TRUE(obj && obj->size == data.size()) << "node B's file is not in S3";

    ASSERT_TRUE(reader.wait_done(std::chrono::minutes(5))) << "the reader did not finish";
    reader.stop();
    EXPECT_EQ(reader.failures(), 0) << reader.first_error();
    EXPECT_EQ(reader.passes(), 1);
    record("first load of the model through node A (from S3)", reader.first_pass_seconds());
    // The first load filled node A's cache (hydration may finish after it).
    bool cached = wait_until(
        [&] {
          for (const auto& f : model) {
            if (cached_bytes(pod1 + "/" + f.name) < f.size) return false;
          }
          return true;
        },
        std::chrono::seconds(60), std::chrono::milliseconds(200));
    EXPECT_TRUE(cached) << "the model is not fully cached on node A after a full read";
    // The detector works: the first load's GETs are in the access log.
    first_load = gets_since(log_offset, dataset_ + "/model-");
    std::printf("[ e2e    ] first load: %d GETs, %llu bytes from S3\n", first_load.requests,
                static_cast<unsigned long long>(first_load.bytes));
    EXPECT_GT(first_load.requests, 0);
    EXPECT_GE(first_load.bytes, 3 * kModelFileSize);
  }

  {
    SCOPED_TRACE("step 4: a second pod on node A reads the model from the node cache only");
    // `nacre status` says every file is cached before the read.
    int status = 0;
    std::string cmd = g_nacre_binary + " status";
    for (const auto& f : model) cmd += " '" + a_pod1 + "/" + f.name + "'";
    std::string out = run_output(cmd, &status);
    std::printf("%s", out.c_str());
    EXPECT_EQ(status, 0);
    EXPECT_NE(out.find("total"), std::string::npos);
    EXPECT_NE(out.find("100.0%"), std::string::npos);
    EXPECT_EQ(out.find("partial"), std::string::npos) << out;
    EXPECT_EQ(out.find("released"), std::string::npos) << out;

    auto t0 = Clock::now();
    ASSERT_GRPC_OK(publish(node_a_, linked, "pod-llm-2", true));
    record("NodePublish of the staged linked volume (2nd pod)", seconds_since(t0));
    ASSERT_TRUE(mount_at(a_pod2) && mount_at(a_pod2)->read_only);
    const uint64_t log_offset = rgw_log_->size();
    ModelReader& reader = new_reader(a_pod2, model, false);
    reader.start();
    ASSERT_TRUE(reader.wait_done(std::chrono::minutes(2)));
    reader.stop();
    EXPECT_EQ(reader.failures(), 0) << reader.first_error();
    record("second load of the model (2nd pod, node cache)", reader.first_pass_seconds());
    GetCount second = gets_since(log_offset, dataset_ + "/");
    std::printf("[ e2e    ] second load: %d GETs, %llu bytes from S3\n", second.requests,
                static_cast<unsigned long long>(second.bytes));
    EXPECT_EQ(second.requests, 0) << "the second pod's load reached S3, e.g. "
                                  << (second.samples.empty() ? "" : second.samples[0]);
    EXPECT_EQ(second.bytes, 0u);

    // The same dataset under a second PVC (same StorageClass parameters):
    // one mount, one cache, no second download.
    const StringMap linked_class = {{"s3ImportPath", dataset_url},
                                    {"metadataTtl", "1"},
                                    {"autoImportPolicy", "NEW_CHANGED_DELETED"}};
    ASSERT_GRPC_OK(create_volume("pvc-c0ffee00-llm-copy", linked_class,
                                 AccessMode::MULTI_NODE_READER_ONLY, &linked2));
    EXPECT_NE(linked2.id, linked.id);
    auto t1 = Clock::now();
    ASSERT_GRPC_OK(stage(node_a_, linked2));
    ASSERT_GRPC_OK(publish(node_a_, linked2, "pod-llm-3", false));
    record("NodeStage+NodePublish 2nd linked PVC (shared ready mount)", seconds_since(t1));
    const std::string key = mount_key_of(node_a_, linked);
    ASSERT_FALSE(key.empty());
    EXPECT_EQ(mount_key_of(node_a_, linked2), key) << "two PVCs of one dataset, two mounts";
    auto j = node_state(node_a_);
    int mounts_of_dataset = 0;
    for (const auto& [k, m] : j["mounts"].items()) {
      mounts_of_dataset += m.value("source", "") == dataset_url;
    }
    EXPECT_EQ(mounts_of_dataset, 1) << j.dump(2);
    EXPECT_EQ(nacre_mount_pids(node_a_.state_dir + "/mounts/" + key).size(), 1u);
    EXPECT_EQ(nacre_mount_pids(dataset_).size(), 1u) << "the dataset is mounted more than once";
    const uint64_t log_offset2 = rgw_log_->size();
    ModelReader& reader3 = new_reader(target_path(node_a_, "pod-llm-3", linked2), model, false);
    reader3.start();
    ASSERT_TRUE(reader3.wait_done(std::chrono::minutes(2)));
    reader3.stop();
    EXPECT_EQ(reader3.failures(), 0) << reader3.first_error();
    GetCount third = gets_since(log_offset2, dataset_ + "/");
    EXPECT_EQ(third.requests, 0) << "the second PVC downloaded the dataset again, e.g. "
                                 << (third.samples.empty() ? "" : third.samples[0]);
    record("load through the 2nd PVC (shared node cache)", reader3.first_pass_seconds());
  }

  {
    SCOPED_TRACE("step 5: node A's plugin is killed and restarted under an active reader");
    const pid_t fuse_pid = mount_pid_of(node_a_, linked);
    ASSERT_GT(fuse_pid, 0);
    {
      // Started through the mounter: its child, not the plugin's.
      std::ifstream stat("/proc/" + std::to_string(fuse_pid) + "/stat");
      std::string text;
      std::getline(stat, text);
      std::istringstream rest(text.substr(text.rfind(')') + 2));
      char state = 0;
      pid_t ppid = 0;
      rest >> state >> ppid;
      EXPECT_EQ(ppid, mounter_a_.pid()) << "node A's mount is not the mounter's child";
    }
    ModelReader& reader = new_reader(a_pod1, model, true);
    // A descriptor opened before the restart and read after it, too.
    int held = ::open((a_pod1 + "/" + model[0].name).c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(held, 0) << std::strerror(errno);
    reader.start();
    ASSERT_TRUE(wait_until([&] { return reader.passes() >= 1; }, std::chrono::minutes(2)));
    node_a_.process->kill();  // SIGKILL, mid-read
    node_a_.client.reset();
    const int passes_at_kill = reader.passes();
    // Pods keep reading while no plugin runs at all.
    EXPECT_TRUE(
        wait_until([&] { return reader.passes() >= passes_at_kill + 1; }, std::chrono::minutes(1)))
        << "the reader stalled with the plugin down";
    auto t0 = Clock::now();
    ASSERT_TRUE(start_plugin(node_a_)) << "node A's plugin did not get ready after the restart";
    record("restart of node A's plugin to Probe ready", seconds_since(t0));
    {
      csi::v1::ProbeResponse probe;
      auto ctx = Client::ctx(10);
      ASSERT_GRPC_OK(node_a_.client->identity->Probe(ctx.get(), {}, &probe));
      EXPECT_TRUE(probe.ready().value());
    }
    expect_condition(node_a_, linked, a_pod1, false);
    expect_condition(node_a_, linked, staging_path(node_a_, linked), false);
    expect_condition(node_a_, fresh, a_fresh, false);
    // kubelet's reconciler stages and publishes again after a plugin
    // restart: the mounts found again are kept, not replaced.
    const size_t mounts_before = mounts_under(node_a_.root).size();
    ASSERT_GRPC_OK(stage(node_a_, linked));
    ASSERT_GRPC_OK(publish(node_a_, linked, "pod-llm-1", false));
    ASSERT_GRPC_OK(publish(node_a_, linked, "pod-llm-2", true));
    ASSERT_GRPC_OK(stage(node_a_, fresh));
    ASSERT_GRPC_OK(publish(node_a_, fresh, "pod-writer-node-a", false));
    EXPECT_EQ(mount_pid_of(node_a_, linked), fuse_pid);
    EXPECT_EQ(mounts_under(node_a_.root).size(), mounts_before) << "mounts stacked up";
    const int passes_at_restart = reader.passes();
    EXPECT_TRUE(wait_until([&] { return reader.passes() >= passes_at_restart + 2; },
                           std::chrono::minutes(2)));
    std::vector<char> buf(1 << 20);
    EXPECT_EQ(::pread(held, buf.data(), buf.size(), 32 << 20), static_cast<ssize_t>(buf.size()))
        << "a descriptor opened before the restart: " << std::strerror(errno);
    ::close(held);
    reader.stop();
    std::printf("[ e2e    ] reader: %d passes (%d at the kill, %d at the restart), %d failures\n",
                reader.passes(), passes_at_kill, passes_at_restart, reader.failures());
    EXPECT_EQ(reader.failures(), 0) << reader.first_error();
    EXPECT_TRUE(process_running(fuse_pid)) << "the FUSE process died with the plugin";
    EXPECT_EQ(container_.last(), model[3].sha256) << container_.last_line();
    EXPECT_EQ(mount_pid_of(node_a_, linked), fuse_pid) << "the restart replaced the mount";
  }

  {
    SCOPED_TRACE("step 6: node A's FUSE process is killed; stage, then publish, repair it");
    const std::string pod3 = target_path(node_a_, "pod-llm-3", linked2);
    // Once repaired by NodeStageVolume, once by NodePublishVolume.
    for (const std::string& how :
         std::vector<std::string>{"NodeStageVolume", "NodePublishVolume"}) {
      SCOPED_TRACE("repair by " + how);
      const pid_t pid = mount_pid_of(node_a_, linked);
      ASSERT_GT(pid, 0);
      ASSERT_TRUE(process_running(pid));
      const auto mounts_before = mounts_under(node_a_.root);
      ASSERT_EQ(::kill(pid, SIGKILL), 0);
      ASSERT_TRUE(wait_until([&] { return !process_running(pid); }, std::chrono::seconds(10)));
      expect_condition(node_a_, linked, a_pod1, true);
      expect_condition(node_a_, linked, a_pod2, true);
      expect_condition(node_a_, linked2, pod3, true);
      expect_condition(node_a_, fresh, a_fresh, false);  // another mount: unaffected
      EXPECT_TRUE(wait_until([&] { return container_.last() != model[3].sha256; },
                             std::chrono::seconds(10)))
          << "the container still reads the model through a dead mount?";
      auto t0 = Clock::now();
      if (how == "NodeStageVolume") {
        ASSERT_GRPC_OK(stage(node_a_, linked));
      } else {
        ASSERT_GRPC_OK(publish(node_a_, linked, "pod-llm-2", true));
      }
      record("repair of a dead mount by " + how, seconds_since(t0));
      const pid_t repaired = mount_pid_of(node_a_, linked);
      EXPECT_NE(repaired, pid);
      EXPECT_TRUE(process_running(repaired));
      EXPECT_EQ(nacre_mount_pids(dataset_).size(), 1u);
      expect_condition(node_a_, linked, a_pod1, false);
      expect_condition(node_a_, linked, a_pod2, false);
      expect_condition(node_a_, linked2, pod3, false);
      ASSERT_TRUE(mount_at(a_pod1) && mount_at(a_pod1)->read_only);
      ASSERT_TRUE(mount_at(a_pod2) && mount_at(a_pod2)->read_only);
      // The repaired mount is on top at the mount directory (once: the dead
      // one is detached there) and at every staging and target path (on top
      // of the dead bind, which pods with HostToContainer propagation need:
      // one layer more per repair; unpublish and unstage detach the stack).
      const auto mounts_after = mounts_under(node_a_.root);
      const std::string mount_dir = node_a_.state_dir + "/mounts/" + mount_key_of(node_a_, linked);
      auto top = mount_at(mount_dir);
      ASSERT_TRUE(top && top->type == "fuse.nacre");
      int at_dir = 0;
      for (const auto& m : mounts_after) at_dir += m.point == mount_dir;
      EXPECT_EQ(at_dir, 1) << "the dead mount is still at " << mount_dir << ":\n"
                           << mount_list(mounts_after);
      for (const std::string& p :
           {staging_path(node_a_, linked), staging_path(node_a_, linked2), a_pod1, a_pod2, pod3}) {
        auto m = mount_at(p);
        EXPECT_TRUE(m && m->dev == top->dev && m->read_only)
            << p << " is not a read-only bind of the repaired mount:\n"
            << mount_list(mounts_after);
      }
      // The running container sees the repaired mount without a restart.
      EXPECT_TRUE(wait_until([&] { return container_.last() == model[3].sha256; },
                             std::chrono::seconds(10)))
          << "pod-llm-1's container (HostToContainer) does not see the repair: "
          << container_.last_line();
      EXPECT_LE(mounts_after.size(), mounts_before.size() + 5)
          << "more than one layer added per path: before\n"
          << mount_list(mounts_before) << "after\n"
          << mount_list(mounts_after);
      // The repaired mount reads the node cache the dead one filled.
      const uint64_t log_offset = rgw_log_->size();
      ModelReader& reader = new_reader(how == "NodeStageVolume" ? a_pod1 : a_pod2, model, false);
      reader.start();
      ASSERT_TRUE(reader.wait_done(std::chrono::minutes(3)));
      reader.stop();
      EXPECT_EQ(reader.failures(), 0) << reader.first_error();
      GetCount after = gets_since(log_offset, dataset_ + "/");
      EXPECT_EQ(after.requests, 0) << "the repaired mount fetched the model again, e.g. "
                                   << (after.samples.empty() ? "" : after.samples[0]);
      record("load after the repair by " + how + " (node cache)", reader.first_pass_seconds());
    }
  }

  {
    SCOPED_TRACE("step 6b: a mount that does not answer is reported abnormal");
    const pid_t pid = mount_pid_of(node_a_, fresh);
    ASSERT_GT(pid, 0);
    ASSERT_EQ(::kill(pid, SIGSTOP), 0);
    auto t0 = Clock::now();
    expect_condition(node_a_, fresh, a_fresh, true);
    record("NodeGetVolumeStats of a frozen mount", seconds_since(t0));
    EXPECT_LT(seconds_since(t0), 10.0);
    ASSERT_EQ(::kill(pid, SIGCONT), 0);
    EXPECT_TRUE(wait_until(
        [&] {
          csi::v1::NodeGetVolumeStatsResponse resp;
          return volume_stats(node_a_, fresh, a_fresh, &resp).ok() &&
                 !resp.volume_condition().abnormal();
        },
        std::chrono::seconds(10), std::chrono::milliseconds(200)))
        << "still abnormal after SIGCONT";
    EXPECT_EQ(mount_pid_of(node_a_, fresh), pid);
  }

  {
    SCOPED_TRACE("step 7: unpublish, unstage, DeleteVolume");
    // Something to delete in the deleteData volume.
    {
      const std::string path = target_path(node_b_, "pod-scratch", fresh_del) + "/scratch.txt";
      std::ofstream(path) << "scratch\n";
      EXPECT_TRUE(stdfs::exists(path));
    }
    container_.stop();  // pod-llm-1 ends
    auto t0 = Clock::now();
    for (const char* pod : {"pod-llm-1", "pod-llm-2"}) {
      ASSERT_GRPC_OK(unpublish(node_a_, linked, pod));
      EXPECT_FALSE(stdfs::exists(target_path(node_a_, pod, linked)));
      ASSERT_GRPC_OK(unpublish(node_a_, linked, pod));  // idempotent
      // One pod going takes nothing from the others (after the repairs, too).
      for (const std::string& p :
           {a_pod2, target_path(node_a_, "pod-llm-3", linked2), staging_path(node_a_, linked)}) {
        if (p == target_path(node_a_, pod, linked)) continue;
        std::string err;
        uint64_t size = 0;
        EXPECT_EQ(sha256_of_file(p + "/config.json", &size, &err), model[3].sha256)
            << "after unpublishing " << pod << ", " << p << ": " << err;
      }
    }
    ASSERT_GRPC_OK(unstage(node_a_, linked));
    ASSERT_GRPC_OK(unstage(node_a_, linked));
    // The second PVC still uses the mount.
    EXPECT_EQ(nacre_mount_pids(dataset_).size(), 1u);
    {
      std::string err;
      uint64_t size = 0;
      const std::string p = target_path(node_a_, "pod-llm-3", linked2) + "/config.json";
      EXPECT_EQ(sha256_of_file(p, &size, &err), model[3].sha256) << err;
    }
    ASSERT_GRPC_OK(unpublish(node_a_, linked2, "pod-llm-3"));
    ASSERT_GRPC_OK(unstage(node_a_, linked2));
    // Unmount never hangs: node A's mount of the fresh volume is frozen
    // (SIGSTOP), node B's is dead (SIGKILL), when their pods go.
    const pid_t frozen = mount_pid_of(node_a_, fresh);
    const pid_t dead = mount_pid_of(node_b_, fresh);
    ASSERT_GT(frozen, 0);
    ASSERT_GT(dead, 0);
    ASSERT_EQ(::kill(frozen, SIGSTOP), 0);
    ASSERT_EQ(::kill(dead, SIGKILL), 0);
    for (Plugin* n : {&node_a_, &node_b_}) {
      auto t1 = Clock::now();
      ASSERT_GRPC_OK(unpublish(*n, fresh, "pod-writer-" + n->name));
      ASSERT_GRPC_OK(unstage(*n, fresh));
      const double s = seconds_since(t1);
      record(std::string("unpublish+unstage of a ") + (n == &node_a_ ? "frozen" : "dead") +
                 " mount on " + n->name,
             s);
      EXPECT_LT(s, 15.0);
    }
    EXPECT_FALSE(process_running(frozen)) << "the frozen mount process was left behind";
    ASSERT_GRPC_OK(unpublish(node_b_, fresh_del, "pod-scratch"));
    ASSERT_GRPC_OK(unstage(node_b_, fresh_del));
    record("unpublish + unstage of everything", seconds_since(t0));
    EXPECT_TRUE(
        wait_until([&] { return nacre_mount_pids(tmp_).empty(); }, std::chrono::seconds(15)))
        << nacre_mount_pids(tmp_).size() << " nacre mount processes left";
    for (const auto& m : mounts_under(tmp_)) {
      if (m.point != tmp_) ADD_FAILURE() << "left mounted: " << m.point;
    }
    for (Plugin* n : {&node_a_, &node_b_}) {
      auto j = node_state(*n);
      EXPECT_TRUE(j["volumes"].empty() && j["mounts"].empty()) << n->name << ": " << j.dump(2);
    }

    // DeleteVolume: the default keeps a fresh volume's objects...
    const std::string fresh_prefix = fresh.context["prefix"] + "/";
    const std::string del_prefix = fresh_del.context["prefix"] + "/";
    ASSERT_EQ(list(del_prefix).size(), 2u) << "marker + scratch.txt expected";
    auto t1 = Clock::now();
    ASSERT_GRPC_OK(delete_volume(fresh.id));
    record("DeleteVolume (fresh, kept)", seconds_since(t1));
    std::set<std::string> kept;
    for (const auto& o : list(fresh_prefix)) kept.insert(o.key);
    EXPECT_TRUE(kept.contains(fresh_prefix)) << "the marker went";
    EXPECT_TRUE(kept.contains(fresh_prefix + "from-node-b/checkpoint-0001.bin"))
        << "node B's file went with deleteData false";
    // ...deleteData "true" removes them...
    t1 = Clock::now();
    ASSERT_GRPC_OK(delete_volume(fresh_del.id));
    record("DeleteVolume (fresh, deleteData true)", seconds_since(t1));
    EXPECT_TRUE(list(del_prefix).empty()) << "objects left after deleteData true";
    // ...and a linked dataset is never touched.
    ASSERT_GRPC_OK(delete_volume(linked.id));
    ASSERT_GRPC_OK(delete_volume(linked2.id));
    ASSERT_GRPC_OK(delete_volume(linked.id));  // idempotent
    std::map<std::string, std::string> after;
    for (const auto& o : list(dataset_ + "/")) after[o.key] = o.etag;
    EXPECT_EQ(after, dataset_etags) << "the linked dataset changed";
    for (const auto& f : model) {
      uint64_t size = 0;
      EXPECT_EQ(object_sha256(dataset_ + "/" + f.name, &size), f.sha256) << f.name;
      EXPECT_EQ(size, f.size);
    }
  }

  {
    SCOPED_TRACE("the drivers stop on SIGTERM; no secret in their logs");
    for (Plugin* p : {&controller_, &node_a_, &node_b_}) {
      p->client.reset();
      p->process->stop();
      std::string log = file_text(p->log);
      EXPECT_EQ(log.find(secret_key_), std::string::npos) << p->log << " holds the secret key";
    }
    EXPECT_TRUE(mounter_a_.stop()) << "the mounter did not stop cleanly on SIGTERM";
    EXPECT_EQ(file_text(mounter_log_a_).find(secret_key_), std::string::npos)
        << mounter_log_a_ << " holds the secret key";
  }

  record("whole test", seconds_since(test_start));
  std::printf("[ e2e    ] timings:\n");
  for (const auto& [what, s] : timings_)
    std::printf("[ e2e    ]   %-58s %8.3f s\n", what.c_str(), s);
}

}  // namespace
}  // namespace nacre::csi_test

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  using nacre::csi_test::g_env_file;
  using nacre::csi_test::g_nacre_binary;
  if (const char* b = std::getenv("NACRE_BINARY")) g_nacre_binary = b;
  if (const char* e = std::getenv("NACRE_S3_ENV")) g_env_file = e;
  if (argc >= 2) g_nacre_binary = argv[1];
  if (argc >= 3) g_env_file = argv[2];
  if (g_env_file.empty()) g_env_file = NACRE_DEFAULT_S3_ENV;
  // The drivers and their mounts are killed, not this test: a SIGPIPE from a
  // closed log pipe must not end it before TearDown.
  ::signal(SIGPIPE, SIG_IGN);
  return RUN_ALL_TESTS();
}
