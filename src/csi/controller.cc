#include "csi/controller.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "fs/posix_metadata.h"

namespace nacre::csi {

namespace {

using nlohmann::json;

std::unexpected<Error> invalid(std::string message) {
  return fail(ErrorCode::kInvalidArgument, std::move(message));
}

// The record of created volumes (name → id, capacity, parameters), so a
// repeated CreateVolume is answered the same and a conflicting one refused.
json load_records(const std::string& file) {
  std::ifstream in(file);
  if (!in) return json::object();
  try {
    return json::parse(in);
  } catch (const std::exception& e) {
    spdlog::error("{} is not readable ({}); starting with no records", file, e.what());
    return json::object();
  }
}

Status save_records(const std::string& file, const json& records) {
  const std::string tmp = file + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << records.dump(2) << "\n";
    out.flush();
    if (!out) return fail(ErrorCode::kIo, "write " + tmp + " failed");
  }
  if (::rename(tmp.c_str(), file.c_str()) != 0) return fail_errno("rename " + tmp, errno);
  return {};
}

constexpr const char* kNameMeta = "nacre-volume-name";
constexpr const char* kCapacityMeta = "nacre-volume-capacity";
constexpr const char* kParamsMeta = "nacre-volume-params";

// A HEAD answer has no body: its 403 cannot say whether the keys are wrong
// (InvalidAccessKeyId, SignatureDoesNotMatch: UNAUTHENTICATED) or only not
// allowed (AccessDenied: PERMISSION_DENIED). A one-key LIST of the same name says.
Error explain_head_error(s3::ObjectClient& client, const std::string& bucket,
                         const std::string& key, Error error) {
  if (error.code != ErrorCode::kAccessDenied || !error.s3_code.empty()) return error;
  s3::ListRequest req;
  req.bucket = bucket;
  req.prefix = key;
  req.max_keys = 1;
  auto page = client.list_objects(req);
  if (!page && page.error().code == ErrorCode::kInvalidCredentials) return page.error();
  return error;
}

}  // namespace

Result<std::unique_ptr<Controller>> Controller::open(ControllerOptions options) {
  std::error_code ec;
  std::filesystem::create_directories(options.state_dir, ec);
  if (ec) return fail(ErrorCode::kIo, "mkdir -p " + options.state_dir + ": " + ec.message());
  return std::unique_ptr<Controller>(new Controller(std::move(options)));
}

Result<std::unique_ptr<s3::ObjectClient>> Controller::client_for(const VolumeId& id,
                                                                 const StringMap& secrets) {
  auto creds = parse_secrets(secrets);
  if (!creds) return std::unexpected(creds.error());
  VolumeSpec spec;
  spec.bucket = id.bucket;
  spec.prefix = id.prefix;
  spec.endpoint_url = id.endpoint_url.empty() ? options_.defaults.endpoint_url : id.endpoint_url;
  spec.region = id.region.empty() ? options_.defaults.region : id.region;
  return options_.make_client(spec, *creds);
}

