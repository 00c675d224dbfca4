#include "csi/node_state.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace nacre::csi {

using nlohmann::json;

Status write_file_atomic(const std::string& file, const std::string& text) {
  const std::string tmp = file + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return fail_errno("write " + tmp, errno);
  ::fchmod(fd, 0600);
  ssize_t n = ::write(fd, text.data(), text.size());
  int err = errno;
  if (n == static_cast<ssize_t>(text.size()) && ::fsync(fd) != 0) {
    err = errno;
    n = -1;
  }
  ::close(fd);
  if (n != static_cast<ssize_t>(text.size())) {
    ::unlink(tmp.c_str());
    return fail_errno("write " + tmp, n < 0 ? err : ENOSPC);
  }
  if (::rename(tmp.c_str(), file.c_str()) != 0) return fail_errno("rename " + tmp, errno);
  return {};
}

Result<NodeState> NodeState::load(const std::string& file) {
  NodeState state;
  if (::access(file.c_str(), F_OK) != 0 && errno == ENOENT) return state;  // first start
  std::ifstream in(file);
  if (!in) return fail(ErrorCode::kIo, "cannot read " + file);
  std::stringstream text;
  text << in.rdbuf();
  try {
    json j = json::parse(text.str());
    for (const auto& [key, m] : j.at("mounts").items()) {
      MountRecord r;
      r.dir = m.at("dir");
      r.cache_dir = m.at("cache_dir");
      r.source = m.at("source");
      r.args = m.at("args").get<std::vector<std::string>>();
      r.preload = m.value("preload", std::vector<std::string>{});
      r.pid = m.value("pid", 0);
      r.read_only = m.value("read_only", false);
      state.mounts[key] = r;
    }
    for (const auto& [id, v] : j.at("volumes").items()) {
      VolumeRecord r;
      r.mount_key = v.at("mount");
      r.settings = v.value("settings", "");
      r.mount_group = v.value("mount_group", "");
      r.staging_path = v.at("staging_path");
      r.read_only = v.value("read_only", false);
      r.preload_wait_seconds = v.value("preload_wait_seconds", 0);
      r.targets = v.value("targets", std::set<std::string>{});
      state.volumes[id] = r;
    }
  } catch (const std::exception& e) {
    return fail(ErrorCode::kIo, "state file " + file + " is not readable: " + e.what() +
                                    " (move it away to start afresh)");
  }
  return state;
}

Status NodeState::save(const std::string& file) const {
  json j = {{"mounts", json::object()}, {"volumes", json::object()}};
  for (const auto& [key, m] : mounts) {
    j["mounts"][key] = {{"dir", m.dir},
                        {"cache_dir", m.cache_dir},
                        {"source", m.source},
                        {"args", m.args},
                        {"preload", m.preload},
                        {"pid", m.pid},
                        {"read_only", m.read_only}};
  }
  for (const auto& [id, v] : volumes) {
    j["volumes"][id] = {
        {"mount", v.mount_key},         {"settings", v.settings},
        {"mount_group", v.mount_group}, {"staging_path", v.staging_path},
        {"read_only", v.read_only},     {"preload_wait_seconds", v.preload_wait_seconds},
        {"targets", v.targets}};
  }
  // fsync'd: the file is the only record of which mounts this node runs.
  return write_file_atomic(file, j.dump(2) + "\n");
}

int NodeState::users(const std::string& key) const {
  int n = 0;
  for (const auto& [id, v] : volumes) n += v.mount_key == key;
  return n;
}

}  // namespace nacre::csi
