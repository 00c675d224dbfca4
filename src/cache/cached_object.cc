#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <vector>

#include "cache/block_cache.h"
#include "cache/crc32c.h"
#include "cache/disk_io.h"
#include "cache/entry.h"
#include "cache/entry_format.h"

namespace nacre::cache {

using detail::BlockState;

namespace {

std::unexpected<Error> released_error(const ObjectVersion& v) {
  return fail(ErrorCode::kReleased, "cache entry for s3://" + v.bucket + "/" + v.key + " (ETag " +
                                        v.etag + ") was released or replaced");
}

}  // namespace

CachedObject::CachedObject(BlockCache* cache, std::shared_ptr<detail::Entry> entry, int data_ro_fd,
                           int data_rw_fd, int data_direct_fd, int meta_fd, int data_sparse_fd)
    : cache_(cache),
      entry_(std::move(entry)),
      data_ro_fd_(data_ro_fd),
      data_rw_fd_(data_rw_fd),
      data_direct_fd_(data_direct_fd),
      meta_fd_(meta_fd),
      data_sparse_fd_(data_sparse_fd) {}

CachedObject::~CachedObject() {
  if (shared_) {
    // Nobody reads this entry any more: its memory copies go.
    std::lock_guard lk(entry_->mu);
    detail::drop_recent_locked(*entry_, cache_->recent_bytes_);
  }
  ::close(data_ro_fd_);
  ::close(data_rw_fd_);
  if (data_direct_fd_ >= 0) ::close(data_direct_fd_);
  if (data_sparse_fd_ >= 0) ::close(data_sparse_fd_);
  ::close(meta_fd_);
}

std::shared_ptr<BlockBuffer> CachedObject::new_buffer() const {
  return cache_->buffers_->acquire();
}

std::shared_ptr<const BlockBuffer> CachedObject::recent_block(uint64_t i) const {
  std::lock_guard lk(entry_->mu);
  if (entry_->dropped) return nullptr;
  auto it = entry_->recent.find(i);
  return it == entry_->recent.end() ? nullptr : it->second;
}

void CachedObject::forget_recent(uint64_t i) {
  std::lock_guard lk(entry_->mu);
  auto it = entry_->recent.find(i);
  if (it == entry_->recent.end()) return;
  cache_->recent_bytes_.fetch_sub(it->second->size());
  entry_->recent.erase(it);
}

void CachedObject::forget_all_recent() {
  std::lock_guard lk(entry_->mu);
  detail::drop_recent_locked(*entry_, cache_->recent_bytes_);
}

void CachedObject::keep_recent_locked(uint64_t i, std::shared_ptr<const BlockBuffer> block) {
  detail::Entry& e = *entry_;
  const uint64_t len = block->size();
  if (e.recent.count(i)) return;
  // Over the bound, a new block is not kept (rather than an older one dropped): blocks
  // arrive ahead of their readers, and the oldest are the ones read next. Each goes
  // when its reader has read it, or with the entry's last holder.
  uint64_t used = cache_->recent_bytes_.load();
  do {
    if (used + len > cache_->options_.memory_bytes) return;
  } while (!cache_->recent_bytes_.compare_exchange_weak(used, used + len));
  e.recent.emplace(i, std::move(block));
}

const ObjectVersion& CachedObject::version() const {
  return entry_->version;
}
uint32_t CachedObject::block_size() const {
  return entry_->block_size;
}
uint64_t CachedObject::block_count() const {
  return entry_->block_count;
}
int CachedObject::data_fd() const {
  return data_ro_fd_;
}

int CachedObject::reply_fd() const {
  if (data_sparse_fd_ < 0) return data_ro_fd_;
  std::lock_guard lk(entry_->mu);
  return entry_->present_bytes < entry_->version.size ? data_sparse_fd_ : data_ro_fd_;
}

uint64_t CachedObject::block_length(uint64_t i) const {
  return i < entry_->block_count ? entry_->block_length(i) : 0;
}

uint64_t CachedObject::record_offset(uint64_t i) const {
  return entry_->records_offset + format::kRecordSize * i;
}

uint64_t CachedObject::cached_bytes() const {
  std::lock_guard lk(entry_->mu);
  return entry_->present_bytes;
}

bool CachedObject::released() const {
  std::lock_guard lk(entry_->mu);
  return entry_->dropped;
}

BlockPresence CachedObject::presence(uint64_t i) const {
  if (i >= entry_->block_count) return BlockPresence::kAbsent;
  std::lock_guard lk(entry_->mu);
  if (entry_->dropped) return BlockPresence::kAbsent;
  switch (entry_->state[i]) {
    case BlockState::kVerified:
      return BlockPresence::kVerified;
    case BlockState::kUnverified:
      return BlockPresence::kUnverified;
    default:
      return BlockPresence::kAbsent;
  }
}

bool CachedObject::has_block(uint64_t i) {
  bool present = check_block(i);
  (present ? cache_->hits_ : cache_->misses_).fetch_add(1, std::memory_order_relaxed);
  return present;
}

bool CachedObject::check_block(uint64_t i) {
  if (i >= entry_->block_count) return false;
  {
    std::lock_guard lk(entry_->mu);
    if (entry_->dropped) return false;
    if (entry_->state[i] != BlockState::kUnverified) {
      return entry_->state[i] == BlockState::kVerified;
    }
  }
  return verify_block(i);
}

bool CachedObject::verify_block(uint64_t i) {
  detail::Entry& e = *entry_;
  const uint64_t len = e.block_length(i);
  const uint64_t offset = i * e.block_size;
  // Read without the lock: two verifiers of one block only duplicate work, and the
  // first to come back decides.
  std::string buf(len, '\0');
  Status read = io::pread_full(data_ro_fd_, buf.data(), len, offset, "read " + e.data_path);
  const uint32_t crc = read ? crc32c(buf) : 0;

  std::lock_guard lk(e.mu);
  if (e.dropped) return false;
  if (e.state[i] != BlockState::kUnverified) return e.state[i] == BlockState::kVerified;
  cache_->checked_bytes_.fetch_add(len, std::memory_order_relaxed);
  if (read && crc == e.crc[i]) {
    e.state[i] = BlockState::kVerified;
    return true;
  }
  e.state[i] = BlockState::kAbsent;
  e.present_bytes -= len;
  e.charged_bytes -= len;
  cache_->used_bytes_.fetch_sub(len);
  cache_->bad_blocks_.fetch_add(1, std::memory_order_relaxed);
  // Clearing the record is best effort: if it fails the block only fails its check again
  // after the next restart.
  auto absent = format::encode_record({});
  (void)io::pwrite_full(meta_fd_, {absent.data(), absent.size()}, record_offset(i), e.meta_path);
  io::punch_hole(data_rw_fd_, offset, len);
  return false;
}

bool CachedObject::verify_all(std::stop_token stop) {
  const detail::Entry& e = *entry_;
  // The kernel reads a backing file up to its own end: it must end where the object does.
  struct stat st {};
  if (::fstat(data_ro_fd_, &st) != 0 || static_cast<uint64_t>(st.st_size) != e.version.size) {
    return false;
  }
  std::vector<uint64_t> unverified;
  {
    std::lock_guard lk(entry_->mu);
    if (e.dropped) return false;
    for (uint64_t i = 0; i < e.block_count; ++i) {
      if (e.state[i] == BlockState::kUnverified) {
        unverified.push_back(i);
      } else if (e.state[i] != BlockState::kVerified) {
        return false;
      }
    }
  }
  // In order, so the kernel's own read-ahead streams the disk while we checksum.
  // (Not POSIX_FADV_WILLNEED: it fills the page cache with 4 KiB pages, and a
  // passthrough reader of those is 2-3x slower than of the large folios that
  // read-ahead makes: measured 5.3 against 15 GB/s re-reading 1 GiB.)
  if (!unverified.empty()) (void)::posix_fadvise(data_ro_fd_, 0, 0, POSIX_FADV_SEQUENTIAL);
  for (uint64_t b : unverified) {
    if (stop.stop_requested() || !check_block(b)) return false;
  }
  return !released();
}

Status CachedObject::write_block(uint64_t i, std::string_view data) {
  return write_block_impl(i, data, /*direct=*/false);
}

Status CachedObject::write_block(uint64_t i, std::shared_ptr<const BlockBuffer> block) {
  // O_DIRECT takes whole 4 KiB multiples only: a last partial block goes through pwrite.
  const bool direct =
      data_direct_fd_ >= 0 && !direct_failed_.load() && block->size() % BlockBuffer::kAlign == 0;
  Status st = write_block_impl(i, block->view(), direct);
  if (st && direct && !direct_failed_.load()) {
    std::lock_guard lk(entry_->mu);
    if (!entry_->dropped && entry_->state[i] == BlockState::kVerified) {
      keep_recent_locked(i, std::move(block));
    }
  }
  return st;
}

Status CachedObject::write_block_impl(uint64_t i, std::string_view data, bool direct) {
  detail::Entry& e = *entry_;
  if (i >= e.block_count) {
    return fail(ErrorCode::kInvalidArgument,
                "block " + std::to_string(i) + " is past the end of " + e.version.key);
  }
  if (data.size() != e.block_length(i)) {
    return fail(ErrorCode::kInvalidArgument, "block " + std::to_string(i) + " of " + e.version.key +
                                                 " must be " + std::to_string(e.block_length(i)) +
                                                 " bytes, got " + std::to_string(data.size()));
  }
  {
    std::unique_lock lk(e.mu);
    for (;;) {
      if (e.dropped) return released_error(e.version);
      BlockState s = e.state[i];
      if (s == BlockState::kVerified) return {};
      if (s == BlockState::kAbsent) break;
      if (s == BlockState::kWriting) {
        e.changed.wait(lk);
      } else {  // kUnverified: the copy from an earlier process may already be good.
        lk.unlock();
        verify_block(i);
        lk.lock();
      }
    }
    e.state[i] = BlockState::kWriting;
  }

  Status stored = store_block(i, data, direct);
  // Another entry's files may be what fills the disk (the free-space probe can miss other
  // writers of the file system); evicting one unheld entry at a time and retrying keeps a
  // full disk from failing writes while something evictable is left.
  while (!stored && stored.error().code == ErrorCode::kNoSpace && cache_->evict_one()) {
    stored = store_block(i, data, direct);
  }

  std::lock_guard lk(e.mu);
  if (e.state[i] == BlockState::kWriting) e.state[i] = BlockState::kAbsent;
  e.changed.notify_all();
  return stored;
}

Status CachedObject::store_block(uint64_t i, std::string_view data, bool direct) {
  detail::Entry& e = *entry_;
  const uint64_t len = data.size();
  const uint64_t offset = i * e.block_size;
  if (Status r = cache_->reserve(e, len); !r) return r;
  Status r =
      io::pwrite_full(direct ? data_direct_fd_ : data_rw_fd_, data, offset, "write " + e.data_path);
  if (!r && direct && r.error().code != ErrorCode::kNoSpace) {
    // EINVAL: the file system wants another alignment after all; the page cache it is,
    // for this and every later block of the entry.
    if (!direct_failed_.exchange(true)) {
      spdlog::warn("O_DIRECT write to {} failed ({}): writing through the page cache", e.data_path,
                   r.error().describe());
    }
    r = io::pwrite_full(data_rw_fd_, data, offset, "write " + e.data_path);
  }
  const uint32_t crc = crc32c(data);

  std::lock_guard lk(e.mu);
  if (e.dropped) return released_error(e.version);  // dropping already uncharged us
  // The record is written after the data: a crash in between leaves the block absent.
  // The record cannot vouch for the data reaching the disk first (no fsync), which is why
  // blocks of an earlier process are CRC-checked before use.
  if (r) {
    auto record = format::encode_record({crc, true});
    r = io::pwrite_full(meta_fd_, {record.data(), record.size()}, record_offset(i),
                        "write " + e.meta_path);
  }
  if (!r) {
    io::punch_hole(data_rw_fd_, offset, len);
    e.charged_bytes -= len;
    cache_->used_bytes_.fetch_sub(len);
    return r;
  }
  e.state[i] = BlockState::kVerified;
  e.crc[i] = crc;
  e.present_bytes += len;
  return {};
}

Status CachedObject::read(uint64_t offset, size_t len, char* out) {
  const detail::Entry& e = *entry_;
  if (offset > e.version.size || len > e.version.size - offset) {
    return fail(ErrorCode::kInvalidRange, "read past the end of cached " + e.version.key);
  }
  if (len == 0) return {};
  for (uint64_t b = offset / e.block_size; b <= (offset + len - 1) / e.block_size; ++b) {
    if (!check_block(b)) {
      return fail(ErrorCode::kNotCached, "block " + std::to_string(b) + " of s3://" +
                                             e.version.bucket + "/" + e.version.key +
                                             " is not cached");
    }
  }
  return io::pread_full(data_ro_fd_, out, len, offset, "read " + e.data_path);
}

}  // namespace nacre::cache
