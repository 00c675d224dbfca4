#include "s3/sigv4.h"

#include <algorithm>
#include <ctime>

#include "s3/crypto.h"

namespace nacre::s3 {

std::string amz_date(Clock::time_point t) {
  std::time_t tt = Clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[20];
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

// RFC 3986 section 5.2.4 plus collapsing empty segments, as the suite's
// "normalized" cases expect.
static std::string normalize(const std::string& path) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i <= path.size()) {
    size_t slash = path.find('/', i);
    if (slash == std::string::npos) slash = path.size();
    std::string seg = path.substr(i, slash - i);
    if (seg == "..") {
      if (!out.empty()) out.pop_back();
    } else if (!seg.empty() && seg != ".") {
      out.push_back(seg);
    }
    i = slash + 1;
  }
  std::string result;
  for (const auto& s : out) result += "/" + s;
  bool trailing = !path.empty() && path.back() == '/';
  bool dir_like = path.ends_with("/.") || path.ends_with("/..");
  if (result.empty() || trailing || dir_like) result += "/";
  return result;
}

std::string canonical_uri(const std::string& path, bool normalize_path) {
  if (path.empty()) return "/";
  return uri_encode(normalize_path ? normalize(path) : path, true);
}

static std::string trim_all(const std::string& v) {
  std::string out;
  bool space = false;
  for (char c : v) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      space = !out.empty();
      continue;
    }
    if (space) out.push_back(' ');
    space = false;
    out.push_back(c);
  }
  return out;
}

static std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

// Canonical headers and the SignedHeaders list.
static std::pair<std::string, std::string> canonical_headers(const Headers& headers) {
  std::vector<std::pair<std::string, std::string>> h;
  for (const auto& [k, v] : headers) h.emplace_back(lower(k), trim_all(v));
  std::stable_sort(h.begin(), h.end(), [](auto& a, auto& b) { return a.first < b.first; });
  std::string canon, signed_list;
  for (size_t i = 0; i < h.size(); ++i) {
    if (i > 0 && h[i].first == h[i - 1].first) {
      canon.pop_back();  // newline of the previous line
      canon += "," + h[i].second + "\n";
      continue;
    }
    canon += h[i].first + ":" + h[i].second + "\n";
    if (!signed_list.empty()) signed_list += ";";
    signed_list += h[i].first;
  }
  return {canon, signed_list};
}

std::string canonical_request(const SignableRequest& req, const SigningOptions& opt) {
  std::vector<std::pair<std::string, std::string>> q;
  for (const auto& [k, v] : req.query) q.emplace_back(uri_encode(k, false), uri_encode(v, false));
  std::sort(q.begin(), q.end());
  std::string query;
  for (const auto& [k, v] : q) {
    if (!query.empty()) query += "&";
    query += k + "=" + v;
  }
  auto [canon, signed_list] = canonical_headers(req.headers);
  return req.method + "\n" + canonical_uri(req.path, opt.normalize_path) + "\n" + query + "\n" +
         canon + "\n" + signed_list + "\n" + req.payload_hash;
}

std::string string_to_sign(const std::string& creq, const std::string& date,
                           const std::string& scope) {
  return "AWS4-HMAC-SHA256\n" + date + "\n" + scope + "\n" + sha256_hex(creq);
}

static std::string_view as_view(const Sha256Digest& d) {
  return {reinterpret_cast<const char*>(d.data()), d.size()};
}

std::string sign(SignableRequest& req, const Credentials& creds, const SigningOptions& opt,
                 Clock::time_point now) {
  std::string date = amz_date(now);
  std::string day = date.substr(0, 8);
  req.headers.emplace_back("X-Amz-Date", date);
  if (opt.add_content_sha256) req.headers.emplace_back("X-Amz-Content-Sha256", req.payload_hash);
  bool token = !creds.session_token.empty();
  if (token && opt.sign_session_token) {
    req.headers.emplace_back("X-Amz-Security-Token", creds.session_token);
  }
  std::string scope = day + "/" + opt.region + "/" + opt.service + "/aws4_request";
  std::string creq = canonical_request(req, opt);
  auto k_date = hmac_sha256("AWS4" + creds.secret_access_key, day);
  auto k_region = hmac_sha256(as_view(k_date), opt.region);
  auto k_service = hmac_sha256(as_view(k_region), opt.service);
  auto k_signing = hmac_sha256(as_view(k_service), "aws4_request");
  std::string signature = hex(hmac_sha256(as_view(k_signing), string_to_sign(creq, date, scope)));
  auto [canon, signed_list] = canonical_headers(req.headers);
  req.headers.emplace_back("Authorization", "AWS4-HMAC-SHA256 Credential=" + creds.access_key_id +
                                                "/" + scope + ", SignedHeaders=" + signed_list +
                                                ", Signature=" + signature);
  if (token && !opt.sign_session_token) {
    req.headers.emplace_back("X-Amz-Security-Token", creds.session_token);
  }
  return signature;
}

}  // namespace nacre::s3
