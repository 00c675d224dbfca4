#include "s3/credentials.h"

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>

#include "s3/http.h"
#include "s3/testing/test_http_server.h"

namespace nacre::s3 {
namespace {

using testing::ReceivedRequest;
using testing::ScriptedReply;
using testing::TestHttpServer;

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/nacre-cred-XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string write(const std::string& name, const std::string& text) {
    std::filesystem::path p = path_ / name;
    std::filesystem::create_directories(p.parent_path());
    std::ofstream(p) << text;
    return p.string();
  }
  std::string path() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

CredentialsEnvironment env_of(std::map<std::string, std::string> vars,
                              std::string home = "/nonexistent") {
  CredentialsEnvironment e;
  e.vars = std::move(vars);
  e.home = std::move(home);
  return e;
}

SimpleHttp real_http() {
  static HttpClient client;
  return client.as_simple_http();
}

TEST(Credentials, EnvironmentKeys) {
  auto p = make_environment_provider(env_of({{"AWS_ACCESS_KEY_ID", "AK"},
                                             {"AWS_SECRET_ACCESS_KEY", "SK"},
                                             {"AWS_SESSION_TOKEN", "TOK"}}));
  auto c = p->get();
  ASSERT_TRUE(c);
  EXPECT_EQ(c->access_key_id, "AK");
  EXPECT_EQ(c->session_token, "TOK");
  auto half = make_environment_provider(env_of({{"AWS_ACCESS_KEY_ID", "AK"}}))->get();
  ASSERT_FALSE(half);
  EXPECT_EQ(half.error().code, ErrorCode::kInvalidCredentials);
}

TEST(Credentials, SharedFilesWithProfiles) {
  TempDir home;
  home.write(".aws/credentials",
             "[default]\naws_access_key_id = DEF\naws_secret_access_key = DEFSECRET\n"
             "# comment\n[work]\naws_access_key_id=WORK\naws_secret_access_key=WORKSECRET\n");
  home.write(".aws/config",
             "[profile cfgonly]\naws_access_key_id = CFG\naws_secret_access_key = CFGSECRET\n"
             "region = eu-west-1\n");
  auto env = env_of({}, home.path());
  EXPECT_EQ(make_profile_provider(env, "")->get()->access_key_id, "DEF");
  EXPECT_EQ(make_profile_provider(env, "work")->get()->access_key_id, "WORK");
  EXPECT_EQ(make_profile_provider(env, "cfgonly")->get()->access_key_id, "CFG");
  auto env_profile = env_of({{"AWS_PROFILE", "work"}}, home.path());
  EXPECT_EQ(make_profile_provider(env_profile, "")->get()->access_key_id, "WORK");
  auto missing = make_profile_provider(env, "nope")->get();
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, ErrorCode::kInvalidCredentials)
      << "a profile the user named must exist";
  EXPECT_NE(missing.error().message.find("nope"), std::string::npos);
}

TEST(Credentials, ChainPrefersEnvironmentOverFilesAndReportsWhatItTried) {
  TempDir home;
  home.write(".aws/credentials", "[default]\naws_access_key_id=FILE\naws_secret_access_key=S\n");
  auto chain = make_default_chain(
      env_of({{"AWS_ACCESS_KEY_ID", "ENV"}, {"AWS_SECRET_ACCESS_KEY", "S"}}, home.path()), "",
      real_http());
  EXPECT_EQ(chain->get()->access_key_id, "ENV");

  auto none = make_default_chain(env_of({{"AWS_EC2_METADATA_DISABLED", "true"}}), "", real_http());
  auto r = none->get();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kCredentialsUnavailable);
  EXPECT_NE(r.error().message.find("AWS_ACCESS_KEY_ID"), std::string::npos) << r.error().message;
}

TEST(Credentials, WebIdentityCallsStsAssumeRoleWithWebIdentity) {
  TempDir dir;
  std::string token = dir.write("token", "eyJhbGciOi.jwt.token\n");
  TestHttpServer sts([](const ReceivedRequest&) {
    return ScriptedReply{
        200,
        {{"Content-Type", "text/xml"}},
        "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"
        "<AssumeRoleWithWebIdentityResult><Credentials>"
        "<AccessKeyId>ASIAWEB</AccessKeyId><SecretAccessKey>websecret</SecretAccessKey>"
        "<SessionToken>webtoken</SessionToken><Expiration>2099-01-01T00:00:00Z</Expiration>"
        "</Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>",
        {},
        0};
  });
  auto p =
      make_web_identity_provider(env_of({{"AWS_WEB_IDENTITY_TOKEN_FILE", token},
                                         {"AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/nacre"},
                                         {"AWS_ENDPOINT_URL_STS", sts.url()}}),
                                 real_http());
  auto c = p->get();
  ASSERT_TRUE(c) << c.error().describe();
  EXPECT_EQ(c->access_key_id, "ASIAWEB");
  EXPECT_EQ(c->session_token, "webtoken");
  ASSERT_TRUE(c->expiration);
  auto reqs = sts.requests();
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].method, "POST");
  EXPECT_NE(reqs[0].body.find("Action=AssumeRoleWithWebIdentity"), std::string::npos);
  EXPECT_NE(reqs[0].body.find("RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fnacre"),
            std::string::npos)
      << reqs[0].body;
  EXPECT_TRUE(reqs[0].body.ends_with("&WebIdentityToken=eyJhbGciOi.jwt.token"))
      << "the token is sent trimmed: " << reqs[0].body;
}

