#include "common/error.h"

#include <cerrno>
#include <cstring>

namespace nacre {

std::string_view to_string(ErrorCode code) {
  switch (code) {
    case ErrorCode::kNoSuchKey:
      return "NoSuchKey";
    case ErrorCode::kNoSuchBucket:
      return "NoSuchBucket";
    case ErrorCode::kNoSuchUpload:
      return "NoSuchUpload";
    case ErrorCode::kAccessDenied:
      return "AccessDenied";
    case ErrorCode::kInvalidCredentials:
      return "InvalidCredentials";
    case ErrorCode::kPreconditionFailed:
      return "PreconditionFailed";
    case ErrorCode::kInvalidRange:
      return "InvalidRange";
    case ErrorCode::kThrottled:
      return "Throttled";
    case ErrorCode::kServerError:
      return "ServerError";
    case ErrorCode::kRequestTimeout:
      return "RequestTimeout";
    case ErrorCode::kNetwork:
      return "NetworkError";
    case ErrorCode::kMalformedResponse:
      return "MalformedResponse";
    case ErrorCode::kInvalidArgument:
      return "InvalidArgument";
    case ErrorCode::kCredentialsUnavailable:
      return "CredentialsUnavailable";
    case ErrorCode::kIo:
      return "IoError";
    case ErrorCode::kNoSpace:
      return "NoSpace";
    case ErrorCode::kReadOnly:
      return "ReadOnly";
    case ErrorCode::kCancelled:
      return "Cancelled";
    case ErrorCode::kNotSupported:
      return "NotSupported";
    case ErrorCode::kNotFound:
      return "NotFound";
    case ErrorCode::kStale:
      return "Stale";
    case ErrorCode::kNotADirectory:
      return "NotADirectory";
    case ErrorCode::kIsADirectory:
      return "IsADirectory";
    case ErrorCode::kBadHandle:
      return "BadHandle";
    case ErrorCode::kNoAttribute:
      return "NoAttribute";
    case ErrorCode::kExists:
      return "Exists";
    case ErrorCode::kNotEmpty:
      return "NotEmpty";
    case ErrorCode::kNameTooLong:
      return "NameTooLong";
    case ErrorCode::kFileTooBig:
      return "FileTooBig";
    case ErrorCode::kCrossDevice:
      return "CrossDevice";
    case ErrorCode::kBusy:
      return "Busy";
    case ErrorCode::kReleased:
      return "Released";
    case ErrorCode::kNotCached:
      return "NotCached";
    case ErrorCode::kCacheFull:
      return "CacheFull";
    case ErrorCode::kOther:
      return "Error";
  }
  return "Error";
}

bool Error::retryable() const {
  switch (code) {
    case ErrorCode::kThrottled:
    case ErrorCode::kServerError:
    case ErrorCode::kRequestTimeout:
    case ErrorCode::kNetwork:
      return true;
    default:
      return false;
  }
}

std::string Error::describe() const {
  std::string out(s3_code.empty() ? to_string(code) : std::string_view(s3_code));
  out += ": ";
  out += message;
  if (http_status != 0 || !request_id.empty()) {
    out += " (";
    if (http_status != 0) out += "HTTP " + std::to_string(http_status);
    if (!request_id.empty()) {
      if (http_status != 0) out += ", ";
      out += "request id " + request_id;
    }
    out += ")";
  }
  return out;
}

std::unexpected<Error> fail_errno(std::string_view what, int err) {
  return fail(err == ENOSPC || err == EDQUOT ? ErrorCode::kNoSpace : ErrorCode::kIo,
              std::string(what) + ": " + std::strerror(err));
}

}  // namespace nacre
