// AWS credentials and the providers that find them, in the AWS SDKs' order:
// explicit → environment → shared files (profile) → web identity (IRSA) →
// container (EKS Pod Identity / ECS) → IMDSv2.
//
// Thread safety: every provider may be called from many threads at once.
// Temporary credentials are cached and refreshed before they expire.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"

namespace nacre::s3 {

using Clock = std::chrono::system_clock;

struct Credentials {
  std::string access_key_id;
  std::string secret_access_key;
  std::string session_token;                    // empty for long-term keys
  std::optional<Clock::time_point> expiration;  // set for temporary credentials
  std::string source;                           // which provider produced them, for messages
};

class CredentialsProvider {
 public:
  virtual ~CredentialsProvider() = default;
  // Credentials valid now. Errors are kCredentialsUnavailable when this
  // provider does not apply, or a specific code when it applies but failed.
  [[nodiscard]] virtual Result<Credentials> get() = 0;
};

// Long-term keys given on the command line or in code.
std::unique_ptr<CredentialsProvider> make_static_provider(Credentials c);

// Where the environment-sourced providers look; defaults come from the
// process environment (see from_environment()).
struct CredentialsEnvironment {
  std::map<std::string, std::string> vars;  // environment variables
  std::string home;                         // for ~/.aws
  static CredentialsEnvironment from_environment();
  std::string get(const std::string& name) const;
};

// An HTTP GET/PUT/POST as the remote providers need it. Tests and the real
// client plug in a function; the default uses libcurl (see http.h).
struct SimpleHttpRequest {
  std::string method;
  std::string url;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};
struct SimpleHttpResponse {
  int status = 0;
  std::string body;
};
using SimpleHttp = std::function<Result<SimpleHttpResponse>(const SimpleHttpRequest&)>;

std::unique_ptr<CredentialsProvider> make_environment_provider(CredentialsEnvironment env);
// ~/.aws/credentials and ~/.aws/config (AWS_SHARED_CREDENTIALS_FILE,
// AWS_CONFIG_FILE, AWS_PROFILE); `profile` overrides AWS_PROFILE when set.
std::unique_ptr<CredentialsProvider> make_profile_provider(CredentialsEnvironment env,
                                                           std::string profile);
// AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN (+ AWS_ROLE_SESSION_NAME) →
// STS AssumeRoleWithWebIdentity at AWS_ENDPOINT_URL_STS or the regional STS.
std::unique_ptr<CredentialsProvider> make_web_identity_provider(CredentialsEnvironment env,
                                                                SimpleHttp http);
// AWS_CONTAINER_CREDENTIALS_FULL_URI (or _RELATIVE_URI) with the token from
// AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE / AWS_CONTAINER_AUTHORIZATION_TOKEN.
// As in the AWS SDKs, the URI must be https, or plain http to a loopback
// address (127.0.0.0/8, [::1], localhost) or an ECS / EKS Pod Identity agent
// (169.254.170.2, 169.254.170.23, [fd00:ec2::23]); any other URI is a
// kInvalidArgument error naming it, which stops the chain.
std::unique_ptr<CredentialsProvider> make_container_provider(CredentialsEnvironment env,
                                                             SimpleHttp http);
// IMDSv2 at AWS_EC2_METADATA_SERVICE_ENDPOINT (default http://169.254.169.254);
// disabled by AWS_EC2_METADATA_DISABLED=true.
std::unique_ptr<CredentialsProvider> make_imds_provider(CredentialsEnvironment env,
                                                        SimpleHttp http);

// Caches what `inner` returns and asks again `refresh_margin` before expiry.
std::unique_ptr<CredentialsProvider> make_caching_provider(
    std::unique_ptr<CredentialsProvider> inner,
    std::chrono::seconds refresh_margin = std::chrono::minutes(5));

// The SDK chain. The first provider that applies wins; a provider that
// applies but fails stops the chain with its error (as the SDKs do).
std::unique_ptr<CredentialsProvider> make_default_chain(CredentialsEnvironment env,
                                                        std::string profile, SimpleHttp http);

// Parses ISO 8601 "2026-11-25T03:00:00Z" as STS and IMDS write it.
std::optional<Clock::time_point> parse_iso8601(const std::string& s);

}  // namespace nacre::s3
