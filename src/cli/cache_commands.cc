#include "cli/cache_commands.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <thread>
#include <vector>

#include "fuse/control_ioctl.h"
#include "staging/staging_store.h"

namespace nacre::cli {

namespace {

struct FileItem {
  std::string path;
  uint64_t size;
};

// Regular files named or found under the named directories.
bool collect(const std::vector<std::string>& paths, std::vector<FileItem>& out) {
  for (const auto& p : paths) {
    std::error_code ec;
    auto status = std::filesystem::symlink_status(p, ec);
    if (ec) {
      std::fprintf(stderr, "nacre: error: %s: %s\n", p.c_str(), ec.message().c_str());
      return false;
    }
    if (std::filesystem::is_directory(status)) {
      for (auto it = std::filesystem::recursive_directory_iterator(p, ec);
           !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
        if (it->is_regular_file() && !it->is_symlink()) {
          out.push_back({it->path().string(), static_cast<uint64_t>(it->file_size())});
        }
      }
      if (ec) {
        std::fprintf(stderr, "nacre: error: listing %s: %s\n", p.c_str(), ec.message().c_str());
        return false;
      }
    } else if (std::filesystem::is_regular_file(status)) {
      out.push_back({p, static_cast<uint64_t>(std::filesystem::file_size(p))});
    }
  }
  return true;
}

std::string human(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) {
    bytes /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f %s", bytes, units[u]);
  return buf;
}

int preload(const std::vector<std::string>& paths, int threads) {
  std::vector<FileItem> files;
  if (!collect(paths, files)) return 1;
  uint64_t total = 0;
  for (auto& f : files) total += f.size;
  std::atomic<uint64_t> done{0};
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex err_mu;
  auto start = std::chrono::steady_clock::now();
  auto worker = [&] {
    std::vector<char> buf(8 << 20);
    for (size_t i = next++; i < files.size() && !failed; i = next++) {
      int fd = open(files[i].path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) {
        std::lock_guard lock(err_mu);
        std::fprintf(stderr, "\nnacre preload: error: %s: %s\n", files[i].path.c_str(),
                     strerror(errno));
        failed = true;
        return;
      }
      for (;;) {
        ssize_t n = read(fd, buf.data(), buf.size());
        if (n == 0) break;
        if (n < 0) {
          if (errno == EINTR) continue;
          std::lock_guard lock(err_mu);
          std::fprintf(stderr, "\nnacre preload: error: reading %s: %s\n", files[i].path.c_str(),
                       strerror(errno));
          failed = true;
          break;
        }
        done += static_cast<uint64_t>(n);
      }
      close(fd);
    }
  };
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back(worker);
  bool tty = isatty(STDERR_FILENO);
  for (;;) {
    bool finished = next >= files.size() + static_cast<size_t>(threads) || failed;
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    uint64_t d = done;
    double rate = secs > 0 ? d / secs : 0;
    double eta = rate > 0 ? (total - std::min(d, total)) / rate : 0;
    int width = 30;
    int filled =
        total ? static_cast<int>(width * std::min(1.0, static_cast<double>(d) / total)) : width;
    std::fprintf(stderr, "%s[%s%s] %s / %s  %s/s  ETA %.0fs%s", tty ? "\r" : "",
                 std::string(filled, '#').c_str(), std::string(width - filled, '.').c_str(),
                 human(d).c_str(), human(total).c_str(), human(rate).c_str(), eta, tty ? "" : "\n");
    if (finished) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(tty ? 200 : 2000));
  }
  for (auto& t : pool) t.join();
  std::fprintf(stderr, "\n");
  if (failed) return 1;
  std::printf("preloaded %zu files, %s\n", files.size(), human(static_cast<double>(total)).c_str());
  return 0;
}

int status(const std::vector<std::string>& paths) {
  std::vector<FileItem> files;
  if (!collect(paths, files)) return 1;
  uint64_t total = 0, cached_total = 0;
  for (auto& f : files) {
    char value[64] = {0};
    ssize_t n = getxattr(f.path.c_str(), "user.nacre.cached_bytes", value, sizeof value - 1);
    if (n < 0) {
      std::fprintf(stderr, "nacre status: error: %s: %s (is it on a Nacre mount?)\n",
                   f.path.c_str(), strerror(errno));
      return 1;
    }
    uint64_t cached = std::strtoull(value, nullptr, 10);
    const char* state = cached == 0 ? "released" : cached >= f.size ? "cached" : "partial";
    std::printf("%-8s %12llu / %12llu  %5.1f%%  %s\n", state,
                static_cast<unsigned long long>(cached), static_cast<unsigned long long>(f.size),
                f.size ? 100.0 * cached / f.size : 100.0, f.path.c_str());
    total += f.size;
    cached_total += cached;
  }
  std::printf("total    %12llu / %12llu  %5.1f%%\n", static_cast<unsigned long long>(cached_total),
              static_cast<unsigned long long>(total), total ? 100.0 * cached_total / total : 100.0);
  return 0;
}

// The staged files of a cache directory, read from the manifests on disk, so it
// works with no mount running (after a crash, before the next mount).
int staged_status(const std::string& cache_dir) {
  const std::string dir = cache_dir + "/staging";
  if (!std::filesystem::is_directory(dir)) {
    std::fprintf(stderr,
                 "nacre status: error: %s: no staging directory (not a cache directory "
                 "of a read-write mount?)\n",
                 dir.c_str());
    return 1;
  }
  auto store = staging::StagingStore::open(dir);
  if (!store) {
    std::fprintf(stderr, "nacre status: error: %s\n", store.error().describe().c_str());
    return 1;
  }
  size_t unreadable = 0;
  auto manifests = (*store)->list(&unreadable);
  if (!manifests) {
    std::fprintf(stderr, "nacre status: error: %s\n", manifests.error().describe().c_str());
    return 1;
  }
  uint64_t total = 0;
  for (const auto& m : *manifests) {
    std::error_code ec;
    const std::string data = (*store)->data_path(m.id);
    auto size = std::filesystem::file_size(data, ec);
    // writing: its writer had not closed it (kept, never exported on its own);
    // closed: waiting for its export (retried, and at the next mount);
    // write-failed: a write to it failed (disk full): kept, never exported as it is.
    const char* state = m.write_failed ? "write-failed" : m.complete ? "closed" : "writing";
    std::printf("%-12s %12llu  s3://%s/%s  %s\n", state,
                static_cast<unsigned long long>(ec ? 0 : size), m.bucket.c_str(), m.key.c_str(),
                ec ? "(data file missing)" : data.c_str());
    total += ec ? 0 : size;
  }
  std::printf(
      "total        %12llu  %zu staged files%s\n", static_cast<unsigned long long>(total),
      manifests->size(),
      unreadable ? (", " + std::to_string(unreadable) + " unreadable manifests").c_str() : "");
  return 0;
}

// Through an ioctl on the file's directory (fuse/control_ioctl.h), which read-only
// mounts allow; opening the directory fetches no data.
bool release_one(const std::string& path) {
  std::filesystem::path p(path);
  std::string dir = p.has_parent_path() ? p.parent_path().string() : ".";
  std::string name = p.filename().string();
  fuse::ReleaseRequest req{};
  if (name.size() >= sizeof req.name) {
    std::fprintf(stderr, "nacre release: error: %s: name too long\n", path.c_str());
    return false;
  }
  std::memcpy(req.name, name.data(), name.size());
  int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  int err = 0;
  if (fd < 0 || ioctl(fd, fuse::kReleaseIoctl, &req) != 0) err = errno;
  if (fd >= 0) close(fd);
  if (err == 0) return true;
  std::fprintf(stderr, "nacre release: error: %s: %s%s\n", path.c_str(), strerror(err),
               err == ENOTTY ? " (is it on a Nacre mount?)" : "");
  return false;
}

int release(const std::vector<std::string>& paths) {
  std::vector<FileItem> files;
  if (!collect(paths, files)) return 1;
  for (auto& f : files) {
    if (!release_one(f.path)) return 1;
  }
  std::printf("released %zu files\n", files.size());
  return 0;
}

}  // namespace

