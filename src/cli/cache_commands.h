// `nacre preload`, `nacre status` and `nacre release`: hydrate, inspect and
// drop a mount's node-local cache, file by file (like lfs hsm_restore,
// hsm_state and hsm_release on FSx for Lustre). They work on paths inside a
// Nacre mount and talk to it through the file system itself (reads and the
// user.nacre.* extended attributes), so they need no extra channel.
#pragma once

#include <CLI/CLI.hpp>

namespace nacre::cli {

void add_cache_commands(CLI::App& app, int& exit_code);

}  // namespace nacre::cli
