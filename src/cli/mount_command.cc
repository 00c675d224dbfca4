#include "cli/mount_command.h"

#include <spdlog/sinks/rotating_file_sink.h>
#include <spdlog/sinks/syslog_sink.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>

#include "cache/block_cache.h"
#include "cli/daemon.h"
#include "cli/metrics_exporter.h"
#include "cli/s3_options.h"
#include "cli/size_parse.h"
#include "fs/file_system.h"
#include "fs/mount_source.h"
#include "fuse/fuse_mount.h"
#include "staging/staging_store.h"

namespace nacre::cli {

namespace {

// Every open cached file holds up to five fds and every FUSE open one more; a model of
// many shards read by many workers outgrows the soft limit of 1024 that systemd and
// container runtimes often leave. The hard limit is ours to take (what systemd asks
// daemons to do); a failure only leaves the soft limit, and is logged once.
void raise_open_file_limit() {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0 || lim.rlim_cur >= lim.rlim_max) return;
  const rlim_t was = lim.rlim_cur;
  lim.rlim_cur = lim.rlim_max;
  if (::setrlimit(RLIMIT_NOFILE, &lim) != 0) {
    spdlog::warn("could not raise the open-file limit from {}: {}", was, std::strerror(errno));
  }
}

int report(const Error& e) {
  std::fprintf(stderr, "nacre mount: error: %s\n", e.describe().c_str());
  return 1;
}

struct MountCommand {
  S3Options s3;
  std::string source;
  std::string mountpoint;
  bool read_only = false;
  std::string cache_dir;  // default: /var/cache/nacre/BUCKET/PREFIX
  std::string cache_size = "10G";
  std::string min_free = "1G";
  std::string metadata_ttl = "1";
  std::string import_policy = "NEW,CHANGED,DELETED";
  std::string export_policy = "NEW,CHANGED,DELETED";
  uid_t uid = getuid();
  gid_t gid = getgid();
  std::string file_mode = "0644";
  std::string dir_mode = "0755";
  bool allow_other = false;
  bool allow_suid = false;
  bool contain_symlinks = false;
  bool foreground = false;
  std::string metrics_address;
  std::string pid_file;
  std::string log_file;
  std::vector<std::string> o_options;
  double part_size_mib = 8;
  std::string hydrate_min_size = "64M";
  std::string passthrough = "auto";
  std::string passthrough_min_size = "8M";
  std::string cache_check_at_start = "32G";
  int fetch_threads = 16;
  int fuse_threads = 16;
  std::string log_level = "info";

  // Splits -o lists: Nacre's own options (as mount(8) and fstab pass them)
  // set fields, the rest go to FUSE.
  Result<std::vector<std::string>> apply_o_options() {
    std::vector<std::string> fuse_extra;
    for (const auto& group : o_options) {
      size_t pos = 0;
      while (pos <= group.size()) {
        size_t comma = group.find(',', pos);
        std::string opt =
            group.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
        pos = comma == std::string::npos ? group.size() + 1 : comma + 1;
        if (opt.empty()) continue;
        size_t eq = opt.find('=');
        std::string key = opt.substr(0, eq),
                    value = eq == std::string::npos ? "" : opt.substr(eq + 1);
        std::replace(key.begin(), key.end(), '_', '-');
        if (key == "ro" || key == "read-only")
          read_only = true;
        else if (key == "rw" || key == "defaults" || key == "-netdev" || key == "nofail" ||
                 key == "noauto" || key == "auto" || key == "user" || key == "users" ||
                 key.starts_with("x-")) {
          // mount(8)/fstab bookkeeping, not for the file system
        } else if (key == "allow-other")
          allow_other = true;
        else if (key == "endpoint-url")
          s3.endpoint_url = value;
        else if (key == "region")
          s3.region = value;
        else if (key == "profile")
          s3.profile = value;
        else if (key == "addressing-style")
          s3.addressing_style = value;
        else if (key == "ca-bundle")
          s3.ca_bundle = value;
        else if (key == "cache-dir")
          cache_dir = value;
        else if (key == "cache-size")
          cache_size = value;
        else if (key == "metadata-ttl")
          metadata_ttl = value;
        else if (key == "import-policy" || key == "export-policy") {
          std::replace(value.begin(), value.end(), ':', ',');  // commas split -o lists
          (key == "import-policy" ? import_policy : export_policy) = value;
        } else if (key == "uid" || key == "gid") {
          auto id = parse_id(value, key);
          if (!id) return std::unexpected(id.error());
          (key == "uid" ? uid : gid) = *id;
        } else if (key == "suid") {
          allow_suid = true;
          fuse_extra.push_back(opt);  // and the kernel must honour it too
        } else if (key == "contain-symlinks")
          contain_symlinks = true;
        else if (key == "file-mode")
          file_mode = value;
        else if (key == "dir-mode")
          dir_mode = value;
        else if (key == "metrics-address")
          metrics_address = value;
        else if (key == "hydrate-min-size")
          hydrate_min_size = value;
        else if (key == "passthrough")
          passthrough = value;
        else if (key == "passthrough-min-size")
          passthrough_min_size = value;
        else if (key == "cache-check-at-start")
          cache_check_at_start = value;
        else
          fuse_extra.push_back(opt);
      }
    }
    return fuse_extra;
  }

