// The file system's internal state (see file_system.h): inodes and open file
// handles. Included only by the fs core's own .cc files.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "fs/file_system.h"
#include "fs/prefetch_window.h"

namespace nacre::fs {

using SteadyClock = std::chrono::steady_clock;

// All fields are guarded by FileSystem::mu_.
struct FileSystem::Inode {
  Ino ino = 0;
  Ino parent = 0;
  std::string name;
  std::string key;  // files: the object key; directories: the prefix, ending in '/' ("" for root)
  mode_t type = S_IFREG;  // never changes: a key that changes type gets a new inode
  uint64_t size = 0;
  std::string etag;
  timespec mtime{};
  PosixMetadata posix;             // from the last HEAD or GET with metadata
  s3::UserMetadata user_metadata;  // all of it, kept when the content is rewritten
  std::string content_type;
  bool metadata_loaded = false;  // a HEAD has read the object's user metadata
  std::string symlink_target;    // loaded by readlink
  uint64_t lookups = 0;          // the kernel's references (lookup minus forget)
  uint64_t open_handles = 0;     // open file handles of this inode
  // Of those, handles the kernel serves by passthrough, all from this cache object
  // (kept while passthrough_opens > 0: the kernel allows one backing file per inode).
  uint64_t passthrough_opens = 0;
  std::shared_ptr<cache::CachedObject> passthrough_object;
  uint64_t staging = 0;  // stage() calls in progress (no passthrough may start meanwhile)
  SteadyClock::time_point validated{};  // existence and attributes last confirmed by S3
  std::string last_open_etag;           // for keep_cache
  // Written here and not exported yet (or open for writing): the staged file is
  // the file's content and metadata, and S3's view of the name does not replace it.
  std::shared_ptr<Staged> staged;
  // Made here but kept from S3 by the export policy (mkdir, symlink): kept in
  // the view while the mount lives although S3 does not list it.
  bool local_only = false;

  // Directories.
  std::map<std::string, Ino> children;
  bool imported = false;  // listed (or looked into) at least once
  SteadyClock::time_point listed{};
  std::map<std::string, SteadyClock::time_point> negative;  // names known absent
};

struct FileSystem::Handle {
  Handle(Ino i, cache::ObjectVersion v, const FsOptions& o)
      : ino(i), version(std::move(v)), window(o.initial_window, o.max_window) {}
  const Ino ino;
  const cache::ObjectVersion version;  // the version this handle reads, and only it
  // Set at open when the inode is staged: reads and writes go to the staged file.
  std::shared_ptr<Staged> staged;
  bool writable = false;
  // A passthrough handle: the kernel reads this cache object's file itself (pinned
  // here, so it is neither evicted nor closed while the kernel uses it).
  std::shared_ptr<cache::CachedObject> passthrough;
  std::mutex mu;
  // Null when the cache could not take an entry at open (bounds reached, disk full):
  // reads are then served from S3 directly.
  std::shared_ptr<BlockFetcher> fetcher;  // GUARDED_BY(mu)
  PrefetchWindow window;                  // GUARDED_BY(mu)
  bool warned_uncached = false;           // GUARDED_BY(mu): logged once per handle
};

timespec to_timespec(std::chrono::system_clock::time_point t);

}  // namespace nacre::fs
