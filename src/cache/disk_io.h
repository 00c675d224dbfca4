// Small POSIX helpers for the cache's files: whole-range pread/pwrite that turn
// short transfers and errno into Result errors.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/error.h"

namespace nacre::cache::io {

// Reads exactly len bytes at offset. A short read (the file ends early) is kIo.
Status pread_full(int fd, char* out, size_t len, uint64_t offset, std::string_view what);

// Writes all of data at offset. ENOSPC/EDQUOT become kNoSpace, other errors kIo.
Status pwrite_full(int fd, std::string_view data, uint64_t offset, std::string_view what);

// Reads a whole file of at most max_size bytes.
Result<std::string> read_file(const std::string& path, uint64_t max_size);

// Frees the disk blocks of [offset, offset + len) keeping the file size; best effort
// (a file system without hole punching keeps the bytes, which are then simply unused).
void punch_hole(int fd, uint64_t offset, uint64_t len);

// unlink() that treats a missing file as success.
Status remove_file(const std::string& path);

}  // namespace nacre::cache::io
