#include "s3/transfer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

namespace nacre::s3 {

uint64_t part_size_for(uint64_t size, uint64_t wanted) {
  uint64_t part = std::max(wanted, kMinPartSize);
  uint64_t needed = (size + kMaxParts - 1) / kMaxParts;
  return std::max(part, needed);
}

Status run_parallel(int count, int concurrency, const std::function<Status(int)>& task) {
  std::atomic<int> next{0};
  std::mutex mu;
  std::optional<Error> first_error;  // GUARDED_BY(mu)
  std::atomic<bool> failed{false};
  auto worker = [&] {
    for (int i = next++; i < count && !failed; i = next++) {
      Status st = task(i);
      if (!st) {
        std::lock_guard lock(mu);
        if (!first_error) first_error = st.error();
        failed = true;
      }
    }
  };
  int threads = std::max(1, std::min(concurrency, count));
  std::vector<std::jthread> pool;
  for (int i = 1; i < threads; ++i) pool.emplace_back(worker);
  worker();
  pool.clear();
  if (first_error) return std::unexpected(*first_error);
  return {};
}

static Status write_all_at(int fd, std::string_view data, uint64_t offset) {
  while (!data.empty()) {
    ssize_t n = pwrite(fd, data.data(), data.size(), static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail_errno("writing the download", errno);
    }
    data.remove_prefix(static_cast<size_t>(n));
    offset += static_cast<uint64_t>(n);
  }
  return {};
}

static Status write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail_errno("writing the download", errno);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return {};
}

// A sink that writes consecutive chunks into `fd` from `offset` on.
static DataSink sink_at(int fd, uint64_t offset, const TransferOptions& options) {
  return [fd, pos = offset, &options](std::string_view c) mutable -> Status {
    if (options.progress) options.progress(c.size());
    Status w = write_all_at(fd, c, pos);
    pos += c.size();
    return w;
  };
}

Result<ObjectInfo> download_to_fd(ObjectClient& client, const std::string& bucket,
                                  const std::string& key, int fd, const TransferOptions& options) {
  struct stat st {};
  if (fstat(fd, &st) != 0) return fail_errno("fstat of the download target", errno);
  bool seekable = S_ISREG(st.st_mode) || S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode);
  if (!seekable || lseek(fd, 0, SEEK_CUR) < 0) {
    auto r = client.get_object({bucket, key, 0, std::nullopt, ""}, [&](std::string_view c) {
      if (options.progress) options.progress(c.size());
      return write_all(fd, c);
    });
    if (!r) return std::unexpected(r.error());
    return r->info;
  }
  // The first part's GET also tells the size and the ETag that pins the rest.
  uint64_t part = options.part_size;
  auto head = client.get_object({bucket, key, 0, part, ""}, sink_at(fd, 0, options));
  if (!head && head.error().code == ErrorCode::kInvalidRange) {
    // A zero-byte object has no byte 0.
    auto info = client.head_object(bucket, key);
    if (!info) return std::unexpected(info.error());
    if (info->size == 0) return info;
    return std::unexpected(head.error());
  }
  if (!head) return std::unexpected(head.error());
  ObjectInfo info = head->info;
  if (S_ISREG(st.st_mode) && ftruncate(fd, static_cast<off_t>(info.size)) != 0) {
    return fail_errno("sizing the download target", errno);
  }
  int parts = static_cast<int>((info.size + part - 1) / part);
  Status st2 = run_parallel(parts - 1, options.concurrency, [&](int i) -> Status {
    uint64_t off = (static_cast<uint64_t>(i) + 1) * part;
    uint64_t len = std::min(part, info.size - off);
    auto r = client.get_object({bucket, key, off, len, info.etag}, sink_at(fd, off, options));
    if (!r) return std::unexpected(r.error());
    if (r->bytes != len) {
      return fail(
          ErrorCode::kMalformedResponse,
          "GetObject s3://" + bucket + "/" + key + ": short part at offset " + std::to_string(off));
    }
    return {};
  });
  if (!st2) return std::unexpected(st2.error());
  return info;
}

Result<int> create_partial_file(const std::string& path) {
  struct stat st {};
  if (lstat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
    // unlinkat removes the name itself: had it become a symlink since the
    // lstat, the symlink goes, never its target. ENOENT means it is gone.
    if (unlinkat(AT_FDCWD, path.c_str(), 0) != 0 && errno != ENOENT) {
      return fail_errno("cannot remove the leftover partial download " + path, errno);
    }
  }
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd >= 0) return fd;
  int err = errno;
  if (err == EEXIST || err == ELOOP) {
    return fail(ErrorCode::kInvalidArgument,
                "cannot create " + path +
                    ": something other than a regular file is there "
                    "(a symlink?); it is never followed or overwritten: check what it is and "
                    "remove it, then try again");
  }
  return fail_errno("cannot create " + path, err);
}

