// Integration tests run against the local Ceph RGW that the ctest fixture
// starts (scripts/s3-server); this loads the endpoint and keys it wrote.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <string>

namespace nacre::testing {

// The `export NAME=value` lines of an env file as scripts/s3-server writes
// them; `ok` says whether the file could be read.
inline std::map<std::string, std::string> read_env_file(const std::string& file, bool* ok) {
  std::map<std::string, std::string> env;
  std::ifstream in(file);
  *ok = static_cast<bool>(in);
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
    env[line.substr(0, eq)] = value;
  }
  return env;
}

#ifdef NACRE_DEFAULT_S3_ENV
// Reads $NACRE_S3_ENV (or the build's default) into the environment. Returns
// an explanation when it cannot.
inline std::string load_rgw_env() {
  const char* path = std::getenv("NACRE_S3_ENV");
  std::string file = path ? path : NACRE_DEFAULT_S3_ENV;
  bool ok = false;
  auto env = read_env_file(file, &ok);
  if (!ok) {
    return "the local S3 server's settings are missing at " + file +
           ": run the tests with ctest (its fixture starts scripts/s3-server) or start it with "
           "`scripts/s3-server start DIR` and set NACRE_S3_ENV=DIR/env";
  }
  for (const auto& [name, value] : env) setenv(name.c_str(), value.c_str(), 1);
  // Never let a test wander off to an instance metadata service.
  setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
  return "";
}
#endif

// `n` bytes from a seeded generator: the same seed, the same bytes.
inline std::string random_bytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (size_t i = 0; i < n; i += 8) {
    uint64_t v = rng();
    std::memcpy(&s[i], &v, std::min<size_t>(8, n - i));
  }
  return s;
}

inline std::string unique_prefix(const std::string& test) {
  std::random_device rd;
  return "it-" + test + "-" + std::to_string(rd() % 1000000000) + "/";
}

}  // namespace nacre::testing
