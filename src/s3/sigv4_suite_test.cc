// Every header-signing case of the AWS SigV4 test suite. The suite is an
// optional corpus kept outside the repository: CMake adds this file to
// sigv4_test only when the folder named by the cache variable
// NACRE_SIGV4_SUITE_DIR exists at configure time (src/s3/CMakeLists.txt
// decides where to look), and passes that path in as NACRE_SIGV4_SUITE_DIR.
// This file reads nothing else. The vectors kept inline in sigv4_test.cc run
// either way.
#include <gtest/gtest.h>

#include <cctype>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "s3/crypto.h"
#include "s3/sigv4.h"
#include "s3/uri.h"

#ifndef NACRE_SIGV4_SUITE_DIR
#error "NACRE_SIGV4_SUITE_DIR must name the AWS SigV4 test suite folder (set by src/s3/CMakeLists.txt)"
#endif

namespace nacre::s3 {
namespace {

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
  std::string sig = sign(signed_req, creds, opt, Clock::from_time_t(1440938160));
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

TEST(SigV4, EveryHeaderSigningCaseOfTheAwsSuite) {
  std::filesystem::path suite = NACRE_SIGV4_SUITE_DIR;
  // CMake compiles this file in only when the folder existed at configure
  // time; if it has gone since, or holds no cases, fail loudly.
  ASSERT_TRUE(std::filesystem::is_directory(suite))
      << "the AWS SigV4 test suite is missing: expected it at " << suite
      << " (the CMake cache variable NACRE_SIGV4_SUITE_DIR); reconfigure to leave it out";
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
  EXPECT_GE(cases, 30) << "expected the whole suite in " << suite << ", found " << cases
                       << " header-signing cases";
}

}  // namespace nacre::s3
