// The CSI Node service without gRPC: stage, publish, unpublish, unstage and
// volume stats over real mounts. One FUSE mount (a `nacre mount` daemon, a
// process of its own that outlives this one) serves every volume on the node
// with the same dataset, settings and credentials; staging paths and pods'
// target paths are bind mounts of it. docs/KUBERNETES.md says why.
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "csi/mounter.h"
#include "csi/node_state.h"
#include "csi/volume_spec.h"

namespace nacre::csi {

struct NodeOptions {
  std::string node_id;
  std::string state_dir;     // node.json, mounts/ (FUSE mount points, credentials)
  std::string cache_dir;     // node cache root: one directory per mount under it
  std::string nacre_binary;  // what runs `nacre mount` and `nacre preload`
  DriverDefaults defaults;
  Launcher launcher = local_launcher();  // how `nacre mount` is started (mounter.h)
  ClientFactory make_client;             // checks that a fresh volume still exists at stage
  // A directory for a tmpfs of the plugin's own, never shared, holding the
  // private copies pods are bound from (node.cc); default below /run.
  std::string private_dir;
  std::chrono::milliseconds probe_deadline{2000};
  std::chrono::milliseconds mount_deadline{120000};
};

struct VolumeStats {
  uint64_t bytes_total = 0, bytes_available = 0, bytes_used = 0;
  uint64_t inodes_total = 0, inodes_available = 0, inodes_used = 0;
  bool abnormal = false;
  std::string message;
};

class Node {
 public:
  // Loads the state directory and checks every mount it records (rediscovery).
  [[nodiscard]] static Result<std::unique_ptr<Node>> open(NodeOptions options);
  ~Node();

  [[nodiscard]] Status stage(const std::string& volume_id, const std::string& staging_path,
                             const Capability& cap, const StringMap& secrets,
                             const StringMap& context);
  [[nodiscard]] Status unstage(const std::string& volume_id, const std::string& staging_path);
  [[nodiscard]] Status publish(const std::string& volume_id, const std::string& staging_path,
                               const std::string& target_path, const Capability& cap,
                               bool readonly);
  [[nodiscard]] Status unpublish(const std::string& volume_id, const std::string& target_path);
  [[nodiscard]] Result<VolumeStats> stats(const std::string& volume_id, const std::string& path);

  const NodeOptions& options() const { return options_; }

 private:
  // A background preload of one mount (node_preload.cc), shared with its
  // thread, which owns copies of everything else it uses.
  struct Preload {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    bool ok = false;
    bool cancelled = false;  // its mount was stopped: leave no marker
    std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  };
  explicit Node(NodeOptions options) : options_(std::move(options)) {}

  std::string state_file() const { return options_.state_dir + "/node.json"; }
  std::string mounts_dir() const { return options_.state_dir + "/mounts"; }
  [[nodiscard]] Status save();
  // Why the mount with `key` cannot serve ("" when it can). `dead` tells a
  // mount that is gone (nothing mounted, process gone, ENOTCONN) from one
  // that only does not answer in time (busy): only a dead one is replaced.
  struct Problem {
    bool dead = false;
    std::string reason;
  };
  Problem mount_problem(const std::string& key);
  // Starts the mount for `key` if it is not serving (restarting one that died)
  // and rebinds the staging and target paths of its volumes.
  [[nodiscard]] Status ensure_mount(const std::string& key, const MountRecord* fresh,
                                    const std::map<std::string, std::string>* env);
  [[nodiscard]] Status start_mount(const std::string& key, MountRecord record,
                                   const std::map<std::string, std::string>& env);
  void stop_mount(const std::string& key);
  void start_preload(const std::string& key, const std::vector<std::string>& globs);
  // Waits for the preload of `key`, at most `seconds` after it started and at
  // most 90 s per call (under kubelet's NodePublish timeout): UNAVAILABLE
  // while it runs and time is left, so kubelet calls again.
  [[nodiscard]] Status wait_preload(const std::string& key, int seconds,
                                    std::unique_lock<std::timed_mutex>& lock);
  [[nodiscard]] Result<std::string> private_source(const std::string& key);
  void drop_private_source(const std::string& key);

  NodeOptions options_;
  // One stage or publish at a time; all fields below. Unpublish and unstage
  // detach their paths before taking it and wait for it only so long, so a
  // slow stage of one volume never holds up a terminating pod of another.
  std::timed_mutex mu_;
  NodeState state_;
  std::map<std::string, std::shared_ptr<Preload>> preloads_;
};

}  // namespace nacre::csi
