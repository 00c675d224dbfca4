// `nacre csi`: the Kubernetes CSI driver (controller, node plugin or both).
#pragma once

#include <CLI/CLI.hpp>

namespace nacre::cli {

void add_csi_command(CLI::App& app, int& exit_code);

}  // namespace nacre::cli
