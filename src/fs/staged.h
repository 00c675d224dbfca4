// A file being written (see file_system.h and staging/staging_store.h): its
// staging file, the version and metadata it will publish, and the multipart
// upload that streams its full parts while it is written. One per inode,
// shared by every handle of it. Included only by the fs core's own .cc files.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <thread>
#include <vector>

#include "fs/file_system.h"
#include "staging/staging_store.h"

namespace nacre::fs {

struct FileSystem::Staged {
  Staged(staging::StagingStore& st, staging::Manifest m, int data_fd, Ino i)
      : store(st), fd(data_fd), ino(i), manifest(std::move(m)) {}
  // Closes the data file; removes the staged files when S3 has this content or
  // the file was deleted, never otherwise.
  ~Staged();
  Staged(const Staged&) = delete;
  Staged& operator=(const Staged&) = delete;

  staging::StagingStore& store;
  const int fd;
  // The inode it belongs to; 0 for a file recovered after a crash (no inode).
  // GUARDED_BY(FileSystem::mu_) once the inode holds it.
  Ino ino;
  // Writes hold it shared; an export holds it exclusively, so the bytes it
  // sends are one state of the file.
  std::shared_mutex io;

  std::mutex mu;
  std::condition_variable parts_done;  // in_flight went down
  // Fields below GUARDED_BY(mu).
  staging::Manifest manifest;  // key: where the file goes; base_etag: its S3 version
  uint64_t size = 0;
  PosixMetadata posix;         // published with the content
  uint64_t generation = 1;     // bumps with every change of content or metadata
  uint64_t exported = 0;       // the generation S3 has (0: none)
  int writers = 0;             // open handles that may write
  bool unlinked = false;       // the name went away: never exported again
  bool retry_pending = false;  // in the exporter's retry list
  std::string last_error;

  // The upload streaming this file's full parts while it is written. Parts are
  // numbered from 1 and cover [0, streamed) without gaps; a write below
  // `streamed` (or a truncate, a rename) breaks it and the export starts over.
  bool creating_upload = false;
  bool exporting = false;            // an export owns the upload: no new streamed parts
  s3::UserMetadata upload_metadata;  // what the streamed upload was created with
  bool times_set = false;            // utimens since the upload started
  std::vector<s3::CompletedPart> parts;
  uint64_t streamed = 0;
  int in_flight = 0;
  bool stream_broken = false;
  std::optional<Error> stream_error;
  bool last_write_sequential = false;
  // Only a file written from offset 0 on (new, or emptied) streams its parts.
  bool streamable = true;

  bool dirty() const { return exported != generation; }
  // Records in the manifest that the file differs from its object, so a
  // recovery exports it rather than drop it as an unchanged copy. Under mu.
  Status note_modified() {
    if (manifest.modified || unlinked) return {};
    manifest.modified = true;
    return store.save(manifest);
  }
  // Opens (or widens) the manifest's upload window for `key` and saves it; done
  // before each CreateMultipartUpload, so that a crash before the upload's id
  // is recorded leaves what the next start needs to find it. A failed save is
  // logged, not returned (see export.cc). Under mu.
  void note_upload_intent(const std::string& key);
};

// The write path's threads: workers that upload streamed parts, and one that
// retries failed exports with a growing delay.
// Made and started once, before the mount serves; stopped (threads joined) at
// unmount but kept, so the pointer to it never changes while threads use it.
struct FileSystem::Exporter {
  explicit Exporter(FileSystem& f) : fs(f) {}
  ~Exporter() { stop(); }
  void start(int workers);
  // Stops and joins the threads once the queued tasks ran; later submits run
  // in the caller's thread (staged data stays on disk either way).
  void stop();
  void submit(std::function<void()> task);
  // Adds `s` to the retry list (once).
  void retry_later(const std::shared_ptr<Staged>& s);
  size_t pending();

  FileSystem& fs;
  std::mutex mu;
  std::condition_variable_any wake;
  std::deque<std::function<void()>> tasks;  // GUARDED_BY(mu)
  bool stopped = false;                     // GUARDED_BY(mu)
  size_t retrying = 0;  // taken off retry_list by the retry thread, not done yet
  bool kick = false;    // GUARDED_BY(mu): retry now
  std::vector<std::shared_ptr<Staged>> retry_list;  // GUARDED_BY(mu)
  std::vector<std::jthread> threads;                // last: stop and join first
};

// Helpers of the write path's files (write_path.cc, export.cc, namespace_change.cc).
inline int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// `other` with the FSx POSIX headers of `posix` put in.
inline s3::UserMetadata metadata_of(const PosixMetadata& posix, s3::UserMetadata other) {
  encode_posix_metadata(posix, other);
  return other;
}

}  // namespace nacre::fs
