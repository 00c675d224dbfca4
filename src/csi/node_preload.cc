// The preload of a staged mount: `nacre preload` over the files the volume's
// globs match, in the background, with its progress in the plugin's log; a
// NodePublish may wait for it (preloadWaitSeconds).
#include <glob.h>
#include <spdlog/spdlog.h>

#include <fstream>
#include <thread>

#include "csi/mount_ops.h"
#include "csi/node.h"

namespace nacre::csi {

void Node::start_preload(const std::string& key, const std::vector<std::string>& globs) {
  if (globs.empty()) return;
  auto p = std::make_shared<Preload>();
  preloads_[key] = p;
  const MountRecord& m = state_.mounts.at(key);
  std::thread([p, key, dir = m.dir, globs, binary = options_.nacre_binary,
               marker = mounts_dir() + "/" + key + ".preloaded"] {
    std::vector<std::string> files;
    for (const auto& g : globs) {
      glob_t found{};
      const std::string pattern = dir + "/" + g;
      if (::glob(pattern.c_str(), 0, nullptr, &found) == 0) {
        for (size_t i = 0; i < found.gl_pathc; ++i) files.emplace_back(found.gl_pathv[i]);
      }
      ::globfree(&found);
    }
    bool ok = true;
    if (files.empty()) {
      spdlog::warn("preload of mount {}: no file matches {}", key, globs.front());
    } else {
      spdlog::info("preload of mount {}: {} files", key, files.size());
      std::vector<std::string> argv = {binary, "preload", "--threads", "4"};
      argv.insert(argv.end(), files.begin(), files.end());
      auto run = run_process(argv, {}, std::chrono::hours(12), [&key](const std::string& line) {
        spdlog::info("preload of mount {}: {}", key, line);
      });
      ok = run && run->status == 0;
      if (!ok) {
        spdlog::error("preload of mount {} failed: {}", key,
                      run ? run->output : run.error().describe());
      }
    }
    std::lock_guard lock(p->mu);
    if (ok && !p->cancelled) {
      std::ofstream(marker) << "done\n";
      spdlog::info("preload of mount {} done", key);
    }
    p->done = true;
    p->ok = ok;
    p->cv.notify_all();
  }).detach();
}

Status Node::wait_preload(const std::string& key, int seconds,
                          std::unique_lock<std::timed_mutex>& lock) {
  if (seconds <= 0) return {};
  auto it = preloads_.find(key);
  if (it == preloads_.end()) return {};
  std::shared_ptr<Preload> p = it->second;
  const auto deadline = p->started + std::chrono::seconds(seconds);
  const auto now = std::chrono::steady_clock::now();
  const auto wait =
      std::min<std::chrono::steady_clock::duration>(deadline - now, std::chrono::seconds(90));
  bool done = false;
  lock.unlock();  // other volumes' calls go on meanwhile
  {
    std::unique_lock plock(p->mu);
    done = wait.count() <= 0 ? p->done : p->cv.wait_for(plock, wait, [&] { return p->done; });
  }
  lock.lock();
  if (done) return {};
  if (std::chrono::steady_clock::now() >= deadline) {
    spdlog::warn("preload of mount {} still running after {} s: publishing anyway", key, seconds);
    return {};
  }
  return fail(ErrorCode::kNetwork,
              "the preload of this volume's files is still running "
              "(preloadWaitSeconds " +
                  std::to_string(seconds) + "): kubelet calls again");
}

}  // namespace nacre::csi
