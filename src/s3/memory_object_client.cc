#include "s3/memory_object_client.h"

#include <openssl/evp.h>
#include <unistd.h>

#include <algorithm>
#include <tuple>

#include "s3/crypto.h"

namespace nacre::s3 {

namespace {

std::string md5_hex(std::string_view data) {
  unsigned char md[16];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_md5(), nullptr);
  return hex(md, len);
}

Error not_found(ErrorCode code, const std::string& what) {
  return Error{code, what, std::string(to_string(code)), "memory", 404};
}

}  // namespace

Result<std::string> read_body(const Body& body) {
  switch (body.kind) {
    case Body::Kind::kEmpty:
      return std::string();
    case Body::Kind::kMemory:
      return std::string(body.memory);
    case Body::Kind::kFile: {
      std::string out(body.length, '\0');
      size_t done = 0;
      while (done < out.size()) {
        ssize_t n = pread(body.fd, out.data() + done, out.size() - done,
                          static_cast<off_t>(body.offset + done));
        if (n <= 0) return fail_errno("reading body", n == 0 ? EIO : errno);
        done += static_cast<size_t>(n);
      }
      return out;
    }
    case Body::Kind::kStream: {
      std::string out(body.length, '\0');
      size_t done = 0;
      while (done < out.size()) {
        auto n = body.stream(out.data() + done, out.size() - done);
        if (!n) return std::unexpected(n.error());
        if (*n == 0) return fail(ErrorCode::kIo, "stream body ended early");
        done += *n;
      }
      return out;
    }
  }
  return std::string();
}

void MemoryObjectClient::create_bucket(const std::string& bucket) {
  std::lock_guard lock(mu_);
  buckets_[bucket];
}

int MemoryObjectClient::request_count(const std::string& op) const {
  std::lock_guard lock(mu_);
  auto it = counts_.find(op);
  return it == counts_.end() ? 0 : it->second;
}

Status MemoryObjectClient::count(const std::string& op) {
  {
    std::lock_guard lock(mu_);
    ++counts_[op];
  }
  if (cancelled_) return fail(ErrorCode::kCancelled, op + ": cancelled (the client is shut down)");
  return {};
}

Result<std::map<std::string, MemoryObjectClient::Object>*> MemoryObjectClient::bucket_locked(
    const std::string& bucket) {
  auto it = buckets_.find(bucket);
  if (it == buckets_.end()) return std::unexpected(not_found(ErrorCode::kNoSuchBucket, bucket));
  return &it->second;
}

std::string MemoryObjectClient::store_locked(const std::string& bucket, const std::string& key,
                                             std::string data, UserMetadata meta,
                                             std::string content_type, std::string etag) {
  Object& o = buckets_[bucket][key];
  o.info.key = key;
  o.info.size = data.size();
  o.info.etag = etag.empty() ? md5_hex(data) : etag;
  o.info.last_modified = std::chrono::system_clock::now();
  o.info.metadata = std::move(meta);
  o.info.content_type = std::move(content_type);
  o.data = std::move(data);
  return o.info.etag;
}

Result<ObjectInfo> MemoryObjectClient::head_object(const std::string& bucket,
                                                   const std::string& key) {
  if (auto c = count("HeadObject"); !c) return std::unexpected(c.error());
  std::lock_guard lock(mu_);
  auto b = bucket_locked(bucket);
  if (!b) return std::unexpected(b.error());
  auto it = (*b)->find(key);
  if (it == (*b)->end()) return std::unexpected(not_found(ErrorCode::kNoSuchKey, key));
  return it->second.info;
}

Result<GetObjectResult> MemoryObjectClient::get_object(const GetObjectRequest& req,
                                                       const DataSink& sink) {
  if (auto c = count("GetObject"); !c) return std::unexpected(c.error());
  std::string slice;
  ObjectInfo info;
  {
    std::lock_guard lock(mu_);
    auto b = bucket_locked(req.bucket);
    if (!b) return std::unexpected(b.error());
    auto it = (*b)->find(req.key);
    if (it == (*b)->end()) return std::unexpected(not_found(ErrorCode::kNoSuchKey, req.key));
    info = it->second.info;
    if (!req.if_match.empty() && req.if_match != info.etag) {
      return fail(ErrorCode::kPreconditionFailed, "ETag of " + req.key + " changed");
    }
    if (req.offset > info.size || (req.offset == info.size && info.size > 0)) {
      return fail(ErrorCode::kInvalidRange, "range past the end of " + req.key);
    }
    uint64_t len =
        req.length ? std::min(*req.length, info.size - req.offset) : info.size - req.offset;
    slice = it->second.data.substr(req.offset, len);
  }
  // Deliver in pieces as a network would.
  constexpr size_t kPiece = 64 * 1024;
  for (size_t pos = 0; pos < slice.size(); pos += kPiece) {
    if (cancelled_) return fail(ErrorCode::kCancelled, "GetObject " + req.key + ": cancelled");
    auto st = sink(std::string_view(slice).substr(pos, kPiece));
    if (!st) return std::unexpected(st.error());
  }
  bytes_served_ += slice.size();
  return GetObjectResult{info, slice.size()};
}

