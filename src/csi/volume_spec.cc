#include "csi/volume_spec.h"

#include <algorithm>
#include <set>

#include "cli/size_parse.h"
#include "fs/mount_source.h"
#include "s3/crypto.h"

namespace nacre::csi {

namespace {

std::unexpected<Error> invalid(std::string message) {
  return fail(ErrorCode::kInvalidArgument, std::move(message));
}

std::string trim(std::string s) {
  const char* ws = " \t\r\n";
  s.erase(0, s.find_first_not_of(ws));
  s.erase(s.find_last_not_of(ws) + 1);
  return s;
}

std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t next = text.find(sep, pos);
    if (next == std::string::npos) next = text.size();
    std::string part = trim(text.substr(pos, next - pos));
    if (!part.empty()) out.push_back(part);
    pos = next + 1;
  }
  return out;
}

std::string strip_slashes(std::string p) {
  while (!p.empty() && p.back() == '/') p.pop_back();
  while (!p.empty() && p.front() == '/') p.erase(0, 1);
  return p;
}

// FSx autoImportPolicy → `nacre mount --import-policy`.
Result<std::string> import_from_fsx(const std::string& value) {
  static const std::map<std::string, std::string> fsx = {
      {"NONE", "NONE"},
      {"NEW", "NEW"},
      {"NEW_CHANGED", "NEW,CHANGED"},
      {"NEW_CHANGED_DELETED", "NEW,CHANGED,DELETED"}};
  auto it = fsx.find(value);
  if (it == fsx.end()) {
    return invalid("autoImportPolicy '" + value +
                   "': expected NONE, NEW, NEW_CHANGED or NEW_CHANGED_DELETED");
  }
  return it->second;
}

// autoExportPolicy: FSx's event list (NEW, CHANGED, DELETED, comma or space
// separated) or NONE.
Result<std::string> export_policy(const std::string& value) {
  std::string list = value;
  std::replace(list.begin(), list.end(), ' ', ',');
  auto parsed = cli::parse_export_policy(list);
  if (!parsed) return invalid("autoExportPolicy '" + value + "': " + parsed.error().message);
  return list;
}

bool is_true(const std::string& v) {
  return v == "true" || v == "True" || v == "yes" || v == "1";
}

// The allow-list of mount options: Nacre's own -o options that change how a
// volume is served and cannot reach outside it. FUSE options (allow_other,
// suid, dev, ...) and paths (cache-dir) belong to the driver.
const std::set<std::string>& allowed_options() {
  static const std::set<std::string> keys = {"ro",
                                             "read-only",
                                             "uid",
                                             "gid",
                                             "file-mode",
                                             "dir-mode",
                                             "metadata-ttl",
                                             "cache-size",
                                             "import-policy",
                                             "export-policy",
                                             "contain-symlinks",
                                             "hydrate-min-size",
                                             "passthrough",
                                             "passthrough-min-size",
                                             "cache-check-at-start",
                                             "fetch-threads",
                                             "fuse-threads",
                                             "part-size",
                                             "addressing-style",
                                             "region",
                                             "endpoint-url",
                                             "max-attempts",
                                             "connect-timeout",
                                             "stall-timeout",
                                             "log-level"};
  return keys;
}

// Options that are flags of `nacre mount` rather than -o options.
const std::set<std::string>& flag_options() {
  static const std::set<std::string> keys = {"fetch-threads", "fuse-threads",    "part-size",
                                             "max-attempts",  "connect-timeout", "stall-timeout",
                                             "log-level"};
  return keys;
}

