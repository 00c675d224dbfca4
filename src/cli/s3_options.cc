#include "cli/s3_options.h"

namespace nacre::cli {

void S3Options::add_to(CLI::App& app) {
  app.add_option("--endpoint-url", endpoint_url,
                 "S3 endpoint, e.g. http://127.0.0.1:7480 (default: AWS_ENDPOINT_URL_S3, "
                 "AWS_ENDPOINT_URL, or AWS S3 in --region)");
  app.add_option("--region", region,
                 "AWS region (default: AWS_REGION, AWS_DEFAULT_REGION, us-east-1)");
  app.add_option("--profile", profile, "profile in ~/.aws/credentials and ~/.aws/config");
  app.add_option("--addressing-style", addressing_style,
                 "path, virtual or auto (virtual on AWS endpoints, path elsewhere)")
      ->check(CLI::IsMember({"auto", "path", "virtual"}));
  app.add_option("--ca-bundle", ca_bundle,
                 "PEM file of CA certificates (default: AWS_CA_BUNDLE, "
                 "else the system store)");
  app.add_flag("--no-verify-ssl", no_verify_ssl, "do not verify TLS certificates");
  app.add_option("--connect-timeout", connect_timeout, "seconds to wait for a connection")
      ->check(CLI::PositiveNumber);
  app.add_option("--stall-timeout", stall_timeout,
                 "seconds a transfer may move no data before it fails")
      ->check(CLI::PositiveNumber);
  app.add_option("--max-attempts", max_attempts, "attempts per request, including the first")
      ->check(CLI::Range(1, 20));
}

Result<std::unique_ptr<s3::S3Client>> S3Options::make_client() const {
  s3::S3Config config =
      s3::S3Config::from_environment(s3::CredentialsEnvironment::from_environment());
  if (!endpoint_url.empty()) config.endpoint = endpoint_url;
  if (!region.empty()) config.region = region;
  if (!profile.empty()) config.profile = profile;
  if (!ca_bundle.empty()) config.http.ca_bundle = ca_bundle;
  config.http.verify_tls = !no_verify_ssl;
  config.http.connect_timeout =
      std::chrono::milliseconds(static_cast<long>(connect_timeout * 1000));
  config.http.stall_timeout = std::chrono::seconds(static_cast<long>(std::max(1.0, stall_timeout)));
  config.retry.max_attempts = max_attempts;
  config.addressing = addressing_style == "path"      ? s3::Addressing::kPath
                      : addressing_style == "virtual" ? s3::Addressing::kVirtual
                                                      : s3::Addressing::kAuto;
  return s3::S3Client::create(std::move(config));
}

}  // namespace nacre::cli
