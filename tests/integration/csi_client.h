// A CSI client for the integration tests: stubs over the driver's unix socket,
// a `nacre csi` process started and stopped by the test, and capability
// builders. Header-only; used by csi_conformance_test and csi_e2e_test.
#pragma once

#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "csi.grpc.pb.h"

extern char** environ;

namespace nacre::csi_test {

struct Client {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<csi::v1::Identity::Stub> identity;
  std::unique_ptr<csi::v1::Controller::Stub> controller;
  std::unique_ptr<csi::v1::Node::Stub> node;

  explicit Client(const std::string& socket_path)
      : channel(grpc::CreateChannel("unix://" + socket_path, grpc::InsecureChannelCredentials())),
        identity(csi::v1::Identity::NewStub(channel)),
        controller(csi::v1::Controller::NewStub(channel)),
        node(csi::v1::Node::NewStub(channel)) {}

  // A context with a deadline: no test waits forever on the driver.
  static std::unique_ptr<grpc::ClientContext> ctx(int seconds = 60) {
    auto c = std::make_unique<grpc::ClientContext>();
    c->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
    return c;
  }
};

// /proc/self/mountinfo read by the tests themselves, independently of the
// driver's parser (src/csi/mount_ops.cc), so a bug there cannot hide itself.
struct MountLine {
  std::string point, type;
  std::string dev;  // "major:minor" of the file system
  bool read_only = false;
};

inline std::string unescape_mountinfo(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      const std::string oct = s.substr(i + 1, 3);
      if (oct.find_first_not_of("01234567") == std::string::npos) {
        out += static_cast<char>(std::stoi(oct, nullptr, 8));
        i += 3;
        continue;
      }
    }
    out += s[i];
  }
  return out;
}

inline std::vector<MountLine> read_mounts() {
  std::ifstream in("/proc/self/mountinfo");
  std::vector<MountLine> out;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string id, parent, devno, root, point, opts, field;
    if (!(f >> id >> parent >> devno >> root >> point >> opts)) continue;
    while (f >> field && field != "-") {
    }
    MountLine m;
    if (!(f >> m.type)) continue;
    m.point = unescape_mountinfo(point);
    m.dev = devno;
    m.read_only = opts == "ro" || opts.starts_with("ro,");
    out.push_back(m);
  }
  return out;
}

inline csi::v1::VolumeCapability mount_capability(csi::v1::VolumeCapability::AccessMode::Mode mode,
                                                  std::vector<std::string> flags = {},
                                                  const std::string& mount_group = "") {
  csi::v1::VolumeCapability cap;
  auto* m = cap.mutable_mount();
  for (auto& f : flags) m->add_mount_flags(f);
  if (!mount_group.empty()) m->set_volume_mount_group(mount_group);
  cap.mutable_access_mode()->set_mode(mode);
  return cap;
}

inline csi::v1::VolumeCapability block_capability(
    csi::v1::VolumeCapability::AccessMode::Mode mode) {
  csi::v1::VolumeCapability cap;
  cap.mutable_block();
  cap.mutable_access_mode()->set_mode(mode);
  return cap;
}

// `nacre csi ...` as a child process; stop() sends SIGTERM (the mounts it
// started are separate processes and stay), kill() sends SIGKILL.
class DriverProcess {
 public:
  DriverProcess(std::string binary, std::vector<std::string> args, std::string socket_path,
                std::string log_file)
      : binary_(std::move(binary)),
        args_(std::move(args)),
        socket_(std::move(socket_path)),
        log_(std::move(log_file)) {}
  ~DriverProcess() { kill(); }

  // Starts it and waits until Probe answers ready (or fails after `seconds`).
  bool start(int seconds = 60) {
    std::vector<std::string> argv = {binary_};
    argv.insert(argv.end(), args_.begin(), args_.end());
    std::vector<char*> c;
    for (auto& a : argv) c.push_back(a.data());
    c.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    int rc = posix_spawn(&pid_, c[0], &fa, nullptr, c.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) return false;
    auto end = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    while (std::chrono::steady_clock::now() < end) {
      struct stat st {};
      if (::stat(socket_.c_str(), &st) == 0) {
        Client client(socket_);
        csi::v1::ProbeRequest req;
        csi::v1::ProbeResponse resp;
        auto ctx = Client::ctx(5);
        if (client.identity->Probe(ctx.get(), req, &resp).ok() && resp.ready().value()) return true;
      }
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }
  void stop() { signal_and_wait(SIGTERM); }
  void kill() { signal_and_wait(SIGKILL); }
  pid_t pid() const { return pid_; }

 private:
  void signal_and_wait(int sig) {
    if (pid_ <= 0) return;
    ::kill(pid_, sig);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
  }
  std::string binary_;
  std::vector<std::string> args_;
  std::string socket_;
  std::string log_;
  pid_t pid_ = -1;
};

}  // namespace nacre::csi_test
