// Export of staged files to S3 (see file_system.h and write_path.cc): one
// PUT, or a multipart upload whose full parts are streamed while a large file
// is written sequentially; the exporter's threads (streamed parts, retries of
// failed exports) and the recovery of staged files a crashed process left.
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

#include "fs/inode.h"
#include "fs/staged.h"
#include "s3/transfer.h"

namespace nacre::fs {

namespace {

// Streamed parts grow with the file, whose final size is not known while it is
// written: `base` for the first 1000 parts, twice that for the next 1000, and
// so on, so 10,000 parts of an 8 MiB base hold 8 TiB (S3's object limit is
// 5 TiB) and no part exceeds S3's 5 GiB.
uint64_t part_length(uint64_t base, size_t index) {
  return base << std::min<size_t>(index / 1000, 9);
}

// For threads of our own: an exception becomes an error, never std::terminate.
template <typename F>
Status no_throw(const char* what, F&& f) {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    return fail(ErrorCode::kNoSpace, std::string(what) + ": out of memory");
  } catch (const std::exception& e) {
    return fail(ErrorCode::kIo, std::string(what) + ": " + e.what());
  }
}

// S3 refuses a request signed more than 15 minutes off its own clock
// (RequestTimeTooSkewed), so an upload's Initiated time, on the server's clock,
// is within that of our clock when the create was sent; the create's retries
// end well within 15 minutes more.
constexpr auto kClockSkew = std::chrono::minutes(15);
constexpr auto kCreateTime = std::chrono::minutes(15);

int64_t wall_now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::chrono::system_clock::time_point wall_time(int64_t ns) {
  return std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(
          std::chrono::nanoseconds(ns)));
}

}  // namespace

// ---------------------------------------------------------------------------
// Staged files and the exporter's threads

void FileSystem::Staged::note_upload_intent(const std::string& key) {
  const int64_t now = wall_now_ns();
  auto& windows = manifest.upload_windows;
  // The key's last window grows by a create soon after its last one; a later
  // create opens a new window, so that no window spans hours of other
  // clients' uploads. `creates` tells a window that grew from one seen
  // before, even if the clock went back.
  auto w = std::ranges::find(windows.rbegin(), windows.rend(), key, &staging::UploadWindow::key);
  const int64_t soon = std::chrono::duration_cast<std::chrono::nanoseconds>(kCreateTime).count();
  if (w != windows.rend() && now <= w->to_ns + soon) {
    w->to_ns = std::max(w->to_ns, now);
    w->creates++;
  } else {
    windows.push_back({key, now, now, 1});
  }
  if (unlinked) return;  // its manifest is gone; its upload is aborted at once
  if (Status st = store.save(manifest); !st) {
    // The upload goes ahead (a full disk must not stop the exports that free
    // it); this process still finds it by the window it keeps in memory.
    spdlog::warn("staging: {} (a crash before s3://{}/{} is exported may leave an upload)",
                 st.error().describe(), manifest.bucket, key);
  }
}

void FileSystem::create_begins(const std::string& key) {
  std::lock_guard lock(live_uploads_mu_);
  creating_[key]++;
}

void FileSystem::create_ends(const std::string& key) {
  std::lock_guard lock(live_uploads_mu_);
  if (auto it = creating_.find(key); it != creating_.end() && --it->second <= 0)
    creating_.erase(it);
}

void FileSystem::look_for_uploads_later(std::vector<staging::UploadWindow> windows) {
  if (windows.empty() || !exporter_) return;
  exporter_->submit([this, windows = std::move(windows)]() mutable {
    if (Status st = abort_unrecorded_uploads(windows); !st) {
      spdlog::warn("staging: cannot look for the uploads of a deleted file: {}",
                   st.error().describe());
    }
  });
}

void FileSystem::upload_started(const std::string& id) {
  std::lock_guard lock(live_uploads_mu_);
  live_uploads_.insert(id);
}

void FileSystem::upload_ended(const std::string& id) {
  std::lock_guard lock(live_uploads_mu_);
  if (auto it = live_uploads_.find(id); it != live_uploads_.end()) live_uploads_.erase(it);
}

