#include "staging/staging_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <random>

#include "cache/disk_io.h"

namespace nacre::staging {

namespace {

constexpr uint64_t kMaxManifestBytes = 1 << 20;

std::string random_id() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(rng()),
                static_cast<unsigned long long>(rng()));
  return buf;
}

bool valid_id(const std::string& id) {
  return id.size() == 32 && std::all_of(id.begin(), id.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

}  // namespace

std::string encode_manifest(const Manifest& m) {
  nlohmann::json j = {{"version", 1},
                      {"id", m.id},
                      {"bucket", m.bucket},
                      {"key", m.key},
                      {"base_etag", m.base_etag},
                      {"complete", m.complete},
                      {"write_failed", m.write_failed},
                      {"upload_id", m.upload_id},
                      {"upload_key", m.upload_key},
                      {"modified", m.modified},
                      {"metadata", m.metadata},
                      {"content_type", m.content_type},
                      {"staged_at_ns", m.staged_at_ns}};
  if (!m.upload_windows.empty()) {
    auto& w = j["upload_windows"] = nlohmann::json::array();
    for (const auto& u : m.upload_windows) {
      w.push_back(
          {{"key", u.key}, {"from_ns", u.from_ns}, {"to_ns", u.to_ns}, {"creates", u.creates}});
    }
  }
  return j.dump(2) + "\n";
}

Result<Manifest> decode_manifest(const std::string& text) {
  auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return fail(ErrorCode::kInvalidArgument, "not a JSON object");
  }
  try {
    if (j.at("version").get<int>() != 1) {
      return fail(ErrorCode::kInvalidArgument, "unknown manifest version");
    }
    Manifest m;
    m.id = j.at("id").get<std::string>();
    m.bucket = j.at("bucket").get<std::string>();
    m.key = j.at("key").get<std::string>();
    m.base_etag = j.at("base_etag").get<std::string>();
    m.complete = j.at("complete").get<bool>();
    m.write_failed = j.value("write_failed", false);
    m.upload_id = j.at("upload_id").get<std::string>();
    m.upload_key = j.value("upload_key", m.key);
    m.modified = j.value("modified", true);
    m.metadata = j.at("metadata").get<s3::UserMetadata>();
    m.content_type = j.value("content_type", std::string());
    m.staged_at_ns = j.value("staged_at_ns", int64_t{0});
    if (auto w = j.find("upload_windows"); w != j.end()) {
      for (const auto& u : w->get_ref<const nlohmann::json::array_t&>()) {
        m.upload_windows.push_back({u.at("key").get<std::string>(), u.at("from_ns").get<int64_t>(),
                                    u.at("to_ns").get<int64_t>(), u.value("creates", int64_t{1})});
      }
    }
    if (!valid_id(m.id) || m.bucket.empty() || m.key.empty()) {
      return fail(ErrorCode::kInvalidArgument, "manifest lacks an id, bucket or key");
    }
    return m;
  } catch (const nlohmann::json::exception& e) {
    return fail(ErrorCode::kInvalidArgument, std::string("manifest field: ") + e.what());
  }
}

Result<std::unique_ptr<StagingStore>> StagingStore::open(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return fail_errno("mkdir " + dir, errno);
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) return fail_errno("stat " + dir, errno);
  if (!S_ISDIR(st.st_mode)) {
    return fail(ErrorCode::kInvalidArgument, dir + " is not a directory");
  }
  return std::unique_ptr<StagingStore>(new StagingStore(dir));
}

std::string StagingStore::data_path(const std::string& id) const {
  return dir_ + "/" + id + ".data";
}

std::string StagingStore::manifest_path(const std::string& id) const {
  return dir_ + "/" + id + ".json";
}

Result<int> StagingStore::create(Manifest& m) {
  m.id = random_id();
  std::string path = data_path(m.id);
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return fail_errno("create " + path, errno);
  if (Status st = save(m); !st) {
    ::close(fd);
    ::unlink(path.c_str());
    return std::unexpected(st.error());
  }
  return fd;
}

Status StagingStore::save(const Manifest& m) {
  const std::string path = manifest_path(m.id), tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return fail_errno("create " + tmp, errno);
  // No fsync: what this guards against is the mount process dying (kill -9, a
  // crash), after which the page cache still holds both files; the rename makes
  // the replacement atomic. Surviving a power loss would need the data files
  // synced too, at the cost of every small file's export (docs/SEMANTICS.md).
  Status st = cache::io::pwrite_full(fd, encode_manifest(m), 0, "write " + tmp);
  ::close(fd);
  if (st && ::rename(tmp.c_str(), path.c_str()) != 0) st = fail_errno("rename " + tmp, errno);
  if (!st) ::unlink(tmp.c_str());
  return st;
}

Status StagingStore::remove(const std::string& id) {
  if (Status st = cache::io::remove_file(data_path(id)); !st) return st;
  return cache::io::remove_file(manifest_path(id));
}

Result<int> StagingStore::open_data(const std::string& id) const {
  std::string path = data_path(id);
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return fail_errno("open " + path, errno);
  return fd;
}

Result<std::vector<Manifest>> StagingStore::list(size_t* unreadable) const {
  DIR* d = ::opendir(dir_.c_str());
  if (!d) return fail_errno("opendir " + dir_, errno);
  std::vector<Manifest> out;
  size_t bad = 0;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name.size() != 37 || !name.ends_with(".json")) continue;
    auto text = cache::io::read_file(dir_ + "/" + name, kMaxManifestBytes);
    Result<Manifest> m = text ? decode_manifest(*text) : std::unexpected(text.error());
    if (!m || m->id != name.substr(0, 32)) {
      ++bad;
      spdlog::warn("staging: cannot read {}/{} ({}); left in place", dir_, name,
                   m ? "its id does not match its name" : m.error().describe());
      continue;
    }
    out.push_back(std::move(*m));
  }
  ::closedir(d);
  std::sort(out.begin(), out.end(),
            [](const Manifest& a, const Manifest& b) { return a.staged_at_ns < b.staged_at_ns; });
  if (unreadable) *unreadable = bad;
  return out;
}

}  // namespace nacre::staging
