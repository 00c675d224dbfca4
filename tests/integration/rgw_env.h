// Integration tests run against the local Ceph RGW that the ctest fixture
// starts (scripts/s3-server); this loads the endpoint and keys it wrote.
#pragma once

#include <cstdlib>
#include <fstream>
#include <random>
#include <string>

namespace nacre::testing {

// Reads `export NAME=value` lines from $NACRE_S3_ENV (or the build's default)
// into the environment. Returns an explanation when it cannot.
inline std::string load_rgw_env() {
  const char* path = std::getenv("NACRE_S3_ENV");
  std::string file = path ? path : NACRE_DEFAULT_S3_ENV;
  std::ifstream in(file);
  if (!in) {
    return "the local S3 server's settings are missing at " + file +
           ": run the tests with ctest (its fixture starts scripts/s3-server) or start it with "
           "`scripts/s3-server start DIR` and set NACRE_S3_ENV=DIR/env";
  }
  std::string line;
  while (std::getline(in, line)) {
    if (!line.starts_with("export ")) continue;
    line = line.substr(7);
    size_t eq = line.find('=');
    if (eq == std::string::npos) continue;
    std::string value = line.substr(eq + 1);
    if (value.size() >= 2 && (value.front() == '\'' || value.front() == '"')) {
      value = value.substr(1, value.size() - 2);
    }
    setenv(line.substr(0, eq).c_str(), value.c_str(), 1);
  }
  // Never let a test wander off to an instance metadata service.
  setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
  return "";
}

inline std::string unique_prefix(const std::string& test) {
  std::random_device rd;
  return "it-" + test + "-" + std::to_string(rd() % 1000000000) + "/";
}

}  // namespace nacre::testing
