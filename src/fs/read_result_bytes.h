// Tests only: the bytes a ReadResult stands for, whichever form it has (a
// file range, the bytes themselves, or views of blocks in memory).
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <string>

#include "fs/file_system.h"

namespace nacre::fs {

inline std::string read_result_bytes(const ReadResult& r) {
  if (r.fd < 0) {
    if (r.pieces.empty()) return r.data;
    std::string out;
    for (auto p : r.pieces) out.append(p);
    EXPECT_EQ(out.size(), r.length);
    return out;
  }
  std::string buf(r.length, '\0');
  EXPECT_EQ(pread(r.fd, buf.data(), r.length, static_cast<off_t>(r.offset)),
            static_cast<ssize_t>(r.length));
  return buf;
}

}  // namespace nacre::fs
