// A cache block's bytes in memory, aligned for O_DIRECT. The read path
// receives a GET's bytes into one (the only copy the daemon makes of them),
// the cache writes it to the data file with O_DIRECT (no copy into the page
// cache) and keeps it a while as a recent block, so that the reader waiting
// for it is answered from this memory, not from the disk.
//
// Buffers come from a BlockBufferPool and go back to it when the last
// shared_ptr is dropped: a fresh 1 MiB allocation per block would cost a page
// fault and a page zeroing per 4 KiB, which is a copy's worth of CPU. The pool
// carves them out of 2 MiB slabs backed by transparent huge pages where the
// kernel gives them (madvise): copying into a block that has left the CPU
// caches, and pinning it for O_DIRECT, then walks one page table entry instead
// of 256 (measured on a paravirtualised host: the copy into the buffer took
// 3x the CPU with 4 KiB pages).
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <string_view>
#include <vector>

namespace nacre::cache {

class BlockBuffer {
 public:
  static constexpr size_t kAlign = 4096;  // O_DIRECT alignment of memory, offsets and lengths

  BlockBuffer(const BlockBuffer&) = delete;
  BlockBuffer& operator=(const BlockBuffer&) = delete;

  const char* data() const { return data_; }
  size_t size() const { return size_; }
  size_t capacity() const { return capacity_; }
  std::string_view view() const { return {data_, size_}; }
  // Appends up to capacity() - size() bytes of `s`; returns how many it took.
  size_t append(std::string_view s);
  void clear() { size_ = 0; }

 private:
  friend class BlockBufferPool;
  BlockBuffer(char* data, size_t capacity) : data_(data), capacity_(capacity) {}
  char* data_ = nullptr;  // in one of the pool's slabs
  size_t size_ = 0;
  size_t capacity_ = 0;
};

// Thread-safe. Buffers of `capacity` bytes; the memory of every buffer made
// stays with the pool (idle ones are reused) until the pool goes, so the
// pool's size is the peak number in use: fetches in flight plus the cache's
// recent blocks.
class BlockBufferPool : public std::enable_shared_from_this<BlockBufferPool> {
 public:
  static std::shared_ptr<BlockBufferPool> create(size_t capacity);
  ~BlockBufferPool();
  // An empty buffer of capacity() bytes; back to the pool when the last owner lets go.
  std::shared_ptr<BlockBuffer> acquire();
  size_t capacity() const { return capacity_; }

 private:
  explicit BlockBufferPool(size_t capacity);
  void give_back(BlockBuffer* b) noexcept;
  // A new slab cut into buffers, added to free_ (mu_ held); throws std::bad_alloc.
  void grow_locked();
  const size_t capacity_;
  const size_t stride_;      // capacity rounded up to BlockBuffer::kAlign
  const size_t slab_bytes_;  // a multiple of 2 MiB holding at least one buffer
  std::mutex mu_;
  std::vector<void*> slabs_;                       // GUARDED_BY(mu_)
  std::vector<std::unique_ptr<BlockBuffer>> all_;  // GUARDED_BY(mu_): every buffer made
  std::vector<BlockBuffer*> free_;                 // GUARDED_BY(mu_): capacity = all_.size()
};

}  // namespace nacre::cache