Status FileSystem::abort_unrecorded_uploads(std::vector<staging::UploadWindow>& windows) {
  std::map<std::string, std::vector<s3::UploadInfo>> listed;  // one look per key
  for (auto w = windows.begin(); w != windows.end();) {
    auto known = listed.find(w->key);
    if (known == listed.end()) {
      metrics_.count_request("ListMultipartUploads");
      auto uploads = s3::uploads_of_key(client_, options_.bucket, w->key);
      if (!uploads) return std::unexpected(uploads.error());
      known = listed.emplace(w->key, std::move(*uploads)).first;
    }
    const auto from = wall_time(w->from_ns) - kClockSkew;
    const auto to = wall_time(w->to_ns) + kClockSkew + kCreateTime;
    bool resolved = true;
    for (const auto& u : known->second) {
      // Uploads of the key from other times are someone else's: left alone.
      if (u.initiated < from || u.initiated > to) continue;
      {
        std::lock_guard lock(live_uploads_mu_);
        if (live_uploads_.contains(u.upload_id)) continue;  // this process's, in use
        if (creating_.contains(w->key)) {
          // A create of the key has not answered yet: this may be its upload.
          resolved = false;  // the window stays for the next look
          continue;
        }
      }
      metrics_.count_request("AbortMultipartUpload");
      Status st = client_.abort_multipart_upload(options_.bucket, w->key, u.upload_id);
      if (!st && st.error().code != ErrorCode::kNoSuchUpload) return st;
      if (st) {
        spdlog::info("staging: aborted multipart upload {} of s3://{}/{}, left unrecorded",
                     u.upload_id, options_.bucket, w->key);
      }
    }
    w = resolved ? windows.erase(w) : w + 1;
  }
  return {};
}

FileSystem::Staged::~Staged() {
  ::close(fd);
  if (unlinked || !dirty()) {
    if (!unlinked && !manifest.upload_windows.empty()) {
      spdlog::warn(
          "staging: an upload of s3://{}/{} may be left in S3 (its uploads could not be "
          "listed); a bucket lifecycle rule AbortIncompleteMultipartUpload removes it",
          manifest.bucket, manifest.key);
    }
    if (Status st = store.remove(manifest.id); !st) {
      spdlog::warn("staging: cannot remove {}: {}", manifest.id, st.error().describe());
    }
  }
}

void FileSystem::Exporter::start(int workers) {
  {
    std::lock_guard lock(mu);
    stopped = false;
  }
  for (int i = 0; i < workers; ++i) {
    threads.emplace_back([this](std::stop_token stop) {
      for (;;) {
        std::function<void()> task;
        {
          std::unique_lock lock(mu);
          if (!wake.wait(lock, stop, [&] { return !tasks.empty(); })) return;
          task = std::move(tasks.front());
          tasks.pop_front();
        }
        // No exception may end a thread (std::terminate): a task logs it.
        try {
          task();
        } catch (const std::exception& e) {
          spdlog::error("export task: {}", e.what());
        } catch (...) {
          spdlog::error("export task: unknown exception");
        }
      }
    });
  }
  threads.emplace_back([this](std::stop_token stop) { fs.retry_loop(*this, stop); });
}

void FileSystem::Exporter::stop() {
  {
    std::lock_guard lock(mu);
    stopped = true;
  }
  for (auto& t : threads) t.request_stop();
  wake.notify_all();
  threads.clear();  // joins
}

void FileSystem::Exporter::submit(std::function<void()> task) {
  {
    std::lock_guard lock(mu);
    if (!stopped) {
      tasks.push_back(std::move(task));
      wake.notify_all();
      return;
    }
  }
  // Stopping (unmount, after the client was cancelled): the task runs here and
  // fails fast, so nothing waits for a part that no thread would send.
  task();
}

void FileSystem::Exporter::retry_later(const std::shared_ptr<Staged>& s) {
  {
    std::lock_guard sl(s->mu);
    if (s->retry_pending) return;
    s->retry_pending = true;
  }
  std::lock_guard lock(mu);
  retry_list.push_back(s);
}

size_t FileSystem::Exporter::pending() {
  std::lock_guard lock(mu);
  return retry_list.size() + retrying;
}

Status FileSystem::guard_export(const std::shared_ptr<Staged>& s) {
  return no_throw("export", [&] { return export_staged(s); });
}

