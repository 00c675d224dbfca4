// The one error model of Nacre: every fallible call returns Result<T>.
// Codes are declared here once; later layers map them to errno (fs) and to
// gRPC status (csi), each in one function.
#pragma once

#include <expected>
#include <string>
#include <string_view>

namespace nacre {

enum class ErrorCode {
  kNoSuchKey,               // S3 only: the object (or version with that ETag) does not exist
  kNoSuchBucket,            // the bucket named does not exist
  kNoSuchUpload,            // multipart upload id unknown (completed or aborted)
  kAccessDenied,            // credentials valid but not allowed
  kInvalidCredentials,      // InvalidAccessKeyId / SignatureDoesNotMatch / expired token
  kPreconditionFailed,      // If-Match did not match: the object changed
  kInvalidRange,            // range outside the object
  kThrottled,               // SlowDown / 503: retryable
  kServerError,             // other 5xx / InternalError: retryable
  kRequestTimeout,          // server-side RequestTimeout or our stalled-transfer timeout
  kNetwork,                 // connect refused/reset, DNS, TLS: retryable
  kMalformedResponse,       // the server answered something we cannot parse
  kInvalidArgument,         // a caller or user error (bad URL, bad flag, bad key)
  kCredentialsUnavailable,  // no provider in the chain produced credentials
  kIo,                      // local file-system error
  kNoSpace,                 // the local disk (e.g. the cache) is full
  kReadOnly,                // a write to a read-only file system
  kCancelled,               // the caller's sink asked to stop
  kNotSupported,            // the operation is never supported (e.g. hard links)
  // File-system meanings (fs layer and below); one code per meaning, mapped to
  // errno in one place (fs/errno_map.cc).
  kNotFound,       // no such name in the directory (ENOENT)
  kStale,          // the inode or handle no longer names what it did (ESTALE)
  kNotADirectory,  // a directory operation on a file (ENOTDIR)
  kIsADirectory,   // a file operation on a directory (EISDIR)
  kBadHandle,      // an unknown file handle (EBADF)
  kNoAttribute,    // no extended attribute of that name (ENODATA)
  kReleased,       // cache: the entry was released or evicted; open it again
  kNotCached,      // cache: a block asked for is not present
  kCacheFull,      // cache: --cache-size or --cache-min-free reached; serve uncached
  kExists,         // the name exists already (EEXIST)
  kNotEmpty,       // rmdir or rename over a directory that has entries (ENOTEMPTY)
  kNameTooLong,    // a name over 255 bytes (ENAMETOOLONG)
  kFileTooBig,     // past S3's 5 TiB object limit (EFBIG)
  kCrossDevice,    // a rename the export policy cannot carry out as one (EXDEV)
  kBusy,           // a write to a file the kernel reads by passthrough now (ETXTBSY)
  kOther,          // any other S3 error code (kept in Error::s3_code)
};

std::string_view to_string(ErrorCode code);

struct Error {
  ErrorCode code = ErrorCode::kOther;
  std::string message;     // human readable: says what failed and on which object
  std::string s3_code;     // S3 <Code>, e.g. "NoSuchKey", when the server sent one
  std::string request_id;  // x-amz-request-id, when the server sent one
  int http_status = 0;     // 0 when no HTTP response was received

  // Whether trying the same request again may succeed.
  bool retryable() const;
  // "NoSuchKey: s3://b/k does not exist (HTTP 404, request id tx00..)".
  std::string describe() const;
};

template <typename T>
using Result = std::expected<T, Error>;
using Status = Result<void>;

inline std::unexpected<Error> fail(ErrorCode code, std::string message) {
  return std::unexpected(Error{code, std::move(message), {}, {}, 0});
}

// Error from the current errno (or `err`) of a local OS call.
std::unexpected<Error> fail_errno(std::string_view what, int err);

}  // namespace nacre
