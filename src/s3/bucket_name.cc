#include "s3/bucket_name.h"

#include <string>

namespace nacre::s3 {

namespace {

bool lower_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

std::string printable(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) {
      static const char* kHex = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

}  // namespace

Status check_bucket_name(std::string_view bucket) {
  auto refuse = [&](const std::string& why) -> Status {
    return fail(ErrorCode::kInvalidArgument,
                "bucket name '" + printable(bucket) + "' is not a valid S3 bucket name: " + why);
  };
  if (bucket.size() < 3 || bucket.size() > 63) return refuse("it must be 3 to 63 characters long");
  for (char c : bucket) {
    if (!lower_alnum(c) && c != '.' && c != '-') {
      return refuse("only lower-case letters, digits, '.' and '-' are allowed");
    }
  }
  if (!lower_alnum(bucket.front()) || !lower_alnum(bucket.back())) {
    return refuse("it must start and end with a letter or a digit");
  }
  if (bucket.find("..") != std::string_view::npos) return refuse("it must not contain \"..\"");
  return {};
}

}  // namespace nacre::s3
