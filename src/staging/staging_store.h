// Staging: the node-local copies of files being written, kept until S3 has
// them. Unlike the block cache (src/cache), whose data can always be fetched
// again and is evicted freely, staged data exists nowhere else: it is never
// evicted, survives a crash of the mount process, and leaves the disk only
// once exported (or when the user deletes the file). Hence a store of its
// own, beside the cache in the same directory (<cache-dir>/staging), covered
// by the cache directory's lock (one mount process at a time).
//
// Each staged file is two files named by a random id:
//   <id>.data   the file's bytes (0600)
//   <id>.json   its manifest: where it goes (bucket, key), the version it was
//               made from, the POSIX metadata to publish, whether the writer
//               had closed it, and the multipart uploads in flight (to
//               abort at the next start after a crash)
// The manifest is replaced atomically (write, rename), so a crash of the
// process leaves the old or the new one. Nothing is fsynced: staging survives
// the process, not a power loss of the node (docs/SEMANTICS.md).
//
// Thread safety: the store's methods may be called from many threads; one
// manifest is written by one thread at a time (the fs layer's job).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/error.h"
#include "s3/object_client.h"

namespace nacre::staging {

// Multipart uploads of `key` that may have been created without their ids
// being recorded: CreateMultipartUpload requests sent between from_ns and
// to_ns (wall clock) whose answers were not saved in the manifest, as when
// the process dies before it can save one. The next start aborts the uploads
// of `key` that S3 says were initiated in that window (docs/SEMANTICS.md).
struct UploadWindow {
  std::string key;
  int64_t from_ns = 0;
  int64_t to_ns = 0;
  int64_t creates = 1;  // creates noted in it: a window seen once is known unchanged
  bool operator==(const UploadWindow&) const = default;
};

struct Manifest {
  std::string id;
  std::string bucket;
  std::string key;
  std::string base_etag;  // the version the file was made from; empty: a new file
  // True once every handle that wrote to the file has closed it (its content is
  // what the user meant to publish); false while it is being written, and for a
  // file whose write failed (a full disk): such a file is never exported after a
  // restart, only reported.
  bool complete = false;
  bool write_failed = false;
  std::string upload_id;   // a multipart upload in flight; empty: none
  std::string upload_key;  // the key it was started for (a rename may change `key`)
  // Saved before each CreateMultipartUpload, cleared once every upload since
  // is known to be completed or aborted.
  std::vector<UploadWindow> upload_windows;
  // Changed since it was staged (written, truncated, or a new file): a file
  // staged as a copy of its object and left unchanged has nothing to export.
  bool modified = true;
  s3::UserMetadata metadata;
  std::string content_type;
  int64_t staged_at_ns = 0;  // when the file was first staged (wall clock)
};

class StagingStore {
 public:
  // Creates `dir` (0700) if needed.
  [[nodiscard]] static Result<std::unique_ptr<StagingStore>> open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  // A new staged file: fills manifest.id, writes the manifest and creates an
  // empty data file. Returns the data file's fd (O_RDWR|O_CLOEXEC), owned by
  // the caller.
  [[nodiscard]] Result<int> create(Manifest& manifest);
  // Replaces the manifest atomically.
  [[nodiscard]] Status save(const Manifest& manifest);
  // Removes the data file and the manifest (the manifest last, so a crash in
  // between leaves a manifest whose data is gone, which list() reports).
  [[nodiscard]] Status remove(const std::string& id);
  // Every manifest in the store, oldest first. Manifests that cannot be read
  // are skipped, logged and counted in `unreadable` (their files stay).
  [[nodiscard]] Result<std::vector<Manifest>> list(size_t* unreadable = nullptr) const;
  std::string data_path(const std::string& id) const;
  // Opens an existing data file (O_RDWR|O_CLOEXEC).
  [[nodiscard]] Result<int> open_data(const std::string& id) const;

 private:
  explicit StagingStore(std::string dir) : dir_(std::move(dir)) {}
  std::string manifest_path(const std::string& id) const;
  std::string dir_;
};

// Manifest <-> JSON text (exposed for tests).
std::string encode_manifest(const Manifest& m);
[[nodiscard]] Result<Manifest> decode_manifest(const std::string& text);

}  // namespace nacre::staging
