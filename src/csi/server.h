// `nacre csi`: the gRPC server of the CSI Identity, Controller and Node
// services on a unix socket. The only header of the driver that callers need;
// gRPC's own headers stay inside server.cc.
#pragma once

#include <string>

#include "common/error.h"
#include "csi/controller.h"
#include "csi/node.h"

namespace nacre::csi {

inline constexpr const char* kDriverName = "nacre.csi.dev";

struct ServerOptions {
  std::string endpoint;  // unix:///path/to/csi.sock
  bool controller = true;
  bool node = true;
  std::string version;
  NodeOptions node_options;
  ControllerOptions controller_options;
};

// Serves until SIGTERM or SIGINT. Mounts are separate processes: they stay.
[[nodiscard]] Status run_server(const ServerOptions& options);

}  // namespace nacre::csi
