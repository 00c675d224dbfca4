#include "cli/s3_commands.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <memory>

#include "cli/s3_options.h"
#include "cli/s3_url.h"
#include "s3/transfer.h"

namespace nacre::cli {

namespace {

int report(const Error& e) {
  std::fprintf(stderr, "nacre: error: %s\n", e.describe().c_str());
  return 1;
}

std::string format_time(std::chrono::system_clock::time_point t) {
  std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  localtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

std::string basename_of(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  size_t slash = p.rfind('/');
  return slash == std::string::npos ? p : p.substr(slash + 1);
}

// The object or prefix a command names, and a client to reach it.
struct Target {
  S3Url url;
  std::unique_ptr<s3::S3Client> client;
};

Result<Target> connect(const S3Options& s3, const std::string& text) {
  auto url = parse_s3_url(text);
  if (!url) return std::unexpected(url.error());
  auto client = s3.make_client();
  if (!client) return std::unexpected(client.error());
  return Target{std::move(*url), std::move(*client)};
}

struct LsCommand {
  S3Options s3;
  std::string url;
  bool recursive = false;

  int run() {
    auto t = connect(s3, url);
    if (!t) return report(t.error());
    const S3Url* target = &t->url;
    s3::ListRequest req{target->bucket, target->key, recursive ? "" : "/", "", "", 1000};
    do {
      auto page = t->client->list_objects(req);
      if (!page) return report(page.error());
      for (const auto& p : page->common_prefixes) {
        std::printf("%30s PRE %s\n", "", p.substr(target->key.size()).c_str());
      }
      for (const auto& o : page->objects) {
        std::string name = recursive ? o.key : o.key.substr(target->key.size());
        std::printf("%s %12llu %s\n", format_time(o.last_modified).c_str(),
                    static_cast<unsigned long long>(o.size), name.c_str());
      }
      req.continuation_token = page->next_continuation_token;
    } while (!req.continuation_token.empty());
    return 0;
  }
};

struct CpCommand {
  S3Options s3;
  std::string source;
  std::string destination;
  double part_size_mib = 8;
  int concurrency = 8;

  s3::TransferOptions transfer() const {
    s3::TransferOptions t;
    t.part_size = static_cast<uint64_t>(part_size_mib * s3::kMiB);
    t.concurrency = concurrency;
    return t;
  }

  int run() {
    bool src_s3 = is_s3_url(source), dst_s3 = is_s3_url(destination);
    if (!src_s3 && !dst_s3) {
      return report(Error{ErrorCode::kInvalidArgument,
                          "one of source and destination must be an s3:// URL",
                          {},
                          {},
                          0});
    }
    if (static_cast<uint64_t>(part_size_mib * s3::kMiB) < s3::kMinPartSize) {
      return report(
          Error{ErrorCode::kInvalidArgument, "--part-size must be at least 5 MiB", {}, {}, 0});
    }
    auto client = s3.make_client();
    if (!client) return report(client.error());
    if (src_s3 && dst_s3) return copy(**client);
    if (src_s3) return download(**client);
    return upload(**client);
  }

  int download(s3::ObjectClient& client) {
    auto src = parse_s3_url(source);
    if (!src) return report(src.error());
    if (src->key.empty() || src->key.ends_with('/')) {
      return report(Error{ErrorCode::kInvalidArgument,
                          "'" + source + "' names a prefix, not an object",
                          {},
                          {},
                          0});
    }
    std::string path = destination;
    int fd = STDOUT_FILENO;
    bool to_stdout = path == "-";
    std::string partial;
    if (!to_stdout) {
      if (std::filesystem::is_directory(path)) path += "/" + basename_of(src->key);
      struct stat st {};
      bool regular = stat(path.c_str(), &st) != 0 || S_ISREG(st.st_mode);
      // A regular file is written beside its final name and renamed when
      // complete, so a failed download never leaves a truncated file behind.
      partial = regular ? path + ".nacre-partial" : "";
      if (regular) {
        // Never through a symlink planted at the partial name (see
        // create_partial_file): the rename below is what replaces `path`.
        auto created = s3::create_partial_file(partial);
        if (!created) return report(created.error());
        fd = *created;
      } else {
        // A device or a fifo named on purpose, e.g. /dev/null.
        fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
        if (fd < 0) return report(fail_errno("cannot open " + path, errno).error());
      }
    }
    auto info = s3::download_to_fd(client, src->bucket, src->key, fd, transfer());
    if (!to_stdout) close(fd);
    if (!info) {
      if (!partial.empty()) unlink(partial.c_str());
      return report(info.error());
    }
    if (!partial.empty() && rename(partial.c_str(), path.c_str()) != 0) {
      int err = errno;
      unlink(partial.c_str());
      return report(fail_errno("cannot rename to " + path, err).error());
    }
    return 0;
  }

  int upload(s3::ObjectClient& client) {
    auto dst = parse_s3_url(destination);
    if (!dst) return report(dst.error());
    if (dst->key.empty() || dst->key.ends_with('/')) dst->key += basename_of(source);
    int fd = open(source.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return report(fail_errno("cannot open " + source, errno).error());
    struct stat st {};
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      close(fd);
      return report(
          Error{ErrorCode::kInvalidArgument, source + " is not a regular file", {}, {}, 0});
    }
    s3::PutObjectRequest req{dst->bucket, dst->key, s3::Body::empty(), {}, ""};
    auto etag = s3::upload_from_fd(client, fd, static_cast<uint64_t>(st.st_size), req, transfer());
    close(fd);
    if (!etag) return report(etag.error());
    return 0;
  }

  int copy(s3::ObjectClient& client) {
    auto src = parse_s3_url(source);
    auto dst = parse_s3_url(destination);
    if (!src) return report(src.error());
    if (!dst) return report(dst.error());
    if (dst->key.empty() || dst->key.ends_with('/')) dst->key += basename_of(src->key);
    auto info = client.head_object(src->bucket, src->key);
    if (!info) return report(info.error());
    s3::CopyObjectRequest req{src->bucket, src->key, info->etag, dst->bucket, dst->key, {}, ""};
    auto etag = s3::copy_any_size(client, req, info->size, transfer());
    if (!etag) return report(etag.error());
    return 0;
  }
};

struct RmCommand {
  S3Options s3;
  std::string url;
  int run() {
    auto t = connect(s3, url);
    if (!t) return report(t.error());
    auto st = t->client->delete_object(t->url.bucket, t->url.key);
    return st ? 0 : report(st.error());
  }
};

struct StatCommand {
  S3Options s3;
  std::string url;
  int run() {
    auto t = connect(s3, url);
    if (!t) return report(t.error());
    auto info = t->client->head_object(t->url.bucket, t->url.key);
    if (!info) return report(info.error());
    std::printf("key: %s\nsize: %llu\netag: %s\nlast-modified: %s\ncontent-type: %s\n",
                info->key.c_str(), static_cast<unsigned long long>(info->size), info->etag.c_str(),
                format_time(info->last_modified).c_str(), info->content_type.c_str());
    for (const auto& [k, v] : info->metadata)
      std::printf("x-amz-meta-%s: %s\n", k.c_str(), v.c_str());
    return 0;
  }
};

}  // namespace

void add_s3_commands(CLI::App& app, int& exit_code) {
  auto ls = std::make_shared<LsCommand>();
  CLI::App* ls_cmd =
      app.add_subcommand("ls", "List objects and common prefixes under an S3 prefix");
  ls_cmd->add_option("url", ls->url, "s3://bucket[/prefix]")->required();
  ls_cmd->add_flag("-r,--recursive", ls->recursive, "list every key under the prefix");
  ls->s3.add_to(*ls_cmd);
  ls_cmd->callback([ls, &exit_code] { exit_code = ls->run(); });

  auto cp = std::make_shared<CpCommand>();
  CLI::App* cp_cmd = app.add_subcommand(
      "cp", "Copy a file to S3, an object to a file ('-' for stdout), or an object to an object");
  cp_cmd->add_option("source", cp->source, "local file or s3://bucket/key")->required();
  cp_cmd
      ->add_option("destination", cp->destination,
                   "local file, directory or '-', or s3://bucket/key (a trailing / keeps the "
                   "source name)")
      ->required();
  cp_cmd
      ->add_option("--part-size", cp->part_size_mib,
                   "MiB per ranged GET and multipart part; also the multipart threshold")
      ->check(CLI::Range(5.0, 5120.0));
  cp_cmd->add_option("--concurrency", cp->concurrency, "requests in flight")
      ->check(CLI::Range(1, 256));
  cp->s3.add_to(*cp_cmd);
  cp_cmd->callback([cp, &exit_code] { exit_code = cp->run(); });

  auto rm = std::make_shared<RmCommand>();
  CLI::App* rm_cmd = app.add_subcommand("rm", "Delete an object");
  rm_cmd->add_option("url", rm->url, "s3://bucket/key")->required();
  rm->s3.add_to(*rm_cmd);
  rm_cmd->callback([rm, &exit_code] { exit_code = rm->run(); });

  auto stat_cmd_state = std::make_shared<StatCommand>();
  CLI::App* stat_cmd =
      app.add_subcommand("stat", "Show an object's size, ETag and metadata (HEAD)");
  stat_cmd->add_option("url", stat_cmd_state->url, "s3://bucket/key")->required();
  stat_cmd_state->s3.add_to(*stat_cmd);
  stat_cmd->callback([stat_cmd_state, &exit_code] { exit_code = stat_cmd_state->run(); });
}

}  // namespace nacre::cli
