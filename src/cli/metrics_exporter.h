// Serves fs::Metrics and cache statistics as a Prometheus text endpoint
// (prometheus-cpp's pull exposer), at http://ADDRESS/metrics.
#pragma once

#include <memory>
#include <string>

#include "cache/block_cache.h"
#include "common/error.h"
#include "fs/metrics.h"

namespace nacre::cli {

class MetricsExporter {
 public:
  // `address` is HOST:PORT. Starts a listening thread: call after daemonising.
  [[nodiscard]] static Result<std::unique_ptr<MetricsExporter>> start(const std::string& address,
                                                                      fs::Metrics& metrics,
                                                                      cache::BlockCache& cache);
  ~MetricsExporter();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace nacre::cli
