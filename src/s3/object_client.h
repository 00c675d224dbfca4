// The object-store interface every layer above s3/ uses. Implementations:
// S3Client (real S3 over HTTP), MemoryObjectClient (in-memory fake that counts
// requests) and FaultyObjectClient (wraps another and injects failures).
//
// Thread safety: all methods may be called concurrently from many threads.
// Errors: typed (common/error.h) and carrying the S3 request id.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "s3/body.h"

namespace nacre::s3 {

// User metadata without the x-amz-meta- prefix, names in lower case.
using UserMetadata = std::map<std::string, std::string>;

struct ObjectInfo {
  std::string key;
  uint64_t size = 0;
  std::string etag;  // as the server sent it, quotes removed
  std::chrono::system_clock::time_point last_modified;
  UserMetadata metadata;  // HEAD only; LIST does not return it
  std::string content_type;
};

struct GetObjectRequest {
  std::string bucket;
  std::string key;
  uint64_t offset = 0;
  std::optional<uint64_t> length;  // nullopt: to the end
  std::string if_match;            // ETag the bytes must belong to; empty: any
};

struct GetObjectResult {
  ObjectInfo info;     // etag, total object size, last_modified, metadata
  uint64_t bytes = 0;  // bytes delivered to the sink
};

struct PutObjectRequest {
  std::string bucket;
  std::string key;
  Body body;
  UserMetadata metadata;
  std::string content_type;
};

struct ListRequest {
  std::string bucket;
  std::string prefix;
  std::string delimiter;           // "/" for a directory view, "" for a flat walk
  std::string continuation_token;  // from the previous page
  std::string start_after;
  int max_keys = 1000;
};

struct ListPage {
  std::vector<ObjectInfo> objects;
  std::vector<std::string> common_prefixes;
  std::string next_continuation_token;  // empty when this was the last page
};

struct CopyObjectRequest {
  std::string source_bucket;
  std::string source_key;
  std::string source_if_match;  // ETag the source must have; empty: any
  std::string bucket;
  std::string key;
  std::optional<UserMetadata> replace_metadata;  // set: REPLACE, else COPY
  std::string content_type;                      // with replace_metadata
};

struct CompletedPart {
  int number = 0;
  std::string etag;
};

// One multipart upload in progress (ListMultipartUploads).
struct UploadInfo {
  std::string key;
  std::string upload_id;
  std::chrono::system_clock::time_point initiated;  // the server's clock
};

struct UploadsPage {
  std::vector<UploadInfo> uploads;
  // Where the next page starts; both empty when this was the last page.
  std::string next_key_marker;
  std::string next_upload_id_marker;
};

struct DeleteFailure {
  std::string key;
  Error error;
};

class ObjectClient {
 public:
  virtual ~ObjectClient() = default;

  [[nodiscard]] virtual Result<ObjectInfo> head_object(const std::string& bucket,
                                                       const std::string& key) = 0;
  // Streams the requested range into `sink`, never buffering the object.
  // With if_match, a changed object fails with kPreconditionFailed.
  [[nodiscard]] virtual Result<GetObjectResult> get_object(const GetObjectRequest& req,
                                                           const DataSink& sink) = 0;
  // Returns the new ETag.
  [[nodiscard]] virtual Result<std::string> put_object(const PutObjectRequest& req) = 0;
  [[nodiscard]] virtual Result<ListPage> list_objects(const ListRequest& req) = 0;
  // Deleting a key that does not exist succeeds, as in S3.
  [[nodiscard]] virtual Status delete_object(const std::string& bucket, const std::string& key) = 0;
  // Up to 1000 keys; returns the keys that could not be deleted.
  [[nodiscard]] virtual Result<std::vector<DeleteFailure>> delete_objects(
      const std::string& bucket, const std::vector<std::string>& keys) = 0;
  // Single-request copy (objects up to 5 GiB); returns the new ETag.
  [[nodiscard]] virtual Result<std::string> copy_object(const CopyObjectRequest& req) = 0;

  // Multipart upload. Parts are numbered from 1; all but the last ≥ 5 MiB.
  [[nodiscard]] virtual Result<std::string> create_multipart_upload(
      const std::string& bucket, const std::string& key, const UserMetadata& metadata,
      const std::string& content_type) = 0;
  [[nodiscard]] virtual Result<std::string> upload_part(const std::string& bucket,
                                                        const std::string& key,
                                                        const std::string& upload_id,
                                                        int part_number, const Body& body) = 0;
  // UploadPartCopy of source bytes [offset, offset+length).
  [[nodiscard]] virtual Result<std::string> upload_part_copy(const CopyObjectRequest& source,
                                                             const std::string& upload_id,
                                                             int part_number, uint64_t offset,
                                                             uint64_t length) = 0;
  [[nodiscard]] virtual Result<std::string> complete_multipart_upload(
      const std::string& bucket, const std::string& key, const std::string& upload_id,
      const std::vector<CompletedPart>& parts) = 0;
  [[nodiscard]] virtual Status abort_multipart_upload(const std::string& bucket,
                                                      const std::string& key,
                                                      const std::string& upload_id) = 0;
  // One page (up to 1000) of the uploads in progress whose keys start with
  // `prefix`, by key and then by initiation; the markers come from the
  // previous page (empty for the first).
  [[nodiscard]] virtual Result<UploadsPage> list_multipart_uploads(
      const std::string& bucket, const std::string& prefix, const std::string& key_marker,
      const std::string& upload_id_marker) = 0;

  // Shuts the client down, for unmount and process exit: after it returns,
  // every request in flight on any thread fails with kCancelled within about
  // 100 ms (also one stalled with no bytes arriving, and one sleeping in a
  // retry back-off), and every later request fails at once with kCancelled
  // without reaching the store. kCancelled is never retried. Bytes already
  // handed to a GET's sink stay delivered; nothing more is. It cannot be
  // undone (make a new client to talk to the store again). Thread-safe, may
  // be called more than once and from any thread, including concurrently with
  // requests; it does not wait for the requests to return.
  virtual void cancel_all() = 0;
};

}  // namespace nacre::s3
