// The read half of the fs core: open, read (through the node cache, with
// sequential prefetch and whole-file hydration), release (see file_system.h).
#include <fcntl.h>
#include <spdlog/spdlog.h>

#include "fs/inode.h"
#include "fs/staged.h"

namespace nacre::fs {

namespace {

// Errors after which a read is served straight from S3 instead of failing: the
// cache would not take the bytes, or `nacre release` dropped them mid-read.
bool serve_uncached(const Error& e) {
  return e.code == ErrorCode::kCacheFull || e.code == ErrorCode::kNoSpace ||
         e.code == ErrorCode::kReleased;
}

}  // namespace

Result<std::shared_ptr<BlockFetcher>> FileSystem::fetcher_for(const cache::ObjectVersion& v,
                                                              bool current) {
  std::string id = v.key + '\0' + v.etag;
  {
    std::lock_guard lock(mu_);
    if (auto it = fetchers_.find(id); it != fetchers_.end()) {
      if (auto f = it->second.lock(); f && !f->object()->released()) return f;
    }
  }
  auto object = cache_.open_object(v, current);
  if (!object) return std::unexpected(object.error());
  auto fetcher =
      std::make_shared<BlockFetcher>(client_, pool_, *object, metrics_, options_.part_size);
  std::lock_guard lock(mu_);
  auto& slot = fetchers_[id];
  if (auto existing = slot.lock(); existing && !existing->object()->released()) {
    return existing;  // another open won the race
  }
  slot = fetcher;
  std::erase_if(fetchers_, [](auto& kv) { return kv.second.expired(); });
  return fetcher;
}

Result<OpenResult> FileSystem::open(Ino ino, int flags, bool passthrough) {
  int access = flags & O_ACCMODE;
  const bool write = access != O_RDONLY || (flags & O_TRUNC);
  if (write) {
    if (Status st = writable(); !st) return std::unexpected(st.error());
  }
  Ino parent = 0;
  std::string name;
  bool stale = false;
  {
    std::lock_guard lock(mu_);
    Inode* n = find(ino);
    if (!n) return fail(ErrorCode::kStale, "stale inode");
    if (n->type == S_IFDIR) return fail(ErrorCode::kIsADirectory, "is a directory");
    if (!attached(*n)) {
      // Deleted, or superseded by a new version under a new inode: the kernel
      // answers ESTALE by walking the path again (LOOKUP_REVAL) and opening that.
      return fail(ErrorCode::kStale, "the object changed or was deleted");
    }
    // Close-to-open: an open revalidates unless a HEAD confirmed the version
    // within the TTL. A listing alone has no metadata, so the first open HEADs.
    // A staged file is what this mount wrote: S3 does not replace it.
    stale = !n->staged && !n->local_only && (!fresh(n->validated) || !n->metadata_loaded);
    parent = n->parent;
    name = n->name;
  }
  if (stale) {
    auto st = revalidate(parent, name);
    if (!st) return std::unexpected(st.error());
  }
  std::shared_ptr<Staged> staged;
  bool created = false;
  if (write) {
    auto s = stage(ino, flags & O_TRUNC, &created);
    if (!s) return std::unexpected(s.error());
    staged = std::move(*s);
  }
  cache::ObjectVersion v;
  bool keep_cache = false;
  {
    std::lock_guard lock(mu_);
    Inode* n = find(ino);
    Inode* dir = find(parent);
    if (!n || !dir) return fail(ErrorCode::kStale, "stale inode");
    auto it = dir->children.find(name);
    if (it == dir->children.end() || it->second != ino) {
      if (created && n->open_handles == 0 && n->staged == staged) {
        // Staged for an inode that no longer names the object: not the file's content.
        std::lock_guard sl(staged->mu);
        staged->unlinked = true;
        n->staged.reset();
      }
      if (it == dir->children.end()) return fail(ErrorCode::kNotFound, "the object was deleted");
      return fail(ErrorCode::kStale, "the object changed under this inode");
    }
    v = {options_.bucket, n->key, n->etag, n->size};
    keep_cache = n->last_open_etag == n->etag;
    n->last_open_etag = n->etag;
    if (!staged) staged = n->staged;
    if (staged) {
      // Reads and writes of every handle go to the one staged file, whose bytes
      // the kernel's page cache already reflects (writes pass through it).
      auto handle = std::make_shared<Handle>(ino, v, options_);
      handle->staged = staged;
      handle->writable = write;
      if (write) {
        std::lock_guard sl(staged->mu);
        staged->writers++;
      }
      n->open_handles++;
      uint64_t fh = next_fh_++;
      handles_[fh] = std::move(handle);
      return OpenResult{fh, !write || keep_cache};
    }
    if (n->passthrough_opens > 0) {
      // The kernel reads this inode from its backing file: every open must join it,
      // and one the adapter cannot answer in passthrough mode would fail there.
      if (!passthrough) return busy_error(*n);
      auto handle = std::make_shared<Handle>(ino, v, options_);
      handle->passthrough = n->passthrough_object;
      n->open_handles++;
      n->passthrough_opens++;
      metrics_.passthrough_opens++;
      uint64_t fh = next_fh_++;
      handles_[fh] = handle;
      return OpenResult{fh, false, handle->passthrough->data_fd()};
    }
    n->open_handles++;  // from here on, a new version of the key gets a new inode
    passthrough = passthrough && !write && v.size >= options_.passthrough_min_size;
  }
  auto handle = std::make_shared<Handle>(ino, v, options_);
  if (v.size > 0) {
    auto fetcher = fetcher_for(v, /*current=*/true);
    // A complete cached copy, every block verified, is handed to the kernel whole.
    if (fetcher && passthrough && (*fetcher)->object()->verify_all()) {
      std::lock_guard lock(mu_);
      if (auto fd = start_passthrough(ino, *handle, (*fetcher)->object()); fd >= 0) {
        handle->fetcher = std::move(*fetcher);
        uint64_t fh = next_fh_++;
        handles_[fh] = std::move(handle);
        return OpenResult{fh, false, fd};
      }
    }
    if (fetcher) {
      handle->fetcher = std::move(*fetcher);
      if (v.size >= options_.hydrate_min_size) {
        // A whole-file background load, so mmap loaders faulting pages in any
        // order still run at line rate. Single-flight keeps it from doubling
        // the reads of a sequential reader.
        handle->fetcher->prefetch(0, handle->fetcher->object()->block_count() - 1,
                                  FetchPriority::kHydrate);
      }
    } else if (!serve_uncached(fetcher.error())) {
      std::lock_guard lock(mu_);
      if (Inode* n = find(ino)) n->open_handles--;
      return std::unexpected(fetcher.error());
    }
    // Otherwise the cache cannot take an entry now (full of data in use, or a full
    // disk): the handle reads straight from S3.
  }
  std::lock_guard lock(mu_);
  uint64_t fh = next_fh_++;
  handles_[fh] = std::move(handle);
  return OpenResult{fh, keep_cache};
}

int FileSystem::start_passthrough(Ino ino, Handle& h,
                                  const std::shared_ptr<cache::CachedObject>& object) {
  Inode* n = find(ino);
  // Staged meanwhile (its bytes are the staged file's now), or opened in cached mode
  // by someone else while this open verified: the kernel would refuse to mix them.
  if (!n || n->staged || n->staging > 0 || n->open_handles != n->passthrough_opens + 1) return -1;
  if (n->passthrough_opens == 0) {
    n->passthrough_object = object;
    // From here every handle of the inode is passthrough: none will read these blocks
    // through the daemon, so their memory goes now.
    object->forget_all_recent();
  }
  n->passthrough_opens++;
  h.passthrough = n->passthrough_object;
  metrics_.passthrough_opens++;
  return h.passthrough->data_fd();
}

bool FileSystem::wait_passthrough_closed(std::unique_lock<std::mutex>& lock, Ino ino) {
  return passthrough_closed_.wait_for(lock, options_.passthrough_release_wait, [&] {
    Inode* n = find(ino);
    return !n || n->passthrough_opens == 0;
  });
}

bool FileSystem::await_no_passthrough(Ino ino) {
  std::unique_lock lock(mu_);
  return wait_passthrough_closed(lock, ino);
}

std::unexpected<Error> FileSystem::busy_error(const Inode& n) {
  return fail(ErrorCode::kBusy, "s3://" + options_.bucket + "/" + n.key +
                                    " is open for reading by kernel passthrough; it can be "
                                    "written once those readers close it");
}

Result<ReadResult> FileSystem::read(uint64_t fh, uint64_t offset, size_t size) {
  std::shared_ptr<Handle> h;
  std::shared_ptr<Staged> staged;
  {
    std::lock_guard lock(mu_);
    auto it = handles_.find(fh);
    if (it == handles_.end()) return fail(ErrorCode::kBadHandle, "unknown file handle");
    h = it->second;
    // A file written on this mount since this handle opened: the handle reads what
    // was written, as on a local file system (the kernel's page cache, which is
    // the inode's, holds those bytes already). S3's versions are not involved.
    staged = h->staged;
    if (!staged) {
      if (Inode* n = find(h->ino)) staged = n->staged;
    }
  }
  if (staged) {
    uint64_t staged_size;
    {
      std::lock_guard sl(staged->mu);
      staged_size = staged->size;
    }
    if (offset >= staged_size || size == 0) return ReadResult{};
    const size_t n = static_cast<size_t>(std::min<uint64_t>(size, staged_size - offset));
    metrics_.read_bytes += n;
    return ReadResult{staged->fd, offset, n, {}, {}, staged};
  }
  const uint64_t file_size = h->version.size;
  if (offset >= file_size || size == 0) return ReadResult{};
  const size_t length = static_cast<size_t>(std::min<uint64_t>(size, file_size - offset));
  std::shared_ptr<BlockFetcher> fetcher;
  {
    std::lock_guard lock(h->mu);
    if (!h->fetcher || h->fetcher->object()->released()) {
      // No entry yet (the cache was full at open), or `nacre release` dropped it:
      // cache this version anew if the cache takes it now.
      auto fresh_fetcher = fetcher_for(h->version, /*current=*/false);
      if (fresh_fetcher) {
        h->fetcher = std::move(*fresh_fetcher);
        h->window.reset();
      } else if (!serve_uncached(fresh_fetcher.error())) {
        return std::unexpected(fresh_fetcher.error());
      }
    }
    fetcher = h->fetcher;
  }
  if (!fetcher) {
    return read_uncached(
        *h, offset, length,
        Error{ErrorCode::kCacheFull, "the cache cannot take an entry for this file", {}, {}, 0});
  }
  // Holding the object keeps its data fd open until the reply is sent (ReadResult).
  std::shared_ptr<cache::CachedObject> object = fetcher->object();
  const uint64_t bs = object->block_size();
  const uint64_t first = offset / bs, last = (offset + length - 1) / bs;
  {
    std::lock_guard lock(h->mu);
    if (auto ahead = h->window.advance(offset, length, bs, object->block_count())) {
      fetcher->prefetch(ahead->first, ahead->second, FetchPriority::kPrefetch);
    }
  }
  auto st = fetcher->ensure(first, last);
  if (!st && serve_uncached(st.error())) return read_uncached(*h, offset, length, st.error());
  if (!st) return std::unexpected(st.error());
  metrics_.read_bytes += length;
  if (auto in_memory = recent_blocks(*object, offset, length)) return std::move(*in_memory);
  return ReadResult{object->reply_fd(), offset, length, {}, {}, std::move(object)};
}

std::optional<ReadResult> FileSystem::recent_blocks(cache::CachedObject& object, uint64_t offset,
                                                    size_t length) {
  // Blocks written by O_DIRECT are not in the page cache: answered from the memory
  // they arrived in, the reply is the one copy (into the kernel's FUSE page cache).
  const uint64_t bs = object.block_size();
  const uint64_t first = offset / bs, last = (offset + length - 1) / bs;
  auto blocks = std::make_shared<std::vector<std::shared_ptr<const cache::BlockBuffer>>>();
  for (uint64_t b = first; b <= last; ++b) {
    auto block = object.recent_block(b);
    if (!block || block->size() != object.block_length(b)) return std::nullopt;
    blocks->push_back(std::move(block));
  }
  ReadResult r;
  r.offset = offset;
  r.length = length;
  const uint64_t end = offset + length;
  for (uint64_t b = first; b <= last; ++b) {
    const auto& block = (*blocks)[b - first];
    const uint64_t start = b * bs;
    const uint64_t from = std::max(offset, start) - start;
    const uint64_t to = std::min<uint64_t>(end, start + block->size()) - start;
    r.pieces.emplace_back(block->data() + from, to - from);
    // A reader that got to the block's end has it in its page cache now.
    if (end >= start + block->size()) object.forget_recent(b);
  }
  r.source = std::move(blocks);
  return r;
}

Result<ReadResult> FileSystem::read_uncached(Handle& h, uint64_t offset, size_t length,
                                             const Error& why) {
  {
    std::lock_guard lock(h.mu);
    if (!h.warned_uncached) {
      h.warned_uncached = true;
      spdlog::warn("reading s3://{}/{} without caching: {}", h.version.bucket, h.version.key,
                   why.describe());
    }
  }
  ReadResult direct;
  direct.data.reserve(length);
  metrics_.count_request("GetObject");
  auto r = client_.get_object({h.version.bucket, h.version.key, offset, length, h.version.etag},
                              [&](std::string_view c) -> Status {
                                direct.data.append(c);
                                return {};
                              });
  if (!r) {
    metrics_.count_error("GetObject", std::string(to_string(r.error().code)));
    if (r.error().code == ErrorCode::kNoSuchKey) {
      return fail(ErrorCode::kPreconditionFailed, "s3://" + h.version.bucket + "/" + h.version.key +
                                                      " (ETag " + h.version.etag +
                                                      ") no longer exists");
    }
    return std::unexpected(r.error());
  }
  if (direct.data.size() != length) {
    return fail(ErrorCode::kMalformedResponse,
                "GetObject s3://" + h.version.bucket + "/" + h.version.key + " returned " +
                    std::to_string(direct.data.size()) + " bytes, asked " + std::to_string(length));
  }
  metrics_.s3_bytes_fetched += length;
  metrics_.uncached_read_bytes += length;
  metrics_.read_bytes += length;
  direct.length = length;
  direct.offset = offset;
  return direct;
}

void FileSystem::release(uint64_t fh) {
  std::shared_ptr<Handle> h;
  {
    std::lock_guard lock(mu_);
    auto it = handles_.find(fh);
    if (it == handles_.end()) return;
    h = std::move(it->second);
    handles_.erase(it);
  }
  if (h->writable) {
    bool export_now = false;
    {
      std::lock_guard sl(h->staged->mu);
      h->staged->writers--;
      export_now = h->staged->writers == 0 && h->staged->dirty() && !h->staged->unlinked;
    }
    // Pages of a shared mapping may have been written back after the last close:
    // the last writer's release exports them (the error has no caller; retried).
    if (export_now && !export_staged(h->staged) && exporter_) exporter_->retry_later(h->staged);
  }
  std::lock_guard lock(mu_);
  if (Inode* n = find(h->ino)) {
    if (h->passthrough && n->passthrough_opens > 0 && --n->passthrough_opens == 0) {
      n->passthrough_object.reset();
      passthrough_closed_.notify_all();
    }
    if (n->open_handles > 0) n->open_handles--;
    drop_staged_if_done(*n);
    drop_if_unused(h->ino);
  }
}

}  // namespace nacre::fs
