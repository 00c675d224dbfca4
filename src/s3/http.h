// Blocking HTTP/1.1 on libcurl. Thread-safe: many threads may call perform()
// at once; each call borrows an easy handle (with its own multi handle, which
// holds the connection cache) from a pool, so connections and TLS sessions are
// reused across requests. The multi interface is used, not curl_easy_perform,
// so that cancel_all() can wake a transfer that is waiting for bytes at once
// instead of at curl's next ~1 s progress tick.
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
  // Called exactly once per response with the final status and headers (never
  // for a 1xx interim answer), before the first body byte reaches the sink,
  // also for a response without a body. An error it returns stops the
  // transfer: no body byte reaches the sink and perform() returns that error.
  // It runs inside a curl callback, so it must not throw (perform() turns an
  // exception into an error, but only as a last resort).
  std::function<Status(const HttpResponse&)> on_headers;
};

struct HttpResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;         // the body when no sink was given, or when status >= 300
  uint64_t sink_bytes = 0;  // bytes passed to the sink
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
  // failures are errors (kNetwork, kRequestTimeout, the sink's or on_headers'
  // error, kCancelled); any HTTP status is a successful result for the caller
  // to interpret.
  [[nodiscard]] Result<HttpResponse> perform(const HttpRequest& request, const DataSink& sink = {});

  // Makes every perform() in flight on any thread fail with kCancelled
  // within milliseconds (a waiting transfer is woken, its connection closed),
  // and every later perform() fail at once. Cannot be undone. Thread-safe.
  void cancel_all();
  bool cancelled() const;

  // A SimpleHttp for the credential providers.
  SimpleHttp as_simple_http();

 private:
  struct Pool;
  HttpOptions options_;
  std::unique_ptr<Pool> pool_;
};

}  // namespace nacre::s3
