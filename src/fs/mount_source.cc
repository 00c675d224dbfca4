#include "fs/mount_source.h"

#include "fs/names.h"
#include "s3/bucket_name.h"

namespace nacre::fs {

Result<MountSource> parse_mount_source(const std::string& text) {
  std::string rest = text.starts_with("s3://") ? text.substr(5) : text;
  size_t slash = rest.find('/');
  MountSource s{rest.substr(0, slash), slash == std::string::npos ? "" : rest.substr(slash + 1)};
  if (s.bucket.empty()) {
    return fail(ErrorCode::kInvalidArgument,
                "'" + text + "' names no bucket (s3://BUCKET[/PREFIX])");
  }
  // The bucket names the default cache directory: it must be a valid name first.
  if (Status ok = s3::check_bucket_name(s.bucket); !ok) return std::unexpected(ok.error());
  while (s.prefix.starts_with('/')) s.prefix.erase(0, 1);
  if (!s.prefix.empty() && !s.prefix.ends_with('/')) s.prefix += '/';
  // Every component of the prefix must itself be a valid name, or the mount
  // root would be a key no directory can show.
  for (size_t pos = 0; pos < s.prefix.size();) {
    size_t end = s.prefix.find('/', pos);
    if (!is_valid_name(s.prefix.substr(pos, end - pos))) {
      return fail(ErrorCode::kInvalidArgument,
                  "prefix '" + s.prefix + "' has an empty, '.' or '..' component");
    }
    pos = end + 1;
  }
  return s;
}

Status check_mount_source(s3::ObjectClient& client, const MountSource& source, bool read_only) {
  auto page = client.list_objects({source.bucket, source.prefix, "/", "", "", 1});
  if (!page) return std::unexpected(page.error());
  if (read_only && !source.prefix.empty() && page->objects.empty() &&
      page->common_prefixes.empty()) {
    return fail(ErrorCode::kNotFound,
                "s3://" + source.bucket + "/" + source.prefix +
                    " holds no objects: nothing to mount read-only (check the prefix)");
  }
  return {};
}

}  // namespace nacre::fs
