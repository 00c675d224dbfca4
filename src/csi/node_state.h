// What the node plugin has set up, kept in <state-dir>/node.json (replaced
// atomically on every change) so a restarted plugin finds its mounts again.
// Secrets are not in it: each mount's credentials are in a file of their own,
// mode 0600 (<state-dir>/mounts/KEY.env), needed to restart a mount that died.
#pragma once

#include <sys/types.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "common/error.h"

namespace nacre::csi {

// Writes `text` to `file` whole or not at all (temporary file, fsync,
// rename), mode 0600: a crash leaves the old file.
[[nodiscard]] Status write_file_atomic(const std::string& file, const std::string& text);

struct MountRecord {
  std::string dir;                // where the FUSE file system is mounted
  std::string cache_dir;          // its node cache
  std::string source;             // s3://bucket/prefix, for messages
  std::vector<std::string> args;  // after `nacre`: the mount command line
  std::vector<std::string> preload;
  pid_t pid = 0;
  bool read_only = false;
};

struct VolumeRecord {
  std::string mount_key;
  std::string settings;     // mount_key without the credentials: rotated keys restage
  std::string mount_group;  // the fsGroup it was staged for ("" none)
  std::string staging_path;
  bool read_only = false;
  int preload_wait_seconds = 0;
  std::set<std::string> targets;  // published target paths
};

struct NodeState {
  std::map<std::string, MountRecord> mounts;    // by mount key
  std::map<std::string, VolumeRecord> volumes;  // by volume id

  [[nodiscard]] static Result<NodeState> load(const std::string& file);
  [[nodiscard]] Status save(const std::string& file) const;
  // Volumes staged on the mount with this key.
  int users(const std::string& key) const;
};

}  // namespace nacre::csi
