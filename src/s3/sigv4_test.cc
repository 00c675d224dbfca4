#include "s3/sigv4.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "s3/crypto.h"
#include "s3/uri.h"

namespace nacre::s3 {
namespace {

Clock::time_point at(int y, int mo, int d, int h, int mi, int s) {
  std::tm tm{};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = s;
  return Clock::from_time_t(timegm(&tm));
}

std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Parses the suite's request.txt: request line, headers (with continuation
// lines), blank line, body.
SignableRequest parse_request(const std::string& text, std::string* body) {
  SignableRequest req;
  std::istringstream in(text);
  std::string line;
  std::getline(in, line);
  size_t sp1 = line.find(' '), sp2 = line.rfind(' ');
  req.method = line.substr(0, sp1);
  std::string target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  size_t q = target.find('?');
  req.path = uri_decode(target.substr(0, q));
  if (q != std::string::npos) req.query = parse_query(target.substr(q + 1));
  while (std::getline(in, line) && !line.empty()) {
    if ((line[0] == ' ' || line[0] == '\t') && !req.headers.empty()) {
      req.headers.back().second += "\n" + line;
      continue;
    }
    size_t colon = line.find(':');
    req.headers.emplace_back(line.substr(0, colon), line.substr(colon + 1));
  }
  std::stringstream rest;
  rest << in.rdbuf();
  *body = rest.str();
  return req;
}

struct CaseResult {
  std::string canonical;
  std::string signature;
};

CaseResult run_case(const std::filesystem::path& dir) {
  auto ctx = nlohmann::json::parse(slurp(dir / "context.json"));
  std::string body;
  SignableRequest req = parse_request(slurp(dir / "request.txt"), &body);
  req.payload_hash = sha256_hex(body);
  Credentials creds{ctx["credentials"]["access_key_id"], ctx["credentials"]["secret_access_key"],
                    ctx["credentials"].value("token", ""), std::nullopt, "test"};
  SigningOptions opt;
  opt.region = ctx["region"];
  opt.service = ctx["service"];
  opt.normalize_path = ctx["normalize"];
  opt.add_content_sha256 = ctx["sign_body"];
  opt.sign_session_token = !ctx.value("omit_session_token", false);
  // 2015-08-30T12:36:00Z is the timestamp of every case in the suite.
  EXPECT_EQ(ctx["timestamp"], "2015-08-30T12:36:00Z");
  SignableRequest signed_req = req;
  std::string sig = sign(signed_req, creds, opt, at(2015, 8, 30, 12, 36, 0));
  // Recompute the canonical request from what sign() added, minus the
  // Authorization header and an unsigned token.
  SignableRequest canon_req = signed_req;
  std::erase_if(canon_req.headers, [&](auto& h) {
    return h.first == "Authorization" ||
           (!opt.sign_session_token && h.first == "X-Amz-Security-Token");
  });
  return {canonical_request(canon_req, opt), sig};
}

}  // namespace

// Vectors kept in the test itself, so the signer can never pass silently when
// the suite directory is missing.
TEST(SigV4, GetVanillaFromSuiteKeptInline) {
  SignableRequest req{"GET", "/", {}, {{"Host", "example.amazonaws.com"}}, kEmptyPayloadHash};
  SigningOptions opt{"us-east-1", "service", true, false, true};
  Credentials c{"AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "", {}, ""};
  EXPECT_EQ(sign(req, c, opt, at(2015, 8, 30, 12, 36, 0)),
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
  EXPECT_EQ(req.headers.back().second,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
            "SignedHeaders=host;x-amz-date, "
            "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
}

TEST(SigV4, Utf8PathKeptInline) {
  SignableRequest req{"GET", "/\xe1\x88\xb4", {}, {{"Host", "example.amazonaws.com"}},
                      kEmptyPayloadHash};
  SigningOptions opt{"us-east-1", "service", true, false, true};
  Credentials c{"AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "", {}, ""};
  EXPECT_EQ(sign(req, c, opt, at(2015, 8, 30, 12, 36, 0)),
            "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85");
}

// The S3 GetObject example of the AWS S3 SigV4 documentation (header-based
// authentication): S3 signs x-amz-content-sha256 and a Range header.
TEST(SigV4, S3GetObjectDocumentationExample) {
  SignableRequest req{"GET",
                      "/test.txt",
                      {},
                      {{"Host", "examplebucket.s3.amazonaws.com"}, {"Range", "bytes=0-9"}},
                      kEmptyPayloadHash};
  SigningOptions opt{"us-east-1", "s3", false, true, true};
  Credentials c{"AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "", {}, ""};
  EXPECT_EQ(sign(req, c, opt, at(2013, 5, 24, 0, 0, 0)),
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
}

TEST(SigV4, S3KeysAreEncodedOnceAndNeverNormalized) {
  EXPECT_EQ(canonical_uri("/bucket/a b/./c//d+e", false), "/bucket/a%20b/./c//d%2Be");
  EXPECT_EQ(canonical_uri("/bucket/a b/./c//d", true), "/bucket/a%20b/c/d");
}

TEST(SigV4, EveryHeaderSigningCaseOfTheAwsSuite) {
  std::filesystem::path suite = NACRE_SIGV4_SUITE_DIR;
  ASSERT_TRUE(std::filesystem::is_directory(suite))
      << "the AWS SigV4 test suite is missing: expected it at " << suite
      << " (../shared/reference/aws-sigv4-test-suite beside the checkout)";
  int cases = 0;
  for (const auto& entry : std::filesystem::directory_iterator(suite)) {
    if (!std::filesystem::exists(entry.path() / "header-signature.txt")) continue;
    SCOPED_TRACE(entry.path().filename().string());
    CaseResult r = run_case(entry.path());
    std::string want_canon = slurp(entry.path() / "header-canonical-request.txt");
    std::string want_sig = slurp(entry.path() / "header-signature.txt");
    while (!want_sig.empty() && std::isspace(static_cast<unsigned char>(want_sig.back())))
      want_sig.pop_back();
    EXPECT_EQ(r.canonical, want_canon);
    EXPECT_EQ(r.signature, want_sig);
    ++cases;
  }
  EXPECT_GE(cases, 30) << "expected the whole suite, found " << cases << " cases";
}

}  // namespace nacre::s3
