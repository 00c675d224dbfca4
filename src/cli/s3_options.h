// The S3 connection flags every command (and later `nacre mount`) takes.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "s3/s3_client.h"

namespace nacre::cli {

struct S3Options {
  std::string endpoint_url;
  std::string region;
  std::string profile;
  std::string addressing_style = "auto";
  std::string ca_bundle;
  bool no_verify_ssl = false;
  double connect_timeout = 10;
  double stall_timeout = 30;
  int max_attempts = 5;

  void add_to(CLI::App& app);
  // Flags override the AWS environment variables, which override defaults.
  [[nodiscard]] Result<std::unique_ptr<s3::S3Client>> make_client() const;
};

}  // namespace nacre::cli