Result<std::string> upload_from_fd(ObjectClient& client, int fd, uint64_t size,
                                   const PutObjectRequest& target, const TransferOptions& options) {
  if (size <= options.part_size) {
    PutObjectRequest req = target;
    req.body = Body::from_file(fd, 0, size);
    auto etag = client.put_object(req);
    if (etag && options.progress) options.progress(size);
    return etag;
  }
  uint64_t part = part_size_for(size, options.part_size);
  int parts = static_cast<int>((size + part - 1) / part);
  auto upload_id = client.create_multipart_upload(target.bucket, target.key, target.metadata,
                                                  target.content_type);
  if (!upload_id) return std::unexpected(upload_id.error());
  if (options.created) options.created(*upload_id);
  std::vector<CompletedPart> done(parts);
  Status st = run_parallel(parts, options.concurrency, [&](int i) -> Status {
    uint64_t off = static_cast<uint64_t>(i) * part;
    uint64_t len = std::min(part, size - off);
    auto etag = client.upload_part(target.bucket, target.key, *upload_id, i + 1,
                                   Body::from_file(fd, off, len));
    if (!etag) return std::unexpected(etag.error());
    done[i] = {i + 1, *etag};
    if (options.progress) options.progress(len);
    return {};
  });
  Result<std::string> etag =
      st ? client.complete_multipart_upload(target.bucket, target.key, *upload_id, done)
         : Result<std::string>(std::unexpected(st.error()));
  if (!etag) {
    // Leave no orphaned parts behind (they would be billed and invisible).
    (void)client.abort_multipart_upload(target.bucket, target.key, *upload_id);
  }
  return etag;
}

Result<std::vector<UploadInfo>> uploads_of_key(ObjectClient& client, const std::string& bucket,
                                               const std::string& key) {
  std::vector<UploadInfo> out;
  std::string key_marker, id_marker;
  // One key's uploads fill a page or two; a server that pages on and on is
  // stopped rather than followed forever.
  for (int pages = 0; pages < 1000; ++pages) {
    auto page = client.list_multipart_uploads(bucket, key, key_marker, id_marker);
    if (!page) return std::unexpected(page.error());
    for (auto& u : page->uploads) {
      if (u.key == key) out.push_back(std::move(u));
    }
    if (page->next_key_marker.empty()) return out;
    if (page->next_key_marker == key_marker && page->next_upload_id_marker == id_marker) {
      return fail(ErrorCode::kMalformedResponse, "ListMultipartUploads pages do not advance");
    }
    if (page->next_key_marker > key) return out;  // past the key: the rest are longer keys
    key_marker = std::move(page->next_key_marker);
    id_marker = std::move(page->next_upload_id_marker);
  }
  return fail(ErrorCode::kMalformedResponse,
              "ListMultipartUploads of " + key + ": more than 1000 pages for one key");
}

Result<std::string> copy_any_size(ObjectClient& client, const CopyObjectRequest& req, uint64_t size,
                                  const TransferOptions& options) {
  if (size <= options.multipart_copy_threshold) return client.copy_object(req);
  uint64_t part = part_size_for(size, options.copy_part_size);
  int parts = static_cast<int>((size + part - 1) / part);
  UserMetadata meta;
  std::string type;
  if (req.replace_metadata) {
    meta = *req.replace_metadata;
    type = req.content_type;
  } else {
    // Multipart copy does not carry metadata over by itself.
    auto info = client.head_object(req.source_bucket, req.source_key);
    if (!info) return std::unexpected(info.error());
    meta = info->metadata;
    type = info->content_type;
  }
  auto upload_id = client.create_multipart_upload(req.bucket, req.key, meta, type);
  if (!upload_id) return std::unexpected(upload_id.error());
  if (options.created) options.created(*upload_id);
  std::vector<CompletedPart> done(parts);
  Status st = run_parallel(parts, options.concurrency, [&](int i) -> Status {
    uint64_t off = static_cast<uint64_t>(i) * part;
    auto etag = client.upload_part_copy(req, *upload_id, i + 1, off, std::min(part, size - off));
    if (!etag) return std::unexpected(etag.error());
    done[i] = {i + 1, *etag};
    return {};
  });
  Result<std::string> etag =
      st ? client.complete_multipart_upload(req.bucket, req.key, *upload_id, done)
         : Result<std::string>(std::unexpected(st.error()));
  if (!etag) (void)client.abort_multipart_upload(req.bucket, req.key, *upload_id);
  return etag;
}

}  // namespace nacre::s3
