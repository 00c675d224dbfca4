#include "cli/s3_url.h"

#include "s3/bucket_name.h"

namespace nacre::cli {

bool is_s3_url(const std::string& s) {
  return s.starts_with("s3://");
}

Result<S3Url> parse_s3_url(const std::string& s) {
  if (!is_s3_url(s)) {
    return fail(ErrorCode::kInvalidArgument, "'" + s + "' is not an s3://bucket/key URL");
  }
  std::string rest = s.substr(5);
  size_t slash = rest.find('/');
  S3Url url{rest.substr(0, slash), slash == std::string::npos ? "" : rest.substr(slash + 1)};
  if (url.bucket.empty()) return fail(ErrorCode::kInvalidArgument, "'" + s + "' names no bucket");
  if (auto ok = s3::check_bucket_name(url.bucket); !ok) {
    return fail(ErrorCode::kInvalidArgument, "'" + s + "': " + ok.error().message);
  }
  return url;
}

}  // namespace nacre::cli
