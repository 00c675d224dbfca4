#include "s3/s3_client.h"

#include <strings.h>

#include <charconv>
#include <limits>

#include "s3/crypto.h"
#include "s3/s3_xml.h"
#include "s3/sigv4.h"
#include "s3/uri.h"

namespace nacre::s3 {

struct S3Client::Call {
  std::string op;  // "GetObject", for messages
  std::string method;
  std::string bucket;
  std::string key;  // empty for bucket-level calls
  QueryParams query;
  Headers headers;
  Body body;
  bool sign_body = false;  // small XML bodies are signed; object data is not
  std::function<Status(const HttpResponse&)> on_headers = {};
};

namespace {

std::string object_url(const std::string& bucket, const std::string& key) {
  return "s3://" + bucket + "/" + key;
}

ErrorCode code_for(const std::string& s3_code, int status) {
  static const std::map<std::string, ErrorCode> kCodes = {
      {"NoSuchKey", ErrorCode::kNoSuchKey},
      {"NoSuchBucket", ErrorCode::kNoSuchBucket},
      {"NoSuchUpload", ErrorCode::kNoSuchUpload},
      {"AccessDenied", ErrorCode::kAccessDenied},
      {"InvalidAccessKeyId", ErrorCode::kInvalidCredentials},
      {"SignatureDoesNotMatch", ErrorCode::kInvalidCredentials},
      {"ExpiredToken", ErrorCode::kInvalidCredentials},
      {"InvalidToken", ErrorCode::kInvalidCredentials},
      {"PreconditionFailed", ErrorCode::kPreconditionFailed},
      {"InvalidRange", ErrorCode::kInvalidRange},
      {"SlowDown", ErrorCode::kThrottled},
      {"Throttling", ErrorCode::kThrottled},
      {"RequestTimeout", ErrorCode::kRequestTimeout},
      {"InternalError", ErrorCode::kServerError},
      {"ServiceUnavailable", ErrorCode::kThrottled},
      {"InvalidArgument", ErrorCode::kInvalidArgument},
      {"InvalidBucketName", ErrorCode::kInvalidArgument},
      {"KeyTooLongError", ErrorCode::kInvalidArgument},
  };
  if (auto it = kCodes.find(s3_code); it != kCodes.end()) return it->second;
  switch (status) {
    case 403:
      return ErrorCode::kAccessDenied;
    case 404:
      return ErrorCode::kNoSuchKey;
    case 412:
      return ErrorCode::kPreconditionFailed;
    case 416:
      return ErrorCode::kInvalidRange;
    case 503:
      return ErrorCode::kThrottled;
    default:
      return status >= 500 ? ErrorCode::kServerError : ErrorCode::kOther;
  }
}

Clock::time_point parse_http_date(const std::string& s) {
  std::tm tm{};
  if (!strptime(s.c_str(), "%a, %d %b %Y %H:%M:%S", &tm)) return {};
  return Clock::from_time_t(timegm(&tm));
}

ObjectInfo info_from_headers(const std::string& key, const HttpResponse& resp) {
  ObjectInfo info;
  info.key = key;
  info.etag = xml::strip_quotes(resp.header("etag"));
  info.last_modified = parse_http_date(resp.header("last-modified"));
  info.content_type = resp.header("content-type");
  std::string range = resp.header("content-range");  // bytes 0-99/12345
  if (size_t slash = range.rfind('/'); slash != std::string::npos) {
    info.size = std::strtoull(range.c_str() + slash + 1, nullptr, 10);
  } else {
    info.size = std::strtoull(resp.header("content-length").c_str(), nullptr, 10);
  }
  for (const auto& [k, v] : resp.headers) {
    if (k.starts_with("x-amz-meta-")) info.metadata[k.substr(11)] = v;
  }
  return info;
}

void add_metadata(Headers& h, const UserMetadata& meta, const std::string& content_type) {
  for (const auto& [k, v] : meta) h.emplace_back("x-amz-meta-" + k, v);
  if (!content_type.empty()) h.emplace_back("Content-Type", content_type);
}

bool is_aws_endpoint(const std::string& host) {
  return host.ends_with(".amazonaws.com") || host.ends_with(".amazonaws.com.cn");
}

// Bucket names that can be a DNS label under TLS (no dots, lower case).
bool virtual_host_compatible(const std::string& bucket) {
  if (bucket.size() < 3 || bucket.size() > 63) return false;
  for (char c : bucket) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return false;
  }
  return bucket.front() != '-' && bucket.back() != '-';
}

// The byte range a GetObject asked for: [first, last], last open when absent.
struct RangeAsked {
  uint64_t first = 0;
  std::optional<uint64_t> last;
  std::string header() const {
    return "bytes=" + std::to_string(first) + "-" + (last ? std::to_string(*last) : "");
  }
};

struct ContentRange {
  uint64_t first = 0, last = 0, total = 0;
};

bool parse_u64(std::string_view s, uint64_t& out) {
  if (s.empty()) return false;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size();
}

// "bytes FIRST-LAST/TOTAL" (RFC 9110 §14.4), nothing else: "*" in place of a
// number or a missing part would leave us unable to place the bytes.
std::optional<ContentRange> parse_content_range(std::string_view v) {
  if (v.size() < 6 || strncasecmp(v.data(), "bytes ", 6) != 0) return std::nullopt;
  v.remove_prefix(6);
  size_t dash = v.find('-'), slash = v.find('/');
  if (dash == std::string_view::npos || slash == std::string_view::npos || slash < dash) {
    return std::nullopt;
  }
  ContentRange r;
  if (!parse_u64(v.substr(0, dash), r.first) ||
      !parse_u64(v.substr(dash + 1, slash - dash - 1), r.last) ||
      !parse_u64(v.substr(slash + 1), r.total) || r.first > r.last || r.last >= r.total) {
    return std::nullopt;
  }
  return r;
}

// Whether a 2xx answer to a GetObject carries exactly the bytes asked for.
// `range` is the Range sent (none: the whole object), `if_match` the If-Match
// sent (empty: none), `earlier` what an earlier attempt's answer said (null
// on the first attempt).
// On success, `expected_bytes` is the body length the answer promises.
Status check_get_answer(const GetObjectRequest& req, const std::optional<RangeAsked>& range,
                        const std::string& if_match, const ObjectInfo* earlier,
                        const HttpResponse& r, uint64_t& expected_bytes) {
  std::string content_range = r.header("content-range");
  std::string etag = xml::strip_quotes(r.header("etag"));
  auto refuse = [&](const std::string& why) -> Status {
    std::string asked = range ? "Range " + range->header() : "the whole object";
    if (!if_match.empty()) asked += " with If-Match \"" + if_match + "\"";
    std::string got = "HTTP " + std::to_string(r.status) + ", Content-Range '" + content_range +
                      "', ETag '" + etag + "'";
    Error e{ErrorCode::kMalformedResponse,
            "GetObject " + object_url(req.bucket, req.key) + ": asked for " + asked +
                " but the server answered " + got + ": " + why + "; the body was not used",
            {},
            r.header("x-amz-request-id"),
            r.status};
    return std::unexpected(std::move(e));
  };
  expected_bytes = std::numeric_limits<uint64_t>::max();
  auto same_version = [&]() -> Status {
    if (!if_match.empty() && etag != if_match) return refuse("another version of the object");
    return {};
  };
  if (!range) {
    if (r.status != 200) return refuse("a GET without Range must be answered 200");
    return same_version();
  }
  if (r.status == 200 && range->first == 0) {
    // A server may ignore Range (RFC 9110). When the range asked starts at 0 and
    // the whole object lies inside it (a small config.json read as bytes=0-999),
    // the 200's body is exactly the bytes asked for: accept it, sized by its
    // Content-Length. Anything bigger would be bytes nobody asked for.
    uint64_t n = 0;
    std::string length = r.header("content-length");
    if (!length.empty() && parse_u64(length, n) && (!range->last || n <= *range->last + 1) &&
        (!earlier || n == earlier->size)) {
      if (auto st = same_version(); !st) return st;
      expected_bytes = n;
      return {};
    }
  }
  if (r.status != 206) {
    return refuse(r.status == 200 ? "the server ignored the Range (a 200 carries the object "
                                    "from byte 0)"
                                  : "a ranged GET must be answered 206");
  }
  auto cr = parse_content_range(content_range);
  if (!cr) return refuse("the Content-Range is missing or malformed");
  // S3 clamps a range that runs past the end to the last byte, and answers
  // bytes=N- with N..TOTAL-1; a range starting past the end is a 416.
  uint64_t want_last = range->last ? std::min(*range->last, cr->total - 1) : cr->total - 1;
  if (cr->first != range->first || cr->last != want_last) {
    return refuse("not the range asked for");
  }
  if (earlier && cr->total != earlier->size) {
    return refuse("the object size changed from " + std::to_string(earlier->size));
  }
  uint64_t bytes = cr->last - cr->first + 1;
  std::string length = r.header("content-length");
  uint64_t n = 0;
  if (!length.empty() && (!parse_u64(length, n) || n != bytes)) {
    return refuse("Content-Length " + length + " does not match the range");
  }
  if (auto st = same_version(); !st) return st;
  expected_bytes = bytes;
  return {};
}

std::string copy_source(const CopyObjectRequest& req) {
  return "/" + req.source_bucket + "/" + uri_encode(req.source_key, true);
}

}  // namespace