// The value of an allowed mount option, checked as `nacre mount` checks it:
// a value it refuses is the caller's error (INVALID_ARGUMENT), not a mount
// that fails at every retry.
Status check_option_value(const std::string& key, const std::string& value) {
  auto number = [&](double lo, double hi, bool integer) -> Status {
    try {
      size_t used = 0;
      double n = std::stod(value, &used);
      if (used == value.size() && n >= lo && n <= hi && (!integer || n == static_cast<long>(n))) {
        return {};
      }
    } catch (const std::exception&) {
    }
    return invalid("expected " + std::string(integer ? "an integer" : "a number") + " from " +
                   std::to_string(static_cast<long>(lo)) + " to " +
                   (hi > 1e9 ? std::string("any") : std::to_string(static_cast<long>(hi))));
  };
  auto either = [](auto r) -> Status {
    if (!r) return std::unexpected(r.error());
    return {};
  };
  if (key == "uid" || key == "gid") return either(cli::parse_id(value, key));
  if (key == "file-mode" || key == "dir-mode") return either(cli::parse_mode(value));
  if (key == "metadata-ttl") return either(cli::parse_ttl(value));
  if (key == "cache-size") return either(cli::parse_bytes(value));
  if (key == "hydrate-min-size" || key == "cache-check-at-start") {
    return value == "off" ? Status{} : either(cli::parse_bytes(value));
  }
  if (key == "passthrough-min-size") return either(cli::parse_bytes(value));
  if (key == "passthrough") {
    if (value == "auto" || value == "off") return {};
    return invalid("expected auto or off");
  }
  if (key == "import-policy" || key == "export-policy") {
    std::string list = value;
    std::replace(list.begin(), list.end(), ':', ',');
    return key == "import-policy" ? either(cli::parse_import_policy(list))
                                  : either(cli::parse_export_policy(list));
  }
  if (key == "addressing-style") {
    if (value == "auto" || value == "path" || value == "virtual") return {};
    return invalid("expected auto, path or virtual");
  }
  if (key == "log-level") {
    for (const char* l : {"trace", "debug", "info", "warn", "error"}) {
      if (value == l) return {};
    }
    return invalid("expected trace, debug, info, warn or error");
  }
  if (key == "fetch-threads" || key == "fuse-threads") return number(1, 256, true);
  if (key == "max-attempts") return number(1, 20, true);
  if (key == "part-size") return number(1, 1024, false);
  if (key == "connect-timeout" || key == "stall-timeout") {
    if (auto ok = number(0, 1e300, false); !ok || std::stod(value) <= 0) {
      return invalid("expected a number of seconds above 0");
    }
  }
  return {};
}

}  // namespace

Result<bool> access_mode_read_only(int mode) {
  switch (static_cast<AccessMode>(mode)) {
    case AccessMode::kSingleNodeReaderOnly:
    case AccessMode::kMultiNodeReaderOnly:
      return true;
    case AccessMode::kSingleNodeWriter:
    case AccessMode::kMultiNodeSingleWriter:
    case AccessMode::kMultiNodeMultiWriter:
    case AccessMode::kSingleNodeSingleWriter:
    case AccessMode::kSingleNodeMultiWriter:
      return false;
    default:
      return invalid("access mode " + std::to_string(mode) + " is not a CSI access mode");
  }
}

Status check_capability(const Capability& cap) {
  if (cap.block) return invalid("block volumes are not supported: Nacre volumes are file systems");
  if (!cap.has_access_type) return invalid("volume capability names neither mount nor block");
  if (!cap.fs_type.empty() && cap.fs_type != "nacre" && cap.fs_type != "fuse.nacre") {
    return invalid("fs_type '" + cap.fs_type + "': Nacre volumes are fuse.nacre");
  }
  if (auto ro = access_mode_read_only(cap.access_mode); !ro) return std::unexpected(ro.error());
  for (const auto& flag : cap.mount_flags) {
    if (auto ok = check_mount_option(flag); !ok) return std::unexpected(ok.error());
  }
  if (!cap.mount_group.empty()) {
    if (auto g = cli::parse_id(cap.mount_group, "volume_mount_group"); !g) {
      return invalid(g.error().message);
    }
  }
  return {};
}

Result<Secrets> parse_secrets(const StringMap& secrets) {
  Secrets out;
  for (const auto& [k, v] : secrets) {
    if (k == "accessKeyId" || k == "AWS_ACCESS_KEY_ID" || k == "key_id") {
      out.access_key_id = v;
    } else if (k == "secretAccessKey" || k == "AWS_SECRET_ACCESS_KEY" || k == "access_key") {
      out.secret_access_key = v;
    } else if (k == "sessionToken" || k == "AWS_SESSION_TOKEN") {
      out.session_token = v;
    } else if (k == "caBundle") {
      out.ca_bundle_pem = v;
    }
    // Other keys are ignored: a Secret may hold more than Nacre's keys. Never
    // name their values in messages.
  }
  if (out.access_key_id.empty() != out.secret_access_key.empty()) {
    return invalid("secrets hold only one of accessKeyId and secretAccessKey");
  }
  return out;
}

