#include "s3/credentials.h"

#include <arpa/inet.h>
#include <strings.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <nlohmann/json.hpp>
#include <pugixml.hpp>
#include <sstream>

#include "s3/uri.h"

extern char** environ;

namespace nacre::s3 {

namespace {

Result<Credentials> not_applicable(std::string why) {
  return fail(ErrorCode::kCredentialsUnavailable, std::move(why));
}

std::string trim(std::string s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  size_t e = s.find_last_not_of(" \t\r\n");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

std::optional<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The AWS shared-file INI dialect: [section], key = value, '#' and ';'
// comments. Written by hand: no Debian -dev package parses it, and the subset
// is small.
using IniFile = std::map<std::string, std::map<std::string, std::string>>;
IniFile parse_ini(const std::string& text) {
  IniFile out;
  std::istringstream in(text);
  std::string line, section;
  while (std::getline(in, line)) {
    line = trim(line);
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    if (line.front() == '[' && line.back() == ']') {
      section = trim(line.substr(1, line.size() - 2));
      continue;
    }
    size_t eq = line.find('=');
    if (eq == std::string::npos || section.empty()) continue;
    out[section][trim(line.substr(0, eq))] = trim(line.substr(eq + 1));
  }
  return out;
}

class StaticProvider : public CredentialsProvider {
 public:
  explicit StaticProvider(Credentials c) : c_(std::move(c)) {}
  Result<Credentials> get() override { return c_; }

 private:
  Credentials c_;
};

class EnvironmentProvider : public CredentialsProvider {
 public:
  explicit EnvironmentProvider(CredentialsEnvironment env) : env_(std::move(env)) {}
  Result<Credentials> get() override {
    std::string id = env_.get("AWS_ACCESS_KEY_ID"), secret = env_.get("AWS_SECRET_ACCESS_KEY");
    if (id.empty() && secret.empty()) return not_applicable("AWS_ACCESS_KEY_ID is not set");
    if (id.empty() || secret.empty()) {
      return fail(ErrorCode::kInvalidCredentials,
                  "only one of AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY is set");
    }
    return Credentials{id, secret, env_.get("AWS_SESSION_TOKEN"), std::nullopt, "environment"};
  }

 private:
  CredentialsEnvironment env_;
};

class ProfileProvider : public CredentialsProvider {
 public:
  ProfileProvider(CredentialsEnvironment env, std::string profile)
      : env_(std::move(env)), profile_(std::move(profile)) {}
  Result<Credentials> get() override {
    std::string profile = !profile_.empty() ? profile_ : env_.get("AWS_PROFILE");
    bool explicit_profile = !profile.empty();
    if (profile.empty()) profile = "default";
    std::string creds_path = env_.get("AWS_SHARED_CREDENTIALS_FILE");
    if (creds_path.empty()) creds_path = env_.home + "/.aws/credentials";
    std::string config_path = env_.get("AWS_CONFIG_FILE");
    if (config_path.empty()) config_path = env_.home + "/.aws/config";

    std::map<std::string, std::string> values;
    if (auto text = read_file(config_path)) {
      IniFile ini = parse_ini(*text);
      std::string section = profile == "default" ? "default" : "profile " + profile;
      if (ini.contains(section)) values = ini[section];
    }
    if (auto text = read_file(creds_path)) {
      IniFile ini = parse_ini(*text);
      if (ini.contains(profile)) {
        for (auto& [k, v] : ini[profile]) values[k] = v;  // credentials file wins
      }
    }
    std::string id = values["aws_access_key_id"], secret = values["aws_secret_access_key"];
    if (id.empty() || secret.empty()) {
      std::string why = "profile '" + profile +
                        "' has no aws_access_key_id/aws_secret_access_key in " + creds_path +
                        " or " + config_path;
      // A profile the user named must exist; the implicit default may not.
      if (explicit_profile) return fail(ErrorCode::kInvalidCredentials, why);
      return not_applicable(why);
    }
    return Credentials{id, secret, values["aws_session_token"], std::nullopt, "profile " + profile};
  }

 private:
  CredentialsEnvironment env_;
  std::string profile_;
};

std::string xml_text(const pugi::xml_node& n, const char* name) {
  return n.child(name).text().as_string();
}

class WebIdentityProvider : public CredentialsProvider {
 public:
  WebIdentityProvider(CredentialsEnvironment env, SimpleHttp http)
      : env_(std::move(env)), http_(std::move(http)) {}
  Result<Credentials> get() override {
    std::string token_file = env_.get("AWS_WEB_IDENTITY_TOKEN_FILE");
    std::string role = env_.get("AWS_ROLE_ARN");
    if (token_file.empty() || role.empty()) {
      return not_applicable("AWS_WEB_IDENTITY_TOKEN_FILE or AWS_ROLE_ARN is not set");
    }
    auto token = read_file(token_file);
    if (!token) return fail(ErrorCode::kInvalidCredentials, "cannot read " + token_file);
    std::string session = env_.get("AWS_ROLE_SESSION_NAME");
    if (session.empty()) session = "nacre-" + std::to_string(std::time(nullptr));
    std::string endpoint = env_.get("AWS_ENDPOINT_URL_STS");
    if (endpoint.empty()) {
      std::string region = env_.get("AWS_REGION");
      if (region.empty()) region = env_.get("AWS_DEFAULT_REGION");
      endpoint =
          region.empty() ? "https://sts.amazonaws.com" : "https://sts." + region + ".amazonaws.com";
    }
    QueryParams form{{"Action", "AssumeRoleWithWebIdentity"},
                     {"Version", "2011-06-15"},
                     {"RoleArn", role},
                     {"RoleSessionName", session},
                     {"WebIdentityToken", trim(*token)}};
    SimpleHttpRequest req{"POST",
                          endpoint + "/",
                          {{"Content-Type", "application/x-www-form-urlencoded"}},
                          build_query(form)};
    auto resp = http_(req);
    if (!resp) return std::unexpected(resp.error());
    pugi::xml_document doc;
    bool parsed = doc.load_buffer(resp->body.data(), resp->body.size());
    if (resp->status != 200) {
      std::string msg = parsed ? xml_text(doc.child("ErrorResponse").child("Error"), "Message")
                               : resp->body.substr(0, 200);
      return fail(ErrorCode::kInvalidCredentials, "STS AssumeRoleWithWebIdentity at " + endpoint +
                                                      " failed with HTTP " +
                                                      std::to_string(resp->status) + ": " + msg);
    }
    auto c = doc.child("AssumeRoleWithWebIdentityResponse")
                 .child("AssumeRoleWithWebIdentityResult")
                 .child("Credentials");
    Credentials out{xml_text(c, "AccessKeyId"), xml_text(c, "SecretAccessKey"),
                    xml_text(c, "SessionToken"), parse_iso8601(xml_text(c, "Expiration")),
                    "web identity (" + role + ")"};
    if (!parsed || out.access_key_id.empty() || out.secret_access_key.empty()) {
      return fail(ErrorCode::kMalformedResponse,
                  "STS AssumeRoleWithWebIdentity answer has no credentials");
    }
    return out;
  }

 private:
  CredentialsEnvironment env_;
  SimpleHttp http_;
};

Result<Credentials> parse_json_credentials(const std::string& body, const std::string& source) {
  auto j = nlohmann::json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return fail(ErrorCode::kMalformedResponse, source + " answered with invalid JSON");
  }
  Credentials c{j.value("AccessKeyId", ""), j.value("SecretAccessKey", ""), j.value("Token", ""),
                parse_iso8601(j.value("Expiration", "")), source};
  if (c.access_key_id.empty() || c.secret_access_key.empty()) {
    return fail(ErrorCode::kMalformedResponse,
                source + " answer has no AccessKeyId/SecretAccessKey");
  }
  return c;
}

// Plain-http hosts the AWS SDKs let the container provider talk to: the
// loopback (a sidecar agent) and the ECS and EKS Pod Identity agents'
// link-local addresses. Literal matches only: no DNS lookup, so a name can
// never resolve somewhere else later.
bool allowed_plain_http_host(std::string host) {
  std::transform(host.begin(), host.end(), host.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  if (host == "localhost") return true;
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    in6_addr a{}, b{};
    if (inet_pton(AF_INET6, host.substr(1, host.size() - 2).c_str(), &a) != 1) return false;
    for (const char* ok : {"::1", "fd00:ec2::23"}) {
      if (inet_pton(AF_INET6, ok, &b) == 1 && std::memcmp(&a, &b, sizeof a) == 0) return true;
    }
    return false;
  }
  in_addr v4{};
  // inet_pton takes only the dotted-quad form: "127.0.0.1.evil.com" and
  // "0x7f000001" are not addresses.
  if (inet_pton(AF_INET, host.c_str(), &v4) != 1) return false;
  uint32_t ip = ntohl(v4.s_addr);
  return (ip >> 24) == 127 || host == "169.254.170.2" || host == "169.254.170.23";
}

// Whether the credentials may be fetched from `url`: https to any host, plain
// http only to the hosts above (credentials and the authorization token would
// otherwise cross the network in clear text, to wherever an environment
// variable points). The authority must be exactly HOST or HOST:PORT, so no
// user-info, backslash or other trick can make curl see another host.
Status check_container_url(const std::string& url) {
  auto refuse = [&](const std::string& why) -> Status {
    return fail(ErrorCode::kInvalidArgument,
                "container credentials URI '" + url + "' refused: " + why +
                    " (set AWS_CONTAINER_CREDENTIALS_FULL_URI to an https:// URL, or http:// to "
                    "127.0.0.0/8, localhost, [::1], 169.254.170.2, 169.254.170.23 or "
                    "[fd00:ec2::23])");
  };
  size_t sep = url.find("://");
  if (sep == std::string::npos) return refuse("it is not an http:// or https:// URL");
  std::string scheme = url.substr(0, sep);
  if (strcasecmp(scheme.c_str(), "https") == 0) return {};
  if (strcasecmp(scheme.c_str(), "http") != 0) return refuse("the scheme must be http or https");
  std::string authority = url.substr(sep + 3, url.find_first_of("/?#", sep + 3) - (sep + 3));
  std::string host = authority, port;
  if (!authority.empty() && authority.front() == '[') {
    size_t close = authority.find(']');
    if (close == std::string::npos) return refuse("the host is malformed");
    host = authority.substr(0, close + 1);
    std::string rest = authority.substr(close + 1);
    if (!rest.empty() && rest.front() != ':') return refuse("the host is malformed");
    if (!rest.empty()) port = rest.substr(1);
  } else if (size_t colon = authority.rfind(':'); colon != std::string::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
  }
  bool port_ok = std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (!port_ok || !allowed_plain_http_host(host)) {
    return refuse("plain http is allowed only to the loopback or the ECS/EKS credential agents");
  }
  return {};
}

class ContainerProvider : public CredentialsProvider {
 public:
  ContainerProvider(CredentialsEnvironment env, SimpleHttp http)
      : env_(std::move(env)), http_(std::move(http)) {}
  Result<Credentials> get() override {
    std::string url = env_.get("AWS_CONTAINER_CREDENTIALS_FULL_URI");
    std::string relative = env_.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
    if (url.empty() && !relative.empty()) url = "http://169.254.170.2" + relative;
    if (url.empty()) return not_applicable("AWS_CONTAINER_CREDENTIALS_FULL_URI is not set");
    // Checked for the relative form too: "@host/..." would move it elsewhere.
    // Not kCredentialsUnavailable: the chain must stop and say so rather than
    // quietly fall through to another source of credentials.
    if (auto ok = check_container_url(url); !ok) return std::unexpected(ok.error());
    SimpleHttpRequest req{"GET", url, {}, ""};
    std::string token = env_.get("AWS_CONTAINER_AUTHORIZATION_TOKEN");
    std::string token_file = env_.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
    if (!token_file.empty()) {
      auto t = read_file(token_file);
      if (!t) return fail(ErrorCode::kInvalidCredentials, "cannot read " + token_file);
      token = trim(*t);
    }
    if (!token.empty()) req.headers.emplace_back("Authorization", token);
    auto resp = http_(req);
    if (!resp) return std::unexpected(resp.error());
    if (resp->status != 200) {
      return fail(ErrorCode::kInvalidCredentials, "container credentials endpoint " + url +
                                                      " answered HTTP " +
                                                      std::to_string(resp->status));
    }
    return parse_json_credentials(resp->body, "container credentials (" + url + ")");
  }