S3Config S3Config::from_environment(const CredentialsEnvironment& env) {
  S3Config c;
  c.endpoint = env.get("AWS_ENDPOINT_URL_S3");
  if (c.endpoint.empty()) c.endpoint = env.get("AWS_ENDPOINT_URL");
  std::string region = env.get("AWS_REGION");
  if (region.empty()) region = env.get("AWS_DEFAULT_REGION");
  if (!region.empty()) c.region = region;
  c.http.ca_bundle = env.get("AWS_CA_BUNDLE");
  return c;
}

Result<std::unique_ptr<S3Client>> S3Client::create(S3Config config) {
  return create(std::move(config), nullptr);
}

Result<std::unique_ptr<S3Client>> S3Client::create(
    S3Config config, std::unique_ptr<CredentialsProvider> credentials) {
  if (config.region.empty()) return fail(ErrorCode::kInvalidArgument, "no region given");
  std::string url =
      config.endpoint.empty() ? "https://s3." + config.region + ".amazonaws.com" : config.endpoint;
  Endpoint ep;
  size_t sep = url.find("://");
  if (sep == std::string::npos) {
    return fail(ErrorCode::kInvalidArgument,
                "endpoint URL '" + url + "' has no scheme (expected http:// or https://)");
  }
  ep.scheme = url.substr(0, sep);
  if (ep.scheme != "http" && ep.scheme != "https") {
    return fail(ErrorCode::kInvalidArgument,
                "endpoint URL '" + url + "': scheme must be http or https");
  }
  std::string rest = url.substr(sep + 3);
  size_t slash = rest.find('/');
  ep.host = rest.substr(0, slash);
  if (slash != std::string::npos) ep.base_path = rest.substr(slash);
  while (ep.base_path.ends_with('/')) ep.base_path.pop_back();
  if (ep.host.empty())
    return fail(ErrorCode::kInvalidArgument, "endpoint URL '" + url + "' has no host");
  if (config.addressing == Addressing::kAuto) {
    config.addressing = is_aws_endpoint(ep.host) ? Addressing::kVirtual : Addressing::kPath;
  }
  std::unique_ptr<S3Client> client(new S3Client(std::move(config), ep, std::move(credentials)));
  return client;
}