Result<std::string> MemoryObjectClient::put_object(const PutObjectRequest& req) {
  if (auto c = count("PutObject"); !c) return std::unexpected(c.error());
  auto data = read_body(req.body);
  if (!data) return std::unexpected(data.error());
  std::lock_guard lock(mu_);
  auto b = bucket_locked(req.bucket);
  if (!b) return std::unexpected(b.error());
  return store_locked(req.bucket, req.key, std::move(*data), req.metadata, req.content_type, "");
}

Result<ListPage> MemoryObjectClient::list_objects(const ListRequest& req) {
  if (auto c = count("ListObjectsV2"); !c) return std::unexpected(c.error());
  std::lock_guard lock(mu_);
  auto b = bucket_locked(req.bucket);
  if (!b) return std::unexpected(b.error());
  ListPage page;
  // The continuation token is the last key or common prefix returned.
  std::string after = std::max(req.continuation_token, req.start_after);
  bool after_is_prefix = !req.delimiter.empty() && after.ends_with(req.delimiter);
  std::string last;
  int n = 0;
  auto it = (*b)->upper_bound(after);
  if (it != (*b)->end() && it->first < req.prefix) it = (*b)->lower_bound(req.prefix);
  for (; it != (*b)->end() && it->first.starts_with(req.prefix); ++it) {
    const std::string& key = it->first;
    if (after_is_prefix && key.starts_with(after)) continue;
    std::string entry = key;
    bool is_prefix = false;
    if (!req.delimiter.empty()) {
      size_t d = key.find(req.delimiter, req.prefix.size());
      if (d != std::string::npos) {
        entry = key.substr(0, d + req.delimiter.size());
        is_prefix = true;
      }
    }
    if (is_prefix && entry == last) continue;
    if (n == req.max_keys) {
      page.next_continuation_token = last;
      break;
    }
    if (is_prefix)
      page.common_prefixes.push_back(entry);
    else
      page.objects.push_back(it->second.info);
    last = entry;
    ++n;
  }
  return page;
}

Status MemoryObjectClient::delete_object(const std::string& bucket, const std::string& key) {
  if (auto c = count("DeleteObject"); !c) return std::unexpected(c.error());
  std::lock_guard lock(mu_);
  auto b = bucket_locked(bucket);
  if (!b) return std::unexpected(b.error());
  (*b)->erase(key);
  return {};
}

Result<std::vector<DeleteFailure>> MemoryObjectClient::delete_objects(
    const std::string& bucket, const std::vector<std::string>& keys) {
  if (auto c = count("DeleteObjects"); !c) return std::unexpected(c.error());
  std::lock_guard lock(mu_);
  auto b = bucket_locked(bucket);
  if (!b) return std::unexpected(b.error());
  for (const auto& k : keys) (*b)->erase(k);
  return std::vector<DeleteFailure>{};
}

Result<std::string> MemoryObjectClient::copy_object(const CopyObjectRequest& req) {
  if (auto c = count("CopyObject"); !c) return std::unexpected(c.error());
  std::lock_guard lock(mu_);
  auto src = bucket_locked(req.source_bucket);
  if (!src) return std::unexpected(src.error());
  auto it = (*src)->find(req.source_key);
  if (it == (*src)->end()) return std::unexpected(not_found(ErrorCode::kNoSuchKey, req.source_key));
  if (!req.source_if_match.empty() && req.source_if_match != it->second.info.etag) {
    return fail(ErrorCode::kPreconditionFailed, "copy source changed");
  }
  if (auto dst = bucket_locked(req.bucket); !dst) return std::unexpected(dst.error());
  Object copy = it->second;
  UserMetadata meta = req.replace_metadata ? *req.replace_metadata : copy.info.metadata;
  std::string type = req.replace_metadata ? req.content_type : copy.info.content_type;
  return store_locked(req.bucket, req.key, std::move(copy.data), std::move(meta), std::move(type),
                      "");
}

Result<std::string> MemoryObjectClient::create_multipart_upload(const std::string& bucket,
                                                                const std::string& key,
                                                                const UserMetadata& metadata,
                                                                const std::string& content_type) {
  if (auto c = count("CreateMultipartUpload"); !c) return std::unexpected(c.error());
  std::lock_guard lock(mu_);
  if (auto b = bucket_locked(bucket); !b) return std::unexpected(b.error());
  std::string id = "upload-" + std::to_string(next_upload_++);
  uploads_[id] = Upload{bucket, key, metadata, content_type, {}, std::chrono::system_clock::now()};
  return id;
}

