// S3Client against a scripted local HTTP server: wire format, error mapping,
// retries, resumption and timeouts.
#include "s3/s3_client.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <future>
#include <thread>

#include "s3/testing/test_http_server.h"
#include "s3/transfer.h"

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
  ASSERT_TRUE(client->put_object(
      {"bucket", "dir/a b+c", Body::from_memory("hello"), {{"file-permissions", "0100644"}}, ""}));
  auto reqs = server.requests();
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].method, "PUT");
  EXPECT_EQ(reqs[0].target, "/bucket/dir/a%20b%2Bc");
  EXPECT_EQ(reqs[0].body, "hello");
  EXPECT_EQ(reqs[0].header("x-amz-content-sha256"), "UNSIGNED-PAYLOAD");
  EXPECT_EQ(reqs[0].header("x-amz-meta-file-permissions"), "0100644");
  EXPECT_NE(reqs[0]
                .header("authorization")
                .find("SignedHeaders=host;x-amz-content-sha256;"
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
      return ScriptedReply{
          404, {}, error_xml("NoSuchBucket", "The specified bucket does not exist"), {}, 0};
    }
    return ScriptedReply{403,
                         {{"x-amz-request-id", "req-hdr"}},
                         error_xml("InvalidAccessKeyId", "key unknown"),
                         {},
                         0};
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
    return ScriptedReply{
        206,
        {{"ETag", "\"v1\""},
         {"Content-Range", "bytes " + std::to_string(from) + "-" + std::to_string(data.size() - 1) +
                               "/" + std::to_string(data.size())}},
        data.substr(from),
        {},
        0};
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
    if (n++ == 0)
      return ScriptedReply{200, {{"ETag", "\"v1\""}}, std::string(5000, 'a'), size_t{10}, 0};
    return ScriptedReply{412,
                         {},
                         error_xml("PreconditionFailed",
                                   "At least one of the pre-conditions you specified did not hold"),
                         {},
                         0};
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
      return ScriptedReply{
          200,
          {},
          "<ListBucketResult><IsTruncated>true</IsTruncated>"
          "<NextContinuationToken>tok 2</NextContinuationToken>"
          "<Contents><Key>p/a b+&amp;</Key><Size>5</Size><ETag>&quot;e&quot;</ETag>"
          "<LastModified>2026-01-02T03:04:05.000Z</LastModified></Contents>"
          "<CommonPrefixes><Prefix>p/d%2Fx/</Prefix></CommonPrefixes>"
          "</ListBucketResult>",
          {},
          0};
    }
    return ScriptedReply{
        200, {}, "<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>", {}, 0};
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

TEST(S3Client, UploadsOfAKeyFollowEveryPageAndLeaveLongerKeysOut) {
  TestHttpServer server([](const ReceivedRequest& r) {
    if (r.target.find("upload-id-marker=u%201") == std::string::npos) {
      return ScriptedReply{200,
                           {},
                           "<ListMultipartUploadsResult><IsTruncated>true</IsTruncated>"
                           "<NextKeyMarker>p/k</NextKeyMarker>"
                           "<NextUploadIdMarker>u 1</NextUploadIdMarker>"
                           "<Upload><Key>p/k</Key><UploadId>u 1</UploadId>"
                           "<Initiated>2026-12-02T09:50:58.000Z</Initiated></Upload>"
                           "</ListMultipartUploadsResult>",
                           {},
                           0};
    }
    return ScriptedReply{200,
                         {},
                         "<ListMultipartUploadsResult><IsTruncated>false</IsTruncated>"
                         "<Upload><Key>p/k</Key><UploadId>u2</UploadId>"
                         "<Initiated>2026-12-02T09:51:00.000Z</Initiated></Upload>"
                         "<Upload><Key>p/k2</Key><UploadId>u3</UploadId>"
                         "<Initiated>2026-12-02T09:51:01.000Z</Initiated></Upload>"
                         "</ListMultipartUploadsResult>",
                         {},
                         0};
  });
  auto client = client_for(server.url());
  auto r = uploads_of_key(*client, "b", "p/k");
  ASSERT_TRUE(r) << r.error().describe();
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[0].upload_id, "u 1");
  EXPECT_EQ((*r)[1].upload_id, "u2");
  EXPECT_EQ(
      std::chrono::duration_cast<std::chrono::milliseconds>((*r)[1].initiated - (*r)[0].initiated)
          .count(),
      2000);
  auto requests = server.requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_NE(requests[0].target.find("uploads="), std::string::npos) << requests[0].target;
  EXPECT_NE(requests[0].target.find("prefix=p%2Fk"), std::string::npos) << requests[0].target;
  EXPECT_NE(requests[1].target.find("key-marker=p%2Fk"), std::string::npos) << requests[1].target;
}

