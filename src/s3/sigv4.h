// AWS Signature Version 4, written from the AWS specification
// ("Create a signed AWS API request") and checked against the AWS SigV4 test
// suite. Pure functions: no I/O, no clock.
#pragma once

#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "s3/credentials.h"
#include "s3/uri.h"

namespace nacre::s3 {

using Headers = std::vector<std::pair<std::string, std::string>>;

inline constexpr char kUnsignedPayload[] = "UNSIGNED-PAYLOAD";
inline constexpr char kEmptyPayloadHash[] =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

struct SignableRequest {
  std::string method;
  std::string path;   // decoded path, e.g. "/bucket/my key"; encoded when signing
  QueryParams query;  // decoded
  Headers headers;    // must contain Host
  std::string payload_hash = kEmptyPayloadHash;  // hex SHA-256 or UNSIGNED-PAYLOAD
};

struct SigningOptions {
  std::string region;
  std::string service = "s3";
  bool normalize_path = false;         // true for every service but S3
  bool add_content_sha256 = true;      // S3 (and RGW) require x-amz-content-sha256
  bool sign_session_token = true;      // false: add the token after signing
};

std::string amz_date(Clock::time_point t);  // 20150830T123600Z
std::string canonical_uri(const std::string& path, bool normalize);
std::string canonical_request(const SignableRequest& req, const SigningOptions& opt);
std::string string_to_sign(const std::string& canonical_request, const std::string& amz_date,
                           const std::string& scope);

// Adds X-Amz-Date, X-Amz-Content-Sha256 and X-Amz-Security-Token as the
// options say, then Authorization. Returns the signature (hex).
std::string sign(SignableRequest& req, const Credentials& creds, const SigningOptions& opt,
                 Clock::time_point now);

}  // namespace nacre::s3
