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