void FileSystem::retry_loop(Exporter& exporter, std::stop_token stop) {
  auto delay = options_.export_retry;
  for (;;) {
    {
      std::unique_lock lock(exporter.mu);
      exporter.wake.wait_for(lock, stop, delay, [&] { return exporter.kick; });
      if (stop.stop_requested()) return;
      exporter.kick = false;
    }
    std::vector<std::shared_ptr<Staged>> due;
    {
      std::lock_guard lock(exporter.mu);
      due.swap(exporter.retry_list);
      exporter.retrying = due.size();
    }
    auto done_one = [&] {
      std::lock_guard lock(exporter.mu);
      exporter.retrying--;
    };
    bool failed = false;
    for (auto& s : due) {
      if (stop.stop_requested()) return;
      {
        std::lock_guard sl(s->mu);
        s->retry_pending = false;
      }
      struct Done {
        std::function<void()> f;
        ~Done() { f(); }
      } done{done_one};
      Status st = guard_export(s);
      if (!st) {
        failed = true;
        bool write_failed;
        {
          std::lock_guard sl(s->mu);
          write_failed = s->manifest.write_failed;
        }
        // A file whose write failed waits for its writer, not for S3.
        if (!write_failed) exporter.retry_later(s);
        continue;
      }
      std::lock_guard lock(mu_);
      if (s->ino != 0) {
        if (Inode* n = find(s->ino); n && n->staged == s) drop_staged_if_done(*n);
      }
    }
    delay = failed ? std::min<std::chrono::milliseconds>(delay * 2, std::chrono::minutes(1))
                   : options_.export_retry;
  }
}

size_t FileSystem::pending_exports() {
  return exporter_ ? exporter_->pending() : 0;
}

void FileSystem::stop_write_path() {
  if (exporter_) exporter_->stop();
}

Status FileSystem::start_write_path() {
  if (options_.read_only || !options_.staging) return {};
  if (exporter_) {
    // Started again after stop_write_path(): the threads only; recovery ran once.
    std::lock_guard lock(exporter_->mu);
    if (!exporter_->stopped) {
      return fail(ErrorCode::kInvalidArgument, "the write path is started already");
    }
  }
  const bool first = !exporter_;
  if (first) exporter_ = std::make_unique<Exporter>(*this);
  exporter_->start(options_.upload_concurrency);
  if (!first) return {};
  size_t unreadable = 0;
  auto manifests = options_.staging->list(&unreadable);
  if (!manifests) return std::unexpected(manifests.error());
  size_t exported = 0, kept = 0;
  for (auto& m : *manifests) {
    if (m.bucket != options_.bucket || !m.key.starts_with(options_.prefix)) continue;
    if (!m.upload_id.empty()) {
      // The upload a crashed process left: its parts are never completed, so no
      // partial object can appear; the export starts again from the whole file.
      const std::string upload_key = m.upload_key.empty() ? m.key : m.upload_key;
      auto st = client_.abort_multipart_upload(m.bucket, upload_key, m.upload_id);
      if (st || st.error().code == ErrorCode::kNoSuchUpload) {
        m.upload_id.clear();
        m.upload_key.clear();
        if (Status saved = options_.staging->save(m); !saved) return saved;
      } else {
        // Kept in the manifest: the next start (or this file's export) tries again.
        spdlog::warn("staging: cannot abort upload {} of s3://{}/{}: {}", m.upload_id, m.bucket,
                     upload_key, st.error().describe());
      }
    }
    if (!m.upload_windows.empty()) {
      // Uploads the crashed process created but did not live to record. If S3
      // cannot say, the windows stay: this file's export, or the next start,
      // asks again.
      auto windows = m.upload_windows;
      if (Status st = abort_unrecorded_uploads(windows); !st) {
        spdlog::warn("staging: cannot look for the uploads of s3://{}/{} a crash left: {}",
                     m.bucket, m.key, st.error().describe());
      }
      if (windows != m.upload_windows) {
        m.upload_windows = std::move(windows);
        if (Status saved = options_.staging->save(m); !saved) {
          // Only a look to repeat at the next start: no reason to fail this one.
          spdlog::warn("staging: {}", saved.error().describe());
        }
      }
    }
    if (!m.modified && !m.write_failed && !m.base_etag.empty()) {
      if (!m.upload_windows.empty()) continue;  // kept for the next start's look
      // A copy of its object that nobody changed: S3 has it already.
      if (Status st = options_.staging->remove(m.id); !st) {
        spdlog::warn("staging: {}", st.error().describe());
      }
      continue;
    }
    if (!m.complete || m.write_failed) {
      ++kept;
      spdlog::warn(
          "staging: s3://{}/{} was still being written when the mount process stopped; not "
          "exported, kept at {} (see nacre status --staged)",
          m.bucket, m.key, options_.staging->data_path(m.id));
      continue;
    }
    auto fd = options_.staging->open_data(m.id);
    if (!fd) {
      ++kept;
      spdlog::warn("staging: s3://{}/{}: {} (the manifest {} stays; remove it with the data)",
                   m.bucket, m.key, fd.error().describe(), m.id);
      continue;
    }
    struct stat st {};
    ::fstat(*fd, &st);
    auto s = std::make_shared<Staged>(*options_.staging, m, *fd, 0);
    s->size = static_cast<uint64_t>(st.st_size);
    s->posix = decode_posix_metadata(m.metadata);
    s->streamable = false;  // its bytes are there already: one upload
    {
      std::lock_guard lock(mu_);
      // Oldest first: a newer staged file of the same key supersedes an older one.
      if (auto older = recovered_[m.key].lock()) {
        std::lock_guard sl(older->mu);
        older->unlinked = true;
      }
      recovered_[m.key] = s;
    }
    exporter_->retry_later(s);
    ++exported;
  }
  if (exported + kept + unreadable > 0) {
    spdlog::info("staging: {} closed files to export, {} incomplete kept, {} unreadable", exported,
                 kept, unreadable);
  }
  if (exported > 0) {
    std::lock_guard lock(exporter_->mu);
    exporter_->kick = true;  // now, not after the first retry delay
    exporter_->wake.notify_all();
  }
  return {};
}