Result<std::string> check_mount_option(const std::string& option) {
  std::string key = option.substr(0, option.find('='));
  std::replace(key.begin(), key.end(), '_', '-');
  if (!allowed_options().contains(key)) {
    std::string list;
    for (const auto& k : allowed_options()) list += (list.empty() ? "" : ", ") + k;
    return invalid("mount option '" + option + "' is not allowed (allowed: " + list + ")");
  }
  const bool takes_value = key != "ro" && key != "read-only" && key != "contain-symlinks";
  const size_t eq = option.find('=');
  if (takes_value && (eq == std::string::npos || eq + 1 == option.size())) {
    return invalid("mount option '" + option + "' needs a value (" + key + "=...)");
  }
  if (!takes_value && eq != std::string::npos) {
    return invalid("mount option '" + option + "' takes no value");
  }
  if (!takes_value) return key;
  std::string value = option.substr(eq + 1);
  // -o splits at commas: policy lists go as NEW:CHANGED (`nacre mount` reads both).
  if (key == "import-policy" || key == "export-policy") {
    std::replace(value.begin(), value.end(), ',', ':');
  }
  if (auto ok = check_option_value(key, value); !ok) {
    return invalid("mount option '" + option + "': " + ok.error().message);
  }
  return key + "=" + value;
}

Result<VolumeSpec> parse_volume_attributes(const StringMap& attrs, const DriverDefaults& defaults) {
  VolumeSpec spec;
  spec.endpoint_url = defaults.endpoint_url;
  spec.region = defaults.region;
  std::string import_path;
  for (const auto& [k, v] : attrs) {
    if (k.starts_with("csi.storage.k8s.io/")) continue;  // pod info, provisioner metadata
    if (k == "bucketName") {
      spec.bucket = v;
    } else if (k == "prefix") {
      spec.prefix = strip_slashes(v);
    } else if (k == "s3ImportPath") {
      import_path = v;
    } else if (k == "s3ExportPath") {
      // checked below, once s3ImportPath is known
    } else if (k == "autoImportPolicy") {
      auto p = import_from_fsx(v);
      if (!p) return std::unexpected(p.error());
      spec.import_policy = *p;
    } else if (k == "autoExportPolicy") {
      auto p = export_policy(v);
      if (!p) return std::unexpected(p.error());
      spec.export_policy = *p;
    } else if (k == "endpointUrl") {
      spec.endpoint_url = v;
    } else if (k == "region") {
      spec.region = v;
    } else if (k == "addressingStyle") {
      if (v != "auto" && v != "path" && v != "virtual") {
        return invalid("addressingStyle '" + v + "': expected auto, path or virtual");
      }
      spec.addressing_style = v;
    } else if (k == "cacheSize") {
      if (auto b = cli::parse_bytes(v); !b) return invalid("cacheSize: " + b.error().message);
      spec.cache_size = v;
    } else if (k == "metadataTtl") {
      if (auto t = cli::parse_ttl(v); !t) return invalid("metadataTtl: " + t.error().message);
      spec.metadata_ttl = v;
    } else if (k == "uid" || k == "gid") {
      if (auto id = cli::parse_id(v, k); !id) return invalid(id.error().message);
      (k == "uid" ? spec.uid : spec.gid) = v;
    } else if (k == "fileMode" || k == "dirMode") {
      if (auto m = cli::parse_mode(v); !m) return invalid(k + ": " + m.error().message);
      (k == "fileMode" ? spec.file_mode : spec.dir_mode) = v;
    } else if (k == "caBundle") {
      if (v.find("-----BEGIN CERTIFICATE-----") == std::string::npos) {
        return invalid("caBundle holds no PEM certificate (-----BEGIN CERTIFICATE-----)");
      }
      spec.ca_bundle_pem = v;
    } else if (k == "preload") {
      spec.preload = split(v, ',');
      for (const auto& g : spec.preload) {
        if (g.starts_with("/") || g == ".." || g.starts_with("../") ||
            g.find("/../") != std::string::npos) {
          return invalid("preload glob '" + g + "' must stay under the volume root");
        }
      }
    } else if (k == "preloadWaitSeconds") {
      try {
        size_t used = 0;
        int s = std::stoi(v, &used);
        if (used != v.size() || s < 0 || s > 3600) throw std::out_of_range(v);
        spec.preload_wait_seconds = s;
      } catch (const std::exception&) {
        return invalid("preloadWaitSeconds '" + v + "': expected 0 to 3600");
      }
    } else if (k == "basePrefix" || k == "pathPattern" || k == "deleteData") {
      // provisioning parameters: used by CreateVolume, harmless here
    } else {
      return invalid("unknown volume parameter '" + k + "' (docs/KUBERNETES.md lists them)");
    }
  }
  if (!import_path.empty()) {
    auto src = fs::parse_mount_source(import_path);
    if (!src || !import_path.starts_with("s3://")) {
      return invalid("s3ImportPath '" + import_path + "': expected s3://BUCKET[/PREFIX]");
    }
    spec.bucket = src->bucket;
    spec.prefix = strip_slashes(src->prefix);
    if (auto e = attrs.find("s3ExportPath"); e != attrs.end()) {
      auto dst = fs::parse_mount_source(e->second);
      if (!dst || dst->bucket != src->bucket || strip_slashes(dst->prefix) != spec.prefix) {
        return invalid("s3ExportPath '" + e->second +
                       "' must equal s3ImportPath: Nacre exports changes in place");
      }
    }
  } else if (attrs.contains("s3ExportPath")) {
    return invalid("s3ExportPath needs s3ImportPath (and must equal it)");
  }
  if (spec.bucket.empty()) return invalid("bucketName (or s3ImportPath) is required");
  // What `nacre mount` will take: a valid bucket name, and no empty, '.' or
  // '..' component in the prefix (S3 keeps them literally; no directory can).
  if (auto src = fs::parse_mount_source("s3://" + spec.bucket +
                                        (spec.prefix.empty() ? "" : "/" + spec.prefix));
      !src) {
    return invalid((import_path.empty() ? "bucketName/prefix: " : "s3ImportPath: ") +
                   src.error().message);
  }
  return spec;
}