S3Client::S3Client(S3Config config, Endpoint endpoint, std::unique_ptr<CredentialsProvider> creds)
    : config_(std::move(config)), endpoint_(std::move(endpoint)) {
  http_ = std::make_unique<HttpClient>(config_.http);
  HttpOptions short_timeouts = config_.http;
  short_timeouts.connect_timeout = std::chrono::milliseconds(1000);
  short_timeouts.stall_timeout = std::chrono::seconds(5);
  credentials_http_ = std::make_unique<HttpClient>(short_timeouts);
  if (creds) {
    credentials_ = std::move(creds);
  } else if (config_.credentials) {
    credentials_ = make_static_provider(*config_.credentials);
  } else {
    credentials_ = make_default_chain(CredentialsEnvironment::from_environment(), config_.profile,
                                      credentials_http_->as_simple_http());
  }
}

S3Client::~S3Client() = default;

Error S3Client::error_from(const Call& call, const HttpResponse& resp) const {
  Error e;
  e.http_status = resp.status;
  e.request_id = resp.header("x-amz-request-id");
  std::string what = call.op + " " +
                     (call.key.empty() ? "s3://" + call.bucket : object_url(call.bucket, call.key));
  if (auto doc = xml::parse_error(resp.body)) {
    e.s3_code = doc->code;
    if (e.request_id.empty()) e.request_id = doc->request_id;
    e.code = code_for(doc->code, resp.status);
    std::string detail = doc->message;
    if (detail.empty()) {
      // RGW often leaves <Message> empty: say what the code means.
      static const std::map<std::string, std::string> kMeaning = {
          {"SignatureDoesNotMatch",
           "the signature does not match: check the secret key and region"},
          {"InvalidAccessKeyId", "the access key id is unknown to the server"},
          {"NoSuchBucket", "the bucket does not exist"},
          {"NoSuchKey", "the object does not exist"},
          {"AccessDenied", "access denied"},
          {"NoSuchUpload", "the multipart upload does not exist (completed or aborted)"},
      };
      if (auto it = kMeaning.find(doc->code); it != kMeaning.end()) detail = it->second;
    }
    e.message = what + (detail.empty() ? "" : ": " + detail);
  } else {
    e.code = code_for("", resp.status);
    // HEAD answers carry no body: say what the status means for this call.
    if (resp.status == 404)
      e.message = what + ": not found (no such key or bucket)";
    else if (resp.status == 403)
      e.message = what + ": access denied (check the credentials)";
    else if (!resp.body.empty() && resp.status < 500)
      e.message = what + ": unexpected answer: " + resp.body.substr(0, 200);
    else
      e.message = what + ": HTTP " + std::to_string(resp.status);
  }
  return e;
}

