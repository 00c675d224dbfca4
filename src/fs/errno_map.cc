#include "fs/errno_map.h"

#include <cerrno>

namespace nacre::fs {

int to_errno(const Error& error) {
  switch (error.code) {
    case ErrorCode::kNotFound:
      return ENOENT;
    // A bucket that vanished under a mount: nothing below it exists.
    case ErrorCode::kNoSuchBucket:
      return ENOENT;
    case ErrorCode::kStale:
      return ESTALE;
    case ErrorCode::kNotADirectory:
      return ENOTDIR;
    case ErrorCode::kIsADirectory:
      return EISDIR;
    case ErrorCode::kBadHandle:
      return EBADF;
    case ErrorCode::kNoAttribute:
      return ENODATA;
    case ErrorCode::kExists:
      return EEXIST;
    case ErrorCode::kNotEmpty:
      return ENOTEMPTY;
    case ErrorCode::kNameTooLong:
      return ENAMETOOLONG;
    case ErrorCode::kFileTooBig:
      return EFBIG;
    case ErrorCode::kCrossDevice:
      return EXDEV;
    case ErrorCode::kBusy:
      return ETXTBSY;
    case ErrorCode::kAccessDenied:
    case ErrorCode::kInvalidCredentials:
    case ErrorCode::kCredentialsUnavailable:
      return EACCES;
    case ErrorCode::kInvalidArgument:
      return EINVAL;
    case ErrorCode::kNoSpace:
      return ENOSPC;
    case ErrorCode::kReadOnly:
      return EROFS;
    case ErrorCode::kNotSupported:
      return ENOTSUP;
    case ErrorCode::kRequestTimeout:
      return ETIMEDOUT;
    case ErrorCode::kCancelled:
      return EINTR;
    // An S3 404 reaching a file operation means the version an open handle
    // reads is gone; like kPreconditionFailed (the object changed under the
    // handle), no other version's bytes may be returned: EIO. Names that do
    // not exist are kNotFound, decided by the fs layer.
    case ErrorCode::kNoSuchKey:
    case ErrorCode::kPreconditionFailed:
    default:
      return EIO;
  }
}

}  // namespace nacre::fs