Status apply_capability(VolumeSpec& spec, const Capability& cap) {
  if (auto ok = check_capability(cap); !ok) return ok;
  spec.read_only = *access_mode_read_only(cap.access_mode);
  for (const auto& flag : cap.mount_flags) {
    std::string opt = *check_mount_option(flag);
    if (opt == "ro" || opt == "read-only") {
      spec.read_only = true;
    } else {
      spec.mount_options.push_back(opt);
    }
  }
  if (!cap.mount_group.empty()) {
    // fsGroup: the pod's group owns what has no metadata of its own, and may write.
    spec.gid = cap.mount_group;
    if (spec.file_mode.empty()) spec.file_mode = "0664";
    if (spec.dir_mode.empty()) spec.dir_mode = "0775";
  }
  return {};
}

std::vector<std::string> mount_arguments(const VolumeSpec& spec, const std::string& mount_dir,
                                         const std::string& cache_dir,
                                         const std::string& ca_bundle_file) {
  std::vector<std::string> a = {
      "mount", "s3://" + spec.bucket + (spec.prefix.empty() ? "" : "/" + spec.prefix), mount_dir,
      "--cache-dir", cache_dir, "--cache-size", spec.cache_size, "--metadata-ttl",
      spec.metadata_ttl, "--import-policy", spec.import_policy, "--export-policy",
      spec.export_policy,
      // Every pod on the node reads through this one mount.
      "--allow-other"};
  if (spec.read_only) a.push_back("--read-only");
  if (!spec.endpoint_url.empty()) a.insert(a.end(), {"--endpoint-url", spec.endpoint_url});
  if (!spec.region.empty()) a.insert(a.end(), {"--region", spec.region});
  if (!spec.addressing_style.empty()) {
    a.insert(a.end(), {"--addressing-style", spec.addressing_style});
  }
  if (!ca_bundle_file.empty()) a.insert(a.end(), {"--ca-bundle", ca_bundle_file});
  if (!spec.uid.empty()) a.insert(a.end(), {"--uid", spec.uid});
  if (!spec.gid.empty()) a.insert(a.end(), {"--gid", spec.gid});
  if (!spec.file_mode.empty()) a.insert(a.end(), {"--file-mode", spec.file_mode});
  if (!spec.dir_mode.empty()) a.insert(a.end(), {"--dir-mode", spec.dir_mode});
  // Mount options come last, so they override the attributes above.
  for (const auto& opt : spec.mount_options) {
    std::string key = opt.substr(0, opt.find('='));
    if (flag_options().contains(key)) {
      a.insert(a.end(), {"--" + key, opt.substr(opt.find('=') + 1)});
    } else {
      a.insert(a.end(), {"-o", opt});
    }
  }
  return a;
}