  int run() {
    auto fuse_extra = apply_o_options();
    if (!fuse_extra) return report(fuse_extra.error());
    auto src = fs::parse_mount_source(source);
    if (!src) return report(src.error());
    auto ttl = parse_ttl(metadata_ttl);
    if (!ttl) return report(ttl.error());
    auto policy = parse_import_policy(import_policy);
    if (!policy) return report(policy.error());
    auto exports = parse_export_policy(export_policy);
    if (!exports) return report(exports.error());
    auto fmode = parse_mode(file_mode);
    if (!fmode) return report(fmode.error());
    auto dmode = parse_mode(dir_mode);
    if (!dmode) return report(dmode.error());
    auto max_bytes = parse_bytes(cache_size);
    if (!max_bytes) return report(max_bytes.error());
    auto min_free_bytes = parse_bytes(min_free);
    if (!min_free_bytes) return report(min_free_bytes.error());
    auto check_at_start =
        cache_check_at_start == "off" ? Result<uint64_t>(0) : parse_bytes(cache_check_at_start);
    if (!check_at_start) return report(check_at_start.error());
    auto hydrate =
        hydrate_min_size == "off" ? Result<uint64_t>(UINT64_MAX) : parse_bytes(hydrate_min_size);
    if (!hydrate) return report(hydrate.error());
    if (passthrough != "auto" && passthrough != "off") {
      return report(Error{ErrorCode::kInvalidArgument,
                          "--passthrough must be auto or off, not '" + passthrough + "'",
                          {},
                          {},
                          0});
    }
    auto pt_min = parse_bytes(passthrough_min_size);
    if (!pt_min) return report(pt_min.error());
    struct stat st {};
    if (stat(mountpoint.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      return report(Error{ErrorCode::kInvalidArgument,
                          "mount point " + mountpoint + " is not an existing directory",
                          {},
                          {},
                          0});
    }
    spdlog::set_level(spdlog::level::from_str(log_level));

    // Everything that can fail is checked here, before daemonising, so the
    // command's exit status and message tell the user what is wrong.
    auto client = s3.make_client();
    if (!client) return report(client.error());
    if (auto ok = fs::check_mount_source(**client, *src, read_only); !ok) return report(ok.error());
    cache::CacheOptions cache_options;
    // One cache directory per mount source: a cache directory serves one
    // process at a time, and a remount of the same source finds its data.
    cache_options.dir = !cache_dir.empty() ? cache_dir
                                           : "/var/cache/nacre/" + src->bucket +
                                                 (src->prefix.empty() ? "" : "/" + src->prefix);
    cache_options.max_bytes = *max_bytes;
    cache_options.min_free_bytes = *min_free_bytes;
    raise_open_file_limit();
    auto cache = cache::BlockCache::open(cache_options);
    if (!cache) return report(cache.error());
    // Files being written live beside the cache, under the cache directory's lock
    // (docs/ARCHITECTURE.md): staged data is never evicted and survives a crash.
    std::unique_ptr<staging::StagingStore> staging;
    if (!read_only) {
      auto store = staging::StagingStore::open(cache_options.dir + "/staging");
      if (!store) return report(store.error());
      staging = std::move(*store);
      if (exports->none()) {
        std::fprintf(stderr,
                     "nacre mount: export policy NONE: changes stay on this node (staged in %s) "
                     "and never reach the bucket\n",
                     staging->dir().c_str());
      }
    }

    fs::Metrics metrics;
    fs::FetchPool pool(fetch_threads);
    fs::FsOptions options;
    options.bucket = src->bucket;
    options.prefix = src->prefix;
    options.read_only = read_only;
    options.uid = uid;
    options.gid = gid;
    options.file_mode = *fmode;
    options.dir_mode = *dmode;
    options.metadata_ttl = *ttl;
    options.import = *policy;
    options.part_size = static_cast<uint64_t>(part_size_mib * (1 << 20));
    options.hydrate_min_size = *hydrate;
    options.passthrough_min_size = *pt_min;
    options.allow_suid = allow_suid;
    options.contain_symlinks = contain_symlinks;
    options.export_policy = *exports;
    options.staging = staging.get();
    fuse::FuseMount* mount_ptr = nullptr;
    options.invalidate_data = [&mount_ptr](fs::Ino ino) {
      if (mount_ptr) mount_ptr->invalidate_data(ino);
    };
    fs::FileSystem filesystem(**client, **cache, pool, metrics, options);

    fuse::MountOptions mo;
    mo.mountpoint = std::filesystem::absolute(mountpoint).string();
    mo.fsname = "nacre:" + src->bucket + (src->prefix.empty() ? "" : "/" + src->prefix);
    mo.read_only = read_only;
    mo.allow_other = allow_other;
    mo.extra = *fuse_extra;
    mo.max_threads = fuse_threads;
    mo.passthrough = passthrough == "auto";
    // A passthrough open must check a whole file an earlier process cached before it
    // returns, so that check starts with the mount instead, in the background: files it
    // reached before their first open open at once. (In cached mode each block is checked
    // as it is read, and an early check would only cost disk reads.) At INIT: after the
    // fork, and before the mount answers its first request (the first access to the
    // mount waits for INIT), so the progress gauge is up by then.
    mo.on_init = [&cache = **cache, bytes = *check_at_start, min = *pt_min](bool passthrough_on) {
      if (passthrough_on) cache.start_check(bytes, min);
    };
    auto mounted = fuse::FuseMount::mount(filesystem, mo);
    if (!mounted) return report(mounted.error());
    mount_ptr = mounted->get();

    // The user's `nacre mount` waits for the verdict of what follows: threads and the
    // metrics port can only start after the fork, and must still be able to fail it.
    if (auto d = Daemon::start(foreground, mo.mountpoint); !d) return report(d.error());
    // The serving process's pid, for whoever supervises it (the CSI node plugin).
    struct PidFile {
      std::string path;
      ~PidFile() {
        if (!path.empty()) ::unlink(path.c_str());
      }
    } pid_file_guard;
    if (!pid_file.empty()) {
      FILE* f = std::fopen(pid_file.c_str(), "w");
      if (!f || std::fprintf(f, "%d\n", static_cast<int>(::getpid())) < 0 || std::fclose(f) != 0) {
        return report(Error{ErrorCode::kIo, "cannot write --pid-file " + pid_file, {}, {}, 0});
      }
      pid_file_guard.path = pid_file;
    }
    pool.start();
    if (Status st = filesystem.start_write_path(); !st) return report(st.error());
    std::unique_ptr<MetricsExporter> exporter;
    if (!metrics_address.empty()) {
      auto e = MetricsExporter::start(metrics_address, metrics, **cache);
      if (!e) return report(e.error());  // unmounts on the way out; the parent exits 1
      exporter = std::move(*e);
    }
    Daemon::ready();
    if (!foreground) {
      // Logs go to syslog once stderr is gone, or to --log-file (a container
      // has no syslog: the CSI node plugin gives each mount a file).
      if (log_file.empty()) {
        spdlog::set_default_logger(spdlog::syslog_logger_mt("nacre", "nacre", LOG_PID));
      } else {
        try {
          spdlog::set_default_logger(spdlog::rotating_logger_mt("nacre", log_file, 16u << 20, 2));
        } catch (const spdlog::spdlog_ex&) {
          spdlog::set_default_logger(spdlog::syslog_logger_mt("nacre", "nacre", LOG_PID));
          spdlog::error("cannot log to {}: logging to syslog", log_file);
        }
      }
      spdlog::set_level(spdlog::level::from_str(log_level));
    }
    spdlog::info("mounted s3://{}/{} on {}", src->bucket, src->prefix, mo.mountpoint);
    s3::ObjectClient& object_client = **client;
    auto st_run = (*mounted)->run([&object_client] {
      // Unmounted (or signalled): every GET in flight or queued ends now.
      object_client.cancel_all();
    });
    mount_ptr = nullptr;
    mounted->reset();  // unmount before the pool and cache go away
    if (size_t pending = filesystem.pending_exports(); pending > 0) {
      spdlog::warn(
          "{} closed files were not exported yet; they stay staged in {} and are "
          "exported at the next mount of this cache directory (nacre status --staged)",
          pending, staging ? staging->dir() : "");
    }
    filesystem.stop_write_path();
    if (!st_run) {
      spdlog::error("{}", st_run.error().describe());
      return 1;
    }
    return 0;
  }
};

}  // namespace

std::vector<std::string> rewrite_mount_helper_args(const std::vector<std::string>& args,
                                                   const std::vector<std::string>& subcommands) {
  if (args.size() < 3) return args;
  const std::string& first = args[1];
  if (first.starts_with("-")) return args;
  if (std::find(subcommands.begin(), subcommands.end(), first) != subcommands.end()) return args;
  std::vector<std::string> out = {args[0], "mount"};
  out.insert(out.end(), args.begin() + 1, args.end());
  return out;
}

void add_mount_command(CLI::App& app, int& exit_code) {
  auto m = std::make_shared<MountCommand>();
  CLI::App* cmd = app.add_subcommand(
      "mount",
      "Mount s3://BUCKET[/PREFIX] as a POSIX file system: reads through the node cache, "
      "writes exported on close (unmount with umount or fusermount3 -u)");
  cmd->add_option("source", m->source, "s3://BUCKET[/PREFIX]")->required();
  cmd->add_option("mountpoint", m->mountpoint, "an existing directory")->required();
  cmd->add_flag("--read-only", m->read_only, "mount read-only (writes get EROFS)");
  cmd->add_option("--cache-dir", m->cache_dir,
                  "node-local cache directory (default /var/cache/nacre/BUCKET/PREFIX); one mount "
                  "at a time may use it");
  cmd->add_option("--cache-size", m->cache_size, "bound on cached bytes, e.g. 10G")
      ->capture_default_str();
  cmd->add_option("--cache-min-free", m->min_free, "free space to leave on the cache disk")
      ->capture_default_str();
  cmd->add_option("--metadata-ttl", m->metadata_ttl,
                  "seconds listings and attributes are trusted, or 'forever' for immutable data")
      ->capture_default_str();
  cmd->add_option("--import-policy", m->import_policy,
                  "bucket changes that become visible: any of NEW,CHANGED,DELETED, or NONE")
      ->capture_default_str();
  cmd->add_option("--export-policy", m->export_policy,
                  "changes made through the mount that reach the bucket: any of "
                  "NEW,CHANGED,DELETED, or NONE to keep them on this node")
      ->capture_default_str();
  cmd->add_option("--uid", m->uid, "owner of files without file-owner metadata");
  cmd->add_option("--gid", m->gid, "group of files without file-group metadata");
  cmd->add_option("--file-mode", m->file_mode, "mode of files without metadata (octal)")
      ->capture_default_str();
  cmd->add_option("--dir-mode", m->dir_mode, "mode of directories (octal)")->capture_default_str();
  cmd->add_flag("--allow-other", m->allow_other, "let other users access the mount");
  cmd->add_flag("--contain-symlinks", m->contain_symlinks,
                "refuse symlinks whose target leaves the mount (absolute, or above its root)");
  cmd->add_flag("-f,--foreground", m->foreground, "stay in the foreground, log to stderr");
  cmd->add_option("--metrics-address", m->metrics_address,
                  "serve Prometheus metrics at http://HOST:PORT/metrics");
  cmd->add_option("--log-file", m->log_file,
                  "once daemonised, log here (rotated at 16 MiB, 2 kept) instead of syslog");
  cmd->add_option("--pid-file", m->pid_file,
                  "write the serving process's pid here (removed at exit)");
  cmd->add_option("-o", m->o_options,
                  "comma-separated options as mount(8) passes them "
                  "(Nacre's own, e.g. endpoint-url=..., or FUSE's)");
  cmd->add_option("--part-size", m->part_size_mib, "MiB per ranged GET")
      ->check(CLI::Range(1.0, 1024.0));
  cmd->add_option("--hydrate-min-size", m->hydrate_min_size,
                  "read-only opens of files this large load the whole file in the background "
                  "(for mmap loaders); 'off' to fetch only what is read")
      ->capture_default_str();
  cmd->add_option("--passthrough", m->passthrough,
                  "auto: fully cached files are read by the kernel straight from the cache "
                  "file where it can (Linux 6.9+, CAP_SYS_ADMIN); off: every read goes "
                  "through nacre")
      ->capture_default_str();
  cmd->add_option("--passthrough-min-size", m->passthrough_min_size,
                  "smallest file served by passthrough (such files cannot be opened for "
                  "writing while open by passthrough)")
      ->capture_default_str();
  cmd->add_option("--cache-check-at-start", m->cache_check_at_start,
                  "in passthrough mode, check this much of what an earlier process cached "
                  "(most recently used files first) in the background from the mount on, so "
                  "a file's first open need not; 'off' leaves each file to its first open")
      ->capture_default_str();
  cmd->add_option("--fetch-threads", m->fetch_threads, "GETs in flight for the whole mount")
      ->check(CLI::Range(1, 256));
  cmd->add_option("--fuse-threads", m->fuse_threads, "threads serving kernel requests")
      ->check(CLI::Range(1, 256));
  cmd->add_option("--log-level", m->log_level, "trace, debug, info, warn, error")
      ->capture_default_str();
  m->s3.add_to(*cmd);
  cmd->callback([m, &exit_code] { exit_code = m->run(); });
}

}  // namespace nacre::cli
