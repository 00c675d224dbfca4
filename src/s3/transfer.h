// Whole-object transfers on top of ObjectClient: parallel ranged download into
// a file, parallel multipart upload from a file, and copy of any size
// (CopyObject up to 5 GiB, UploadPartCopy beyond).
#pragma once

#include <cstdint>
#include <functional>

#include "s3/object_client.h"

namespace nacre::s3 {

inline constexpr uint64_t kMiB = 1024 * 1024;
inline constexpr uint64_t kGiB = 1024 * kMiB;
inline constexpr uint64_t kMaxSingleCopy = 5 * kGiB;  // CopyObject's limit
inline constexpr uint64_t kMinPartSize = 5 * kMiB;
inline constexpr int kMaxParts = 10000;

struct TransferOptions {
  uint64_t part_size = 8 * kMiB;  // also the multipart upload threshold
  int concurrency = 8;            // requests in flight
  // Copies above this use UploadPartCopy (S3 refuses CopyObject past 5 GiB).
  uint64_t multipart_copy_threshold = kMaxSingleCopy;
  uint64_t copy_part_size = 512 * kMiB;
  // Called from worker threads with the number of bytes just moved.
  std::function<void(uint64_t)> progress;
  // Called with a multipart upload's id as soon as it exists (before any part),
  // so that a caller can tell its own uploads from ones left behind.
  std::function<void(const std::string&)> created;
};

// The part size to use for `size` bytes: at least `wanted` and 5 MiB, and
// large enough that no more than 10000 parts are needed.
uint64_t part_size_for(uint64_t size, uint64_t wanted);

// Downloads the object into `fd`. A seekable fd (regular file, /dev/null) is
// filled by parallel ranged GETs pinned to one ETag; a pipe gets one
// sequential GET. Returns the object's info.
[[nodiscard]] Result<ObjectInfo> download_to_fd(ObjectClient& client, const std::string& bucket,
                                                const std::string& key, int fd,
                                                const TransferOptions& options);

// Uploads `size` bytes of `fd` (from offset 0): one PUT up to part_size,
// otherwise a parallel multipart upload, aborted if any part fails.
// Returns the new ETag.
[[nodiscard]] Result<std::string> upload_from_fd(ObjectClient& client, int fd, uint64_t size,
                                                 const PutObjectRequest& target,
                                                 const TransferOptions& options);

// Server-side copy of a `size`-byte source, with multipart copy above 5 GiB.
[[nodiscard]] Result<std::string> copy_any_size(ObjectClient& client, const CopyObjectRequest& req,
                                                uint64_t size, const TransferOptions& options);

// Every multipart upload in progress for exactly `key` (all pages of
// ListMultipartUploads for the key as a prefix; longer keys are left out).
[[nodiscard]] Result<std::vector<UploadInfo>> uploads_of_key(ObjectClient& client,
                                                             const std::string& bucket,
                                                             const std::string& key);

// Creates the file a download is written to before it is renamed into place
// (DEST.nacre-partial), for writing, with mode 0644 less the umask. It is
// created with O_CREAT|O_EXCL|O_NOFOLLOW, so a symlink planted at `path` is
// never followed and no file someone else created is ever written into. A
// regular file already there (left by a download that was killed) is removed
// first; the removal unlinks the name, never what a symlink points to, and a
// symlink or anything else at `path` is kInvalidArgument telling the user to
// remove it. Returns the open fd (O_CLOEXEC), which the caller closes.
[[nodiscard]] Result<int> create_partial_file(const std::string& path);

// Runs task(0..count-1) on up to `concurrency` threads; stops handing out
// tasks after the first failure and returns it.
Status run_parallel(int count, int concurrency, const std::function<Status(int)>& task);

}  // namespace nacre::s3
