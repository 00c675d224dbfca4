// nacre: one binary for the S3 tools, the mount and the CSI driver.
#include <CLI/CLI.hpp>

#include "cli/cache_commands.h"
#include "cli/csi_command.h"
#include "cli/mount_command.h"
#include "cli/s3_commands.h"

int main(int argc, char** argv) {
  CLI::App app{"Nacre: an S3-linked POSIX file system for model data", "nacre"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("nacre ") + NACRE_VERSION);
  int exit_code = 0;
  nacre::cli::add_s3_commands(app, exit_code);
  nacre::cli::add_mount_command(app, exit_code);
  nacre::cli::add_cache_commands(app, exit_code);
  nacre::cli::add_csi_command(app, exit_code);

  // mount(8) runs "nacre SOURCE MOUNTPOINT -o OPTIONS" for fuse.nacre.
  std::vector<std::string> subcommands;
  for (auto* sub : app.get_subcommands([](CLI::App*) { return true; })) {
    subcommands.push_back(sub->get_name());
  }
  std::vector<std::string> args(argv, argv + argc);
  args = nacre::cli::rewrite_mount_helper_args(args, subcommands);
  std::vector<char*> new_argv;
  for (auto& a : args) new_argv.push_back(a.data());
  CLI11_PARSE(app, static_cast<int>(new_argv.size()), new_argv.data());
  return exit_code;
}