Result<CreatedVolume> Controller::create(const std::string& name, int64_t required_bytes,
                                         int64_t limit_bytes, const std::vector<Capability>& caps,
                                         const StringMap& params, const StringMap& secrets,
                                         bool has_content_source) {
  if (name.empty()) return invalid("name is required");
  if (caps.empty()) return invalid("volume_capabilities are required");
  for (const auto& c : caps) {
    if (auto ok = check_capability(c); !ok) return std::unexpected(ok.error());
  }
  if (has_content_source) {
    return invalid("volumes from snapshots or clones are not supported: a volume is a prefix");
  }
  if (required_bytes < 0 || limit_bytes < 0) return invalid("capacity cannot be negative");
  if (limit_bytes > 0 && required_bytes > limit_bytes) {
    return fail(ErrorCode::kInvalidRange, "required_bytes passes limit_bytes");
  }
  // Recorded, not enforced: S3 prefixes have no size.
  const int64_t capacity = required_bytes > 0 ? required_bytes : limit_bytes;
  auto plan = plan_volume(name, params, options_.defaults);
  if (!plan) return std::unexpected(plan.error());
  auto id = encode_volume_id(plan->id);
  if (!id) return std::unexpected(id.error());

  std::lock_guard lock(mu_);
  json records = load_records(state_file());
  if (records.contains(name)) {
    const json& r = records[name];
    if (r.value("id", "") != *id || r.value("params", "") != plan->params_hash ||
        r.value("capacity", int64_t{0}) != capacity) {
      return fail(ErrorCode::kExists,
                  "volume " + name + " exists with another capacity or other parameters");
    }
  }
  // The class's own endpoint, CA bundle and addressing style, not only what
  // the id carries (DeleteVolume has only that, or the driver's defaults).
  auto creds = parse_secrets(secrets);
  if (!creds) return std::unexpected(creds.error());
  auto client = options_.make_client(plan->spec, *creds);
  if (!client) return std::unexpected(client.error());
  if (plan->id.kind == VolumeId::Kind::kFresh) {
    // The marker says whose prefix it is: a second CreateVolume of the same
    // name finds it (also after the controller lost its records) and a
    // pathPattern that lands on another volume's prefix is refused.
    const std::string marker = plan->spec.prefix + "/";
    auto head = (*client)->head_object(plan->spec.bucket, marker);
    if (head) {
      const auto& meta = head->metadata;
      auto get = [&](const char* k) {
        auto it = meta.find(k);
        return it == meta.end() ? std::string() : it->second;
      };
      if (get(kNameMeta) != name) {
        return fail(ErrorCode::kExists,
                    "s3://" + plan->spec.bucket + "/" + marker + " belongs to " +
                        (get(kNameMeta).empty() ? "no Nacre volume" : "volume " + get(kNameMeta)));
      }
      if (get(kParamsMeta) != plan->params_hash || get(kCapacityMeta) != std::to_string(capacity)) {
        return fail(ErrorCode::kExists,
                    "volume " + name + " exists with another capacity or other parameters");
      }
    } else if (head.error().code == ErrorCode::kNoSuchKey ||
               head.error().code == ErrorCode::kNotFound) {
      // Never claim what is not new: data under the prefix that no volume
      // created (a dataset a deleteData volume would later delete), or a
      // prefix inside another volume (deleting that one would take this one).
      s3::ListRequest req;
      req.bucket = plan->spec.bucket;
      req.prefix = marker;
      req.max_keys = 1;
      auto page = (*client)->list_objects(req);
      if (!page) return std::unexpected(page.error());
      if (!page->objects.empty()) {
        return fail(ErrorCode::kExists,
                    "s3://" + plan->spec.bucket + "/" + marker +
                        " holds objects that no Nacre volume created: choose another "
                        "basePrefix/pathPattern, or link the data with s3ImportPath");
      }
      for (size_t slash = marker.find('/'); slash + 1 < marker.size();
           slash = marker.find('/', slash + 1)) {
        const std::string outer = marker.substr(0, slash + 1);
        auto o = (*client)->head_object(plan->spec.bucket, outer);
        // Only "not there" (or not readable with prefix-scoped keys) counts as
        // no volume: any other failure must not let a nested claim through.
        if (!o && o.error().code != ErrorCode::kNoSuchKey &&
            o.error().code != ErrorCode::kNotFound && o.error().code != ErrorCode::kAccessDenied) {
          return std::unexpected(o.error());
        }
        if (o && o->metadata.contains(kNameMeta)) {
          return fail(ErrorCode::kExists, "s3://" + plan->spec.bucket + "/" + marker +
                                              " lies inside volume " + o->metadata.at(kNameMeta) +
                                              " (" + outer + ")");
        }
      }
      s3::UserMetadata meta;
      fs::PosixMetadata posix;
      posix.mode = S_IFDIR | 0755;
      fs::encode_posix_metadata(posix, meta);
      meta[kNameMeta] = name;
      meta[kCapacityMeta] = std::to_string(capacity);
      meta[kParamsMeta] = plan->params_hash;
      auto put = (*client)->put_object({plan->spec.bucket, marker, s3::Body::empty(), meta, ""});
      if (!put) return std::unexpected(put.error());
    } else {
      return std::unexpected(explain_head_error(**client, plan->spec.bucket, marker, head.error()));
    }
  } else {
    // A linked dataset is only read here: the bucket must answer.
    s3::ListRequest req;
    req.bucket = plan->spec.bucket;
    req.prefix = plan->spec.prefix.empty() ? "" : plan->spec.prefix + "/";
    req.max_keys = 1;
    auto page = (*client)->list_objects(req);
    if (!page) return std::unexpected(page.error());
  }
  records[name] = {{"id", *id}, {"params", plan->params_hash}, {"capacity", capacity}};
  if (auto ok = save_records(state_file(), records); !ok) return std::unexpected(ok.error());
  spdlog::info("created volume {} as {} ({} bytes recorded)", name, *id, capacity);
  return CreatedVolume{*id, capacity, plan->context};
}