Error S3Client::cancelled_error(const Call& call) const {
  return Error{ErrorCode::kCancelled,
               call.op + " " +
                   (call.key.empty() ? "s3://" + call.bucket : object_url(call.bucket, call.key)) +
                   ": cancelled (the client is shutting down)",
               {},
               {},
               0};
}

void S3Client::cancel_all() {
  {
    // The flag is set under the lock the back-off waits on, so no waiter can
    // miss the notification between its check and its wait.
    std::lock_guard lock(cancel_mu_);
    cancelled_ = true;
  }
  cancel_cv_.notify_all();
  http_->cancel_all();
  credentials_http_->cancel_all();
}

bool S3Client::backoff_unless_cancelled(std::chrono::milliseconds delay) {
  std::unique_lock lock(cancel_mu_);
  return !cancel_cv_.wait_for(lock, delay, [this] { return cancelled_.load(); });
}

Result<HttpResponse> S3Client::send_once(const Call& call, const DataSink* sink) {
  if (cancelled_) return std::unexpected(cancelled_error(call));
  auto creds = credentials_->get();
  if (!creds) {
    // A credential endpoint interrupted by cancel_all() fails in its own way.
    if (cancelled_) return std::unexpected(cancelled_error(call));
    return std::unexpected(creds.error());
  }

  SignableRequest sreq;
  sreq.method = call.method;
  std::string host = endpoint_.host;
  std::string path = endpoint_.base_path;
  if (config_.addressing == Addressing::kVirtual && virtual_host_compatible(call.bucket)) {
    host = call.bucket + "." + host;
    path += "/" + call.key;
  } else {
    path += "/" + call.bucket;
    if (!call.key.empty()) path += "/" + call.key;
  }
  sreq.path = path;
  sreq.query = call.query;
  sreq.headers = call.headers;
  sreq.headers.emplace_back("Host", host);
  if (call.sign_body && call.body.kind == Body::Kind::kMemory) {
    sreq.payload_hash = sha256_hex(call.body.memory);
  } else if (call.body.kind != Body::Kind::kEmpty) {
    sreq.payload_hash = kUnsignedPayload;
  }
  SigningOptions opt;
  opt.region = config_.region;
  sign(sreq, *creds, opt, Clock::now());

  HttpRequest req;
  req.method = call.method;
  req.url = endpoint_.scheme + "://" + host + uri_encode(path, true);
  if (!call.query.empty()) {
    // Sub-resources like ?uploads carry no '='; S3 accepts "uploads=" too.
    req.url += "?" + build_query(call.query);
  }
  req.headers = std::move(sreq.headers);
  req.body = call.body;
  req.on_headers = call.on_headers;
  auto resp = sink ? http_->perform(req, *sink) : http_->perform(req);
  if (!resp) {
    if (cancelled_) return std::unexpected(cancelled_error(call));
    Error e = resp.error();
    if (e.code == ErrorCode::kNetwork || e.code == ErrorCode::kRequestTimeout) {
      e.message = call.op + " " + object_url(call.bucket, call.key) + ": " + e.message;
    }
    return std::unexpected(e);
  }
  if (resp->status >= 300) return std::unexpected(error_from(call, *resp));
  return resp;
}

