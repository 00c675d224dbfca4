// In-memory ObjectClient for unit tests of the layers above s3/: buckets of
// objects with ETags (MD5 hex, "-N" for multipart), user metadata, multipart
// uploads, and a count of requests by operation. Thread-safe.
#pragma once

#include <atomic>
#include <map>
#include <mutex>

#include "s3/object_client.h"

namespace nacre::s3 {

class MemoryObjectClient : public ObjectClient {
 public:
  void create_bucket(const std::string& bucket);
  // Number of calls of `op` ("GetObject", "HeadObject", "ListObjectsV2", ...).
  int request_count(const std::string& op) const;
  uint64_t bytes_served() const { return bytes_served_; }

  Result<ObjectInfo> head_object(const std::string& bucket, const std::string& key) override;
  Result<GetObjectResult> get_object(const GetObjectRequest& req, const DataSink& sink) override;
  Result<std::string> put_object(const PutObjectRequest& req) override;
  Result<ListPage> list_objects(const ListRequest& req) override;
  Status delete_object(const std::string& bucket, const std::string& key) override;
  Result<std::vector<DeleteFailure>> delete_objects(const std::string& bucket,
                                                    const std::vector<std::string>& keys) override;
  Result<std::string> copy_object(const CopyObjectRequest& req) override;
  Result<std::string> create_multipart_upload(const std::string& bucket, const std::string& key,
                                              const UserMetadata& metadata,
                                              const std::string& content_type) override;
  Result<std::string> upload_part(const std::string& bucket, const std::string& key,
                                  const std::string& upload_id, int part_number,
                                  const Body& body) override;
  Result<std::string> upload_part_copy(const CopyObjectRequest& source,
                                       const std::string& upload_id, int part_number,
                                       uint64_t offset, uint64_t length) override;
  Result<std::string> complete_multipart_upload(const std::string& bucket, const std::string& key,
                                                const std::string& upload_id,
                                                const std::vector<CompletedPart>& parts) override;
  Status abort_multipart_upload(const std::string& bucket, const std::string& key,
                                const std::string& upload_id) override;
  Result<UploadsPage> list_multipart_uploads(const std::string& bucket, const std::string& prefix,
                                             const std::string& key_marker,
                                             const std::string& upload_id_marker) override;
  // Later requests are counted, then fail with kCancelled; a GET in flight
  // stops between the 64 KiB pieces it delivers.
  void cancel_all() override { cancelled_ = true; }

 private:
  struct Object {
    std::string data;
    ObjectInfo info;
  };
  struct Upload {
    std::string bucket, key;
    UserMetadata metadata;
    std::string content_type;
    std::map<int, std::pair<std::string, std::string>> parts;  // number → (etag, data)
    std::chrono::system_clock::time_point initiated;
  };
  // Counts the request; kCancelled after cancel_all().
  Status count(const std::string& op);
  Result<std::map<std::string, Object>*> bucket_locked(const std::string& bucket);
  std::string store_locked(const std::string& bucket, const std::string& key, std::string data,
                           UserMetadata meta, std::string content_type, std::string etag);

  mutable std::mutex mu_;
  std::map<std::string, std::map<std::string, Object>> buckets_;  // GUARDED_BY(mu_)
  std::map<std::string, Upload> uploads_;                         // GUARDED_BY(mu_)
  std::map<std::string, int> counts_;                             // GUARDED_BY(mu_)
  int next_upload_ = 1;                                           // GUARDED_BY(mu_)
  std::atomic<uint64_t> bytes_served_{0};
  std::atomic<bool> cancelled_{false};
};

// Reads a whole Body into memory (the fake and tests need the bytes).
Result<std::string> read_body(const Body& body);

}  // namespace nacre::s3
