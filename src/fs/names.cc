#include "fs/names.h"

namespace nacre::fs {

bool is_valid_name(std::string_view name) {
  if (name.empty() || name == "." || name == ".." || name.size() > kMaxNameLength) return false;
  return name.find('/') == std::string_view::npos && name.find('\0') == std::string_view::npos;
}

bool symlink_stays_inside(size_t depth, std::string_view target) {
  if (target.empty() || target.front() == '/') return false;
  // The kernel resolves ".." physically: after a component that is itself a
  // symlink (d/s -> ..), "d/s/.." is not "d". So ".." may only lead the target,
  // where it climbs real directories of the mount; any ".." after a named
  // component is refused, and the leading ones may not climb above the root.
  long level = static_cast<long>(depth);
  bool named = false;
  while (!target.empty()) {
    size_t slash = target.find('/');
    std::string_view part = target.substr(0, slash);
    target = slash == std::string_view::npos ? std::string_view{} : target.substr(slash + 1);
    if (part.empty() || part == ".") continue;
    if (part == "..") {
      if (named || --level < 0) return false;
    } else {
      named = true;
    }
  }
  return true;
}

}  // namespace nacre::fs

namespace nacre::fs {

bool is_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t more = c < 0x80           ? 0
                        : (c >> 5) == 0x6  ? 1
                        : (c >> 4) == 0xe  ? 2
                        : (c >> 3) == 0x1e ? 3
                                           : 4;  // not a lead byte
    if (more == 4 || (more > 0 && i + more >= s.size())) return false;
    for (size_t k = 1; k <= more; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 0x2) return false;
    }
    i += more + 1;
  }
  return true;
}

}  // namespace nacre::fs