Result<HttpResponse> S3Client::send(const Call& call) {
  for (int attempt = 1;; ++attempt) {
    auto resp = send_once(call, nullptr);
    if (resp) return resp;
    bool last = attempt >= config_.retry.max_attempts;
    // A stream body may be half consumed: replaying it would send other bytes.
    if (last || !resp.error().retryable() || !call.body.replayable()) {
      if (attempt > 1) resp.error().message += " (after " + std::to_string(attempt) + " attempts)";
      return resp;
    }
    if (!backoff_unless_cancelled(config_.retry.backoff(attempt))) {
      return std::unexpected(cancelled_error(call));
    }
  }
}

Result<ObjectInfo> S3Client::head_object(const std::string& bucket, const std::string& key) {
  auto resp = send({"HeadObject", "HEAD", bucket, key, {}, {}, Body::empty(), false});
  if (!resp) return std::unexpected(resp.error());
  return info_from_headers(key, *resp);
}

Result<GetObjectResult> S3Client::get_object(const GetObjectRequest& req, const DataSink& sink) {
  std::optional<ObjectInfo> info;  // from the first response that was accepted
  std::string if_match = req.if_match;
  uint64_t delivered = 0;      // over all attempts
  uint64_t attempt_bytes = 0;  // in this attempt
  uint64_t attempt_limit = 0;  // what this attempt's answer promised
  DataSink counting = [&](std::string_view chunk) -> Status {
    // A chunked answer is not bounded by Content-Length: never let it run
    // past the range it announced.
    if (chunk.size() > attempt_limit - attempt_bytes) {
      return fail(ErrorCode::kMalformedResponse,
                  "GetObject " + object_url(req.bucket, req.key) +
                      ": the server sent more bytes than its Content-Range announced");
    }
    auto st = sink(chunk);
    if (st) {
      delivered += chunk.size();
      attempt_bytes += chunk.size();
    }
    return st;
  };
  if (req.length && *req.length == 0) {
    // "bytes=N-(N-1)" would wrap around; an empty range has nothing to ask for.
    return fail(ErrorCode::kInvalidArgument,
                "GetObject " + object_url(req.bucket, req.key) + ": an empty range");
  }
  for (int attempt = 1;; ++attempt) {
    uint64_t offset = req.offset + delivered;
    Call call{"GetObject", "GET", req.bucket, req.key, {}, {}, Body::empty(), false};
    std::optional<RangeAsked> range;
    if (offset > 0 || req.length) {
      range = RangeAsked{offset, std::nullopt};
      if (req.length) range->last = req.offset + *req.length - 1;
      call.headers.emplace_back("Range", range->header());
    }
    // A resumed transfer pins the version the first bytes came from, so a
    // retry can never splice two versions of the object.
    std::string sent_if_match = if_match;
    if (!sent_if_match.empty()) call.headers.emplace_back("If-Match", "\"" + sent_if_match + "\"");
    attempt_bytes = 0;
    attempt_limit = 0;  // nothing reaches the sink before the answer is checked
    bool checked = false;
    call.on_headers = [&](const HttpResponse& r) -> Status {
      if (r.status >= 300) return {};  // an error document: kept, never streamed
      const ObjectInfo* earlier = info ? &*info : nullptr;
      auto ok = check_get_answer(req, range, sent_if_match, earlier, r, attempt_limit);
      if (!ok) return ok;
      checked = true;
      if (!info) {
        info = info_from_headers(req.key, r);
        if (if_match.empty()) if_match = info->etag;
      }
      return {};
    };
    auto resp = send_once(call, &counting);
    if (resp && !checked) {
      // HttpClient calls on_headers for every answer; this is a safeguard.
      return fail(ErrorCode::kMalformedResponse,
                  "GetObject " + object_url(req.bucket, req.key) + ": the answer was not checked");
    }
    if (resp && attempt_limit != std::numeric_limits<uint64_t>::max() &&
        attempt_bytes != attempt_limit) {
      resp = std::unexpected(Error{ErrorCode::kMalformedResponse,
                                   "GetObject " + object_url(req.bucket, req.key) + ": got " +
                                       std::to_string(attempt_bytes) + " of the " +
                                       std::to_string(attempt_limit) +
                                       " bytes the Content-Range announced",
                                   {},
                                   resp->header("x-amz-request-id"),
                                   resp->status});
    }
    if (resp) return GetObjectResult{std::move(*info), delivered};
    if (info && req.length && delivered == *req.length) {
      // Everything asked for arrived before the failure (e.g. the connection broke
      // after the last byte): a retry would ask for an empty range.
      return GetObjectResult{std::move(*info), delivered};
    }
    Error& e = resp.error();
    if (e.code == ErrorCode::kPreconditionFailed) {
      e.message = "GetObject " + object_url(req.bucket, req.key) + ": the object changed (ETag " +
                  if_match + " no longer matches)";
    }
    if (attempt >= config_.retry.max_attempts || !e.retryable()) {
      if (attempt > 1) e.message += " (after " + std::to_string(attempt) + " attempts)";
      return std::unexpected(e);
    }
    if (!backoff_unless_cancelled(config_.retry.backoff(attempt))) {
      return std::unexpected(cancelled_error(call));
    }
  }
}

