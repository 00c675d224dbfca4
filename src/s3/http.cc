#include "s3/http.h"

#include <curl/curl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <exception>
#include <mutex>
#include <optional>
#include <set>
#include <vector>

namespace nacre::s3 {

namespace {

std::once_flag g_curl_init;

// Error bodies are small XML documents; keep no more than this of one.
constexpr size_t kMaxErrorBody = 1 << 20;

struct Transfer {
  const HttpRequest* request;
  const DataSink* sink;
  CURL* curl;
  HttpResponse response;
  uint64_t body_sent = 0;
  std::optional<Error> sink_error;
  std::optional<Error> body_error;
  std::optional<Error> header_error;  // from on_headers: the body is refused
  bool status_known = false;
  bool to_sink = false;
};

Error callback_exception(const char* where) {
  std::string what = "unknown exception";
  try {
    throw;
  } catch (const std::exception& e) {
    what = e.what();
  } catch (...) {
  }
  return Error{
      ErrorCode::kOther, std::string("exception in the HTTP ") + where + ": " + what, {}, {}, 0};
}

// The final status and headers are known: decide where the body goes and let
// the caller refuse it before any byte is delivered. Returns false to abort.
bool headers_done(Transfer* t, long code) {
  t->status_known = true;
  t->response.status = static_cast<int>(code);
  t->to_sink = *t->sink && code >= 200 && code < 300;
  if (!t->request->on_headers) return true;
  Status st = t->request->on_headers(t->response);
  if (st) return true;
  t->header_error = std::move(st.error());
  t->to_sink = false;
  return false;
}

size_t on_header(char* data, size_t size, size_t n, void* user) noexcept {
  auto* t = static_cast<Transfer*>(user);
  try {
    std::string_view line(data, size * n);
    if (line.starts_with("HTTP/")) {
      // A new status line (e.g. after 100 Continue) starts a new header set.
      if (!t->status_known) t->response.headers.clear();
      return size * n;
    }
    if (line == "\r\n" || line == "\n") {
      // The end of a header block. Interim (1xx) blocks are followed by the
      // real answer; trailers come after the body, when the status is known.
      long code = 0;
      curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &code);
      if (t->status_known || code < 200) return size * n;
      return headers_done(t, code) ? size * n : 0;
    }
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) return size * n;
    std::string name(line.substr(0, colon));
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char c) { return std::tolower(c); });
    std::string_view value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t'))
      value.remove_prefix(1);
    while (!value.empty() && (value.back() == '\r' || value.back() == '\n' || value.back() == ' '))
      value.remove_suffix(1);
    if (!t->status_known) t->response.headers[name] = std::string(value);
    return size * n;
  } catch (...) {
    t->header_error = callback_exception("header callback");
    return 0;
  }
}

size_t on_write(char* data, size_t size, size_t n, void* user) noexcept {
  auto* t = static_cast<Transfer*>(user);
  size_t len = size * n;
  try {
    if (!t->status_known) {
      // Not expected (the header block always ends first), but the body must
      // never pass before the caller has seen the headers.
      long code = 0;
      curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &code);
      if (!headers_done(t, code)) return CURL_WRITEFUNC_ERROR;
    }
    if (t->header_error) return CURL_WRITEFUNC_ERROR;
    if (t->to_sink) {
      Status st = (*t->sink)(std::string_view(data, len));
      if (!st) {
        t->sink_error = st.error();
        return CURL_WRITEFUNC_ERROR;
      }
      t->response.sink_bytes += len;
      return len;
    }
    if (t->response.body.size() < kMaxErrorBody || !*t->sink) t->response.body.append(data, len);
    return len;
  } catch (...) {
    t->sink_error = callback_exception("body callback");
    return CURL_WRITEFUNC_ERROR;
  }
}

size_t read_body(Transfer* t, char* buf, size_t size, size_t n) {
  const Body& body = t->request->body;
  size_t want = std::min<uint64_t>(size * n, body.size() - t->body_sent);
  if (want == 0) return 0;
  switch (body.kind) {
    case Body::Kind::kEmpty:
      return 0;
    case Body::Kind::kMemory:
      std::memcpy(buf, body.memory.data() + t->body_sent, want);
      break;
    case Body::Kind::kFile: {
      ssize_t got = pread(body.fd, buf, want, static_cast<off_t>(body.offset + t->body_sent));
      if (got <= 0) {
        t->body_error = fail_errno("reading the upload body", got == 0 ? EIO : errno).error();
        return CURL_READFUNC_ABORT;
      }
      want = static_cast<size_t>(got);
      break;
    }
    case Body::Kind::kStream: {
      auto got = body.stream(buf, want);
      if (!got || *got == 0) {
        t->body_error =
            got ? Error{ErrorCode::kIo, "upload stream ended early", {}, {}, 0} : got.error();
        return CURL_READFUNC_ABORT;
      }
      want = *got;
      break;
    }
  }
  t->body_sent += want;
  return want;
}

