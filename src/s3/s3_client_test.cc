// S3Client against a scripted local HTTP server: wire format, error mapping,
// retries, resumption and timeouts.
#include "s3/s3_client.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include "s3/testing/test_http_server.h"

namespace nacre::s3 {
namespace {

using testing::ReceivedRequest;
using testing::ScriptedReply;
using testing::TestHttpServer;

std::unique_ptr<S3Client> client_for(const std::string& endpoint, int attempts = 4) {
  S3Config c;
  c.endpoint = endpoint;
  c.region = "us-east-1";
  c.credentials = Credentials{"AKID", "SECRET", "", std::nullopt, "test"};
  c.retry.max_attempts = attempts;
  c.retry.base = std::chrono::milliseconds(1);
  c.retry.cap = std::chrono::milliseconds(5);
  c.http.stall_timeout = std::chrono::seconds(1);
  c.http.connect_timeout = std::chrono::milliseconds(500);
  auto r = S3Client::create(c);
  EXPECT_TRUE(r) << r.error().describe();
  return std::move(*r);
}

std::string error_xml(const std::string& code, const std::string& msg) {
  return "<?xml version=\"1.0\"?><Error><Code>" + code + "</Code><Message>" + msg +
         "</Message><RequestId>req-123</RequestId></Error>";
}

DataSink into(std::string& out) {
  return [&out](std::string_view c) -> Status {
    out.append(c);
    return {};
  };
}

TEST(S3Client, SignsPathStyleRequestsWithContentSha256) {
  TestHttpServer server([](const ReceivedRequest&) {
    return ScriptedReply{200, {{"ETag", "\"e1\""}}, "", {}, 0};
  });
  auto client = client_for(server.url());
  ASSERT_TRUE(client->put_object({"bucket", "dir/a b+c", Body::from_memory("hello"),
                                  {{"file-permissions", "0100644"}}, ""}));
  auto reqs = server.requests();
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].method, "PUT");
  EXPECT_EQ(reqs[0].target, "/bucket/dir/a%20b%2Bc");
  EXPECT_EQ(reqs[0].body, "hello");
  EXPECT_EQ(reqs[0].header("x-amz-content-sha256"), "UNSIGNED-PAYLOAD");
  EXPECT_EQ(reqs[0].header("x-amz-meta-file-permissions"), "0100644");
  EXPECT_NE(reqs[0].header("authorization").find("SignedHeaders=host;x-amz-content-sha256;"
                                                  "x-amz-date;x-amz-meta-file-permissions"),
            std::string::npos)
      << reqs[0].header("authorization");
}

TEST(S3Client, RetriesServerErrorsThenSucceeds) {
  std::atomic<int> n{0};
  TestHttpServer server([&](const ReceivedRequest&) {
    if (n++ < 2) return ScriptedReply{503, {}, error_xml("SlowDown", "slow down"), {}, 0};
    return ScriptedReply{200, {{"ETag", "\"abc\""}}, "", {}, 0};
  });
  auto client = client_for(server.url());
  auto info = client->head_object("b", "k");
  ASSERT_TRUE(info) << info.error().describe();
  EXPECT_EQ(info->etag, "abc");
  EXPECT_EQ(server.requests().size(), 3u);
}

TEST(S3Client, RetriesAreBounded) {
  TestHttpServer server([](const ReceivedRequest&) {
    return ScriptedReply{500, {}, error_xml("InternalError", "boom"), {}, 0};
  });
  auto client = client_for(server.url(), 3);
  auto r = client->head_object("b", "k");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kServerError);
  EXPECT_EQ(server.requests().size(), 3u);
  EXPECT_NE(r.error().describe().find("after 3 attempts"), std::string::npos);
}

