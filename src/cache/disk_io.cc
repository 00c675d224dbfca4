#include "cache/disk_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

namespace nacre::cache::io {

Status pread_full(int fd, char* out, size_t len, uint64_t offset, std::string_view what) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = ::pread(fd, out + done, len - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail_errno(what, errno);
    }
    if (n == 0) return fail(ErrorCode::kIo, std::string(what) + ": file is truncated");
    done += static_cast<size_t>(n);
  }
  return {};
}

Status pwrite_full(int fd, std::string_view data, uint64_t offset, std::string_view what) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n =
        ::pwrite(fd, data.data() + done, data.size() - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail_errno(what, errno);
    }
    done += static_cast<size_t>(n);
  }
  return {};
}

Result<std::string> read_file(const std::string& path, uint64_t max_size) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail_errno("open " + path, errno);
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return fail_errno("stat " + path, err);
  }
  if (static_cast<uint64_t>(st.st_size) > max_size) {
    ::close(fd);
    return fail(ErrorCode::kIo, path + ": larger than " + std::to_string(max_size) + " bytes");
  }
  std::string out(static_cast<size_t>(st.st_size), '\0');
  Status r = pread_full(fd, out.data(), out.size(), 0, "read " + path);
  ::close(fd);
  if (!r) return std::unexpected(r.error());
  return out;
}

void punch_hole(int fd, uint64_t offset, uint64_t len) {
  // Failure only leaves stale bytes that no record marks present.
  (void)::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                    static_cast<off_t>(len));
}

Status remove_file(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return fail_errno("unlink " + path, errno);
  return {};
}

}  // namespace nacre::cache::io