void add_cache_commands(CLI::App& app, int& exit_code) {
  auto paths = std::make_shared<std::vector<std::string>>();
  auto threads = std::make_shared<int>(4);
  CLI::App* pre = app.add_subcommand(
      "preload",
      "Load files (or whole directories) of a Nacre mount into the node cache, with progress");
  pre->add_option("paths", *paths, "files or directories inside a Nacre mount")->required();
  pre->add_option("--threads", *threads, "files loaded at once")->check(CLI::Range(1, 64));
  pre->callback([paths, threads, &exit_code] { exit_code = preload(*paths, *threads); });

  auto status_paths = std::make_shared<std::vector<std::string>>();
  auto staged = std::make_shared<bool>(false);
  auto staged_dir = std::make_shared<std::string>();
  CLI::App* st = app.add_subcommand(
      "status",
      "Show cached bytes per file of a Nacre mount, or (--staged) the files a cache directory "
      "holds that are not exported yet");
  st->add_option("paths", *status_paths, "files or directories inside a Nacre mount");
  st->add_flag("--staged", *staged,
               "list staged files (written, not yet in S3) of --cache-dir, mounted or not");
  st->add_option("--cache-dir", *staged_dir, "the cache directory of a mount (with --staged)");
  st->callback([status_paths, staged, staged_dir, &exit_code] {
    if (*staged) {
      if (staged_dir->empty()) throw CLI::ValidationError("--staged needs --cache-dir DIR");
      exit_code = staged_status(*staged_dir);
      return;
    }
    if (status_paths->empty()) throw CLI::ValidationError("paths", "give files or directories");
    exit_code = status(*status_paths);
  });

  auto release_paths = std::make_shared<std::vector<std::string>>();
  CLI::App* rel = app.add_subcommand("release", "Drop the cached data of files of a Nacre mount");
  rel->add_option("paths", *release_paths, "files or directories inside a Nacre mount")->required();
  rel->callback([release_paths, &exit_code] { exit_code = release(*release_paths); });
}

}  // namespace nacre::cli