TEST(S3Client, MalformedUploadsListIsAClearError) {
  TestHttpServer server([](const ReceivedRequest&) {
    return ScriptedReply{200,
                         {},
                         "<ListMultipartUploadsResult><Upload><Key>p/k</Key>"
                         "<Initiated>2026-12-02T09:50:58.404Z</Initiated></Upload>"
                         "</ListMultipartUploadsResult>",
                         {},
                         0};
  });
  auto client = client_for(server.url());
  auto r = client->list_multipart_uploads("b", "p/k", "", "");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kMalformedResponse);
  EXPECT_NE(r.error().message.find("ListMultipartUploads s3://b/p/k"), std::string::npos)
      << r.error().message;
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
    return ScriptedReply{
        200, {}, error_xml("InternalError", "We encountered an internal error"), {}, 0};
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

TEST(S3Client, SequentialRequestsReuseOneConnection) {
  TestHttpServer server([](const ReceivedRequest& r) {
    if (r.method == "HEAD") return ScriptedReply{200, {{"ETag", "\"e\""}}, "", {}, 0};
    return ScriptedReply{200, {{"ETag", "\"e\""}}, "body", {}, 0};
  });
  auto client = client_for(server.url());
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(client->head_object("b", "k"));
    std::string out;
    ASSERT_TRUE(client->get_object({"b", "k", 0, std::nullopt, ""}, into(out)));
  }
  EXPECT_EQ(server.requests().size(), 10u);
  EXPECT_EQ(server.connections(), 1u) << "the pooled handles must keep their connections";
}

// ---- Ranged GET answers are checked before any byte reaches the sink ----

std::string pattern(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + i % 26);
  return s;
}

// A correct answer to "Range: bytes=FIRST-[LAST]" for `data`, as S3 sends it.
ScriptedReply partial_content(const std::string& data, const ReceivedRequest& r,
                              const std::string& etag = "v1") {
  std::string range = r.header("range");  // bytes=F-[L]
  size_t dash = range.find('-');
  uint64_t first = std::stoull(range.substr(6, dash - 6));
  uint64_t last = dash + 1 < range.size() ? std::stoull(range.substr(dash + 1)) : data.size() - 1;
  last = std::min<uint64_t>(last, data.size() - 1);
  return ScriptedReply{
      206,
      {{"ETag", "\"" + etag + "\""},
       {"Content-Range", "bytes " + std::to_string(first) + "-" + std::to_string(last) + "/" +
                             std::to_string(data.size())}},
      data.substr(first, last - first + 1),
      {},
      0};
}

