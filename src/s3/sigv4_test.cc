#include "s3/sigv4.h"

#include <gtest/gtest.h>

#include <ctime>

namespace nacre::s3 {
namespace {

Clock::time_point at(int y, int mo, int d, int h, int mi, int s) {
  std::tm tm{};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = s;
  return Clock::from_time_t(timegm(&tm));
}

}  // namespace

// Vectors kept in the test itself, so the signer is always checked, also in a
// plain clone without the AWS SigV4 test suite beside it. The suite's cases are
// in sigv4_suite_test.cc, compiled in only when CMake found the suite
// (NACRE_SIGV4_SUITE_DIR; see docs/TESTING.md).
TEST(SigV4, GetVanillaFromSuiteKeptInline) {
  SignableRequest req{"GET", "/", {}, {{"Host", "example.amazonaws.com"}}, kEmptyPayloadHash};
  SigningOptions opt{"us-east-1", "service", true, false, true};
  Credentials c{"AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "", {}, ""};
  EXPECT_EQ(sign(req, c, opt, at(2015, 8, 30, 12, 36, 0)),
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
  EXPECT_EQ(req.headers.back().second,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
            "SignedHeaders=host;x-amz-date, "
            "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
}

TEST(SigV4, Utf8PathKeptInline) {
  SignableRequest req{"GET", "/\xe1\x88\xb4", {}, {{"Host", "example.amazonaws.com"}},
                      kEmptyPayloadHash};
  SigningOptions opt{"us-east-1", "service", true, false, true};
  Credentials c{"AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "", {}, ""};
  EXPECT_EQ(sign(req, c, opt, at(2015, 8, 30, 12, 36, 0)),
            "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85");
}

// The S3 GetObject example of the AWS S3 SigV4 documentation (header-based
// authentication): S3 signs x-amz-content-sha256 and a Range header.
TEST(SigV4, S3GetObjectDocumentationExample) {
  SignableRequest req{"GET",
                      "/test.txt",
                      {},
                      {{"Host", "examplebucket.s3.amazonaws.com"}, {"Range", "bytes=0-9"}},
                      kEmptyPayloadHash};
  SigningOptions opt{"us-east-1", "s3", false, true, true};
  Credentials c{"AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "", {}, ""};
  EXPECT_EQ(sign(req, c, opt, at(2013, 5, 24, 0, 0, 0)),
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
}

TEST(SigV4, S3KeysAreEncodedOnceAndNeverNormalized) {
  EXPECT_EQ(canonical_uri("/bucket/a b/./c//d+e", false), "/bucket/a%20b/./c//d%2Be");
  EXPECT_EQ(canonical_uri("/bucket/a b/./c//d", true), "/bucket/a%20b/c/d");
}

}  // namespace nacre::s3
