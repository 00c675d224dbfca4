// The control channel of a Nacre mount, shared by the FUSE adapter and the
// CLI: ioctls on a directory of the mount. Read-only mounts allow them (the
// kernel refuses setxattr there with EROFS before FUSE sees it), and opening a
// directory costs no data transfer (opening a large file would hydrate it).
// FUSE passes only "restricted" ioctls: the argument's size is in the command
// number and the kernel copies exactly that many bytes.
#pragma once

#include <sys/ioctl.h>

namespace nacre::fuse {

// The name (not a path) of a file in the directory the ioctl is issued on,
// NUL-terminated.
struct ReleaseRequest {
  char name[256];
};

// Drops the node cache's data of that file. Errors: ENOENT (no such file),
// EISDIR, EACCES (not root nor the user running the mount).
inline constexpr unsigned long kReleaseIoctl = _IOW('N', 1, ReleaseRequest);

}  // namespace nacre::fuse