TEST(S3Client, RangedGetAnsweredWithTheWholeObjectIsRefusedBeforeAnyByte) {
  std::string data = pattern(1000);
  TestHttpServer server([&](const ReceivedRequest&) {
    // A proxy or store that ignores Range: 200 and the object from byte 0.
    return ScriptedReply{200, {{"ETag", "\"v1\""}}, data, {}, 0};
  });
  auto client = client_for(server.url());
  std::string out;
  auto r = client->get_object({"b", "k", 100, 50, ""}, into(out));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kMalformedResponse);
  EXPECT_TRUE(out.empty()) << out.size() << " bytes of the wrong range reached the sink";
  const std::string& m = r.error().message;
  EXPECT_NE(m.find("s3://b/k"), std::string::npos) << m;
  EXPECT_NE(m.find("bytes=100-149"), std::string::npos) << m;
  EXPECT_NE(m.find("HTTP 200"), std::string::npos) << m;
  EXPECT_EQ(server.requests().size(), 1u) << "a server that ignores Range is not asked again";
}

// RFC 9110 lets a server ignore Range. When the range asked starts at 0 and covers the
// whole object, that 200 carries exactly the bytes asked for: taken. When it does not
// cover it (the first 50 bytes of 1000), refused before a byte.
TEST(S3Client, RangedGetFromZeroCoveringTheWholeObjectAcceptsA200) {
  std::string data = pattern(300);
  TestHttpServer server([&](const ReceivedRequest&) {
    return ScriptedReply{200, {{"ETag", "\"v1\""}}, data, {}, 0};
  });
  auto client = client_for(server.url());
  std::string out;
  auto r = client->get_object({"b", "k", 0, 1000, "v1"}, into(out));
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(out, data);
  std::string partial;
  auto refused = client->get_object({"b", "k", 0, 50, ""}, into(partial));
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::kMalformedResponse);
  EXPECT_TRUE(partial.empty());
  std::string other;
  auto wrong_version = client->get_object({"b", "k", 0, 1000, "v2"}, into(other));
  ASSERT_FALSE(wrong_version);
  EXPECT_TRUE(other.empty());
}

// "bytes=0-(0-1)" wrapped around to the whole object.
TEST(S3Client, EmptyRangeIsRefusedWithoutARequest) {
  TestHttpServer server([&](const ReceivedRequest&) { return ScriptedReply{200, {}, "x", {}, 0}; });
  auto client = client_for(server.url());
  std::string out;
  auto r = client->get_object({"b", "k", 0, 0, ""}, into(out));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
  EXPECT_TRUE(server.requests().empty());
}

TEST(S3Client, RangedGetWithAWrongContentRangeIsRefused) {
  std::string data = pattern(1000);
  // Each answer to "bytes=100-149" that must not be taken for those bytes.
  std::vector<std::pair<std::string, ScriptedReply>> wrong = {
      {"other start",
       {206,
        {{"ETag", "\"v1\""}, {"Content-Range", "bytes 0-49/1000"}},
        data.substr(0, 50),
        {},
        0}},
      {"other end",
       {206,
        {{"ETag", "\"v1\""}, {"Content-Range", "bytes 100-199/1000"}},
        data.substr(100, 100),
        {},
        0}},
      {"no Content-Range", {206, {{"ETag", "\"v1\""}}, data.substr(100, 50), {}, 0}},
      {"unknown total",
       {206,
        {{"ETag", "\"v1\""}, {"Content-Range", "bytes 100-149/*"}},
        data.substr(100, 50),
        {},
        0}},
      {"garbage",
       {206,
        {{"ETag", "\"v1\""}, {"Content-Range", "bytes 100-x/1000"}},
        data.substr(100, 50),
        {},
        0}},
      {"end past total",
       {206,
        {{"ETag", "\"v1\""}, {"Content-Range", "bytes 100-149/120"}},
        data.substr(100, 50),
        {},
        0}},
      {"Content-Length of another length",
       {206,
        {{"ETag", "\"v1\""}, {"Content-Range", "bytes 100-149/1000"}},
        data.substr(100, 60),
        {},
        0}},
      {"204", {204, {{"ETag", "\"v1\""}}, "", {}, 0}},
  };
  for (const auto& [name, reply] : wrong) {
    TestHttpServer server([&](const ReceivedRequest&) { return reply; });
    auto client = client_for(server.url());
    std::string out;
    auto r = client->get_object({"b", "k", 100, 50, ""}, into(out));
    ASSERT_FALSE(r) << name;
    EXPECT_EQ(r.error().code, ErrorCode::kMalformedResponse)
        << name << ": " << r.error().describe();
    EXPECT_TRUE(out.empty()) << name;
  }
}