Status Controller::remove(const std::string& volume_id, const StringMap& secrets) {
  if (volume_id.empty()) return invalid("volume_id is required");
  auto id = decode_volume_id(volume_id);
  if (!id) {
    spdlog::info("DeleteVolume of {}: not a Nacre volume id, nothing to delete", volume_id);
    return {};
  }
  std::lock_guard lock(mu_);
  json records = load_records(state_file());
  for (auto it = records.begin(); it != records.end();) {
    it = it.value().value("id", "") == volume_id ? records.erase(it) : std::next(it);
  }
  if (id->kind == VolumeId::Kind::kLinked) {
    spdlog::info("deleted linked volume {}: its dataset s3://{}/{} is never deleted", volume_id,
                 id->bucket, id->prefix);
    return save_records(state_file(), records);
  }
  if (!id->delete_data) {
    spdlog::info("deleted volume {}: its objects stay in s3://{}/{}/ (deleteData is false)",
                 volume_id, id->bucket, id->prefix);
    return save_records(state_file(), records);
  }
  auto client = client_for(*id, secrets);
  if (!client) return std::unexpected(client.error());
  // The prefix is this volume's only while its marker names it: a retried
  // DeleteVolume after the name was taken again by another volume (same
  // pathPattern) must not delete that one. The marker goes last, so a
  // deletion cut short keeps the prefix claimed until a retry finishes it.
  const std::string marker = id->prefix + "/";
  auto head = (*client)->head_object(id->bucket, marker);
  if (!head) {
    if (head.error().code == ErrorCode::kNoSuchKey || head.error().code == ErrorCode::kNotFound ||
        head.error().code == ErrorCode::kNoSuchBucket) {
      spdlog::info("DeleteVolume of {}: no marker, nothing left to delete", volume_id);
      return save_records(state_file(), records);
    }
    return std::unexpected(explain_head_error(**client, id->bucket, marker, head.error()));
  }
  auto owner = head->metadata.find(kNameMeta);
  if (owner == head->metadata.end() || name_tag(owner->second) != id->name_tag) {
    spdlog::warn("DeleteVolume of {}: s3://{}/{} now belongs to {}; nothing deleted", volume_id,
                 id->bucket, marker,
                 owner == head->metadata.end() ? "no Nacre volume" : owner->second);
    return save_records(state_file(), records);
  }
  s3::ListRequest req;
  req.bucket = id->bucket;
  req.prefix = marker;
  size_t deleted = 0;
  for (;;) {
    auto page = (*client)->list_objects(req);
    if (!page) return std::unexpected(page.error());
    std::vector<std::string> keys;
    for (const auto& o : page->objects) {
      if (o.key != marker) keys.push_back(o.key);
    }
    if (!keys.empty()) {
      auto failed = (*client)->delete_objects(id->bucket, keys);
      if (!failed) return std::unexpected(failed.error());
      if (!failed->empty()) {
        return std::unexpected(
            Error{(*failed)[0].error.code,
                  "deleting " + (*failed)[0].key + ": " + (*failed)[0].error.message,
                  {},
                  {},
                  0});
      }
      deleted += keys.size();
    }
    if (page->next_continuation_token.empty()) break;
    req.continuation_token = page->next_continuation_token;
  }
  if (auto ok = (*client)->delete_object(id->bucket, marker); !ok) {
    return std::unexpected(ok.error());
  }
  spdlog::info("deleted volume {} and its {} objects", volume_id, deleted);
  return save_records(state_file(), records);
}

Result<std::string> Controller::validate(const std::string& volume_id,
                                         const std::vector<Capability>& caps,
                                         const StringMap& secrets) {
  if (volume_id.empty()) return invalid("volume_id is required");
  if (caps.empty()) return invalid("volume_capabilities are required");
  auto id = decode_volume_id(volume_id);
  if (!id) return fail(ErrorCode::kNotFound, "no volume " + volume_id + ": " + id.error().message);
  if (id->kind == VolumeId::Kind::kFresh) {
    auto client = client_for(*id, secrets);
    if (!client) return std::unexpected(client.error());
    auto head = (*client)->head_object(id->bucket, id->prefix + "/");
    if (!head) {
      if (head.error().code == ErrorCode::kNoSuchKey || head.error().code == ErrorCode::kNotFound ||
          head.error().code == ErrorCode::kNoSuchBucket) {
        return fail(ErrorCode::kNotFound, "no volume " + volume_id + ": its prefix is gone");
      }
      return std::unexpected(
          explain_head_error(**client, id->bucket, id->prefix + "/", head.error()));
    }
    if (auto owner = head->metadata.find(kNameMeta);
        owner == head->metadata.end() || name_tag(owner->second) != id->name_tag) {
      return fail(ErrorCode::kNotFound,
                  "no volume " + volume_id + ": its prefix has another owner");
    }
  }
  for (const auto& c : caps) {
    if (auto ok = check_capability(c); !ok) return ok.error().message;
  }
  return std::string();
}

}  // namespace nacre::csi
