#include "s3/http.h"

#include <curl/curl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <mutex>
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
  bool status_known = false;
  bool to_sink = false;
};

size_t on_header(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  std::string_view line(data, size * n);
  if (line.starts_with("HTTP/")) {
    t->response.headers.clear();  // a new status line (e.g. after 100 Continue)
    return size * n;
  }
  size_t colon = line.find(':');
  if (colon == std::string_view::npos) return size * n;
  std::string name(line.substr(0, colon));
  std::transform(name.begin(), name.end(), name.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  std::string_view value = line.substr(colon + 1);
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == '\r' || value.back() == '\n' || value.back() == ' '))
    value.remove_suffix(1);
  t->response.headers[name] = std::string(value);
  return size * n;
}

size_t on_write(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  size_t len = size * n;
  if (!t->status_known) {
    long code = 0;
    curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &code);
    t->response.status = static_cast<int>(code);
    t->to_sink = *t->sink && code >= 200 && code < 300;
    t->status_known = true;
    if (t->request->on_headers) t->request->on_headers(t->response);
  }
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
}

size_t on_read(char* buf, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
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
        t->body_error = got ? Error{ErrorCode::kIo, "upload stream ended early", {}, {}, 0}
                            : got.error();
        return CURL_READFUNC_ABORT;
      }
      want = *got;
      break;
    }
  }
  t->body_sent += want;
  return want;
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

struct HttpClient::Pool {
  std::mutex mu;
  std::vector<CURL*> idle;  // GUARDED_BY(mu); most recently used last
  ~Pool() {
    for (CURL* c : idle) curl_easy_cleanup(c);
  }
  CURL* take() {
    {
      std::lock_guard lock(mu);
      if (!idle.empty()) {
        CURL* c = idle.back();
        idle.pop_back();
        return c;
      }
    }
    return curl_easy_init();
  }
  void give(CURL* c) {
    std::lock_guard lock(mu);
    idle.push_back(c);
  }
};

HttpClient::HttpClient(HttpOptions options)
    : options_(std::move(options)), pool_(std::make_unique<Pool>()) {
  std::call_once(g_curl_init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

HttpClient::~HttpClient() = default;

Result<HttpResponse> HttpClient::perform(const HttpRequest& request, const DataSink& sink) {
  CURL* curl = pool_->take();
  if (!curl) return fail(ErrorCode::kNetwork, "curl_easy_init failed");
  // reset keeps the handle's connection cache, which is the point of pooling.
  curl_easy_reset(curl);

  Transfer t{&request, &sink, curl, {}, 0, {}, {}, false, false};
  char errbuf[CURL_ERROR_SIZE] = {0};
  curl_easy_setopt(curl, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_PATH_AS_IS, 1L);  // S3 keys may hold "//" and "/./"
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS,
                   static_cast<long>(options_.connect_timeout.count()));
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, static_cast<long>(options_.stall_timeout.count()));
  curl_easy_setopt(curl, CURLOPT_BUFFERSIZE, static_cast<long>(options_.receive_buffer));
  curl_easy_setopt(curl, CURLOPT_TCP_KEEPALIVE, 1L);
  if (!options_.ca_bundle.empty()) curl_easy_setopt(curl, CURLOPT_CAINFO, options_.ca_bundle.c_str());
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

  CURLcode rc = curl_easy_perform(curl);
  curl_slist_free_all(headers);
  long code = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code);
  pool_->give(curl);

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