// ---------------------------------------------------------------------------
// Export

void FileSystem::stream_parts(const std::shared_ptr<Staged>& s) {
  if (!exporter_) return;
  const uint64_t base = std::max(options_.part_size, s3::kMinPartSize);
  std::unique_lock sl(s->mu);
  if (!s->streamable || s->manifest.write_failed || s->stream_broken || s->stream_error ||
      s->unlinked || s->exporting || !may_export(*s)) {
    return;
  }
  // Only files of two parts or more are streamed (smaller ones are one PUT).
  if (s->manifest.upload_id.empty()) {
    if (s->creating_upload || s->size < 2 * base) return;
    s->creating_upload = true;
    std::string key = s->manifest.key, content_type = s->manifest.content_type;
    s3::UserMetadata meta = metadata_of(s->posix, s->manifest.metadata);
    sl.unlock();
    exporter_->submit([this, s, key, meta, content_type] {
      Result<std::string> id = fail(ErrorCode::kIo, "no upload");
      bool moved = false;
      Status asked = no_throw("create upload", [&]() -> Status {
        {
          std::lock_guard l(s->mu);
          // Unlinked or renamed since it was asked for: nobody would complete it.
          moved = s->unlinked || s->manifest.key != key;
          if (moved) return {};
          s->note_upload_intent(key);
        }
        metrics_.count_request("CreateMultipartUpload");
        CreateInFlight creating(*this, key);
        id = client_.create_multipart_upload(options_.bucket, key, meta, content_type);
        if (id) upload_started(*id);
        return {};
      });
      if (!asked) id = std::unexpected(asked.error());
      bool orphan = false;
      {
        std::lock_guard l(s->mu);
        // An orphan keeps `creating_upload` until its abort returned, so that no
        // export clears the window meanwhile.
        if (moved) {
          s->stream_broken = true;
          s->creating_upload = false;
        } else if (!id) {
          // (If the create reached S3 and only its answer was lost, the export's
          // look at the window finds that upload.)
          s->stream_error = id.error();
          s->creating_upload = false;
        } else if (s->unlinked || s->manifest.key != key) {
          orphan = true;
          s->stream_broken = true;
        } else {
          s->creating_upload = false;
          s->manifest.upload_id = *id;
          s->manifest.upload_key = key;
          s->upload_metadata = meta;
          // Recorded before any part is sent: a crash leaves an upload to abort.
          Status st = no_throw("save", [&] { return s->store.save(s->manifest); });
          if (!st) s->stream_error = st.error();
        }
        s->parts_done.notify_all();
      }
      if (orphan) {
        // If this fails, the window (kept unless unlinked) finds the upload.
        metrics_.count_request("AbortMultipartUpload");
        (void)client_.abort_multipart_upload(options_.bucket, key, *id);
        upload_ended(*id);
        std::lock_guard l(s->mu);
        s->creating_upload = false;
        s->parts_done.notify_all();
      }
      stream_parts(s);
    });
    return;
  }
  std::vector<std::function<void()>> tasks;
  while (s->in_flight < options_.upload_concurrency) {
    const size_t index = s->parts.size();
    if (index >= static_cast<size_t>(s3::kMaxParts)) break;
    const uint64_t len = part_length(base, index);
    if (s->size < s->streamed + len || !s->last_write_sequential) break;
    const uint64_t off = s->streamed;
    s->parts.push_back({static_cast<int>(index + 1), ""});
    s->streamed += len;
    s->in_flight++;
    std::string key = s->manifest.key, upload_id = s->manifest.upload_id;
    tasks.push_back([this, s, key, upload_id, index, off, len] {
      Result<std::string> etag = fail(ErrorCode::kIo, "part not sent");
      Status sent = no_throw("upload part", [&]() -> Status {
        metrics_.count_request("UploadPart");
        etag = client_.upload_part(options_.bucket, key, upload_id, static_cast<int>(index + 1),
                                   s3::Body::from_file(s->fd, off, len));
        return {};
      });
      if (!sent) etag = std::unexpected(sent.error());
      {
        std::lock_guard l(s->mu);
        if (etag) {
          s->parts[index].etag = *etag;
        } else if (!s->stream_error) {
          s->stream_error = etag.error();
        }
        s->in_flight--;
        s->parts_done.notify_all();
      }
      stream_parts(s);
    });
  }
  s->parts_done.notify_all();  // `streamed` moved: a writer held back may go on
  sl.unlock();
  // Submitted unlocked: a stopping exporter runs a task in this thread.
  for (auto& t : tasks) exporter_->submit(std::move(t));
}