TEST(S3Client, RangedGetOfAnotherVersionThanIfMatchIsRefused) {
  std::string data = pattern(1000);
  TestHttpServer server([&](const ReceivedRequest& r) { return partial_content(data, r, "v2"); });
  auto client = client_for(server.url());
  std::string out;
  auto r = client->get_object({"b", "k", 100, 50, "v1"}, into(out));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kMalformedResponse);
  EXPECT_NE(r.error().message.find("If-Match \"v1\""), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("ETag 'v2'"), std::string::npos) << r.error().message;
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(server.requests()[0].header("if-match"), "\"v1\"");
}

TEST(S3Client, FullGetOfAnotherVersionThanIfMatchIsRefused) {
  TestHttpServer server([](const ReceivedRequest&) {
    return ScriptedReply{200, {{"ETag", "\"v2\""}}, "other version", {}, 0};
  });
  auto client = client_for(server.url());
  std::string out;
  auto r = client->get_object({"b", "k", 0, std::nullopt, "v1"}, into(out));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kMalformedResponse);
  EXPECT_TRUE(out.empty());
}

TEST(S3Client, FullGetAnsweredWithPartialContentIsRefused) {
  TestHttpServer server([](const ReceivedRequest&) {
    return ScriptedReply{
        206, {{"ETag", "\"v1\""}, {"Content-Range", "bytes 0-4/1000"}}, "abcde", {}, 0};
  });
  auto client = client_for(server.url());
  std::string out;
  auto r = client->get_object({"b", "k", 0, std::nullopt, ""}, into(out));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kMalformedResponse);
  EXPECT_TRUE(out.empty());
}

TEST(S3Client, CorrectPartialContentIsDelivered) {
  std::string data = pattern(1000);
  TestHttpServer server([&](const ReceivedRequest& r) { return partial_content(data, r); });
  auto client = client_for(server.url());
  std::string out;
  auto r = client->get_object({"b", "k", 100, 50, "v1"}, into(out));
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(out, data.substr(100, 50));
  EXPECT_EQ(r->bytes, 50u);
  EXPECT_EQ(r->info.size, 1000u);
  EXPECT_EQ(r->info.etag, "v1");
  EXPECT_EQ(server.requests()[0].header("range"), "bytes=100-149");

  // A range past the end is clamped to the last byte, as S3 does.
  out.clear();
  r = client->get_object({"b", "k", 900, 500, ""}, into(out));
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(out, data.substr(900));
  // An open-ended range runs to the end.
  out.clear();
  r = client->get_object({"b", "k", 990, std::nullopt, ""}, into(out));
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(out, data.substr(990));
  EXPECT_EQ(server.requests()[2].header("range"), "bytes=990-");
}

TEST(S3Client, TruncatedRangedGetResumesWithTheRestOfTheRange) {
  std::string data = pattern(300000);
  std::atomic<int> n{0};
  TestHttpServer server([&](const ReceivedRequest& r) {
    ScriptedReply reply = partial_content(data, r);
    if (n++ == 0) reply.truncate_body_at = 1000;
    return reply;
  });
  auto client = client_for(server.url());
  std::string out;
  auto r = client->get_object({"b", "k", 5000, 200000, ""}, into(out));
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_TRUE(out == data.substr(5000, 200000));
  auto reqs = server.requests();
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(reqs[0].header("range"), "bytes=5000-204999");
  EXPECT_EQ(reqs[1].header("range"), "bytes=6000-204999");
  EXPECT_EQ(reqs[1].header("if-match"), "\"v1\"");
}

