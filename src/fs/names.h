// Which S3 keys can appear as file names. A key maps into the mount only if
// every component below the mount's prefix is a valid POSIX name: not empty
// (no "//"), not "." or "..", at most 255 bytes, no NUL. Anything else is
// hidden, so no key can ever map outside the mount.
#pragma once

#include <string_view>

namespace nacre::fs {

inline constexpr size_t kMaxNameLength = 255;

bool is_valid_name(std::string_view name);

// Whether a symlink whose directory is `depth` levels below the mount root (0: the
// root itself) and whose target is `target` surely resolves inside the mount: a
// relative target whose ".." components all lead it and climb at most `depth`
// levels. A ".." after a named component is refused: that component may itself be
// a symlink, after which ".." climbs from wherever it led. Absolute targets and
// empty ones are refused.
// Used by --contain-symlinks: anyone who can write the bucket could otherwise point
// a pod at paths of the node.
bool symlink_stays_inside(size_t depth, std::string_view target);

}  // namespace nacre::fs

namespace nacre::fs {

// Whether `name` is valid UTF-8: S3 keys are UTF-8, so names that are not
// cannot be written (EINVAL); such keys may still be read.
bool is_utf8(std::string_view name);

}  // namespace nacre::fs
