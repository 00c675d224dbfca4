#include "cli/metrics_exporter.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <prometheus/collectable.h>
#include <prometheus/exposer.h>
#include <prometheus/metric_family.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace nacre::cli {

namespace {

prometheus::MetricFamily family(const std::string& name, const std::string& help,
                                prometheus::MetricType type) {
  prometheus::MetricFamily f;
  f.name = name;
  f.help = help;
  f.type = type;
  return f;
}

void add(prometheus::MetricFamily& f, double value,
         std::vector<prometheus::ClientMetric::Label> labels = {}) {
  prometheus::ClientMetric m;
  m.label = std::move(labels);
  if (f.type == prometheus::MetricType::Gauge)
    m.gauge.value = value;
  else
    m.counter.value = value;
  f.metric.push_back(std::move(m));
}

// Reads the counters at scrape time, so the read path pays nothing for them.
class Collector : public prometheus::Collectable {
 public:
  Collector(fs::Metrics& m, cache::BlockCache& c) : metrics_(m), cache_(c) {}
  std::vector<prometheus::MetricFamily> Collect() const override {
    using prometheus::MetricType;
    std::vector<prometheus::MetricFamily> out;
    // A family with one unlabelled value.
    auto single = [&](MetricType type, const char* name, const char* help, double v) {
      auto f = family(name, help, type);
      add(f, v);
      out.push_back(std::move(f));
    };
    auto counter = [&](const char* name, const char* help, double v) {
      single(MetricType::Counter, name, help, v);
    };
    auto gauge = [&](const char* name, const char* help, double v) {
      single(MetricType::Gauge, name, help, v);
    };
    counter("nacre_s3_bytes_fetched_total", "Bytes received from S3 by the read path",
            static_cast<double>(metrics_.s3_bytes_fetched.load()));
    gauge("nacre_s3_bytes_in_flight", "Bytes requested from S3 and not yet received",
          static_cast<double>(metrics_.s3_bytes_in_flight.load()));
    counter("nacre_cache_hit_blocks_total", "Blocks a read found in the node cache",
            static_cast<double>(metrics_.cache_hit_blocks.load()));
    counter("nacre_cache_miss_blocks_total", "Blocks a read had to fetch",
            static_cast<double>(metrics_.cache_miss_blocks.load()));
    counter("nacre_read_bytes_total", "Bytes returned to readers",
            static_cast<double>(metrics_.read_bytes.load()));
    counter("nacre_hidden_keys_total", "Keys that cannot be file names and are hidden",
            static_cast<double>(metrics_.hidden_keys.load()));
    counter("nacre_shadowed_keys_total", "Files hidden by a directory of the same name",
            static_cast<double>(metrics_.shadowed_keys.load()));
    auto stats = cache_.stats();
    gauge("nacre_cache_used_bytes", "Bytes of object data in the node cache",
          static_cast<double>(stats.used_bytes));
    gauge("nacre_cache_entries", "Object versions in the node cache",
          static_cast<double>(stats.entries));
    counter("nacre_cache_evictions_total", "Object versions evicted to make room",
            static_cast<double>(stats.evictions));
    counter("nacre_cache_bad_blocks_total", "Cached blocks that failed their checksum",
            static_cast<double>(stats.bad_blocks));
    counter("nacre_cache_checked_bytes_total",
            "Cached bytes an earlier process left, read back and checked against their CRC",
            static_cast<double>(stats.checked_bytes));
    gauge("nacre_cache_start_check_running",
          "1 while the check at start (--cache-check-at-start) reads the cache",
          stats.start_check_running ? 1.0 : 0.0);
    counter(
        "nacre_cache_refused_blocks_total",
        "Blocks not cached because --cache-size or --cache-min-free was reached with data in use",
        static_cast<double>(stats.refused_writes));
    counter("nacre_uncached_read_bytes_total",
            "Bytes read straight from S3 because the cache would not take them",
            static_cast<double>(metrics_.uncached_read_bytes.load()));
    counter("nacre_passthrough_opens_total",
            "Opens served by kernel passthrough (their reads never reach the daemon)",
            static_cast<double>(metrics_.passthrough_opens.load()));
    counter("nacre_refused_symlinks_total", "Symlinks refused by --contain-symlinks",
            static_cast<double>(metrics_.refused_symlinks.load()));
    counter("nacre_written_bytes_total", "Bytes written through the mount (to staged files)",
            static_cast<double>(metrics_.written_bytes.load()));
    counter("nacre_exported_bytes_total", "Bytes of written files exported to S3",
            static_cast<double>(metrics_.exported_bytes.load()));
    counter("nacre_exported_files_total", "Written files exported to S3",
            static_cast<double>(metrics_.exported_files.load()));
    auto requests =
        family("nacre_s3_requests_total", "S3 requests by operation", MetricType::Counter);
    for (const auto& [op, n] : metrics_.requests())
      add(requests, static_cast<double>(n), {{"operation", op}});
    out.push_back(std::move(requests));
    auto errors = family("nacre_s3_errors_total", "Failed S3 requests by operation and error",
                         MetricType::Counter);
    for (const auto& [key, n] : metrics_.errors()) {
      size_t sep = key.find('\x1f');
      add(errors, static_cast<double>(n),
          {{"operation", key.substr(0, sep)}, {"error", key.substr(sep + 1)}});
    }
    out.push_back(std::move(errors));
    return out;
  }

 private:
  fs::Metrics& metrics_;
  cache::BlockCache& cache_;
};

// civetweb only says "null context ... possible problem binding to port": find
// the real reason by binding the address ourselves (IPv4 HOST:PORT).
std::string bind_failure(const std::string& address, const std::string& fallback) {
  size_t colon = address.rfind(':');
  if (colon == std::string::npos) return fallback;
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  int port = std::atoi(address.c_str() + colon + 1);
  std::string host = address.substr(0, colon);
  if (port <= 0 || port > 65535 || inet_pton(AF_INET, host.c_str(), &sa.sin_addr) != 1) {
    return fallback;
  }
  sa.sin_port = htons(static_cast<uint16_t>(port));
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return fallback;
  int err = ::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0 ? 0 : errno;
  ::close(fd);
  return err == 0 ? fallback : std::strerror(err);
}

}  // namespace

struct MetricsExporter::Impl {
  std::unique_ptr<prometheus::Exposer> exposer;
  std::shared_ptr<Collector> collector;
};

Result<std::unique_ptr<MetricsExporter>> MetricsExporter::start(const std::string& address,
                                                                fs::Metrics& metrics,
                                                                cache::BlockCache& cache) {
  auto out = std::unique_ptr<MetricsExporter>(new MetricsExporter());
  out->impl_ = std::make_unique<Impl>();
  try {
    // prometheus-cpp reports a busy port by throwing; nothing else here does.
    out->impl_->exposer = std::make_unique<prometheus::Exposer>(address);
  } catch (const std::exception& e) {
    return fail(ErrorCode::kInvalidArgument,
                "cannot serve metrics on " + address + ": " + bind_failure(address, e.what()));
  }
  out->impl_->collector = std::make_shared<Collector>(metrics, cache);
  out->impl_->exposer->RegisterCollectable(out->impl_->collector);
  return out;
}

MetricsExporter::~MetricsExporter() = default;

}  // namespace nacre::cli