Result<std::string> S3Client::put_object(const PutObjectRequest& req) {
  Call call{"PutObject", "PUT", req.bucket, req.key, {}, {}, req.body, false};
  add_metadata(call.headers, req.metadata, req.content_type);
  auto resp = send(call);
  if (!resp) return std::unexpected(resp.error());
  return xml::strip_quotes(resp->header("etag"));
}

Result<ListPage> S3Client::list_objects(const ListRequest& req) {
  Call call{"ListObjectsV2", "GET", req.bucket, "", {}, {}, Body::empty(), false};
  // No encoding-type=url: AWS encodes a space as '+' there while RGW leaves a
  // literal '+' alone, so the decoded keys would be ambiguous. Plain XML text
  // (pugixml is not a validating parser) carries every key both stores take.
  call.query = {
      {"list-type", "2"}, {"max-keys", std::to_string(req.max_keys)}, {"prefix", req.prefix}};
  if (!req.delimiter.empty()) call.query.emplace_back("delimiter", req.delimiter);
  if (!req.continuation_token.empty()) {
    call.query.emplace_back("continuation-token", req.continuation_token);
  }
  if (!req.start_after.empty()) call.query.emplace_back("start-after", req.start_after);
  auto resp = send(call);
  if (!resp) return std::unexpected(resp.error());
  auto page = xml::parse_list(resp->body);
  if (!page) {
    page.error().message =
        "ListObjectsV2 s3://" + req.bucket + "/" + req.prefix + ": " + page.error().message;
    page.error().request_id = resp->header("x-amz-request-id");
  }
  return page;
}

