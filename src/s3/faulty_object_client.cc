#include "s3/faulty_object_client.h"

#include <utility>

namespace nacre::s3 {

void FaultyObjectClient::fail_nth(int nth, Error error, std::string op) {
  std::lock_guard lock(mu_);
  countdown_ = nth;
  countdown_op_ = std::move(op);
  nth_error_ = std::move(error);
}

void FaultyObjectClient::fail_all(Error error, std::string op) {
  std::lock_guard lock(mu_);
  all_error_ = std::move(error);
  all_op_ = std::move(op);
}

void FaultyObjectClient::truncate_next_get(uint64_t bytes) {
  std::lock_guard lock(mu_);
  truncate_ = bytes;
}

void FaultyObjectClient::lose_next_create_answer() {
  std::lock_guard lock(mu_);
  lose_create_ = true;
}

void FaultyObjectClient::before_create(std::function<void()> hook) {
  std::lock_guard lock(mu_);
  before_create_ = std::move(hook);
}

void FaultyObjectClient::clear() {
  std::lock_guard lock(mu_);
  lose_create_ = false;
  before_create_ = nullptr;
  countdown_ = 0;
  nth_error_.reset();
  all_error_.reset();
  truncate_.reset();
  delay_ms_ = 0;
}

void FaultyObjectClient::cancel_all() {
  {
    std::lock_guard lock(mu_);
    cancelled_ = true;
  }
  cancel_cv_.notify_all();
  inner_.cancel_all();
}

std::optional<Error> FaultyObjectClient::inject(const std::string& op) {
  std::unique_lock lock(mu_);
  if (long long d = delay_ms_; d > 0) {
    // The lock is released while waiting, so other requests and cancel_all()
    // are not held up by a delayed one.
    cancel_cv_.wait_for(lock, std::chrono::milliseconds(d), [this] { return cancelled_.load(); });
  }
  if (cancelled_) {
    return Error{ErrorCode::kCancelled, op + ": cancelled (the client is shut down)", {}, {}, 0};
  }
  if (all_error_ && (all_op_.empty() || all_op_ == op)) return all_error_;
  if (nth_error_ && (countdown_op_.empty() || countdown_op_ == op) && --countdown_ == 0) {
    auto e = std::move(nth_error_);
    nth_error_.reset();
    return e;
  }
  return std::nullopt;
}

#define NACRE_INJECT(op) \
  if (auto injected = inject(op)) return std::unexpected(*injected)

Result<ObjectInfo> FaultyObjectClient::head_object(const std::string& bucket,
                                                   const std::string& key) {
  NACRE_INJECT("HeadObject");
  return inner_.head_object(bucket, key);
}

Result<GetObjectResult> FaultyObjectClient::get_object(const GetObjectRequest& req,
                                                       const DataSink& sink) {
  NACRE_INJECT("GetObject");
  std::optional<uint64_t> limit;
  {
    std::lock_guard lock(mu_);
    limit = truncate_;
    truncate_.reset();
  }
  if (!limit) return inner_.get_object(req, sink);
  uint64_t passed = 0;
  bool cut = false;
  DataSink cutting = [&](std::string_view chunk) -> Status {
    if (passed + chunk.size() > *limit) {
      chunk = chunk.substr(0, *limit - passed);
      cut = true;
    }
    passed += chunk.size();
    if (!chunk.empty()) {
      auto st = sink(chunk);
      if (!st) return st;
    }
    if (cut) return fail(ErrorCode::kNetwork, "injected: truncated response body");
    return {};
  };
  return inner_.get_object(req, cutting);
}

Result<std::string> FaultyObjectClient::put_object(const PutObjectRequest& req) {
  NACRE_INJECT("PutObject");
  return inner_.put_object(req);
}

Result<ListPage> FaultyObjectClient::list_objects(const ListRequest& req) {
  NACRE_INJECT("ListObjectsV2");
  return inner_.list_objects(req);
}

Status FaultyObjectClient::delete_object(const std::string& bucket, const std::string& key) {
  NACRE_INJECT("DeleteObject");
  return inner_.delete_object(bucket, key);
}

Result<std::vector<DeleteFailure>> FaultyObjectClient::delete_objects(
    const std::string& bucket, const std::vector<std::string>& keys) {
  NACRE_INJECT("DeleteObjects");
  return inner_.delete_objects(bucket, keys);
}

Result<std::string> FaultyObjectClient::copy_object(const CopyObjectRequest& req) {
  NACRE_INJECT("CopyObject");
  return inner_.copy_object(req);
}

Result<std::string> FaultyObjectClient::create_multipart_upload(const std::string& bucket,
                                                                const std::string& key,
                                                                const UserMetadata& metadata,
                                                                const std::string& content_type) {
  NACRE_INJECT("CreateMultipartUpload");
  std::function<void()> hook;
  {
    std::lock_guard lock(mu_);
    hook = before_create_;
  }
  if (hook) hook();
  auto id = inner_.create_multipart_upload(bucket, key, metadata, content_type);
  std::lock_guard lock(mu_);
  if (id && std::exchange(lose_create_, false)) {
    return std::unexpected(Error{
        ErrorCode::kNetwork, "injected: the CreateMultipartUpload answer was lost", {}, {}, 0});
  }
  return id;
}

Result<std::string> FaultyObjectClient::upload_part(const std::string& bucket,
                                                    const std::string& key,
                                                    const std::string& upload_id, int part_number,
                                                    const Body& body) {
  NACRE_INJECT("UploadPart");
  return inner_.upload_part(bucket, key, upload_id, part_number, body);
}

Result<std::string> FaultyObjectClient::upload_part_copy(const CopyObjectRequest& source,
                                                         const std::string& upload_id,
                                                         int part_number, uint64_t offset,
                                                         uint64_t length) {
  NACRE_INJECT("UploadPartCopy");
  return inner_.upload_part_copy(source, upload_id, part_number, offset, length);
}

Result<std::string> FaultyObjectClient::complete_multipart_upload(
    const std::string& bucket, const std::string& key, const std::string& upload_id,
    const std::vector<CompletedPart>& parts) {
  NACRE_INJECT("CompleteMultipartUpload");
  return inner_.complete_multipart_upload(bucket, key, upload_id, parts);
}

Status FaultyObjectClient::abort_multipart_upload(const std::string& bucket, const std::string& key,
                                                  const std::string& upload_id) {
  NACRE_INJECT("AbortMultipartUpload");
  return inner_.abort_multipart_upload(bucket, key, upload_id);
}

Result<UploadsPage> FaultyObjectClient::list_multipart_uploads(
    const std::string& bucket, const std::string& prefix, const std::string& key_marker,
    const std::string& upload_id_marker) {
  NACRE_INJECT("ListMultipartUploads");
  return inner_.list_multipart_uploads(bucket, prefix, key_marker, upload_id_marker);
}

#undef NACRE_INJECT

}  // namespace nacre::s3
