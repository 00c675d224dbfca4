// Which S3 keys can appear as file names. A key maps into the mount only if
// every component below the mount's prefix is a valid POSIX name: not empty
// (no "//"), not "." or "..", at most 255 bytes, no NUL. Anything else is
// hidden, so no key can ever map outside the mount.
#pragma once

#include <string_view>

namespace nacre::fs {

inline constexpr size_t kMaxNameLength = 255;

bool is_valid_name(std::string_view name);

}  // namespace nacre::fs
