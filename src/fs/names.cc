#include "fs/names.h"

namespace nacre::fs {

bool is_valid_name(std::string_view name) {
  if (name.empty() || name == "." || name == ".." || name.size() > kMaxNameLength) return false;
  return name.find('/') == std::string_view::npos && name.find('\0') == std::string_view::npos;
}

}  // namespace nacre::fs
