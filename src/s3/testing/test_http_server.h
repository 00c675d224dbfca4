// A scripted HTTP/1.1 server on 127.0.0.1 for unit tests of the HTTP, S3 and
// credential code: each request is answered by a handler, which can also cut
// the body short or stall to exercise retries and timeouts. Written by hand:
// no Debian package offers an embeddable test server for C++.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace nacre::testing {

struct ReceivedRequest {
  std::string method;
  std::string target;                          // path and query as sent
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
};

struct ScriptedReply {
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  // Send only this many body bytes (Content-Length still says the full
  // size), then close the connection.
  std::optional<size_t> truncate_body_at;
  int stall_ms = 0;  // wait before answering
  // After sending the status line, the headers and the (possibly truncated)
  // body, keep the connection open this long without sending anything more:
  // with truncate_body_at = 0, a server that sent headers and then stalled.
  int hang_after_ms = 0;
};

class TestHttpServer {
 public:
  using Handler = std::function<ScriptedReply(const ReceivedRequest&)>;
  explicit TestHttpServer(Handler handler);
  ~TestHttpServer();

  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  int port() const { return port_; }
  std::vector<ReceivedRequest> requests() const;
  // TCP connections accepted so far (a client that reuses connections opens
  // one for many sequential requests).
  size_t connections() const;

 private:
  void serve();
  void handle(int fd);
  // Sleeps up to `ms`, returning early when the server is being destroyed.
  void pause(int ms);

  Handler handler_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  mutable std::mutex mu_;
  std::vector<ReceivedRequest> requests_;  // GUARDED_BY(mu_)
  std::vector<std::thread> connections_;   // GUARDED_BY(mu_)
  std::thread acceptor_;
};

}  // namespace nacre::testing
