// Parsing of the mount's size, mode and duration flags.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "common/error.h"
#include "fs/file_system.h"

namespace nacre::cli {

// "10G", "512Mi", "1048576", "2T" (K/M/G/T are powers of 1024, an "i" or "B"
// suffix is accepted and means the same).
[[nodiscard]] Result<uint64_t> parse_bytes(const std::string& text);
// "0644" → 0644; at most 07777.
[[nodiscard]] Result<mode_t> parse_mode(const std::string& text);
// "forever" → nullopt; "1", "0.5", "30" seconds.
[[nodiscard]] Result<std::optional<std::chrono::milliseconds>> parse_ttl(const std::string& text);
// A user or group id: decimal, 0 to 4294967294 (-1 is "no change" to the kernel).
[[nodiscard]] Result<uint32_t> parse_id(const std::string& text, const std::string& what);
// "NEW,CHANGED,DELETED" (any subset, case-insensitive; "NONE" for none).
[[nodiscard]] Result<fs::ImportPolicy> parse_import_policy(const std::string& text);
[[nodiscard]] Result<fs::ExportPolicy> parse_export_policy(const std::string& text);

}  // namespace nacre::cli
