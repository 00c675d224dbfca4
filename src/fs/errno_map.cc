#include "fs/errno_map.h"

#include <cerrno>

namespace nacre::fs {

int to_errno(const Error& error) {
  switch (error.code) {
    case ErrorCode::kNoSuchKey: return ENOENT;
    case ErrorCode::kNoSuchBucket: return ENOENT;
    case ErrorCode::kAccessDenied:
    case ErrorCode::kInvalidCredentials:
    case ErrorCode::kCredentialsUnavailable: return EACCES;
    case ErrorCode::kInvalidArgument: return EINVAL;
    case ErrorCode::kNoSpace: return ENOSPC;
    case ErrorCode::kReadOnly: return EROFS;
    case ErrorCode::kNotSupported: return ENOTSUP;
    case ErrorCode::kRequestTimeout: return ETIMEDOUT;
    // The object changed under an open handle: the handle's version is gone
    // and no other version's bytes may be returned.
    case ErrorCode::kPreconditionFailed:
    default: return EIO;
  }
}

}  // namespace nacre::fs
