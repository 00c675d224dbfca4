// nacre: one binary for the S3 tools, the mount (later) and the CSI driver
// (later).
#include <CLI/CLI.hpp>

#include "cli/s3_commands.h"

int main(int argc, char** argv) {
  CLI::App app{"Nacre: an S3-linked POSIX file system for model data", "nacre"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "nacre 0.1.0");
  int exit_code = 0;
  nacre::cli::add_s3_commands(app, exit_code);
  CLI11_PARSE(app, argc, argv);
  return exit_code;
}