TEST(S3Client, TypedErrorsCarryCodeMessageAndRequestId) {
  TestHttpServer server([](const ReceivedRequest& r) {
    if (r.target.starts_with("/nobucket")) {
      return ScriptedReply{404, {}, error_xml("NoSuchBucket", "The specified bucket does not exist"),
                           {}, 0};
    }
    return ScriptedReply{403, {{"x-amz-request-id", "req-hdr"}},
                         error_xml("InvalidAccessKeyId", "key unknown"), {}, 0};
  });
  auto client = client_for(server.url());
  std::string out;
  auto r = client->get_object({"b", "k", 0, std::nullopt, ""}, into(out));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidCredentials);
  EXPECT_EQ(r.error().request_id, "req-hdr");
  EXPECT_EQ(r.error().s3_code, "InvalidAccessKeyId");
  EXPECT_TRUE(out.empty()) << "an error body must never reach the data sink";
  EXPECT_EQ(server.requests().size(), 1u) << "auth errors are not retried";

  auto l = client->list_objects({"nobucket", "", "/", "", "", 1000});
  ASSERT_FALSE(l);
  EXPECT_EQ(l.error().code, ErrorCode::kNoSuchBucket);
  EXPECT_NE(l.error().describe().find("nobucket"), std::string::npos) << l.error().describe();
}

TEST(S3Client, TruncatedGetResumesFromTheSameVersion) {
  std::string data(300000, 'x');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>('a' + i % 26);
  std::atomic<int> n{0};
  TestHttpServer server([&](const ReceivedRequest& r) {
    if (n++ == 0) {
      return ScriptedReply{200, {{"ETag", "\"v1\""}}, data, size_t{100000}, 0};
    }
    // bytes=100000-
    size_t from = std::stoul(r.header("range").substr(6));
    return ScriptedReply{206,
                         {{"ETag", "\"v1\""},
                          {"Content-Range", "bytes " + std::to_string(from) + "-" +
                                                std::to_string(data.size() - 1) + "/" +
                                                std::to_string(data.size())}},
                         data.substr(from), {}, 0};
  });
  auto client = client_for(server.url());
  std::string out;
  auto r = client->get_object({"b", "k", 0, std::nullopt, ""}, into(out));
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(out, data);
  EXPECT_EQ(r->info.etag, "v1");
  EXPECT_EQ(r->info.size, data.size());
  auto reqs = server.requests();
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(reqs[1].header("range"), "bytes=100000-");
  EXPECT_EQ(reqs[1].header("if-match"), "\"v1\"");
}

TEST(S3Client, ObjectChangedDuringResumeIsPreconditionFailedNotMixedBytes) {
  std::atomic<int> n{0};
  TestHttpServer server([&](const ReceivedRequest&) {
    if (n++ == 0) return ScriptedReply{200, {{"ETag", "\"v1\""}}, std::string(5000, 'a'), size_t{10}, 0};
    return ScriptedReply{412, {}, error_xml("PreconditionFailed", "At least one of the pre-conditions you specified did not hold"), {}, 0};
  });
  auto client = client_for(server.url());
  std::string out;
  auto r = client->get_object({"b", "k", 0, std::nullopt, ""}, into(out));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kPreconditionFailed);
  EXPECT_NE(r.error().message.find("changed"), std::string::npos) << r.error().message;
  EXPECT_EQ(out, std::string(10, 'a'));
}

TEST(S3Client, MalformedListXmlIsAClearError) {
  TestHttpServer server([](const ReceivedRequest&) {
    return ScriptedReply{200, {}, "<ListBucketResult><Contents><Key>a</Key>", {}, 0};
  });
  auto client = client_for(server.url());
  auto r = client->list_objects({"b", "p/", "/", "", "", 1000});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kMalformedResponse);
  EXPECT_NE(r.error().message.find("ListObjectsV2 s3://b/p/"), std::string::npos)
      << r.error().message;
}

