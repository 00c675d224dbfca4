#include "s3/s3_xml.h"

#include <pugixml.hpp>
#include <sstream>

#include "s3/credentials.h"

namespace nacre::s3::xml {

namespace {

Result<pugi::xml_node> load(pugi::xml_document& doc, const std::string& body, const char* root) {
  pugi::xml_parse_result r = doc.load_buffer(body.data(), body.size());
  if (!r) {
    return fail(ErrorCode::kMalformedResponse, std::string("cannot parse the server's ") + root +
                                                   " XML: " + r.description() + " at byte " +
                                                   std::to_string(r.offset));
  }
  pugi::xml_node n = doc.child(root);
  if (!n) {
    return fail(ErrorCode::kMalformedResponse,
                std::string("the server's answer has no <") + root + "> element");
  }
  return n;
}

std::string text(const pugi::xml_node& n, const char* child) {
  return n.child(child).text().as_string();
}

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        out.push_back(c);
    }
  }
  return out;
}

}  // namespace

std::string strip_quotes(std::string etag) {
  if (etag.size() >= 2 && etag.front() == '"' && etag.back() == '"') {
    etag = etag.substr(1, etag.size() - 2);
  }
  return etag;
}

std::optional<ErrorDocument> parse_error(const std::string& body) {
  pugi::xml_document doc;
  if (body.empty() || !doc.load_buffer(body.data(), body.size())) return std::nullopt;
  pugi::xml_node e = doc.child("Error");
  if (!e) return std::nullopt;
  return ErrorDocument{text(e, "Code"), text(e, "Message"), text(e, "RequestId")};
}

Result<ListPage> parse_list(const std::string& body) {
  pugi::xml_document doc;
  auto root = load(doc, body, "ListBucketResult");
  if (!root) return std::unexpected(root.error());
  ListPage page;
  for (pugi::xml_node c : root->children("Contents")) {
    ObjectInfo o;
    o.key = text(c, "Key");
    if (o.key.empty()) {
      return fail(ErrorCode::kMalformedResponse, "ListObjectsV2 entry without a <Key>");
    }
    o.size = c.child("Size").text().as_ullong();
    o.etag = strip_quotes(text(c, "ETag"));
    if (auto t = parse_iso8601(text(c, "LastModified"))) o.last_modified = *t;
    page.objects.push_back(std::move(o));
  }
  for (pugi::xml_node p : root->children("CommonPrefixes")) {
    page.common_prefixes.push_back(text(p, "Prefix"));
  }
  if (std::string(root->child("IsTruncated").text().as_string()) == "true") {
    page.next_continuation_token = text(*root, "NextContinuationToken");
    if (page.next_continuation_token.empty()) {
      return fail(ErrorCode::kMalformedResponse,
                  "ListObjectsV2 page is truncated but has no NextContinuationToken");
    }
  }
  return page;
}

Result<std::string> parse_etag(const std::string& body, const char* root) {
  pugi::xml_document doc;
  auto n = load(doc, body, root);
  if (!n) return std::unexpected(n.error());
  std::string etag = strip_quotes(text(*n, "ETag"));
  if (etag.empty()) {
    return fail(ErrorCode::kMalformedResponse,
                std::string("<") + root + "> has no <ETag>: " + body.substr(0, 1000));
  }
  return etag;
}

Result<std::string> parse_upload_id(const std::string& body) {
  pugi::xml_document doc;
  auto n = load(doc, body, "InitiateMultipartUploadResult");
  if (!n) return std::unexpected(n.error());
  std::string id = text(*n, "UploadId");
  if (id.empty()) return fail(ErrorCode::kMalformedResponse, "CreateMultipartUpload: no UploadId");
  return id;
}

Result<UploadsPage> parse_uploads(const std::string& body) {
  pugi::xml_document doc;
  auto root = load(doc, body, "ListMultipartUploadsResult");
  if (!root) return std::unexpected(root.error());
  UploadsPage page;
  for (pugi::xml_node u : root->children("Upload")) {
    UploadInfo info{text(u, "Key"), text(u, "UploadId"), {}};
    auto initiated = parse_iso8601(text(u, "Initiated"));
    if (info.key.empty() || info.upload_id.empty() || !initiated) {
      return fail(ErrorCode::kMalformedResponse,
                  "ListMultipartUploads entry without a <Key>, <UploadId> or <Initiated> time");
    }
    info.initiated = *initiated;
    page.uploads.push_back(std::move(info));
  }
  if (std::string(root->child("IsTruncated").text().as_string()) == "true") {
    page.next_key_marker = text(*root, "NextKeyMarker");
    page.next_upload_id_marker = text(*root, "NextUploadIdMarker");
    if (page.next_key_marker.empty()) {
      return fail(ErrorCode::kMalformedResponse,
                  "ListMultipartUploads page is truncated but has no NextKeyMarker");
    }
  }
  return page;
}

Result<std::vector<DeleteFailure>> parse_delete_result(const std::string& body) {
  pugi::xml_document doc;
  auto n = load(doc, body, "DeleteResult");
  if (!n) return std::unexpected(n.error());
  std::vector<DeleteFailure> out;
  for (pugi::xml_node e : n->children("Error")) {
    out.push_back(
        {text(e, "Key"), Error{ErrorCode::kOther, text(e, "Message"), text(e, "Code"), {}, 0}});
  }
  return out;
}

std::string complete_multipart_body(const std::vector<CompletedPart>& parts) {
  std::ostringstream out;
  out << "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">";
  for (const auto& p : parts) {
    out << "<Part><PartNumber>" << p.number << "</PartNumber><ETag>\"" << escape(p.etag)
        << "\"</ETag></Part>";
  }
  out << "</CompleteMultipartUpload>";
  return out.str();
}

std::string delete_objects_body(const std::vector<std::string>& keys) {
  std::ostringstream out;
  out << "<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Quiet>true</Quiet>";
  for (const auto& k : keys) out << "<Object><Key>" << escape(k) << "</Key></Object>";
  out << "</Delete>";
  return out.str();
}

}  // namespace nacre::s3::xml
