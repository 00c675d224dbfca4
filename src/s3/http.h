// Blocking HTTP/1.1 on libcurl. Thread-safe: many threads may call perform()
// at once; each call borrows an easy handle from a pool, so connections
// (and TLS sessions) are reused across requests.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "common/error.h"
#include "s3/body.h"
#include "s3/sigv4.h"

namespace nacre::s3 {

struct HttpOptions {
  std::chrono::milliseconds connect_timeout{10'000};
  // A transfer that moves no byte for this long fails with kRequestTimeout.
  std::chrono::seconds stall_timeout{30};
  std::string ca_bundle;  // empty: the system CA store
  bool verify_tls = true;
  size_t receive_buffer = 512 * 1024;
};

struct HttpResponse;

struct HttpRequest {
  std::string method = "GET";
  std::string url;  // fully encoded
  Headers headers;
  Body body;
  // Called once with status and headers, before the first body byte (and not
  // at all for a response without a body).
  std::function<void(const HttpResponse&)> on_headers;
};

struct HttpResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;             // the body when no sink was given, or when status >= 300
  uint64_t sink_bytes = 0;      // bytes passed to the sink
  std::string header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    return it == headers.end() ? std::string() : it->second;
  }
};

class HttpClient {
 public:
  explicit HttpClient(HttpOptions options = {});
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Sends the request and waits for the whole response. With a sink, the body
  // of a 2xx response streams to it and only error bodies are kept. Transport
  // failures are errors (kNetwork, kRequestTimeout, or the sink's error); any
  // HTTP status is a successful result for the caller to interpret.
  [[nodiscard]] Result<HttpResponse> perform(const HttpRequest& request,
                                             const DataSink& sink = {});

  // A SimpleHttp for the credential providers.
  SimpleHttp as_simple_http();

 private:
  struct Pool;
  HttpOptions options_;
  std::unique_ptr<Pool> pool_;
};

}  // namespace nacre::s3
