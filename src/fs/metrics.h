// Counters the file system keeps for the Prometheus endpoint. Plain atomics:
// the exposition format lives with the endpoint (cli/metrics_server), so this
// layer stays free of HTTP.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

namespace nacre::fs {

struct Metrics {
  std::atomic<uint64_t> s3_bytes_fetched{0};
  std::atomic<int64_t> s3_bytes_in_flight{0};
  std::atomic<uint64_t> cache_hit_blocks{0};
  std::atomic<uint64_t> cache_miss_blocks{0};
  std::atomic<uint64_t> read_bytes{0};
  std::atomic<uint64_t> hidden_keys{0};    // keys that cannot be names (see names.h)
  std::atomic<uint64_t> shadowed_keys{0};  // files hidden by a directory of the same name
  // Bytes read straight from S3 because the cache would not take them (its bounds
  // were reached with data in use, or the disk was full).
  std::atomic<uint64_t> uncached_read_bytes{0};
  // Opens served by kernel passthrough: the kernel reads their bytes from the cache
  // file without asking the daemon, so read_bytes does not count them.
  std::atomic<uint64_t> passthrough_opens{0};
  std::atomic<uint64_t> refused_symlinks{0};  // --contain-symlinks refusals
  std::atomic<uint64_t> written_bytes{0};     // bytes written to staged files
  std::atomic<uint64_t> exported_bytes{0};    // bytes of staged files S3 took
  std::atomic<uint64_t> exported_files{0};

  void count_request(const std::string& op) { bump(requests_, op); }
  void count_error(const std::string& op, const std::string& code) {
    bump(errors_, op + "\x1f" + code);
  }
  std::map<std::string, uint64_t> requests() const { return snapshot(requests_); }
  // Keys are "op\x1fcode".
  std::map<std::string, uint64_t> errors() const { return snapshot(errors_); }

 private:
  void bump(std::map<std::string, uint64_t>& m, const std::string& k) {
    std::lock_guard lock(mu_);
    ++m[k];
  }
  std::map<std::string, uint64_t> snapshot(const std::map<std::string, uint64_t>& m) const {
    std::lock_guard lock(mu_);
    return m;
  }
  mutable std::mutex mu_;
  std::map<std::string, uint64_t> requests_;  // GUARDED_BY(mu_)
  std::map<std::string, uint64_t> errors_;    // GUARDED_BY(mu_)
};

}  // namespace nacre::fs