std::string mount_key(const VolumeSpec& spec, const Secrets& secrets) {
  std::string text = spec.bucket + '\n' + spec.prefix + '\n' + spec.endpoint_url + '\n' +
                     spec.region + '\n' + spec.addressing_style + '\n' + spec.import_policy + '\n' +
                     spec.export_policy + '\n' + spec.cache_size + '\n' + spec.metadata_ttl + '\n' +
                     spec.uid + '\n' + spec.gid + '\n' + spec.file_mode + '\n' + spec.dir_mode +
                     '\n' + spec.ca_bundle_pem + '\n' + (spec.read_only ? "ro" : "rw") + '\n';
  for (const auto& o : spec.mount_options) text += o + '\n';
  // Whose credentials: volumes of different tenants never share a mount.
  text += s3::sha256_hex(secrets.access_key_id + '\n' + secrets.secret_access_key + '\n' +
                         secrets.session_token + '\n' + secrets.ca_bundle_pem);
  return s3::sha256_hex(text).substr(0, 16);
}

std::string name_tag(const std::string& name) {
  return s3::sha256_hex(name).substr(0, 8);
}

Result<std::string> encode_volume_id(const VolumeId& id) {
  if (id.bucket.empty()) return invalid("volume id needs a bucket");
  auto bad = [](const std::string& s) { return s.find(';') != std::string::npos; };
  if (bad(id.prefix) || bad(id.name) || bad(id.endpoint_url) || bad(id.region)) {
    return invalid("';' cannot appear in a volume's prefix, name, endpoint or region");
  }
  std::string out = id.kind == VolumeId::Kind::kLinked ? "linked:"
                    : id.delete_data                   ? "fresh+delete:"
                                                       : "fresh:";
  out += id.bucket + "/" + id.prefix;
  if (id.kind == VolumeId::Kind::kLinked) out += ";v=" + id.name;
  if (id.kind == VolumeId::Kind::kFresh) out += ";n=" + id.name_tag;
  if (!id.endpoint_url.empty()) out += ";e=" + id.endpoint_url;
  if (!id.region.empty()) out += ";r=" + id.region;
  if (out.size() > 128) {
    return invalid("volume id '" + out +
                   "' would pass CSI's 128 bytes: use a shorter basePrefix or pathPattern");
  }
  return out;
}

Result<VolumeId> decode_volume_id(const std::string& text) {
  VolumeId id;
  size_t colon = text.find(':');
  if (colon == std::string::npos) return invalid("'" + text + "' is not a Nacre volume id");
  std::string kind = text.substr(0, colon);
  if (kind == "fresh") {
    id.kind = VolumeId::Kind::kFresh;
  } else if (kind == "fresh+delete") {
    id.kind = VolumeId::Kind::kFresh;
    id.delete_data = true;
  } else if (kind == "linked") {
    id.kind = VolumeId::Kind::kLinked;
  } else {
    return invalid("'" + text + "' is not a Nacre volume id");
  }
  auto fields = split(text.substr(colon + 1), ';');
  if (fields.empty()) return invalid("'" + text + "' names no bucket");
  size_t slash = fields[0].find('/');
  if (slash == std::string::npos || slash == 0) return invalid("'" + text + "' names no bucket");
  id.bucket = fields[0].substr(0, slash);
  id.prefix = fields[0].substr(slash + 1);
  for (size_t i = 1; i < fields.size(); ++i) {
    const std::string& f = fields[i];
    if (f.starts_with("v=")) {
      id.name = f.substr(2);
    } else if (f.starts_with("n=")) {
      id.name_tag = f.substr(2);
    } else if (f.starts_with("e=")) {
      id.endpoint_url = f.substr(2);
    } else if (f.starts_with("r=")) {
      id.region = f.substr(2);
    } else {
      return invalid("'" + text + "' has an unknown field '" + f + "'");
    }
  }
  if (id.kind == VolumeId::Kind::kFresh && (id.prefix.empty() || id.name_tag.size() != 8)) {
    return invalid("'" + text + "': a fresh volume always has a prefix and a name tag");
  }
  return id;
}

