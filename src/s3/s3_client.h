// ObjectClient for S3 and S3-compatible stores over HTTP(S): SigV4, the
// credential chain, retries with backoff, typed errors.
//
// GetObject answers are checked before any byte reaches the caller's sink: a
// GET sent with a Range header must be answered 206 with a Content-Range of
// exactly the bytes asked (the last byte clamped to the object's end, as S3
// does for a range that runs past it), a GET without one must be answered
// 200, and with If-Match the answer's ETag must be the one asked for.
// Anything else (a proxy that ignores Range and sends the whole object from
// byte 0, a wrong range, another version) is kMalformedResponse, never data.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "s3/credentials.h"
#include "s3/http.h"
#include "s3/object_client.h"
#include "s3/retry.h"

namespace nacre::s3 {

enum class Addressing {
  kAuto,     // virtual-hosted on AWS endpoints, path-style on custom endpoints
  kPath,     // https://host/bucket/key
  kVirtual,  // https://bucket.host/key
};

struct S3Config {
  std::string endpoint;  // empty: https://s3.<region>.amazonaws.com
  std::string region = "us-east-1";
  Addressing addressing = Addressing::kAuto;
  std::string profile;                     // AWS shared-file profile; empty: AWS_PROFILE/default
  std::optional<Credentials> credentials;  // explicit keys skip the provider chain
  HttpOptions http;
  RetryPolicy retry;

  // AWS conventions: AWS_ENDPOINT_URL_S3 over AWS_ENDPOINT_URL, AWS_REGION over
  // AWS_DEFAULT_REGION, AWS_CA_BUNDLE (AWS_PROFILE is read by the profile provider).
  static S3Config from_environment(const CredentialsEnvironment& env);
};

class S3Client : public ObjectClient {
 public:
  // Validates the endpoint; credentials are looked up lazily on first use.
  [[nodiscard]] static Result<std::unique_ptr<S3Client>> create(S3Config config);
  // With a caller-supplied provider (tests; the CSI driver's secrets).
  [[nodiscard]] static Result<std::unique_ptr<S3Client>> create(
      S3Config config, std::unique_ptr<CredentialsProvider> credentials);
  ~S3Client() override;

  const S3Config& config() const { return config_; }

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
  // Wakes transfers waiting for bytes (the multi interface, see http.h), the
  // retry back-off and the credential providers' HTTP calls.
  void cancel_all() override;

  struct Call;  // one S3 REST request before signing (s3_client.cc)

 private:
  struct Endpoint {
    std::string scheme, host, base_path;  // host includes a non-default port
  };
  S3Client(S3Config config, Endpoint endpoint, std::unique_ptr<CredentialsProvider> creds);

  Result<HttpResponse> send_once(const Call& call, const DataSink* sink);
  Result<HttpResponse> send(const Call& call);
  Error error_from(const Call& call, const HttpResponse& resp) const;
  Error cancelled_error(const Call& call) const;
  // Sleeps for a retry back-off; false (at once) when cancel_all() was called.
  bool backoff_unless_cancelled(std::chrono::milliseconds delay);

  S3Config config_;
  Endpoint endpoint_;
  std::unique_ptr<HttpClient> http_;
  std::unique_ptr<HttpClient> credentials_http_;  // short timeouts for IMDS and friends
  std::unique_ptr<CredentialsProvider> credentials_;

  std::atomic<bool> cancelled_{false};
  std::mutex cancel_mu_;  // only for cancel_cv_: a leaf lock, held for no work
  std::condition_variable cancel_cv_;
};

}  // namespace nacre::s3
