// The XML documents of the S3 REST API, read and written with pugixml.
// Every parser reports a document it cannot use as kMalformedResponse.
#pragma once

#include <string>
#include <vector>

#include "common/error.h"
#include "s3/object_client.h"

namespace nacre::s3::xml {

struct ErrorDocument {
  std::string code;
  std::string message;
  std::string request_id;
};
// <Error><Code/><Message/><RequestId/></Error>; nullopt when `body` is not one.
std::optional<ErrorDocument> parse_error(const std::string& body);

// ListBucketResult of ListObjectsV2 (requested without encoding-type).
Result<ListPage> parse_list(const std::string& body);
// The <ETag> of CopyObjectResult, CopyPartResult or CompleteMultipartUploadResult.
Result<std::string> parse_etag(const std::string& body, const char* root);
// InitiateMultipartUploadResult/UploadId.
Result<std::string> parse_upload_id(const std::string& body);
// ListMultipartUploadsResult (requested without encoding-type).
Result<UploadsPage> parse_uploads(const std::string& body);
// DeleteResult/Error entries.
Result<std::vector<DeleteFailure>> parse_delete_result(const std::string& body);

std::string complete_multipart_body(const std::vector<CompletedPart>& parts);
std::string delete_objects_body(const std::vector<std::string>& keys);

std::string strip_quotes(std::string etag);

}  // namespace nacre::s3::xml