Result<std::string> MemoryObjectClient::upload_part(const std::string&, const std::string&,
                                                    const std::string& upload_id, int part_number,
                                                    const Body& body) {
  if (auto c = count("UploadPart"); !c) return std::unexpected(c.error());
  auto data = read_body(body);
  if (!data) return std::unexpected(data.error());
  std::lock_guard lock(mu_);
  auto it = uploads_.find(upload_id);
  if (it == uploads_.end()) return std::unexpected(not_found(ErrorCode::kNoSuchUpload, upload_id));
  std::string etag = md5_hex(*data);
  it->second.parts[part_number] = {etag, std::move(*data)};
  return etag;
}

Result<std::string> MemoryObjectClient::upload_part_copy(const CopyObjectRequest& source,
                                                         const std::string& upload_id,
                                                         int part_number, uint64_t offset,
                                                         uint64_t length) {
  if (auto c = count("UploadPartCopy"); !c) return std::unexpected(c.error());
  std::lock_guard lock(mu_);
  auto src = bucket_locked(source.source_bucket);
  if (!src) return std::unexpected(src.error());
  auto obj = (*src)->find(source.source_key);
  if (obj == (*src)->end()) {
    return std::unexpected(not_found(ErrorCode::kNoSuchKey, source.source_key));
  }
  auto it = uploads_.find(upload_id);
  if (it == uploads_.end()) return std::unexpected(not_found(ErrorCode::kNoSuchUpload, upload_id));
  if (offset + length > obj->second.data.size()) {
    return fail(ErrorCode::kInvalidRange, "copy range past the end of the source");
  }
  std::string data = obj->second.data.substr(offset, length);
  std::string etag = md5_hex(data);
  it->second.parts[part_number] = {etag, std::move(data)};
  return etag;
}

Result<std::string> MemoryObjectClient::complete_multipart_upload(
    const std::string& bucket, const std::string& key, const std::string& upload_id,
    const std::vector<CompletedPart>& parts) {
  if (auto c = count("CompleteMultipartUpload"); !c) return std::unexpected(c.error());
  std::lock_guard lock(mu_);
  auto it = uploads_.find(upload_id);
  if (it == uploads_.end() || it->second.bucket != bucket || it->second.key != key) {
    return std::unexpected(not_found(ErrorCode::kNoSuchUpload, upload_id));
  }
  std::string data, etags;
  int prev = 0;
  for (const auto& p : parts) {
    auto part = it->second.parts.find(p.number);
    if (p.number <= prev || part == it->second.parts.end() || part->second.first != p.etag) {
      return fail(ErrorCode::kInvalidArgument, "InvalidPart: part " + std::to_string(p.number));
    }
    prev = p.number;
    data += part->second.second;
    etags += part->second.first;
  }
  std::string etag = md5_hex(etags) + "-" + std::to_string(parts.size());
  Upload up = std::move(it->second);
  uploads_.erase(it);
  return store_locked(bucket, key, std::move(data), std::move(up.metadata),
                      std::move(up.content_type), etag);
}

Status MemoryObjectClient::abort_multipart_upload(const std::string&, const std::string&,
                                                  const std::string& upload_id) {
  if (auto c = count("AbortMultipartUpload"); !c) return std::unexpected(c.error());
  std::lock_guard lock(mu_);
  if (uploads_.erase(upload_id) == 0) {
    return std::unexpected(not_found(ErrorCode::kNoSuchUpload, upload_id));
  }
  return {};
}

// Every match in one page (a fake needs no paging), ordered as S3 orders them.
Result<UploadsPage> MemoryObjectClient::list_multipart_uploads(const std::string& bucket,
                                                               const std::string& prefix,
                                                               const std::string& key_marker,
                                                               const std::string&) {
  if (auto c = count("ListMultipartUploads"); !c) return std::unexpected(c.error());
  std::lock_guard lock(mu_);
  if (auto b = bucket_locked(bucket); !b) return std::unexpected(b.error());
  UploadsPage page;
  for (const auto& [id, up] : uploads_) {
    if (up.bucket == bucket && up.key.starts_with(prefix) && up.key > key_marker) {
      page.uploads.push_back({up.key, id, up.initiated});
    }
  }
  std::ranges::sort(page.uploads, [](const UploadInfo& a, const UploadInfo& b) {
    return std::tie(a.key, a.initiated) < std::tie(b.key, b.initiated);
  });
  return page;
}

}  // namespace nacre::s3