Status S3Client::delete_object(const std::string& bucket, const std::string& key) {
  auto resp = send({"DeleteObject", "DELETE", bucket, key, {}, {}, Body::empty(), false});
  if (!resp) return std::unexpected(resp.error());
  return {};
}

Result<std::vector<DeleteFailure>> S3Client::delete_objects(const std::string& bucket,
                                                            const std::vector<std::string>& keys) {
  if (keys.empty()) return std::vector<DeleteFailure>{};
  if (keys.size() > 1000)
    return fail(ErrorCode::kInvalidArgument, "DeleteObjects takes ≤ 1000 keys");
  std::string body = xml::delete_objects_body(keys);
  Call call{"DeleteObjects",         "POST", bucket, "", {{"delete", ""}}, {},
            Body::from_memory(body), true};
  call.headers.emplace_back("Content-MD5", content_md5(body));
  call.headers.emplace_back("Content-Type", "application/xml");
  auto resp = send(call);
  if (!resp) return std::unexpected(resp.error());
  return xml::parse_delete_result(resp->body);
}

Result<std::string> S3Client::copy_object(const CopyObjectRequest& req) {
  Call call{"CopyObject", "PUT", req.bucket, req.key, {}, {}, Body::empty(), false};
  call.headers.emplace_back("x-amz-copy-source", copy_source(req));
  if (!req.source_if_match.empty()) {
    call.headers.emplace_back("x-amz-copy-source-if-match", "\"" + req.source_if_match + "\"");
  }
  if (req.replace_metadata) {
    call.headers.emplace_back("x-amz-metadata-directive", "REPLACE");
    add_metadata(call.headers, *req.replace_metadata, req.content_type);
  }
  auto resp = send(call);
  if (!resp) return std::unexpected(resp.error());
  // S3 may answer 200 and put the error in the body of a long copy.
  if (auto err = xml::parse_error(resp->body)) {
    HttpResponse failed = *resp;
    failed.status = 500;
    return std::unexpected(error_from(call, failed));
  }
  return xml::parse_etag(resp->body, "CopyObjectResult");
}

Result<std::string> S3Client::create_multipart_upload(const std::string& bucket,
                                                      const std::string& key,
                                                      const UserMetadata& metadata,
                                                      const std::string& content_type) {
  Call call{"CreateMultipartUpload", "POST", bucket,        key,
            {{"uploads", ""}},       {},     Body::empty(), false};
  add_metadata(call.headers, metadata, content_type);
  auto resp = send(call);
  if (!resp) return std::unexpected(resp.error());
  return xml::parse_upload_id(resp->body);
}

