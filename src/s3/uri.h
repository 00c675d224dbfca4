// RFC 3986 percent-encoding as SigV4 and S3 require it (written by hand:
// libcurl's curl_easy_escape encodes '~' differently across versions and has
// no "keep '/'" mode).
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace nacre::s3 {

// Encodes every byte except A-Z a-z 0-9 - _ . ~ (and '/' when keep_slash).
std::string uri_encode(std::string_view in, bool keep_slash);
// Decodes %XX sequences; '+' is left alone (S3 does not use form encoding).
std::string uri_decode(std::string_view in);

using QueryParams = std::vector<std::pair<std::string, std::string>>;

// "a=1&b=2" (already encoded) → decoded pairs; a key without '=' gets "".
QueryParams parse_query(std::string_view query);
// Decoded pairs → encoded "a=1&b=2" in the given order.
std::string build_query(const QueryParams& params);

}  // namespace nacre::s3
