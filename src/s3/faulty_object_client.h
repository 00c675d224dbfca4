// Wraps an ObjectClient and injects failures, for unit tests of the layers
// above s3/: fail the Nth request (optionally of one operation), cut a GET
// body after some bytes, or delay every request.
//
// cancel_all() forwards to the wrapped client and also ends the wrapper's own
// injected delays at once with kCancelled.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>

#include "s3/object_client.h"

namespace nacre::s3 {

class FaultyObjectClient : public ObjectClient {
 public:
  explicit FaultyObjectClient(ObjectClient& inner) : inner_(inner) {}

  // The `nth` request from now (1 = the next), counting only `op` when it is
  // not empty, fails with `error` without reaching the inner client.
  void fail_nth(int nth, Error error, std::string op = "");
  // Every request of `op` (or all, when empty) fails until clear().
  void fail_all(Error error, std::string op = "");
  // GET bodies stop after `bytes` and the GET fails with a network error
  // (a truncated body), once.
  void truncate_next_get(uint64_t bytes);
  // The next CreateMultipartUpload reaches the inner client, whose upload is
  // made, and then fails with a network error: the answer was lost.
  void lose_next_create_answer();
  // Called (unlocked) before each CreateMultipartUpload reaches the inner client.
  void before_create(std::function<void()> hook);
  void delay_each(std::chrono::milliseconds delay) { delay_ms_ = delay.count(); }
  void clear();

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
  void cancel_all() override;

 private:
  // The injected error for this request of `op`, if any.
  std::optional<Error> inject(const std::string& op);

  ObjectClient& inner_;
  std::mutex mu_;
  int countdown_ = 0;                    // GUARDED_BY(mu_)
  std::string countdown_op_;             // GUARDED_BY(mu_)
  std::optional<Error> nth_error_;       // GUARDED_BY(mu_)
  std::optional<Error> all_error_;       // GUARDED_BY(mu_)
  std::string all_op_;                   // GUARDED_BY(mu_)
  std::optional<uint64_t> truncate_;     // GUARDED_BY(mu_)
  bool lose_create_ = false;             // GUARDED_BY(mu_)
  std::function<void()> before_create_;  // GUARDED_BY(mu_)
  std::atomic<long long> delay_ms_{0};
  std::atomic<bool> cancelled_{false};  // written under mu_, so delay waiters see it
  std::condition_variable cancel_cv_;   // wakes injected delays (waits on mu_)
};

}  // namespace nacre::s3
