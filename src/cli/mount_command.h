// `nacre mount` and the mount(8) helper form (`mount -t fuse.nacre`).
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

namespace nacre::cli {

void add_mount_command(CLI::App& app, int& exit_code);

// mount.fuse3 runs "nacre SOURCE MOUNTPOINT -o OPTIONS"; this rewrites such an
// argument list to "nacre mount SOURCE MOUNTPOINT -o OPTIONS". Other argument
// lists are returned unchanged.
std::vector<std::string> rewrite_mount_helper_args(const std::vector<std::string>& args,
                                                   const std::vector<std::string>& subcommands);

}  // namespace nacre::cli