 private:
  CredentialsEnvironment env_;
  SimpleHttp http_;
};

class ImdsProvider : public CredentialsProvider {
 public:
  ImdsProvider(CredentialsEnvironment env, SimpleHttp http)
      : env_(std::move(env)), http_(std::move(http)) {}
  Result<Credentials> get() override {
    if (env_.get("AWS_EC2_METADATA_DISABLED") == "true") {
      return not_applicable("AWS_EC2_METADATA_DISABLED is true");
    }
    std::string base = env_.get("AWS_EC2_METADATA_SERVICE_ENDPOINT");
    if (base.empty()) base = "http://169.254.169.254";
    while (base.ends_with('/')) base.pop_back();
    auto token = http_({"PUT",
                        base + "/latest/api/token",
                        {{"X-aws-ec2-metadata-token-ttl-seconds", "21600"}},
                        ""});
    // Off EC2 the address does not answer: the chain just ends here.
    if (!token) return not_applicable("no instance metadata service at " + base);
    if (token->status != 200) {
      return not_applicable("IMDSv2 token request answered HTTP " + std::to_string(token->status));
    }
    Headers auth{{"X-aws-ec2-metadata-token", trim(token->body)}};
    std::string path = base + "/latest/meta-data/iam/security-credentials/";
    auto role = http_({"GET", path, auth, ""});
    if (!role || role->status != 200 || trim(role->body).empty()) {
      return not_applicable("the instance has no IAM role");
    }
    std::string name = trim(role->body);
    name = name.substr(0, name.find('\n'));
    auto creds = http_({"GET", path + name, auth, ""});
    if (!creds) return std::unexpected(creds.error());
    if (creds->status != 200) {
      return fail(
          ErrorCode::kInvalidCredentials,
          "IMDS credentials for role " + name + " answered HTTP " + std::to_string(creds->status));
    }
    return parse_json_credentials(creds->body, "instance metadata (role " + name + ")");
  }

