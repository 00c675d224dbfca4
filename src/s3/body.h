// A request body that HTTP can send without the caller buffering it: bytes in
// memory, a region of a local file (read with pread while sending), or a
// one-shot stream. Memory and file bodies can be replayed on retry; a stream
// cannot, so a request with a stream body is never retried after it started.
#pragma once

#include <cstdint>
#include <functional>
#include <string_view>

#include "common/error.h"

namespace nacre::s3 {

struct Body {
  enum class Kind { kEmpty, kMemory, kFile, kStream };
  Kind kind = Kind::kEmpty;
  std::string_view memory;  // kMemory: must outlive the request
  int fd = -1;              // kFile: not owned
  uint64_t offset = 0;      // kFile
  uint64_t length = 0;      // kFile and kStream
  // kStream: fill up to `n` bytes, return how many (0 only at the end).
  std::function<Result<size_t>(char* buf, size_t n)> stream;

  static Body empty() { return {}; }
  static Body from_memory(std::string_view data) {
    Body b;
    b.kind = Kind::kMemory;
    b.memory = data;
    return b;
  }
  static Body from_file(int fd, uint64_t offset, uint64_t length) {
    Body b;
    b.kind = Kind::kFile;
    b.fd = fd;
    b.offset = offset;
    b.length = length;
    return b;
  }
  uint64_t size() const { return kind == Kind::kMemory ? memory.size() : length; }
  bool replayable() const { return kind != Kind::kStream; }
};

// Receives a response body piece by piece; an error stops the transfer and is
// returned by the request.
using DataSink = std::function<Status(std::string_view chunk)>;

}  // namespace nacre::s3