Status FileSystem::export_staged(const std::shared_ptr<Staged>& s) {
  std::unique_lock io(s->io);  // the bytes sent are one state of the file
  std::unique_lock sl(s->mu);
  if (s->unlinked || !s->dirty()) return {};
  if (s->manifest.write_failed) {
    return fail(ErrorCode::kNoSpace,
                "a write to the staging file failed (disk full?): the file is kept staged, not "
                "exported; write it again");
  }
  if (s->writers == 0 && !s->manifest.complete) {
    // Exported with no writer (truncate(2), a rename, the last release): what it
    // holds is what was meant, also for a recovery if this export fails.
    s->manifest.complete = true;
    if (Status saved = s->store.save(s->manifest); !saved) return saved;
  }
  if (!may_export(*s)) {
    spdlog::info("s3://{}/{} stays on this node (export policy)", options_.bucket, s->manifest.key);
    return {};
  }
  s->parts_done.wait(sl, [&] { return s->in_flight == 0 && !s->creating_upload; });
  s->exporting = true;  // from here on the upload is this export's
  s->parts_done.notify_all();
  const uint64_t generation = s->generation, size = s->size;
  const std::string key = s->manifest.key;
  const s3::UserMetadata meta = metadata_of(s->posix, s->manifest.metadata);
  const std::string content_type = s->manifest.content_type;
  const uint64_t base = std::max(options_.part_size, s3::kMinPartSize);
  std::string upload_id = s->manifest.upload_id;
  const std::string upload_key = s->manifest.upload_key.empty() ? key : s->manifest.upload_key;
  std::vector<s3::CompletedPart> parts = s->parts;
  uint64_t streamed = s->streamed;
  bool streamed_ok = !upload_id.empty() && !s->stream_broken && !s->stream_error && streamed > 0 &&
                     streamed <= size && upload_key == key;
  if (streamed_ok) {
    // The rest must fit in S3's 10,000 parts; if not (a part size too small for
    // the file), the whole file is uploaded again with parts sized to fit.
    size_t count = parts.size();
    for (uint64_t off = streamed; off < size; ++count) off += part_length(base, count);
    if (count > static_cast<size_t>(s3::kMaxParts)) streamed_ok = false;
  }
  sl.unlock();

  // Runs a transfer whose multipart upload, once created, is this process's
  // until the transfer returns (completed, or aborted by the transfer).
  auto copy_or_upload = [this, &key](s3::TransferOptions t, auto&& run) {
    std::string created;
    t.created = [&](const std::string& id) {
      created = id;
      upload_started(id);
    };
    auto r = [&] {
      CreateInFlight creating(*this, key);
      return run(t);
    }();
    if (!created.empty()) upload_ended(created);
    return r;
  };
  Result<std::string> etag = fail(ErrorCode::kOther, "not exported");
  if (streamed_ok) {
    // The streamed parts hold [0, streamed): send the rest and complete.
    std::vector<std::pair<uint64_t, uint64_t>> rest;
    for (uint64_t off = streamed; off < size;) {
      uint64_t len = std::min(part_length(base, parts.size() + rest.size()), size - off);
      rest.emplace_back(off, len);
      off += len;
    }
    const size_t first = parts.size();
    parts.resize(first + rest.size());
    Status st = s3::run_parallel(
        static_cast<int>(rest.size()), options_.upload_concurrency, [&](int i) -> Status {
          metrics_.count_request("UploadPart");
          auto e =
              client_.upload_part(options_.bucket, key, upload_id, static_cast<int>(first + i + 1),
                                  s3::Body::from_file(s->fd, rest[i].first, rest[i].second));
          if (!e) return std::unexpected(e.error());
          parts[first + i] = {static_cast<int>(first + i + 1), *e};
          return {};
        });
    if (st) {
      metrics_.count_request("CompleteMultipartUpload");
      etag = client_.complete_multipart_upload(options_.bucket, key, upload_id, parts);
      if (etag) upload_ended(upload_id);
    } else {
      etag = std::unexpected(st.error());
    }
    // S3 takes an upload's metadata when it starts. Writes since then moved the
    // file's mtime: the object keeps the upload's times and this mount shows
    // them too, so every mount agrees (docs/SEMANTICS.md). A chmod, chown or
    // utimens since then must be published: a copy onto itself, server-side.
    auto without_times = [](s3::UserMetadata m) {
      m.erase("file-mtime");
      m.erase("file-atime");
      return m;
    };
    std::unique_lock ul(s->mu);
    const bool stale_metadata =
        s->times_set || without_times(s->upload_metadata) != without_times(meta);
    if (etag && !stale_metadata) {
      const PosixMetadata published = decode_posix_metadata(s->upload_metadata);
      s->posix.mtime_ns = published.mtime_ns;
      s->posix.atime_ns = published.atime_ns;
    }
    ul.unlock();
    if (etag && stale_metadata && size > s3::kMaxSingleCopy) {
      std::lock_guard l(s->mu);  // a multipart copy
      s->note_upload_intent(key);
    }
    if (etag && stale_metadata) {
      s3::CopyObjectRequest fix;
      fix.source_bucket = fix.bucket = options_.bucket;
      fix.source_key = fix.key = key;
      fix.source_if_match = *etag;
      fix.replace_metadata = meta;
      fix.content_type = content_type;
      metrics_.count_request("CopyObject");
      etag = copy_or_upload(s3::TransferOptions{}, [&](const s3::TransferOptions& t) {
        return s3::copy_any_size(client_, fix, size, t);
      });
    }
  } else {
    if (!upload_id.empty()) {
      // If the abort fails, the upload's window finds it after the export.
      metrics_.count_request("AbortMultipartUpload");
      (void)client_.abort_multipart_upload(options_.bucket, upload_key, upload_id);
      upload_ended(upload_id);
    }
    if (size > base) {
      std::lock_guard l(s->mu);  // upload_from_fd creates a multipart upload
      s->note_upload_intent(key);
    }
    s3::PutObjectRequest target{options_.bucket, key, s3::Body::empty(), meta, content_type};
    metrics_.count_request(size <= base ? "PutObject" : "MultipartUpload");
    s3::TransferOptions transfer;
    transfer.part_size = base;
    transfer.concurrency = options_.upload_concurrency;
    etag = copy_or_upload(transfer, [&](const s3::TransferOptions& t) {
      return s3::upload_from_fd(client_, s->fd, size, target, t);
    });
  }

  sl.lock();
  s->exporting = false;
  // Whatever happened, the upload is finished: the next export starts afresh.
  if (!etag && streamed_ok) {
    s->stream_broken = true;  // its upload id is aborted at the next export
  } else {
    s->manifest.upload_id.clear();
    s->manifest.upload_key.clear();
    s->parts.clear();
    s->streamed = 0;
    s->stream_broken = false;
    s->stream_error.reset();
  }
  if (!etag) {
    // The windows stay: an upload it created may be left (a lost answer, an
    // abort that failed); the export that succeeds, or the next start, looks.
    s->last_error = etag.error().describe();
    if (Status saved = s->store.save(s->manifest); !saved) {
      spdlog::error("staging: {}", saved.error().describe());
    }
    spdlog::error("export of s3://{}/{} failed, kept staged for a retry: {}", options_.bucket, key,
                  s->last_error);
    metrics_.count_error("Export", std::string(to_string(etag.error().code)));
    return std::unexpected(etag.error());
  }
  if (s->manifest.key != key) {
    // A directory rename moved the file while its bytes went to the old key:
    // that object is a stray (the rename's copy and delete may have missed it),
    // and the file is exported again under its new key.
    sl.unlock();
    io.unlock();
    metrics_.count_request("DeleteObject");
    if (Status st = client_.delete_object(options_.bucket, key); !st) {
      spdlog::warn("cannot delete s3://{}/{} left by a rename: {}", options_.bucket, key,
                   st.error().describe());
    }
    return export_staged(s);
  }
  s->exported = generation;
  s->streamable = false;  // more writes change a published file: one upload at close
  if (s->generation == generation) s->times_set = false;  // a utimens since waits its turn
  s->manifest.base_etag = *etag;
  metrics_.exported_bytes += size;
  metrics_.exported_files++;
  s->last_error.clear();
  const PosixMetadata posix = s->posix;
  const std::vector<staging::UploadWindow> windows = s->manifest.upload_windows;
  if (Status saved = s->store.save(s->manifest); !saved) {
    spdlog::warn("staging: {}", saved.error().describe());
  }
  sl.unlock();
  {
    // Still under `io`: a later export cannot publish its ETag before this one.
    std::lock_guard lock(mu_);
    if (s->ino != 0) {
      if (Inode* n = find(s->ino); n && n->staged == s) {
        n->etag = *etag;
        n->size = size;
        n->posix = posix;
        n->metadata_loaded = true;
        n->last_open_etag = *etag;
        n->validated = SteadyClock::now();
      }
    }
  }
  io.unlock();
  if (!windows.empty()) resolve_upload_windows(*s, key, windows);
  return {};
}