 private:
  using Headers = std::vector<std::pair<std::string, std::string>>;
  CredentialsEnvironment env_;
  SimpleHttp http_;
};

class CachingProvider : public CredentialsProvider {
 public:
  CachingProvider(std::unique_ptr<CredentialsProvider> inner, std::chrono::seconds margin)
      : inner_(std::move(inner)), margin_(margin) {}
  Result<Credentials> get() override {
    std::lock_guard lock(mu_);
    if (cached_ && (!cached_->expiration || Clock::now() + margin_ < *cached_->expiration)) {
      return *cached_;
    }
    auto fresh = inner_->get();
    if (!fresh) {
      // Still-valid credentials beat an error from a flaky refresh.
      if (cached_ && cached_->expiration && Clock::now() < *cached_->expiration) return *cached_;
      return fresh;
    }
    cached_ = *fresh;
    return fresh;
  }

 private:
  std::mutex mu_;
  std::unique_ptr<CredentialsProvider> inner_;
  std::chrono::seconds margin_;
  std::optional<Credentials> cached_;  // GUARDED_BY(mu_)
};

class ChainProvider : public CredentialsProvider {
 public:
  explicit ChainProvider(std::vector<std::unique_ptr<CredentialsProvider>> chain)
      : chain_(std::move(chain)) {}
  Result<Credentials> get() override {
    std::string tried;
    for (auto& p : chain_) {
      auto c = p->get();
      if (c) return c;
      if (c.error().code != ErrorCode::kCredentialsUnavailable) return c;
      tried += "\n  - " + c.error().message;
    }
    return fail(ErrorCode::kCredentialsUnavailable, "no AWS credentials found; tried:" + tried);
  }

