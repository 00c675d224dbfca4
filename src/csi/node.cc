#include "csi/node.h"

#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "csi/mount_ops.h"
#include "s3/crypto.h"

namespace nacre::csi {

namespace {

namespace stdfs = std::filesystem;
using Env = std::map<std::string, std::string>;

std::unexpected<Error> invalid(std::string message) {
  return fail(ErrorCode::kInvalidArgument, std::move(message));
}

Status make_dirs(const std::string& dir) {
  std::error_code ec;
  stdfs::create_directories(dir, ec);
  if (ec) return fail(ErrorCode::kIo, "mkdir -p " + dir + ": " + ec.message());
  return {};
}

pid_t read_pid(const std::string& file) {
  std::ifstream in(file);
  pid_t pid = 0;
  in >> pid;
  return pid > 0 ? pid : 0;
}

Env credentials_env(const Secrets& s) {
  Env env;
  if (s.empty()) return env;  // the driver's own chain (environment, IRSA, Pod Identity, IMDS)
  env["AWS_ACCESS_KEY_ID"] = s.access_key_id;
  env["AWS_SECRET_ACCESS_KEY"] = s.secret_access_key;
  env["AWS_SESSION_TOKEN"] = s.session_token;  // empty clears a token the driver has
  return env;
}

// Until the mount's process (`pid` serving `dir`) is gone, at most `limit`.
bool wait_exit(pid_t pid, const std::string& dir, std::chrono::milliseconds limit) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (process_alive(pid, dir)) {
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return true;
}

}  // namespace

Result<std::unique_ptr<Node>> Node::open(NodeOptions options) {
  if (options.private_dir.empty()) {
    // One per plugin (state directory): two plugins in one mount namespace
    // (tests) never share it.
    options.private_dir = "/run/nacre-csi/" + s3::sha256_hex(options.state_dir).substr(0, 12);
  }
  std::unique_ptr<Node> node(new Node(std::move(options)));
  if (auto ok = make_dirs(node->mounts_dir()); !ok) return std::unexpected(ok.error());
  ::chmod(node->options_.state_dir.c_str(), 0700);
  if (auto ok = make_dirs(node->options_.cache_dir); !ok) return std::unexpected(ok.error());
  auto state = NodeState::load(node->state_file());
  if (!state) {
    // Unpublish and unstage need no records (they work on paths): a damaged
    // file must not keep the plugin from answering terminating pods. The
    // mounts it named are adopted again at their next stage.
    const std::string aside = node->state_file() + ".damaged";
    ::rename(node->state_file().c_str(), aside.c_str());
    spdlog::error("{}; moved it to {} and starting with no records", state.error().describe(),
                  aside);
    state = NodeState{};
  }
  node->state_ = std::move(*state);
  // Rediscovery: the mounts outlived the previous plugin; say how each is.
  std::lock_guard lock(node->mu_);
  for (const auto& [key, m] : node->state_.mounts) {
    std::string problem = node->mount_problem(key).reason;
    if (problem.empty()) {
      spdlog::info("found mount {} of {} at {} (pid {}), serving", key, m.source, m.dir, m.pid);
    } else {
      spdlog::warn(
          "found mount {} of {} at {}: {}; it is reported abnormal and repaired at the "
          "next NodeStage or NodePublish of its volumes",
          key, m.source, m.dir, problem);
    }
    if (!m.preload.empty() && !stdfs::exists(node->mounts_dir() + "/" + key + ".preloaded") &&
        problem.empty()) {
      node->start_preload(key, m.preload);  // the previous plugin did not see it finish
    }
  }
  spdlog::info("node {}: {} volumes staged on {} mounts", node->options_.node_id,
               node->state_.volumes.size(), node->state_.mounts.size());
  return node;
}

Node::~Node() {
  // The private copies are only sources for new binds; the staging and
  // target binds made from them are mounts of their own and stay. A new
  // plugin makes the copies again when it needs them.
  std::lock_guard lock(mu_);
  if (find_mount(read_mountinfo(), options_.private_dir)) {
    if (::umount2(options_.private_dir.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) != 0) {
      spdlog::warn("umount -l {}: {}", options_.private_dir, std::strerror(errno));
    }
  }
  ::rmdir(options_.private_dir.c_str());
}

Status Node::save() {
  return state_.save(state_file());
}

// The FUSE mount at <state-dir>/mounts/KEY is shared (its copies in the
// mounter's container and on the host are peers: an unmount here reaches
// them). Pods are never bound from it directly: every bind of a shared mount
// joins its peer group, so a repair stacked on one target would spread to
// all and one pod's unmount would take it from every pod. They are bound from
// a private copy in a tmpfs of the plugin's own (below /run, never shared);
// each bind of it gets a peer group of its own, which a HostToContainer pod
// still follows.
Result<std::string> Node::private_source(const std::string& key) {
  const std::string& root = options_.private_dir;
  if (!find_mount(read_mountinfo(), root)) {
    if (auto ok = make_dirs(root); !ok) return std::unexpected(ok.error());
    if (::mount("nacre-csi", root.c_str(), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                "mode=0700,size=1m") != 0) {
      return fail_errno("mount a tmpfs on " + root, errno);
    }
  }
  if (::mount(nullptr, root.c_str(), nullptr, MS_PRIVATE, nullptr) != 0) {
    return fail_errno("make " + root + " private", errno);
  }
  const std::string& dir = state_.mounts.at(key).dir;
  const std::string copy = root + "/" + key;
  auto table = read_mountinfo();
  auto mounted = find_mount(table, dir);
  if (!mounted || mounted->fs_type != "fuse.nacre") {
    return fail(ErrorCode::kNetwork, "the mount of " + state_.mounts.at(key).source +
                                         " is not at " + dir + ": it is being repaired, retry");
  }
  auto have = find_mount(table, copy);
  if (have && have->major == mounted->major && have->minor == mounted->minor) return copy;
  if (have) {
    if (auto d = detach_mounts(copy); !d) return std::unexpected(d.error());
  }
  if (auto ok = make_dirs(copy); !ok) return std::unexpected(ok.error());
  if (::mount(dir.c_str(), copy.c_str(), nullptr, MS_BIND, nullptr) != 0) {
    return fail_errno("bind mount " + dir + " on " + copy, errno);
  }
  if (::mount(nullptr, copy.c_str(), nullptr, MS_PRIVATE, nullptr) != 0) {
    int err = errno;
    (void)detach_mounts(copy);
    return fail_errno("make " + copy + " private", err);
  }
  return copy;
}

void Node::drop_private_source(const std::string& key) {
  const std::string copy = options_.private_dir + "/" + key;
  if (auto d = detach_mounts(copy); !d) spdlog::warn("{}", d.error().describe());
  ::rmdir(copy.c_str());
}

Node::Problem Node::mount_problem(const std::string& key) {
  const MountRecord& m = state_.mounts.at(key);
  auto entry = find_mount(read_mountinfo(), m.dir);
  if (!entry || entry->fs_type != "fuse.nacre") return {true, "not mounted at " + m.dir};
  if (!process_alive(m.pid, m.dir)) {
    return {true, "its process (pid " + std::to_string(m.pid) + ") is gone"};
  }
  Probe p = probe_path(m.dir, options_.probe_deadline);
  if (!p.answered) {
    // Busy (a slow S3, every FUSE thread waiting) is not dead: it is
    // reported, never killed.
    return {false, "it does not answer (statfs took longer than " +
                       std::to_string(options_.probe_deadline.count()) + " ms)"};
  }
  if (p.error == ENOTCONN || p.error == ECONNABORTED) {
    return {true, std::string("statfs fails: ") + std::strerror(p.error)};
  }
  if (p.error != 0) return {false, std::string("statfs fails: ") + std::strerror(p.error)};
  return {};
}

Status Node::start_mount(const std::string& key, MountRecord record, const Env& env) {
  const std::string pid_file = mounts_dir() + "/" + key + ".pid";
  // A mount nobody recorded (the plugin died between starting it and saving
  // node.json, or gave up waiting while it came up) is adopted if it serves,
  // else taken down: it would hold the cache directory, and a stat of its
  // directory could hang.
  const pid_t old = read_pid(pid_file);
  auto entry = find_mount(read_mountinfo(), record.dir);
  if (entry && entry->fs_type == "fuse.nacre" && process_alive(old, record.dir)) {
    Probe p = probe_path(record.dir, options_.probe_deadline);
    if (!p.answered || p.error == 0) {  // serving, or busy: never killed for that
      spdlog::warn("mount {} of {} was serving unrecorded (pid {}): adopted", key, record.source,
                   old);
      record.pid = old;
      state_.mounts[key] = std::move(record);
      return save();
    }
  }
  // Opened before the wait below: should the mount go meanwhile, its number may go to
  // another pod's mount, which an abort by number would end (see FuseConnection).
  FuseConnection conn;
  if (entry && entry->fs_type == "fuse.nacre") {
    if (auto c = FuseConnection::open(entry->minor)) conn = std::move(*c);
  }
  if (process_alive(old, record.dir)) {
    ::kill(old, SIGKILL);
    wait_exit(old, record.dir, std::chrono::milliseconds(2000));
  }
  if (entry) {
    (void)conn.abort();
    if (auto d = detach_mounts(record.dir); !d) return std::unexpected(d.error());
  }
  ::unlink(pid_file.c_str());
  if (auto ok = make_dirs(record.dir); !ok) return ok;
  if (auto ok = make_dirs(record.cache_dir); !ok) return ok;
  std::vector<std::string> argv = {options_.nacre_binary};
  argv.insert(argv.end(), record.args.begin(), record.args.end());
  argv.insert(argv.end(),
              {"--pid-file", pid_file, "--log-file", mounts_dir() + "/" + key + ".log"});
  spdlog::info("starting the mount {} of {} at {}", key, record.source, record.dir);
  auto run = options_.launcher(argv, env, options_.mount_deadline, {});
  if (!run || run->status != 0) {
    // What came up before the failure (or the deadline) must not stay.
    if (pid_t orphan = read_pid(pid_file); process_alive(orphan, record.dir)) {
      ::kill(orphan, SIGKILL);
      wait_exit(orphan, record.dir, std::chrono::milliseconds(2000));
    }
    (void)detach_mounts(record.dir);
  }
  if (!run) return std::unexpected(run.error());
  if (run->status != 0) {
    std::string out = run->output;
    while (!out.empty() && out.back() == '\n') out.pop_back();
    auto has = [&out](const char* text) { return out.find(text) != std::string::npos; };
    // `nacre mount` printed why (Error::describe): the CSI code follows it.
    // What no retry can fix is not UNAVAILABLE, or the CO would retry forever.
    const ErrorCode code =
        has("InvalidAccessKeyId") || has("SignatureDoesNotMatch") || has("InvalidCredentials")
            ? ErrorCode::kInvalidCredentials
        : has("AccessDenied")                            ? ErrorCode::kAccessDenied
        : has("NoSuchBucket") || has("holds no objects") ? ErrorCode::kNotFound
        : has("InvalidArgument") || has("is not an existing directory")
            ? ErrorCode::kInvalidArgument
            : ErrorCode::kNetwork;  // UNAVAILABLE: the CO retries
    return fail(code, "mounting " + record.source + " failed" +
                          (run->status < 0 ? " (no answer in time)" : "") + ": " + out);
  }
  const pid_t pid = read_pid(pid_file);
  if (pid <= 0) return fail(ErrorCode::kIo, "the mount of " + record.source + " wrote no pid");
  record.pid = pid;
  state_.mounts[key] = std::move(record);
  spdlog::info("mount {} serving (pid {})", key, pid);
  return save();
}

Status Node::ensure_mount(const std::string& key, const MountRecord* fresh, const Env* env) {
  auto it = state_.mounts.find(key);
  if (it == state_.mounts.end() && !fresh) {
    return fail(ErrorCode::kPreconditionFailed,
                "no mount is recorded for this volume: stage it again");
  }
  const std::string env_file = mounts_dir() + "/" + key + ".env";
  // The latest secrets are kept for a later repair (rotated keys included).
  if (env) {
    if (auto ok = write_file_atomic(env_file, nlohmann::json(*env).dump()); !ok) return ok;
  }
  Problem problem = it == state_.mounts.end() ? Problem{true, "new"} : mount_problem(key);
  if (problem.reason.empty()) return {};
  if (!problem.dead) {
    spdlog::warn("mount {}: {}; left alone (busy, not dead)", key, problem.reason);
    return {};
  }
  MountRecord record = it != state_.mounts.end() ? it->second : *fresh;
  Env saved;
  if (env) {
    saved = *env;
  } else {
    std::ifstream in(env_file);
    try {
      if (in) saved = nlohmann::json::parse(in).get<Env>();
    } catch (const std::exception&) {
      return fail(ErrorCode::kIo, "credentials file " + env_file + " is damaged: stage again");
    }
  }
  if (problem.reason != "new") {
    spdlog::warn("repairing mount {} of {}: {}", key, record.source, problem.reason);
    if (record.pid > 0 && process_alive(record.pid, record.dir)) {
      // Alive but not serving: it must not hold the cache directory's lock.
      ::kill(record.pid, SIGKILL);
      wait_exit(record.pid, record.dir, std::chrono::milliseconds(2000));
    }
    drop_private_source(key);
    if (auto d = detach_mounts(record.dir); !d) return std::unexpected(d.error());
  }
  if (auto ok = start_mount(key, record, saved); !ok) return ok;
  // Every bind of the old mount points at a dead connection: bind again.
  auto source = private_source(key);
  if (!source) return std::unexpected(source.error());
  const std::string& dir = *source;
  for (auto& [id, v] : state_.volumes) {
    if (v.mount_key != key) continue;
    // On top of the dead bind, not in its place: a pod whose volume mount
    // has mountPropagation HostToContainer sees the new mount appear where
    // its old one was, without a restart. Unpublish and unstage detach the
    // whole stack.
    auto rebind = [&](const std::string& path, bool ro) -> Status {
      return bind_mount(dir, path, ro);
    };
    // A path unstaged or unpublished meanwhile (detached before its call
    // got the lock) is not bound again.
    if (find_mount(read_mountinfo(), v.staging_path)) {
      if (auto ok = rebind(v.staging_path, v.read_only); !ok) return ok;
    }
    for (auto t = v.targets.begin(); t != v.targets.end();) {
      auto entry = find_mount(read_mountinfo(), *t);
      if (!entry) {  // unpublished meanwhile (its record was not updated in time)
        t = v.targets.erase(t);
        continue;
      }
      if (auto ok = rebind(*t, v.read_only || entry->read_only); !ok) return ok;
      spdlog::info("volume {}: target {} bound to the repaired mount", id, *t);
      ++t;
    }
  }
  return {};
}

Status Node::stage(const std::string& volume_id, const std::string& staging_path,
                   const Capability& cap, const StringMap& secrets, const StringMap& context) {
  if (volume_id.empty()) return invalid("volume_id is required");
  if (staging_path.empty()) return invalid("staging_target_path is required");
  if (auto ok = check_capability(cap); !ok) return ok;
  auto spec = parse_volume_attributes(context, options_.defaults);
  if (!spec) return std::unexpected(spec.error());
  if (auto ok = apply_capability(*spec, cap); !ok) return ok;
  auto creds = parse_secrets(secrets);
  if (!creds) return std::unexpected(creds.error());
  // The settings leave out the Secret (keys and its caBundle): a restage with
  // rotated secrets is the same volume.
  const std::string settings = mount_key(*spec, Secrets{});
  if (!creds->ca_bundle_pem.empty()) spec->ca_bundle_pem = creds->ca_bundle_pem;
  std::string key = mount_key(*spec, *creds);

  std::unique_lock lock(mu_);
  bool rotate = true;  // save these secrets for the mount's next start
  if (!state_.volumes.contains(volume_id) && options_.make_client) {
    // A fresh volume is its marker: once DeleteVolume removed it, the
    // volume does not exist (a mount would show an empty directory).
    if (auto id = decode_volume_id(volume_id); id && id->kind == VolumeId::Kind::kFresh) {
      auto client = options_.make_client(*spec, *creds);
      if (!client) return std::unexpected(client.error());
      // A one-key LIST rather than a HEAD: its error has a body, so wrong
      // keys (UNAUTHENTICATED) are told from missing rights. The marker
      // "prefix/" sorts first among the keys under it.
      s3::ListRequest req;
      req.bucket = spec->bucket;
      req.prefix = spec->prefix + "/";
      req.max_keys = 1;
      auto page = (*client)->list_objects(req);
      if (!page && page.error().code != ErrorCode::kNoSuchBucket) {
        return std::unexpected(page.error());
      }
      if (!page || page->objects.empty() || page->objects.front().key != req.prefix) {
        return fail(ErrorCode::kNotFound, "volume " + volume_id + " does not exist: s3://" +
                                              spec->bucket + "/" + req.prefix +
                                              " is gone (deleted?)");
      }
    }
  }
  if (auto v = state_.volumes.find(volume_id); v != state_.volumes.end()) {
    if (v->second.settings != settings || v->second.staging_path != staging_path) {
      return fail(ErrorCode::kExists,
                  "volume " + volume_id + " is staged at " + v->second.staging_path +
                      " with other settings (access mode, mount options, fsGroup)");
    }
    // Same volume, same settings: only the secrets may have changed (rotated);
    // it stays on its mount, which gets the new keys at its next start.
    // Other volumes on that mount keep their keys: only a sole user's
    // rotated secrets replace the saved ones.
    if (key != v->second.mount_key && state_.users(v->second.mount_key) > 1) {
      spdlog::warn(
          "volume {}: new secrets, but its mount {} serves other volumes too: their "
          "keys stay until the mount is started anew",
          volume_id, v->second.mount_key);
      rotate = false;
    }
    key = v->second.mount_key;
  }
  MountRecord record;
  record.dir = mounts_dir() + "/" + key;
  record.cache_dir = options_.cache_dir + "/" + key;
  record.source = "s3://" + spec->bucket + (spec->prefix.empty() ? "" : "/" + spec->prefix);
  record.read_only = spec->read_only;
  record.preload = spec->preload;
  std::string ca_file = options_.defaults.ca_bundle;
  if (!spec->ca_bundle_pem.empty()) {
    ca_file = mounts_dir() + "/" + key + ".ca.pem";
    if (auto ok = write_file_atomic(ca_file, spec->ca_bundle_pem); !ok) return ok;
  }
  record.args = mount_arguments(*spec, record.dir, record.cache_dir, ca_file);
  Env env = credentials_env(*creds);
  if (auto ok = ensure_mount(key, &record, rotate ? &env : nullptr); !ok) return ok;

  auto source = private_source(key);
  if (!source) return std::unexpected(source.error());
  auto table = read_mountinfo();
  auto staged = find_mount(table, staging_path);
  auto mounted = find_mount(table, *source);
  if (!staged || !mounted || staged->minor != mounted->minor || staged->major != mounted->major) {
    if (staged) {
      if (auto d = detach_mounts(staging_path); !d) return std::unexpected(d.error());
    }
    if (auto ok = make_dirs(staging_path); !ok) return ok;
    if (auto ok = bind_mount(*source, staging_path, spec->read_only); !ok) return ok;
  }
  VolumeRecord& v = state_.volumes[volume_id];
  v.mount_key = key;
  v.settings = settings;
  v.mount_group = cap.mount_group;
  v.staging_path = staging_path;
  v.read_only = spec->read_only;
  v.preload_wait_seconds = spec->preload_wait_seconds;
  if (auto ok = save(); !ok) return ok;
  spdlog::info("staged volume {} at {} (mount {}, {} volumes on it)", volume_id, staging_path, key,
               state_.users(key));
  if (!spec->preload.empty()) {
    MountRecord& m = state_.mounts.at(key);
    if (m.preload.empty()) {  // the mount was staged first for a volume without preload
      m.preload = spec->preload;
      if (auto ok = save(); !ok) return ok;
    }
    if (!preloads_.contains(key) && !stdfs::exists(mounts_dir() + "/" + key + ".preloaded")) {
      start_preload(key, spec->preload);
    }
  }
  return {};
}

Status Node::publish(const std::string& volume_id, const std::string& staging_path,
                     const std::string& target_path, const Capability& cap, bool readonly) {
  if (volume_id.empty()) return invalid("volume_id is required");
  if (staging_path.empty()) return invalid("staging_target_path is required");
  if (target_path.empty()) return invalid("target_path is required");
  if (auto ok = check_capability(cap); !ok) return ok;
  const bool ro_mode = *access_mode_read_only(cap.access_mode);
  std::unique_lock lock(mu_);
  auto v = state_.volumes.find(volume_id);
  if (v == state_.volumes.end() || v->second.staging_path != staging_path) {
    return fail(ErrorCode::kPreconditionFailed,
                "volume " + volume_id + " is not staged at " + staging_path);
  }
  const std::string key = v->second.mount_key;
  if (!cap.mount_group.empty() && cap.mount_group != v->second.mount_group) {
    // One mount serves the volume on this node, with the group it was staged for.
    return fail(ErrorCode::kPreconditionFailed,
                "volume " + volume_id + " is staged for fsGroup '" + v->second.mount_group +
                    "'; a pod with fsGroup " + cap.mount_group +
                    " cannot share it on this node (use one fsGroup per volume)");
  }
  if (!ro_mode && v->second.read_only && !readonly) {
    return fail(ErrorCode::kExists,
                "volume " + volume_id + " is staged read-only and cannot be published writable");
  }
  const bool ro = readonly || ro_mode || v->second.read_only;
  if (auto ok = ensure_mount(key, nullptr, nullptr); !ok) return ok;
  if (auto ok = wait_preload(key, v->second.preload_wait_seconds, lock); !ok) return ok;
  // The lock was let go while waiting: everything is looked up again.
  v = state_.volumes.find(volume_id);
  if (v == state_.volumes.end() || v->second.staging_path != staging_path ||
      v->second.mount_key != key || !state_.mounts.contains(key)) {
    return fail(ErrorCode::kPreconditionFailed,
                "volume " + volume_id + " was unstaged or staged again meanwhile");
  }
  auto source = private_source(key);
  if (!source) return std::unexpected(source.error());
  const std::string& dir = *source;
  auto table = read_mountinfo();
  auto target = find_mount(table, target_path);
  auto mounted = find_mount(table, dir);
  if (target && mounted && target->major == mounted->major && target->minor == mounted->minor) {
    if (target->read_only != ro) {
      return fail(ErrorCode::kExists, "target " + target_path + " is published " +
                                          (target->read_only ? "read-only" : "writable") +
                                          " already");
    }
  } else {
    if (target) {
      if (auto d = detach_mounts(target_path); !d) return std::unexpected(d.error());
    }
    if (auto ok = make_dirs(target_path); !ok) return ok;
    if (auto ok = bind_mount(dir, target_path, ro); !ok) return ok;
  }
  v->second.targets.insert(target_path);
  if (auto ok = save(); !ok) return ok;
  spdlog::info("published volume {} at {}{}", volume_id, target_path, ro ? " read-only" : "");
  return {};
}

Status Node::unpublish(const std::string& volume_id, const std::string& target_path) {
  if (volume_id.empty()) return invalid("volume_id is required");
  if (target_path.empty()) return invalid("target_path is required");
  // umount -l never waits on the FUSE daemon, and nothing here looks inside
  // the mount: a hung or dead mount cannot hang a terminating pod. Neither
  // needs the lock, so a slow stage of another volume cannot either.
  auto detached = detach_mounts(target_path);
  if (!detached) return std::unexpected(detached.error());
  if (::rmdir(target_path.c_str()) != 0 && errno != ENOENT) {
    spdlog::warn("volume {}: rmdir {}: {}", volume_id, target_path, std::strerror(errno));
  }
  std::unique_lock lock(mu_, std::chrono::seconds(5));
  if (!lock.owns_lock()) {
    // Unmounted already; the record is corrected by the next repair or stage.
    spdlog::warn("unpublished volume {} from {}; its record waits (node busy)", volume_id,
                 target_path);
    return {};
  }
  // Again under the lock: a repair may have bound it meanwhile.
  if (auto again = detach_mounts(target_path); !again) return std::unexpected(again.error());
  ::rmdir(target_path.c_str());
  if (auto v = state_.volumes.find(volume_id); v != state_.volumes.end()) {
    v->second.targets.erase(target_path);
    if (auto ok = save(); !ok) return ok;
  }
  spdlog::info("unpublished volume {} from {} ({} mounts detached)", volume_id, target_path,
               *detached);
  return {};
}

void Node::stop_mount(const std::string& key) {
  MountRecord m = state_.mounts.at(key);
  if (auto p = preloads_.find(key); p != preloads_.end()) {
    std::lock_guard plock(p->second->mu);
    p->second->cancelled = true;  // before its marker is removed below
    preloads_.erase(p);
  }
  auto entry = find_mount(read_mountinfo(), m.dir);
  // Taken before the unmount: once the connection ends, its number goes to the
  // next FUSE mount on the node, whose connection a later abort by number
  // would end instead (another pod's volume).
  FuseConnection conn;
  if (entry && entry->fs_type == "fuse.nacre") {
    if (auto c = FuseConnection::open(entry->minor)) conn = std::move(*c);
  }
  std::string how = "unmounted";
  drop_private_source(key);
  // Shared with the mounter's and the host's copies: the unmount reaches them.
  if (auto d = detach_mounts(m.dir); !d) spdlog::warn("mount {}: {}", key, d.error().describe());
  // Detached with nothing else holding it, the kernel ends the connection and
  // the daemon exits. A daemon that is stuck gets SIGTERM, then its FUSE
  // connection is aborted and it is killed: bounded, about 6 s at worst.
  if (m.pid > 0 && !wait_exit(m.pid, m.dir, std::chrono::milliseconds(3000))) {
    ::kill(m.pid, SIGTERM);
    how = "stopped with SIGTERM";
    if (!wait_exit(m.pid, m.dir, std::chrono::milliseconds(2000))) {
      if (auto a = conn.abort(); !a) spdlog::warn("mount {}: {}", key, a.error().describe());
      if (process_alive(m.pid, m.dir)) ::kill(m.pid, SIGKILL);
      how = "aborted and killed";
      wait_exit(m.pid, m.dir, std::chrono::milliseconds(1000));
    }
  }
  for (const char* suffix : {".env", ".ca.pem", ".pid", ".preloaded"}) {  // .log stays
    ::unlink((mounts_dir() + "/" + key + suffix).c_str());
  }
  ::rmdir(m.dir.c_str());
  state_.mounts.erase(key);
  spdlog::info("mount {} of {} {} (its node cache stays in {})", key, m.source, how, m.cache_dir);
}

Status Node::unstage(const std::string& volume_id, const std::string& staging_path) {
  if (volume_id.empty()) return invalid("volume_id is required");
  if (staging_path.empty()) return invalid("staging_target_path is required");
  auto detached = detach_mounts(staging_path);
  if (!detached) return std::unexpected(detached.error());
  std::unique_lock lock(mu_, std::chrono::seconds(5));
  if (!lock.owns_lock()) {
    return fail(ErrorCode::kCancelled, "staging path " + staging_path +
                                           " detached; another operation on this node is "
                                           "running, try again");
  }
  // Again under the lock: a repair may have bound it meanwhile.
  if (auto again = detach_mounts(staging_path); !again) return std::unexpected(again.error());
  auto v = state_.volumes.find(volume_id);
  if (v == state_.volumes.end() || v->second.staging_path != staging_path) {
    spdlog::info("unstage of volume {} at {}: not staged here ({} mounts detached)", volume_id,
                 staging_path, *detached);
    return {};
  }
  for (const auto& t : v->second.targets) {
    spdlog::warn("volume {} unstaged while still published at {}: detaching it", volume_id, t);
    (void)detach_mounts(t);
  }
  const std::string key = v->second.mount_key;
  state_.volumes.erase(v);
  if (state_.users(key) == 0 && state_.mounts.contains(key)) stop_mount(key);
  if (auto ok = save(); !ok) return ok;
  spdlog::info("unstaged volume {} from {}", volume_id, staging_path);
  return {};
}

Result<VolumeStats> Node::stats(const std::string& volume_id, const std::string& path) {
  if (volume_id.empty()) return invalid("volume_id is required");
  if (path.empty()) return invalid("volume_path is required");
  std::unique_lock lock(mu_, std::chrono::seconds(5));
  if (!lock.owns_lock()) return fail(ErrorCode::kCancelled, "the node plugin is busy, try again");
  auto v = state_.volumes.find(volume_id);
  if (v == state_.volumes.end()) {
    return fail(ErrorCode::kNotFound, "volume " + volume_id + " is not staged on this node");
  }
  if (path != v->second.staging_path && !v->second.targets.contains(path)) {
    return fail(ErrorCode::kNotFound,
                path + " is neither the staging path nor a target path of " + volume_id);
  }
  VolumeStats out;
  const std::string& key = v->second.mount_key;
  std::string problem =
      state_.mounts.contains(key) ? mount_problem(key).reason : "its mount is not recorded";
  if (problem.empty()) {
    auto entry = find_mount(read_mountinfo(), path);
    auto mounted = find_mount(read_mountinfo(), state_.mounts.at(key).dir);
    if (!entry || !mounted || entry->minor != mounted->minor) {
      problem = path + " is not bound to the volume's mount";
    }
  }
  Probe p = problem.empty() ? probe_path(path, options_.probe_deadline) : Probe{};
  if (problem.empty() && (!p.answered || p.error != 0)) {
    problem = !p.answered ? "it does not answer" : std::string(std::strerror(p.error));
  }
  if (!problem.empty()) {
    out.abnormal = true;
    out.message = "the Nacre mount of this volume cannot serve: " + problem +
                  "; the next NodeStageVolume or NodePublishVolume repairs it";
    return out;
  }
  out.bytes_total = p.bytes_total;
  out.bytes_available = p.bytes_free;
  out.bytes_used = p.bytes_total - std::min(p.bytes_total, p.bytes_free);
  out.inodes_total = p.inodes_total;
  out.inodes_available = p.inodes_free;
  out.inodes_used = p.inodes_total - std::min(p.inodes_total, p.inodes_free);
  out.message = "serving";
  return out;
}

}  // namespace nacre::csi