TEST(S3Client, ResumedGetAnsweredWithTheWholeObjectIsRefusedWithoutMixingBytes) {
  std::string data = pattern(5000);
  std::atomic<int> n{0};
  TestHttpServer server([&](const ReceivedRequest&) {
    // The first answer is cut after 10 bytes; the resumed GET asks for
    // bytes=10- and gets the whole object from byte 0 again.
    if (n++ == 0) return ScriptedReply{200, {{"ETag", "\"v1\""}}, data, size_t{10}, 0};
    return ScriptedReply{200, {{"ETag", "\"v1\""}}, data, {}, 0};
  });
  auto client = client_for(server.url());
  std::string out;
  auto r = client->get_object({"b", "k", 0, std::nullopt, ""}, into(out));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kMalformedResponse);
  EXPECT_NE(r.error().message.find("bytes=10-"), std::string::npos) << r.error().message;
  EXPECT_EQ(out, data.substr(0, 10)) << "only the first attempt's bytes may have been delivered";
  auto reqs = server.requests();
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(reqs[1].header("range"), "bytes=10-");
}

TEST(S3Client, ParallelDownloadFromAServerThatIgnoresRangeFailsAndWritesNothing) {
  std::string data = pattern(12 * 1024 * 1024);
  TestHttpServer server([&](const ReceivedRequest&) {
    return ScriptedReply{200, {{"ETag", "\"v1\""}}, data, {}, 0};
  });
  auto client = client_for(server.url());
  char tmpl[] = "/tmp/nacre-s3client-XXXXXX";
  int fd = mkstemp(tmpl);
  ASSERT_GE(fd, 0);
  unlink(tmpl);
  TransferOptions opt;
  opt.part_size = kMinPartSize;
  auto info = download_to_fd(*client, "b", "k", fd, opt);
  struct stat st {};
  fstat(fd, &st);
  close(fd);
  ASSERT_FALSE(info);
  EXPECT_EQ(info.error().code, ErrorCode::kMalformedResponse) << info.error().describe();
  EXPECT_EQ(st.st_size, 0) << "no byte of the refused answer may reach the file";
  EXPECT_EQ(server.requests()[0].header("range"), "bytes=0-5242879");
}

// ---- cancel_all ----

std::unique_ptr<S3Client> patient_client(const std::string& endpoint, int attempts,
                                         std::chrono::milliseconds backoff) {
  S3Config c;
  c.endpoint = endpoint;
  c.credentials = Credentials{"AKID", "SECRET", "", std::nullopt, "test"};
  c.retry.max_attempts = attempts;
  c.retry.base = backoff;
  c.retry.cap = backoff;
  c.http.stall_timeout = std::chrono::seconds(30);  // far longer than the test waits
  auto r = S3Client::create(c);
  EXPECT_TRUE(r) << r.error().describe();
  return std::move(*r);
}

void wait_for_requests(const TestHttpServer& server, size_t n) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (server.requests().size() < n && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_GE(server.requests().size(), n);
}

// Runs `request` on another thread, calls cancel_all() once the server has
// seen the request and `settle` has passed, and checks that the request
// fails with kCancelled within a second of the call.
template <typename F>
void expect_cancelled_promptly(S3Client& client, const TestHttpServer& server, F request,
                               std::chrono::milliseconds settle) {
  auto result = std::async(std::launch::async, request);
  wait_for_requests(server, 1);
  std::this_thread::sleep_for(settle);
  ASSERT_EQ(result.wait_for(std::chrono::milliseconds(0)), std::future_status::timeout)
      << "the request ended before cancel_all()";
  auto start = std::chrono::steady_clock::now();
  client.cancel_all();
  ASSERT_EQ(result.wait_for(std::chrono::seconds(1)), std::future_status::ready)
      << "the request did not end within 1 s of cancel_all()";
  auto took = std::chrono::steady_clock::now() - start;
  Error e = result.get();
  EXPECT_EQ(e.code, ErrorCode::kCancelled) << e.describe();
  EXPECT_LT(took, std::chrono::milliseconds(1000));
}