 private:
  std::vector<std::unique_ptr<CredentialsProvider>> chain_;
};

}  // namespace

CredentialsEnvironment CredentialsEnvironment::from_environment() {
  CredentialsEnvironment env;
  for (char** e = environ; e && *e; ++e) {
    std::string_view kv(*e);
    size_t eq = kv.find('=');
    if (eq == std::string_view::npos) continue;
    env.vars.emplace(std::string(kv.substr(0, eq)), std::string(kv.substr(eq + 1)));
  }
  const char* home = std::getenv("HOME");
  env.home = home ? home : "";
  return env;
}

std::string CredentialsEnvironment::get(const std::string& name) const {
  auto it = vars.find(name);
  return it == vars.end() ? std::string() : it->second;
}

std::optional<Clock::time_point> parse_iso8601(const std::string& s) {
  std::tm tm{};
  const char* rest = strptime(s.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
  if (!rest) return std::nullopt;
  return Clock::from_time_t(timegm(&tm));
}

std::unique_ptr<CredentialsProvider> make_static_provider(Credentials c) {
  if (c.source.empty()) c.source = "explicit";
  return std::make_unique<StaticProvider>(std::move(c));
}
std::unique_ptr<CredentialsProvider> make_environment_provider(CredentialsEnvironment env) {
  return std::make_unique<EnvironmentProvider>(std::move(env));
}
std::unique_ptr<CredentialsProvider> make_profile_provider(CredentialsEnvironment env,
                                                           std::string profile) {
  return std::make_unique<ProfileProvider>(std::move(env), std::move(profile));
}
std::unique_ptr<CredentialsProvider> make_web_identity_provider(CredentialsEnvironment env,
                                                                SimpleHttp http) {
  return std::make_unique<WebIdentityProvider>(std::move(env), std::move(http));
}
std::unique_ptr<CredentialsProvider> make_container_provider(CredentialsEnvironment env,
                                                             SimpleHttp http) {
  return std::make_unique<ContainerProvider>(std::move(env), std::move(http));
}
std::unique_ptr<CredentialsProvider> make_imds_provider(CredentialsEnvironment env,
                                                        SimpleHttp http) {
  return std::make_unique<ImdsProvider>(std::move(env), std::move(http));
}
std::unique_ptr<CredentialsProvider> make_caching_provider(
    std::unique_ptr<CredentialsProvider> inner, std::chrono::seconds refresh_margin) {
  return std::make_unique<CachingProvider>(std::move(inner), refresh_margin);
}

std::unique_ptr<CredentialsProvider> make_default_chain(CredentialsEnvironment env,
                                                        std::string profile, SimpleHttp http) {
  std::vector<std::unique_ptr<CredentialsProvider>> chain;
  // An explicit --profile skips the environment keys, as the AWS CLI does.
  if (profile.empty()) chain.push_back(make_environment_provider(env));
  chain.push_back(make_profile_provider(env, profile));
  chain.push_back(make_web_identity_provider(env, http));
  chain.push_back(make_container_provider(env, http));
  chain.push_back(make_imds_provider(env, http));
  return make_caching_provider(std::make_unique<ChainProvider>(std::move(chain)));
}

}  // namespace nacre::s3