TEST(S3Client, ListReadsKeysVerbatimAndPages) {
  TestHttpServer server([](const ReceivedRequest& r) {
    if (r.target.find("continuation-token=tok%202") == std::string::npos) {
      return ScriptedReply{200, {},
                           "<ListBucketResult><IsTruncated>true</IsTruncated>"
                           "<NextContinuationToken>tok 2</NextContinuationToken>"
                           "<Contents><Key>p/a b+&amp;</Key><Size>5</Size><ETag>&quot;e&quot;</ETag>"
                           "<LastModified>2026-01-02T03:04:05.000Z</LastModified></Contents>"
                           "<CommonPrefixes><Prefix>p/d%2Fx/</Prefix></CommonPrefixes>"
                           "</ListBucketResult>",
                           {}, 0};
    }
    return ScriptedReply{200, {}, "<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>",
                         {}, 0};
  });
  auto client = client_for(server.url());
  auto r = client->list_objects({"b", "p/", "/", "", "", 1000});
  ASSERT_TRUE(r) << r.error().describe();
  ASSERT_EQ(r->objects.size(), 1u);
  EXPECT_EQ(r->objects[0].key, "p/a b+&");
  EXPECT_EQ(r->objects[0].etag, "e");
  EXPECT_EQ(r->objects[0].size, 5u);
  EXPECT_EQ(r->common_prefixes, std::vector<std::string>{"p/d%2Fx/"});
  EXPECT_EQ(r->next_continuation_token, "tok 2");
  auto page2 = client->list_objects({"b", "p/", "/", r->next_continuation_token, "", 1000});
  ASSERT_TRUE(page2);
  EXPECT_TRUE(page2->next_continuation_token.empty());
  auto target = server.requests()[0].target;
  EXPECT_NE(target.find("list-type=2"), std::string::npos);
  EXPECT_NE(target.find("delimiter=%2F"), std::string::npos);
  EXPECT_EQ(target.find("encoding-type"), std::string::npos);
}

TEST(S3Client, UnreachableEndpointFailsWithNetworkError) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  int port = ntohs(addr.sin_port);
  close(fd);  // nothing listens there now
  auto client = client_for("http://127.0.0.1:" + std::to_string(port), 2);
  auto r = client->head_object("b", "k");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kNetwork);
  EXPECT_NE(r.error().message.find("HeadObject s3://b/k"), std::string::npos) << r.error().message;
}

TEST(S3Client, StalledTransferTimesOut) {
  TestHttpServer server([](const ReceivedRequest&) {
    return ScriptedReply{200, {}, "late", {}, 2500};
  });
  auto client = client_for(server.url(), 1);
  std::string out;
  auto start = std::chrono::steady_clock::now();
  auto r = client->get_object({"b", "k", 0, std::nullopt, ""}, into(out));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kRequestTimeout);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(2400));
}

TEST(S3Client, StreamBodyIsNotReplayedOnRetry) {
  TestHttpServer server([](const ReceivedRequest&) {
    return ScriptedReply{500, {}, error_xml("InternalError", "x"), {}, 0};
  });
  auto client = client_for(server.url(), 5);
  std::string data = "streamed";
  size_t pos = 0;
  Body body;
  body.kind = Body::Kind::kStream;
  body.length = data.size();
  body.stream = [&](char* buf, size_t n) -> Result<size_t> {
    size_t k = std::min(n, data.size() - pos);
    std::memcpy(buf, data.data() + pos, k);
    pos += k;
    return k;
  };
  auto r = client->put_object({"b", "k", body, {}, ""});
  ASSERT_FALSE(r);
  EXPECT_EQ(server.requests().size(), 1u);
}

TEST(S3Client, CompleteMultipartErrorInsideA200IsAnError) {
  TestHttpServer server([](const ReceivedRequest&) {
    return ScriptedReply{200, {}, error_xml("InternalError", "We encountered an internal error"), {}, 0};
  });
  auto client = client_for(server.url(), 1);
  auto r = client->complete_multipart_upload("b", "k", "up1", {{1, "e1"}});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().s3_code, "InternalError");
  auto reqs = server.requests();
  EXPECT_EQ(reqs[0].target, "/b/k?uploadId=up1");
  EXPECT_NE(reqs[0].body.find("<PartNumber>1</PartNumber><ETag>\"e1\"</ETag>"), std::string::npos);
  EXPECT_NE(reqs[0].header("x-amz-content-sha256"), "UNSIGNED-PAYLOAD");
}

TEST(S3Client, RejectsBadEndpoints) {
  S3Config c;
  c.endpoint = "127.0.0.1:9000";
  auto r = S3Client::create(c);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
  c.endpoint = "ftp://host";
  EXPECT_FALSE(S3Client::create(c));
}

}  // namespace
}  // namespace nacre::s3
