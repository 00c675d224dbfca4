#include "cli/metrics_exporter.h"

#include <prometheus/collectable.h>
#include <prometheus/exposer.h>
#include <prometheus/metric_family.h>

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

void add(prometheus::MetricFamily& f, double value, std::vector<prometheus::ClientMetric::Label> labels = {}) {
  prometheus::ClientMetric m;
  m.label = std::move(labels);
  if (f.type == prometheus::MetricType::Gauge) m.gauge.value = value;
  else m.counter.value = value;
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
    gauge("nacre_cache_entries", "Object versions in the node cache", static_cast<double>(stats.entries));
    counter("nacre_cache_evictions_total", "Object versions evicted to make room",
            static_cast<double>(stats.evictions));
    counter("nacre_cache_bad_blocks_total", "Cached blocks that failed their checksum",
            static_cast<double>(stats.bad_blocks));
    auto requests = family("nacre_s3_requests_total", "S3 requests by operation", MetricType::Counter);
    for (const auto& [op, n] : metrics_.requests()) add(requests, static_cast<double>(n), {{"operation", op}});
    out.push_back(std::move(requests));
    auto errors = family("nacre_s3_errors_total", "Failed S3 requests by operation and error",
                         MetricType::Counter);
    for (const auto& [key, n] : metrics_.errors()) {
      size_t sep = key.find('\x1f');
      add(errors, static_cast<double>(n), {{"operation", key.substr(0, sep)}, {"error", key.substr(sep + 1)}});
    }
    out.push_back(std::move(errors));
    return out;
  }

 private:
  fs::Metrics& metrics_;
  cache::BlockCache& cache_;
};

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
    return fail(ErrorCode::kInvalidArgument, "cannot serve metrics on " + address + ": " + e.what());
  }
  out->impl_->collector = std::make_shared<Collector>(metrics, cache);
  out->impl_->exposer->RegisterCollectable(out->impl_->collector);
  return out;
}

MetricsExporter::~MetricsExporter() = default;

}  // namespace nacre::cli