TEST(S3Client, CancelAllEndsAGetStalledAfterTheHeaders) {
  std::string data = pattern(100000);
  TestHttpServer server([&](const ReceivedRequest&) {
    ScriptedReply r{200, {{"ETag", "\"v1\""}}, data, size_t{0}, 0};
    r.hang_after_ms = 20000;  // headers, then nothing
    return r;
  });
  auto client = patient_client(server.url(), 5, std::chrono::milliseconds(1));
  std::string out;
  expect_cancelled_promptly(
      *client, server,
      [&]() -> Error {
        auto r = client->get_object({"b", "k", 0, std::nullopt, ""}, into(out));
        return r ? Error{} : r.error();
      },
      std::chrono::milliseconds(200));
  EXPECT_EQ(server.requests().size(), 1u) << "kCancelled must not be retried";
}

TEST(S3Client, CancelAllEndsARequestWaitingForAnswerHeaders) {
  TestHttpServer server([](const ReceivedRequest&) {
    return ScriptedReply{200, {}, "late", {}, 20000};
  });
  auto client = patient_client(server.url(), 5, std::chrono::milliseconds(1));
  expect_cancelled_promptly(
      *client, server,
      [&]() -> Error {
        auto r = client->head_object("b", "k");
        return r ? Error{} : r.error();
      },
      std::chrono::milliseconds(200));
  EXPECT_EQ(server.requests().size(), 1u);
}

TEST(S3Client, CancelAllEndsARetryBackoff) {
  TestHttpServer server([](const ReceivedRequest&) {
    return ScriptedReply{503, {}, error_xml("SlowDown", "slow down"), {}, 0};
  });
  // Back-offs of up to a minute: the request is asleep when cancel_all()
  // comes (full jitter could draw a short one; then it is asleep in the next).
  auto client = patient_client(server.url(), 10, std::chrono::milliseconds(60000));
  expect_cancelled_promptly(
      *client, server,
      [&]() -> Error {
        auto r = client->get_object({"b", "k", 0, std::nullopt, ""},
                                    [](std::string_view) -> Status { return {}; });
        return r ? Error{} : r.error();
      },
      std::chrono::milliseconds(300));
}

TEST(S3Client, RequestsAfterCancelAllFailAtOnce) {
  TestHttpServer server([](const ReceivedRequest&) {
    return ScriptedReply{200, {{"ETag", "\"e\""}}, "", {}, 0};
  });
  auto client = patient_client(server.url(), 5, std::chrono::milliseconds(60000));
  client->cancel_all();
  client->cancel_all();  // idempotent
  auto start = std::chrono::steady_clock::now();
  auto head = client->head_object("b", "k");
  std::string out;
  auto get = client->get_object({"b", "k", 0, 10, ""}, into(out));
  auto put = client->put_object({"b", "k", Body::from_memory("x"), {}, ""});
  auto list = client->list_objects({"b", "", "/", "", "", 1000});
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(100));
  ASSERT_FALSE(head);
  EXPECT_EQ(head.error().code, ErrorCode::kCancelled);
  EXPECT_NE(head.error().message.find("HeadObject s3://b/k"), std::string::npos)
      << head.error().message;
  ASSERT_FALSE(get);
  EXPECT_EQ(get.error().code, ErrorCode::kCancelled);
  ASSERT_FALSE(put);
  EXPECT_EQ(put.error().code, ErrorCode::kCancelled);
  ASSERT_FALSE(list);
  EXPECT_EQ(list.error().code, ErrorCode::kCancelled);
  EXPECT_TRUE(server.requests().empty()) << "nothing may reach the store after cancel_all()";
}

}  // namespace
}  // namespace nacre::s3
