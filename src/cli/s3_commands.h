// `nacre ls`, `nacre cp`, `nacre rm`, `nacre stat`: small S3 tools on the
// same client the mount uses.
#pragma once

#include <CLI/CLI.hpp>

namespace nacre::cli {

// Adds the subcommands to `app`; each sets `exit_code` when it runs.
void add_s3_commands(CLI::App& app, int& exit_code);

}  // namespace nacre::cli