TEST(Credentials, WebIdentityStsRefusalIsAClearError) {
  TempDir dir;
  std::string token = dir.write("token", "t");
  TestHttpServer sts([](const ReceivedRequest&) {
    return ScriptedReply{
        403,
        {},
        "<ErrorResponse><Error><Code>AccessDenied</Code><Message>Not authorized "
        "to perform sts:AssumeRoleWithWebIdentity</Message></Error></ErrorResponse>",
        {},
        0};
  });
  auto p = make_web_identity_provider(env_of({{"AWS_WEB_IDENTITY_TOKEN_FILE", token},
                                              {"AWS_ROLE_ARN", "arn:r"},
                                              {"AWS_ENDPOINT_URL_STS", sts.url()}}),
                                      real_http());
  auto c = p->get();
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message.find("Not authorized"), std::string::npos) << c.error().message;
}

TEST(Credentials, ContainerCredentialsSendTheAuthorizationToken) {
  TempDir dir;
  std::string token = dir.write("eks-pod-identity-token", "pod-token\n");
  TestHttpServer agent([](const ReceivedRequest& r) {
    if (r.header("authorization") != "pod-token") return ScriptedReply{401, {}, "", {}, 0};
    return ScriptedReply{200,
                         {},
                         R"({"AccessKeyId":"ASIAPOD","SecretAccessKey":"podsecret",)"
                         R"("Token":"podtok","Expiration":"2099-01-01T00:00:00Z"})",
                         {},
                         0};
  });
  auto p = make_container_provider(
      env_of({{"AWS_CONTAINER_CREDENTIALS_FULL_URI", agent.url() + "/v1/credentials"},
              {"AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", token}}),
      real_http());
  auto c = p->get();
  ASSERT_TRUE(c) << c.error().describe();
  EXPECT_EQ(c->access_key_id, "ASIAPOD");
  EXPECT_EQ(c->session_token, "podtok");
  EXPECT_EQ(agent.requests()[0].target, "/v1/credentials");
}

// A fake agent that answers every request with credentials and records the
// URLs it was asked for.
SimpleHttp recording_agent(std::vector<std::string>& urls) {
  return [&urls](const SimpleHttpRequest& r) -> Result<SimpleHttpResponse> {
    urls.push_back(r.url);
    return SimpleHttpResponse{200, R"({"AccessKeyId":"ASIA","SecretAccessKey":"s","Token":"t",)"
                                   R"("Expiration":"2099-01-01T00:00:00Z"})"};
  };
}

