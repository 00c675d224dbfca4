#include "cli/size_parse.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cmath>

namespace nacre::cli {

Result<uint64_t> parse_bytes(const std::string& text) {
  std::string t = text;
  std::string unit;
  while (!t.empty() && std::isalpha(static_cast<unsigned char>(t.back()))) {
    unit.insert(unit.begin(),
                static_cast<char>(std::toupper(static_cast<unsigned char>(t.back()))));
    t.pop_back();
  }
  uint64_t n = 0;
  auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), n);
  if (t.empty() || ec != std::errc() || end != t.data() + t.size()) {
    return fail(ErrorCode::kInvalidArgument,
                "'" + text + "' is not a size (e.g. 10G, 512M, 1048576)");
  }
  if (unit.ends_with("B")) unit.pop_back();
  if (unit.ends_with("I")) unit.pop_back();
  int shift = unit.empty()  ? 0
              : unit == "K" ? 10
              : unit == "M" ? 20
              : unit == "G" ? 30
              : unit == "T" ? 40
                            : -1;
  if (shift < 0) return fail(ErrorCode::kInvalidArgument, "'" + text + "': unknown size unit");
  if (shift > 0 && n > (UINT64_MAX >> shift))
    return fail(ErrorCode::kInvalidArgument, "'" + text + "' is too large");
  return n << shift;
}

Result<mode_t> parse_mode(const std::string& text) {
  unsigned v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v, 8);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || v > 07777) {
    return fail(ErrorCode::kInvalidArgument, "'" + text + "' is not an octal mode like 0644");
  }
  return static_cast<mode_t>(v);
}

Result<std::optional<std::chrono::milliseconds>> parse_ttl(const std::string& text) {
  if (text == "forever") return std::optional<std::chrono::milliseconds>{};
  char* end = nullptr;
  double s = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || !(s >= 0) || std::isinf(s)) {
    return fail(ErrorCode::kInvalidArgument,
                "'" + text + "' is not a number of seconds or 'forever'");
  }
  return std::optional<std::chrono::milliseconds>(
      std::chrono::milliseconds(std::llround(s * 1000)));
}

namespace {

// NEW,CHANGED,DELETED or NONE, the format of FSx's autoImportPolicy and
// autoExportPolicy.
Result<std::array<bool, 3>> parse_policy(const std::string& text, const char* what) {
  std::array<bool, 3> p{false, false, false};
  std::string upper = text;
  std::transform(upper.begin(), upper.end(), upper.begin(),
                 [](unsigned char c) { return std::toupper(c); });
  if (upper == "NONE") return p;
  size_t pos = 0;
  while (pos <= upper.size()) {
    size_t comma = upper.find(',', pos);
    std::string item =
        upper.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    if (item == "NEW")
      p[0] = true;
    else if (item == "CHANGED")
      p[1] = true;
    else if (item == "DELETED")
      p[2] = true;
    else
      return fail(ErrorCode::kInvalidArgument, std::string(what) + " '" + text + "': '" + item +
                                                   "' is not NEW, CHANGED, DELETED or NONE");
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return p;
}

}  // namespace

Result<fs::ImportPolicy> parse_import_policy(const std::string& text) {
  auto p = parse_policy(text, "import policy");
  if (!p) return std::unexpected(p.error());
  return fs::ImportPolicy{(*p)[0], (*p)[1], (*p)[2]};
}

Result<fs::ExportPolicy> parse_export_policy(const std::string& text) {
  auto p = parse_policy(text, "export policy");
  if (!p) return std::unexpected(p.error());
  return fs::ExportPolicy{(*p)[0], (*p)[1], (*p)[2]};
}

Result<uint32_t> parse_id(const std::string& text, const std::string& what) {
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || v >= 0xffffffffull) {
    return fail(ErrorCode::kInvalidArgument, what + " '" + text + "' is not a numeric id");
  }
  return static_cast<uint32_t>(v);
}

}  // namespace nacre::cli