void FileSystem::resolve_upload_windows(Staged& s, const std::string& key,
                                        const std::vector<staging::UploadWindow>& seen) {
  // Multipart uploads were created since the windows opened. Their ids do not
  // tell everything: a create whose answer was lost (also one the S3 client's
  // retry then hid) or an abort that failed leaves an upload no id names. S3
  // is asked, one ListMultipartUploads per key (a multipart export has parts
  // enough that this costs little).
  std::vector<staging::UploadWindow> left = seen;
  if (Status st = abort_unrecorded_uploads(left); !st) {
    spdlog::warn("staging: cannot look for uploads of s3://{}/{} left behind: {}", options_.bucket,
                 key, st.error().describe());
  }
  std::lock_guard sl(s.mu);
  // Only the windows resolved as they were seen go: one an upload since has
  // widened stays for the next look.
  const size_t before = s.manifest.upload_windows.size();
  std::erase_if(s.manifest.upload_windows, [&](const staging::UploadWindow& w) {
    return std::ranges::find(seen, w) != seen.end() && std::ranges::find(left, w) == left.end();
  });
  if (s.manifest.upload_windows.size() != before && !s.unlinked) {
    if (Status saved = s.store.save(s.manifest); !saved) {
      spdlog::warn("staging: {}", saved.error().describe());
    }
  }
}

}  // namespace nacre::fs