Result<std::string> S3Client::upload_part(const std::string& bucket, const std::string& key,
                                          const std::string& upload_id, int part_number,
                                          const Body& body) {
  Call call{"UploadPart",
            "PUT",
            bucket,
            key,
            {{"partNumber", std::to_string(part_number)}, {"uploadId", upload_id}},
            {},
            body,
            false};
  auto resp = send(call);
  if (!resp) return std::unexpected(resp.error());
  std::string etag = xml::strip_quotes(resp->header("etag"));
  if (etag.empty()) return fail(ErrorCode::kMalformedResponse, "UploadPart answer has no ETag");
  return etag;
}

Result<std::string> S3Client::upload_part_copy(const CopyObjectRequest& source,
                                               const std::string& upload_id, int part_number,
                                               uint64_t offset, uint64_t length) {
  Call call{"UploadPartCopy",
            "PUT",
            source.bucket,
            source.key,
            {{"partNumber", std::to_string(part_number)}, {"uploadId", upload_id}},
            {},
            Body::empty(),
            false};
  call.headers.emplace_back("x-amz-copy-source", copy_source(source));
  call.headers.emplace_back("x-amz-copy-source-range", "bytes=" + std::to_string(offset) + "-" +
                                                           std::to_string(offset + length - 1));
  if (!source.source_if_match.empty()) {
    call.headers.emplace_back("x-amz-copy-source-if-match", "\"" + source.source_if_match + "\"");
  }
  auto resp = send(call);
  if (!resp) return std::unexpected(resp.error());
  return xml::parse_etag(resp->body, "CopyPartResult");
}

Result<std::string> S3Client::complete_multipart_upload(const std::string& bucket,
                                                        const std::string& key,
                                                        const std::string& upload_id,
                                                        const std::vector<CompletedPart>& parts) {
  std::string body = xml::complete_multipart_body(parts);
  Call call{"CompleteMultipartUpload", "POST", bucket, key, {{"uploadId", upload_id}}, {},
            Body::from_memory(body),   true};
  call.headers.emplace_back("Content-Type", "application/xml");
  auto resp = send(call);
  if (!resp) return std::unexpected(resp.error());
  if (xml::parse_error(resp->body)) {
    HttpResponse failed = *resp;
    failed.status = 500;
    return std::unexpected(error_from(call, failed));
  }
  auto etag = xml::parse_etag(resp->body, "CompleteMultipartUploadResult");
  if (!etag && !resp->body.empty() && resp->body.find("<ETag></ETag>") != std::string::npos) {
    // Ceph RGW 16 answers <ETag></ETag>; the object's HEAD has the real one.
    auto info = head_object(bucket, key);
    if (!info) return std::unexpected(info.error());
    return info->etag;
  }
  return etag;
}

Status S3Client::abort_multipart_upload(const std::string& bucket, const std::string& key,
                                        const std::string& upload_id) {
  auto resp = send({"AbortMultipartUpload",
                    "DELETE",
                    bucket,
                    key,
                    {{"uploadId", upload_id}},
                    {},
                    Body::empty(),
                    false});
  if (!resp) return std::unexpected(resp.error());
  return {};
}

Result<UploadsPage> S3Client::list_multipart_uploads(const std::string& bucket,
                                                     const std::string& prefix,
                                                     const std::string& key_marker,
                                                     const std::string& upload_id_marker) {
  Call call{"ListMultipartUploads", "GET", bucket, "", {{"uploads", ""}}, {}, Body::empty(), false};
  // No encoding-type=url, for the reason list_objects gives.
  call.query.emplace_back("prefix", prefix);
  if (!key_marker.empty()) call.query.emplace_back("key-marker", key_marker);
  if (!upload_id_marker.empty()) call.query.emplace_back("upload-id-marker", upload_id_marker);
  auto resp = send(call);
  if (!resp) return std::unexpected(resp.error());
  auto page = xml::parse_uploads(resp->body);
  if (!page) {
    page.error().message =
        "ListMultipartUploads s3://" + bucket + "/" + prefix + ": " + page.error().message;
    page.error().request_id = resp->header("x-amz-request-id");
  }
  return page;
}

}  // namespace nacre::s3
