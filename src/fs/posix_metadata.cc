#include "fs/posix_metadata.h"

#include <sys/stat.h>

#include <charconv>
#include <string>

namespace nacre::fs {

namespace {

template <typename T>
std::optional<T> parse(const s3::UserMetadata& meta, const char* name, int base,
                       std::string_view suffix = "") {
  auto it = meta.find(name);
  if (it == meta.end()) return std::nullopt;
  std::string_view v = it->second;
  if (!suffix.empty()) {
    if (!v.ends_with(suffix)) return std::nullopt;
    v.remove_suffix(suffix.size());
  }
  T out{};
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), out, base);
  if (ec != std::errc() || end != v.data() + v.size() || v.empty()) return std::nullopt;
  return out;
}

}  // namespace

PosixMetadata decode_posix_metadata(const s3::UserMetadata& meta) {
  PosixMetadata p;
  if (auto mode = parse<uint32_t>(meta, "file-permissions", 8)) {
    mode_t type = *mode & S_IFMT;
    // Only types an object can stand for; anything else is not trusted.
    if (type == S_IFREG || type == S_IFLNK || type == S_IFDIR || type == 0) {
      p.mode = static_cast<mode_t>(*mode);
    }
  }
  p.uid = parse<uid_t>(meta, "file-owner", 10);
  p.gid = parse<gid_t>(meta, "file-group", 10);
  p.mtime_ns = parse<int64_t>(meta, "file-mtime", 10, "ns");
  p.atime_ns = parse<int64_t>(meta, "file-atime", 10, "ns");
  return p;
}

void encode_posix_metadata(const PosixMetadata& p, s3::UserMetadata& meta) {
  if (p.mode) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "%07o", static_cast<unsigned>(*p.mode));
    meta["file-permissions"] = buf;
  }
  if (p.uid) meta["file-owner"] = std::to_string(*p.uid);
  if (p.gid) meta["file-group"] = std::to_string(*p.gid);
  if (p.mtime_ns) meta["file-mtime"] = std::to_string(*p.mtime_ns) + "ns";
  if (p.atime_ns) meta["file-atime"] = std::to_string(*p.atime_ns) + "ns";
}

}  // namespace nacre::fs
