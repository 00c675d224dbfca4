// Where the FUSE processes live. The node plugin starts every `nacre mount`
// (and `nacre preload`) through a Launcher. By default it runs them itself:
// they daemonise into sessions of their own and outlive the plugin's process.
// In Kubernetes a restart of the plugin's *container* would still take them
// along (the runtime kills every process of a container), so the node pod has
// a second container, the mounter (`nacre csi --mode mounter`), which does
// nothing but start what the plugin asks for over a unix socket and reap it.
// The plugin's container can then restart or be replaced in place while the
// mounts keep serving. docs/ARCHITECTURE.md ("Where the mounts live") says why.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "common/error.h"
#include "csi/mount_ops.h"

namespace nacre::csi {

using Launcher = std::function<Result<RunResult>(
    const std::vector<std::string>& argv, const std::map<std::string, std::string>& env,
    std::chrono::milliseconds deadline, const std::function<void(const std::string&)>& on_line)>;

// Runs commands in this process (run_process).
Launcher local_launcher();
// Sends each command to the mounter at `socket_path` and waits for its answer.
Launcher mounter_launcher(std::string socket_path);

// The mounter: serves launch requests on `socket_path` (mode 0600) until
// SIGTERM/SIGINT, one at a time, and reaps the daemons it leaves behind.
[[nodiscard]] Status run_mounter(const std::string& socket_path);

}  // namespace nacre::csi