TEST(Credentials, ContainerUriOverPlainHttpOnlyToLoopbackOrTheAgents) {
  for (std::string ok :
       {"http://127.0.0.1/creds", "http://127.0.0.1:8080/creds", "http://127.200.3.4/x",
        "http://localhost:9911/v1", "HTTP://LocalHost/", "http://[::1]:1234/creds",
        "http://169.254.170.2/v2/credentials/abc", "http://169.254.170.23/v1/credentials",
        "http://[fd00:ec2::23]/v1/credentials", "http://[fd00:ec2:0::23]:80/v1/credentials",
        "https://creds.example.com/v1", "https://10.1.2.3:8443/x"}) {
    std::vector<std::string> urls;
    auto c = make_container_provider(env_of({{"AWS_CONTAINER_CREDENTIALS_FULL_URI", ok}}),
                                     recording_agent(urls))
                 ->get();
    ASSERT_TRUE(c) << ok << ": " << c.error().describe();
    EXPECT_EQ(urls, std::vector<std::string>{ok});
  }
  for (std::string bad : {"http://169.254.169.254/latest/meta-data/", "http://example.com/creds",
                          "http://10.0.0.1/creds", "http://127.0.0.1.evil.example/creds",
                          "http://localhost.evil.example/", "http://127.0.0.1@evil.example/creds",
                          "http://127.0.0.1:80@evil.example/", "http://evil.example#@127.0.0.1/",
                          "http://evil.example?@127.0.0.1/", "http://127.0.0.1\\@evil.example/",
                          "http://[::2]/creds", "http://[::1].evil.example/", "http://0x7f000001/",
                          "http://127.0.0.1:80:90/", "http://169.254.170.2.evil.example/",
                          "ftp://127.0.0.1/creds", "file:///etc/passwd", "127.0.0.1/creds"}) {
    std::vector<std::string> urls;
    auto c = make_container_provider(env_of({{"AWS_CONTAINER_CREDENTIALS_FULL_URI", bad}}),
                                     recording_agent(urls))
                 ->get();
    ASSERT_FALSE(c) << bad << " was accepted";
    EXPECT_EQ(c.error().code, ErrorCode::kInvalidArgument) << bad;
    EXPECT_NE(c.error().message.find(bad), std::string::npos) << c.error().message;
    EXPECT_TRUE(urls.empty()) << bad << " was asked for credentials";
  }
  // The relative form goes to the ECS agent, and cannot be bent elsewhere.
  std::vector<std::string> urls;
  auto rel = make_container_provider(
                 env_of({{"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/credentials/id"}}),
                 recording_agent(urls))
                 ->get();
  ASSERT_TRUE(rel) << rel.error().describe();
  EXPECT_EQ(urls, std::vector<std::string>{"http://169.254.170.2/v2/credentials/id"});
  auto bent = make_container_provider(
                  env_of({{"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "@evil.example/creds"}}),
                  recording_agent(urls))
                  ->get();
  ASSERT_FALSE(bent);
  EXPECT_EQ(bent.error().code, ErrorCode::kInvalidArgument);
}

TEST(Credentials, ChainReportsARefusedContainerUriInsteadOfSkippingIt) {
  // Were the refused provider skipped, the fake would hand out IMDS
  // credentials next and the user would never learn why.
  std::vector<std::string> urls;
  auto chain = make_default_chain(
      env_of({{"AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://creds.example.com/v1"}}), "",
      recording_agent(urls));
  auto c = chain->get();
  ASSERT_FALSE(c) << "credentials came from " << c->source;
  EXPECT_EQ(c.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(c.error().message.find("http://creds.example.com/v1"), std::string::npos)
      << c.error().message;
  EXPECT_TRUE(urls.empty());
}

TEST(Credentials, ImdsV2TokenThenRoleThenCredentials) {
  TestHttpServer imds([](const ReceivedRequest& r) {
    if (r.method == "PUT" && r.target == "/latest/api/token") {
      if (r.header("x-aws-ec2-metadata-token-ttl-seconds").empty())
        return ScriptedReply{400, {}, "", {}, 0};
      return ScriptedReply{200, {}, "imds-token", {}, 0};
    }
    if (r.header("x-aws-ec2-metadata-token") != "imds-token")
      return ScriptedReply{401, {}, "", {}, 0};
    if (r.target == "/latest/meta-data/iam/security-credentials/") {
      return ScriptedReply{200, {}, "node-role", {}, 0};
    }
    if (r.target == "/latest/meta-data/iam/security-credentials/node-role") {
      return ScriptedReply{200,
                           {},
                           R"({"Code":"Success","AccessKeyId":"ASIAIMDS","SecretAccessKey":"s",)"
                           R"("Token":"t","Expiration":"2099-01-01T00:00:00Z"})",
                           {},
                           0};
    }
    return ScriptedReply{404, {}, "", {}, 0};
  });
  auto p =
      make_imds_provider(env_of({{"AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url()}}), real_http());
  auto c = p->get();
  ASSERT_TRUE(c) << c.error().describe();
  EXPECT_EQ(c->access_key_id, "ASIAIMDS");
  EXPECT_EQ(imds.requests().size(), 3u);
}

class CountingProvider : public CredentialsProvider {
 public:
  explicit CountingProvider(std::chrono::seconds lifetime) : lifetime_(lifetime) {}
  Result<Credentials> get() override {
    ++calls;
    return Credentials{"AK" + std::to_string(calls.load()), "S", "T", Clock::now() + lifetime_,
                       "count"};
  }
  std::atomic<int> calls{0};

 private:
  std::chrono::seconds lifetime_;
};

TEST(Credentials, TemporaryCredentialsRefreshBeforeTheyExpire) {
  auto inner = std::make_unique<CountingProvider>(std::chrono::hours(1));
  auto* counter = inner.get();
  auto cached = make_caching_provider(std::move(inner), std::chrono::minutes(5));
  EXPECT_EQ(cached->get()->access_key_id, "AK1");
  EXPECT_EQ(cached->get()->access_key_id, "AK1");
  EXPECT_EQ(counter->calls, 1);

  // Credentials that expire within the margin are fetched again.
  auto short_inner = std::make_unique<CountingProvider>(std::chrono::minutes(2));
  auto* short_counter = short_inner.get();
  auto short_cached = make_caching_provider(std::move(short_inner), std::chrono::minutes(5));
  EXPECT_EQ(short_cached->get()->access_key_id, "AK1");
  EXPECT_EQ(short_cached->get()->access_key_id, "AK2");
  EXPECT_EQ(short_counter->calls, 2);
}

TEST(Credentials, Iso8601) {
  auto t = parse_iso8601("2026-11-25T03:00:00Z");
  ASSERT_TRUE(t);
  EXPECT_EQ(Clock::to_time_t(*t), 1795575600);
  EXPECT_FALSE(parse_iso8601("not a date"));
}

}  // namespace
}  // namespace nacre::s3