Result<ProvisionPlan> plan_volume(const std::string& name, const StringMap& params,
                                  const DriverDefaults& defaults) {
  auto spec = parse_volume_attributes(params, defaults);
  if (!spec) return std::unexpected(spec.error());
  ProvisionPlan plan;
  plan.spec = *spec;
  if (params.contains("prefix")) {
    return invalid(
        "'prefix' is a static volume attribute; a StorageClass uses basePrefix "
        "(fresh volumes) or s3ImportPath (a linked dataset)");
  }
  const bool linked = params.contains("s3ImportPath");
  if (linked) {
    for (const char* k : {"basePrefix", "pathPattern", "deleteData"}) {
      if (params.contains(k)) {
        return invalid(std::string(k) +
                       " applies to fresh volumes, not to one linked with "
                       "s3ImportPath");
      }
    }
    plan.id.kind = VolumeId::Kind::kLinked;
    plan.id.name = name;
  } else {
    auto get = [&](const char* k, std::string dflt) {
      auto it = params.find(k);
      return it == params.end() ? dflt : it->second;
    };
    std::string pattern = get("pathPattern", "${pv.metadata.name}");
    static const std::map<std::string, std::string> vars = {
        {"${pv.metadata.name}", "csi.storage.k8s.io/pv/name"},
        {"${pvc.metadata.name}", "csi.storage.k8s.io/pvc/name"},
        {"${pvc.metadata.namespace}", "csi.storage.k8s.io/pvc/namespace"}};
    std::string path;
    for (size_t i = 0; i < pattern.size();) {
      if (pattern.compare(i, 2, "${") == 0) {
        size_t end = pattern.find('}', i);
        if (end == std::string::npos) return invalid("pathPattern '" + pattern + "': unclosed ${");
        std::string var = pattern.substr(i, end - i + 1);
        auto v = vars.find(var);
        if (v == vars.end()) {
          return invalid("pathPattern '" + pattern + "': unknown variable " + var);
        }
        std::string value;
        if (auto p = params.find(v->second); p != params.end()) {
          value = p->second;
        } else if (var == "${pv.metadata.name}") {
          value = name;  // the CreateVolume name is the PV's name
        } else {
          return invalid("pathPattern uses " + var + " but the request has no " + v->second +
                         " (run csi-provisioner with --extra-create-metadata)");
        }
        path += value;
        i = end + 1;
      } else {
        path += pattern[i++];
      }
    }
    path = strip_slashes(path);
    if (path.empty() || path == "." || path == ".." || path.find("/../") != std::string::npos ||
        path.starts_with("../") || path.ends_with("/..")) {
      return invalid("pathPattern '" + pattern + "' gives the prefix '" + path +
                     "', not a fresh directory");
    }
    std::string base = strip_slashes(get("basePrefix", ""));
    plan.spec.prefix = base.empty() ? path : base + "/" + path;
    if (auto src = fs::parse_mount_source("s3://" + plan.spec.bucket + "/" + plan.spec.prefix);
        !src) {
      return invalid("basePrefix '" + base + "' and pathPattern '" + pattern +
                     "' give the prefix '" + plan.spec.prefix + "': " + src.error().message);
    }
    plan.id.kind = VolumeId::Kind::kFresh;
    plan.id.name_tag = name_tag(name);
    plan.id.delete_data = is_true(get("deleteData", "false"));
    if (auto d = get("deleteData", "false");
        !is_true(d) && d != "false" && d != "False" && d != "no" && d != "0") {
      return invalid("deleteData '" + d + "': expected true or false");
    }
  }
  plan.id.bucket = plan.spec.bucket;
  plan.id.prefix = plan.spec.prefix;
  if (plan.spec.endpoint_url != defaults.endpoint_url)
    plan.id.endpoint_url = plan.spec.endpoint_url;
  if (plan.spec.region != defaults.region) plan.id.region = plan.spec.region;
  if (auto ok = encode_volume_id(plan.id); !ok) return std::unexpected(ok.error());

  std::string canon;
  for (const auto& [k, v] : params) {
    if (k.starts_with("csi.storage.k8s.io/")) continue;
    plan.context[k] = v;
    canon += k + '=' + v + '\n';
  }
  plan.context["bucketName"] = plan.spec.bucket;
  plan.context["prefix"] = plan.spec.prefix;
  if (linked) plan.context.erase("prefix");  // s3ImportPath says it
  plan.params_hash = s3::sha256_hex(canon).substr(0, 16);
  return plan;
}

}  // namespace nacre::csi
