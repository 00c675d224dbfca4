#include "cache/block_buffer.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

namespace nacre::cache {

namespace {
constexpr size_t kHugePage = 2u << 20;
}

size_t BlockBuffer::append(std::string_view s) {
  const size_t n = std::min(s.size(), capacity_ - size_);
  std::memcpy(data_ + size_, s.data(), n);
  size_ += n;
  return n;
}

BlockBufferPool::BlockBufferPool(size_t capacity)
    : capacity_(capacity),
      stride_((std::max<size_t>(capacity, 1) + BlockBuffer::kAlign - 1) / BlockBuffer::kAlign *
              BlockBuffer::kAlign),
      slab_bytes_((stride_ + kHugePage - 1) / kHugePage * kHugePage) {}

BlockBufferPool::~BlockBufferPool() {
  for (void* slab : slabs_) std::free(slab);
}

std::shared_ptr<BlockBufferPool> BlockBufferPool::create(size_t capacity) {
  return std::shared_ptr<BlockBufferPool>(new BlockBufferPool(capacity));
}

void BlockBufferPool::grow_locked() {
  void* slab = std::aligned_alloc(kHugePage, slab_bytes_);
  if (!slab) throw std::bad_alloc();
  // Best effort: without transparent huge pages the slab is ordinary memory.
  (void)::madvise(slab, slab_bytes_, MADV_HUGEPAGE);
  slabs_.push_back(slab);
  const size_t count = slab_bytes_ / stride_;
  // Reserved first, so give_back (run from a deleter) never allocates.
  all_.reserve(all_.size() + count);
  free_.reserve(all_.size() + count);
  for (size_t i = 0; i < count; ++i) {
    all_.emplace_back(new BlockBuffer(static_cast<char*>(slab) + i * stride_, capacity_));
    free_.push_back(all_.back().get());
  }
}

std::shared_ptr<BlockBuffer> BlockBufferPool::acquire() {
  BlockBuffer* b = nullptr;
  {
    std::lock_guard lock(mu_);
    if (free_.empty()) grow_locked();
    b = free_.back();
    free_.pop_back();
  }
  b->clear();
  // The deleter holds the pool, so its slabs outlive every buffer handed out.
  return std::shared_ptr<BlockBuffer>(
      b, [pool = shared_from_this()](BlockBuffer* p) { pool->give_back(p); });
}

void BlockBufferPool::give_back(BlockBuffer* b) noexcept {
  std::lock_guard lock(mu_);
  free_.push_back(b);  // within the capacity reserved for every buffer made
}

}  // namespace nacre::cache