size_t on_read(char* buf, size_t size, size_t n, void* user) noexcept {
  auto* t = static_cast<Transfer*>(user);
  try {
    return read_body(t, buf, size, n);
  } catch (...) {
    t->body_error = callback_exception("upload callback");
    return CURL_READFUNC_ABORT;
  }
}

Error transport_error(CURLcode rc, const char* errbuf, const HttpRequest& req) {
  std::string detail = errbuf[0] ? errbuf : curl_easy_strerror(rc);
  std::string what = req.method + " " + req.url + ": " + detail;
  switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
      return {ErrorCode::kRequestTimeout, what, {}, {}, 0};
    case CURLE_PARTIAL_FILE:
      return {ErrorCode::kNetwork, "truncated response body: " + what, {}, {}, 0};
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
      return {ErrorCode::kInvalidArgument, what, {}, {}, 0};
    default:
      return {ErrorCode::kNetwork, what, {}, {}, 0};
  }
}

}  // namespace

// One pooled transfer context: an easy handle and the multi handle that
// drives it. The multi handle owns the connection cache, so the pair stays
// together for its whole life.
struct Handle {
  CURL* easy = nullptr;
  CURLM* multi = nullptr;
};

struct HttpClient::Pool {
  std::mutex mu;
  std::vector<Handle> idle;  // GUARDED_BY(mu); most recently used last
  std::set<CURLM*> active;   // GUARDED_BY(mu); multi handles in a perform()
  std::atomic<bool> cancelled{false};

  ~Pool() {
    for (Handle& h : idle) {
      curl_easy_cleanup(h.easy);
      curl_multi_cleanup(h.multi);
    }
  }
  std::optional<Handle> take() {
    {
      std::lock_guard lock(mu);
      if (!idle.empty()) {
        Handle h = idle.back();
        idle.pop_back();
        return h;
      }
    }
    Handle h{curl_easy_init(), curl_multi_init()};
    if (!h.easy || !h.multi) {
      if (h.easy) curl_easy_cleanup(h.easy);
      if (h.multi) curl_multi_cleanup(h.multi);
      return std::nullopt;
    }
    return h;
  }
  void give(Handle h) {
    std::lock_guard lock(mu);
    idle.push_back(h);
  }
  // Registered multi handles are woken by cancel(). Registration happens
  // under the same lock cancel() holds, and the flag is read after it, so a
  // perform() either sees the flag or gets woken.
  void start(CURLM* m) {
    std::lock_guard lock(mu);
    active.insert(m);
  }
  void finish(CURLM* m) {
    std::lock_guard lock(mu);
    active.erase(m);
  }
  void cancel() {
    cancelled = true;
    std::lock_guard lock(mu);
    for (CURLM* m : active) curl_multi_wakeup(m);
  }
};

HttpClient::HttpClient(HttpOptions options)
    : options_(std::move(options)), pool_(std::make_unique<Pool>()) {
  std::call_once(g_curl_init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

HttpClient::~HttpClient() = default;

void HttpClient::cancel_all() {
  pool_->cancel();
}

bool HttpClient::cancelled() const {
  return pool_->cancelled;
}

namespace {

Error cancelled_error(const HttpRequest& req) {
  return Error{ErrorCode::kCancelled, req.method + " " + req.url + ": cancelled", {}, {}, 0};
}

// Drives one transfer on its multi handle until it ends or is cancelled.
// Returns the transfer's result; `cancelled` tells which.
CURLcode run_transfer(CURLM* multi, const std::atomic<bool>& cancel_flag, bool& cancelled) {
  cancelled = false;
  for (;;) {
    if (cancel_flag) {
      cancelled = true;
      return CURLE_ABORTED_BY_CALLBACK;
    }
    int running = 0;
    CURLMcode mc = curl_multi_perform(multi, &running);
    if (mc != CURLM_OK) return CURLE_SEND_ERROR;
    if (running == 0) {
      int left = 0;
      while (CURLMsg* msg = curl_multi_info_read(multi, &left)) {
        if (msg->msg == CURLMSG_DONE) return msg->data.result;
      }
      return CURLE_OK;
    }
    // Waits for socket activity or curl's next timer (the stall timeout),
    // or until cancel() wakes it.
    mc = curl_multi_poll(multi, nullptr, 0, 1000, nullptr);
    if (mc != CURLM_OK) return CURLE_RECV_ERROR;
  }
}

}  // namespace

Result<HttpResponse> HttpClient::perform(const HttpRequest& request, const DataSink& sink) {
  if (pool_->cancelled) return std::unexpected(cancelled_error(request));
  auto handle = pool_->take();
  if (!handle) return fail(ErrorCode::kNetwork, "curl_easy_init or curl_multi_init failed");
  CURL* curl = handle->easy;
  // reset keeps the connection cache (in the multi handle), the point of pooling.
  curl_easy_reset(curl);

  Transfer t{&request, &sink, curl, {}, 0, {}, {}, {}, false, false};
  char errbuf[CURL_ERROR_SIZE] = {0};
  curl_easy_setopt(curl, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_PATH_AS_IS, 1L);  // S3 keys may hold "//" and "/./"
  // A proxy's CONNECT answer must not look like the server's headers.
  curl_easy_setopt(curl, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS,
                   static_cast<long>(options_.connect_timeout.count()));
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, static_cast<long>(options_.stall_timeout.count()));
  curl_easy_setopt(curl, CURLOPT_BUFFERSIZE, static_cast<long>(options_.receive_buffer));
  curl_easy_setopt(curl, CURLOPT_TCP_KEEPALIVE, 1L);
  if (!options_.ca_bundle.empty())
    curl_easy_setopt(curl, CURLOPT_CAINFO, options_.ca_bundle.c_str());
  if (!options_.verify_tls) {
    curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 0L);
  }
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &t);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_write);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &t);

  const std::string& m = request.method;
  bool has_body = request.body.kind != Body::Kind::kEmpty;
  if (m == "HEAD") {
    curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
  } else if (m == "PUT" || (m == "POST" && has_body)) {
    curl_easy_setopt(curl, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(curl, CURLOPT_READFUNCTION, on_read);
    curl_easy_setopt(curl, CURLOPT_READDATA, &t);
    curl_easy_setopt(curl, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(request.body.size()));
    if (m == "POST") curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, "POST");
  } else if (m == "POST") {
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, "");
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, 0L);
  } else if (m != "GET") {
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, m.c_str());
  }

  curl_slist* headers = nullptr;
  for (const auto& [k, v] : request.headers) {
    std::string line = k + ": " + v;
    headers = curl_slist_append(headers, line.c_str());
  }
  // No "Expect: 100-continue" round trip, and no content type curl invents.
  headers = curl_slist_append(headers, "Expect:");
  bool has_type = std::any_of(request.headers.begin(), request.headers.end(), [](auto& h) {
    return strcasecmp(h.first.c_str(), "content-type") == 0;
  });
  if (!has_type) headers = curl_slist_append(headers, "Content-Type:");
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);

  CURLcode rc = CURLE_FAILED_INIT;
  bool cancelled = false;
  if (curl_multi_add_handle(handle->multi, curl) == CURLM_OK) {
    pool_->start(handle->multi);
    rc = run_transfer(handle->multi, pool_->cancelled, cancelled);
    pool_->finish(handle->multi);
    // Removing an unfinished transfer closes its connection rather than
    // returning it to the cache with unread bytes on it.
    curl_multi_remove_handle(handle->multi, curl);
  }
  curl_slist_free_all(headers);
  long code = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code);
  // Every answer gets its on_headers call, even one curl delivered without a
  // header block end (HTTP/0.9-like); its error wins over the body.
  if (rc == CURLE_OK && !t.status_known && !headers_done(&t, code)) rc = CURLE_WRITE_ERROR;
  pool_->give(*handle);

  if (cancelled) return std::unexpected(cancelled_error(request));
  if (t.header_error) return std::unexpected(*t.header_error);
  if (t.sink_error) return std::unexpected(*t.sink_error);
  if (t.body_error) return std::unexpected(*t.body_error);
  if (rc != CURLE_OK) return std::unexpected(transport_error(rc, errbuf, request));
  t.response.status = static_cast<int>(code);
  return std::move(t.response);
}

SimpleHttp HttpClient::as_simple_http() {
  return [this](const SimpleHttpRequest& r) -> Result<SimpleHttpResponse> {
    HttpRequest req;
    req.method = r.method;
    req.url = r.url;
    req.headers = r.headers;
    if (!r.body.empty() || r.method == "PUT" || r.method == "POST") {
      req.body = Body::from_memory(r.body);
    }
    auto resp = perform(req);
    if (!resp) return std::unexpected(resp.error());
    return SimpleHttpResponse{resp->status, std::move(resp->body)};
  };
}

}  // namespace nacre::s3
