// A seeded randomised test of the read-side namespace (lookup, readdir, getattr, open,
// read, release, forget) against a reference model, for each of the 8 import policies,
// with a metadata TTL of 0 (every operation revalidates against the bucket).
//
// The bucket is changed directly in the MemoryObjectClient between file-system
// operations: objects put, overwritten and deleted, "dir/" markers created and removed,
// and keys that must stay hidden ("a//b", "./y", "../v", a 256-byte name) or outside
// the mount.
//
// The model (class Model) keeps what the mount must show: per directory the entries it
// imported, per inode its key, type and version, and per open handle the version it
// pinned. Its rules are those of docs/SEMANTICS.md ("Namespace", "Consistency") and of
// the design notes in file_system.h:
//   - the first listing of a directory imports everything; after it, without NEW names
//     not yet shown never appear, without CHANGED a file keeps the ETag and size it
//     showed, without DELETED names gone from the bucket stay;
//   - a name that is both a file and a prefix is a directory; keys that cannot be names
//     are hidden;
//   - a key keeps its inode number while the mount runs, except that an inode never
//     changes type, and a version change while handles of the old version are open
//     moves the key to a new inode (the old one lives on, detached, for its handles);
//     inodes the kernel forgot and nothing uses are dropped;
//   - open() revalidates and pins the version it saw; every byte a handle returns
//     belongs to that version; when that version is gone from the bucket, reads of data
//     not cached fail with EIO (kPreconditionFailed), cached data is still served.
// Where SEMANTICS.md is silent the model follows the design notes in namespace.cc.
// Independently of the model, every answer is checked against invariants: no hidden or
// duplicate names, a name that is a prefix in the bucket is never listed as a file, an
// inode number never changes type or key, errors only of the expected codes.
//
// Two behaviours the model found wrong or undocumented are pinned by focused tests at the
// end (NamespacePolicy.*): without DELETED a lookup keeps a directory whose prefix is
// gone (it used to turn it into a file where readdir kept it), and a deleted object
// stays openable and serves only what is cached.
//
// The seed is printed; NACRE_TEST_SEED=<n> replays a run.
#include "fs/namespace_model.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <deque>
#include <iostream>
#include <map>
#include <random>
#include <set>

#include "cache/test_util.h"
#include "fs/file_system.h"
#include "fs/names.h"
#include "fs/read_result_bytes.h"
#include "s3/memory_object_client.h"

namespace nacre::fs {
namespace {

using namespace std::chrono_literals;

using namespace_model::kBlock;
using namespace_model::kPrefix;
using namespace_model::Model;
constexpr int kSteps = 1000;
const std::string kBucket = "b";

uint64_t test_seed() {
  static const uint64_t seed = [] {
    if (const char* s = std::getenv("NACRE_TEST_SEED"); s && *s) {
      return static_cast<uint64_t>(std::strtoull(s, nullptr, 0));
    }
    std::random_device rd;
    return (static_cast<uint64_t>(rd()) << 32) | rd();
  }();
  return seed;
}

std::string policy_name(const ImportPolicy& p) {
  std::string s;
  s += p.new_objects ? "NEW" : "noNEW";
  s += p.changed ? "_CHANGED" : "_noCHANGED";
  s += p.deleted ? "_DELETED" : "_noDELETED";
  return s;
}

const char* type_name(mode_t t) {
  return t == S_IFDIR ? "dir" : t == S_IFREG ? "file" : "other";
}

// ---------------------------------------------------------------------------------------
// The driver: random steps on the bucket and the file system, each checked.

struct Fixture {
  cache::testing::TempDir dir;
  s3::MemoryObjectClient store;
  Metrics metrics;
  std::unique_ptr<cache::BlockCache> cache;
  std::unique_ptr<FetchPool> pool;
  std::unique_ptr<FileSystem> fs;

  explicit Fixture(const ImportPolicy& policy) {
    store.create_bucket(kBucket);
    cache::CacheOptions co = cache::testing::options(dir.path(), kBlock);
    co.max_bytes = 1ull << 30;
    cache = cache::testing::open_cache(co);
    pool = std::make_unique<FetchPool>(2);
    pool->start();
    FsOptions o;
    o.bucket = kBucket;
    o.prefix = kPrefix;
    o.uid = 1000;
    o.gid = 1000;
    o.metadata_ttl = std::chrono::milliseconds(0);  // always revalidate
    o.import = policy;
    o.part_size = 2 * kBlock;
    // Reads fetch exactly the blocks they touch: what is cached is then known exactly.
    o.initial_window = 0;
    o.max_window = 0;
    o.hydrate_min_size = 1ull << 40;
    fs = std::make_unique<FileSystem>(store, *cache, *pool, metrics, o);
  }
  ~Fixture() {
    fs.reset();
    pool.reset();
  }
};

// Paths below the mount root: directories the steps look into, names they look up.
const std::vector<std::string> kDirs = {"", "d", "d/e", "a", "m", "bad"};
const std::vector<std::string> kFileKeys = {"a",   "b",   "c",     "e",   "d/x",
                                            "d/y", "d/e", "d/e/z", "a/q", "m/k"};
const std::vector<std::string> kMarkers = {"d/", "d/e/", "m/", "a/", ""};
// Keys that can never be names: an empty, "." or ".." component, a 256-byte name; and
// keys outside the prefix.
const std::vector<std::string> kOddKeys = {
    "p/bad//x", "p/./y", "p/d/../v", "p/" + std::string(256, 'n'), "q/outside", "pp"};
const std::vector<std::string> kNames = {"a", "b", "c", "d", "e",   "m",   "x",
                                         "y", "z", "q", "k", "bad", "nope"};
const std::vector<std::string> kBadNames = {"", ".", "..", std::string(256, 'n')};

ImportPolicy policy_of(int bits) {
  return {(bits & 4) != 0, (bits & 2) != 0, (bits & 1) != 0};
}

class NamespaceModelTest : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    policy_ = policy_of(GetParam());
    seed_ = test_seed() + static_cast<uint64_t>(GetParam());
    std::cout << "NACRE_TEST_SEED=" << test_seed() << " (policy " << policy_name(policy_)
              << ", run seed " << seed_ << ")" << std::endl;
    rng_.seed(seed_);
    fx_ = std::make_unique<Fixture>(policy_);
    model_ = std::make_unique<Model>(policy_);
  }
  void TearDown() override {
    for (auto& [fh, h] : handles_) fs().release(fh);
    handles_.clear();
    fx_.reset();
  }

  FileSystem& fs() { return *fx_->fs; }
  Model& model() { return *model_; }
  size_t pick(size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng_); }
  bool chance(int percent) { return static_cast<int>(pick(100)) < percent; }
  template <typename T>
  const T& pick_of(const std::vector<T>& v) {
    return v[pick(v.size())];
  }

  void note(const std::string& what) {
    log_.push_back(what);
    if (log_.size() > 40) log_.pop_front();
  }
  std::string recent() const {
    std::string s = "recent steps:\n";
    for (const auto& l : log_) s += "  " + l + "\n";
    return s;
  }

  // --- the bucket ---

  std::string new_content() {
    ++versions_;
    size_t size;
    switch (pick(5)) {
      case 0:
        return "";
      case 1:
        size = 8 + pick(100);
        break;
      case 2:
        size = kBlock;
        break;
      default:
        size = kBlock + 1 + pick(3 * kBlock);
        break;
    }
    std::string s(size, '\0');
    for (auto& c : s) c = static_cast<char>(rng_());
    // Every version differs (so do their ETags): a counter in the first 8 bytes.
    for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(versions_ >> (8 * i));
    return s;
  }

  void put(const std::string& key, std::string data) {
    auto etag = fx_->store.put_object({kBucket, key, s3::Body::from_memory(data), {}, ""});
    ASSERT_TRUE(etag) << etag.error().describe();
    model().content_by_etag[*etag] = data;
    model().bucket[key] = {*etag, std::move(data)};
    note("bucket: put " + key + " (" + std::to_string(model().bucket[key].data.size()) +
         " bytes, ETag " + *etag + ")");
  }
  void remove(const std::string& key) {
    ASSERT_TRUE(fx_->store.delete_object(kBucket, key));
    model().bucket.erase(key);
    note("bucket: delete " + key);
  }

  void bucket_step() {
    const size_t kind = pick(10);
    if (kind < 6) {
      const std::string key = kPrefix + pick_of(kFileKeys);
      if (model().bucket.contains(key) && chance(40)) {
        remove(key);
      } else {
        put(key, new_content());
      }
    } else if (kind < 9) {
      const std::string key = kPrefix + pick_of(kMarkers);
      if (model().bucket.contains(key)) {
        remove(key);
      } else {
        put(key, "");
      }
    } else {
      const std::string& key = pick_of(kOddKeys);
      if (model().bucket.contains(key)) {
        remove(key);
      } else {
        put(key, new_content());
      }
    }
  }

  // --- checks ---

  static std::string describe(const Error& e) { return e.describe(); }

  void expect_outcome(const Model::Outcome& want, bool ok, const Error* error,
                      const std::string& op) {
    const std::string verb = op.substr(0, op.find('('));
    stats_[verb + (ok ? " ok" : " " + std::string(to_string(error->code)))]++;
    if (want.ok) {
      ASSERT_TRUE(ok) << op << ": the model expects success, got " << describe(*error) << "\n"
                      << recent();
    } else {
      ASSERT_FALSE(ok) << op << ": the model expects an error, got success\n" << recent();
      ASSERT_TRUE(want.codes.contains(error->code))
          << op << ": unexpected error " << describe(*error) << "\n"
          << recent();
    }
  }

  // The number the file system gave a model inode: stable, and never another inode's.
  void observe(int id, Ino ino, mode_t type, const std::string& op) {
    Model::Inode& n = model().at(id);
    ASSERT_EQ(type, n.type) << op << ": " << n.key << " should be a " << type_name(n.type) << "\n"
                            << recent();
    // Invariant, independent of the model: an inode number keeps its type and key.
    auto [it, inserted] = ino_identity_.try_emplace(ino, type, n.key);
    ASSERT_EQ(it->second, std::make_pair(type, n.key))
        << op << ": inode " << ino << " was " << type_name(it->second.first) << " "
        << it->second.second << ", now " << type_name(type) << " " << n.key << "\n"
        << recent();
    if (n.actual == 0) {
      ASSERT_FALSE(owner_.contains(ino)) << op << ": " << n.key << " should have a new inode, got "
                                         << ino << " which was model inode " << owner_[ino] << "\n"
                                         << recent();
      n.actual = ino;
      owner_[ino] = id;
      if (!keys_seen_.insert(n.key).second) stats_["new inode for a key seen before"]++;
    } else {
      ASSERT_EQ(ino, n.actual) << op << ": the inode number of " << n.key << " changed\n"
                               << recent();
    }
  }

  void check_attr(int id, const Attr& a, const std::string& op) {
    Model::Inode& n = model().at(id);
    ASSERT_NO_FATAL_FAILURE(observe(id, a.ino, a.mode & S_IFMT, op));
    if (n.type == S_IFREG) {
      ASSERT_EQ(a.size, n.size) << op << ": size of " << n.key << "\n" << recent();
      auto etag = fs().getxattr(a.ino, "user.nacre.etag");
      ASSERT_TRUE(etag) << describe(etag.error());
      ASSERT_EQ(*etag, n.etag) << op << ": the version " << n.key << " shows\n" << recent();
    }
  }

  // --- file-system steps ---

  // lookup(dir, name) on both sides; returns the model inode, or -1.
  int lookup(int dir_id, const std::string& name) {
    const Ino dir = model().at(dir_id).actual;
    std::string op = "lookup(" + model().at(dir_id).key + ", \"" +
                     (name.size() > 20 ? name.substr(0, 20) + "..." : name) + "\")";
    note(op);
    model().kept_deleted_dir = false;
    auto [want, id] = model().lookup(dir_id, name);
    auto got = fs().lookup(dir, name);
    if (model().kept_deleted_dir) ++kept_dirs_;
    EXPECT_NO_FATAL_FAILURE(
        expect_outcome(want, got.has_value(), got ? nullptr : &got.error(), op));
    if (::testing::Test::HasFatalFailure() || !got) return -1;
    EXPECT_NO_FATAL_FAILURE(check_attr(id, *got, op));
    if (::testing::Test::HasFatalFailure()) return -1;
    remembered_[got->ino] = id;
    return id;
  }

  // The model inode of a directory path, by lookups from the root; -1 when a component
  // is absent or not a directory.
  int resolve_dir(const std::string& path) {
    int id = Model::kRoot;
    size_t pos = 0;
    while (pos < path.size()) {
      size_t slash = path.find('/', pos);
      std::string part = path.substr(pos, slash == std::string::npos ? slash : slash - pos);
      id = lookup(id, part);
      if (id < 0 || model().at(id).type != S_IFDIR) return -1;
      if (slash == std::string::npos) break;
      pos = slash + 1;
    }
    return id;
  }

  void readdir_step() {
    const std::string& path = pick_of(kDirs);
    int dir_id = resolve_dir(path);
    if (dir_id < 0 || ::testing::Test::HasFatalFailure()) return;
    const std::string op = "readdir(" + model().at(dir_id).key + ")";
    note(op);
    model().readdir(dir_id);
    auto got = fs().readdir(model().at(dir_id).actual);
    ASSERT_TRUE(got) << op << ": " << describe(got.error()) << "\n" << recent();
    stats_["readdir ok"]++;
    // Invariants, whatever the policy.
    std::set<std::string> names;
    const std::string prefix = model().at(dir_id).key;
    const Model::View bucket_view = model().view(prefix);
    for (const auto& e : *got) {
      ASSERT_TRUE(is_valid_name(e.name)) << op << ": shows a hidden key \"" << e.name << "\"";
      ASSERT_TRUE(names.insert(e.name).second) << op << ": \"" << e.name << "\" twice";
      if (bucket_view.dirs.contains(e.name)) {
        ASSERT_EQ(e.type, static_cast<mode_t>(S_IFDIR))
            << op << ": \"" << e.name << "\" is a prefix in the bucket but shows as a file\n"
            << recent();
      }
    }
    // The model.
    const auto& children = model().at(dir_id).children;
    std::set<std::string> want;
    for (const auto& [name, id] : children) want.insert(name);
    ASSERT_EQ(names, want) << op << "\n" << recent();
    for (const auto& e : *got) {
      ASSERT_NO_FATAL_FAILURE(observe(children.at(e.name), e.ino, e.type, op));
    }
  }

  void lookup_step() {
    int dir_id = resolve_dir(pick_of(kDirs));
    if (dir_id < 0 || ::testing::Test::HasFatalFailure()) return;
    lookup(dir_id, chance(10) ? pick_of(kBadNames) : pick_of(kNames));
  }

  // A file: by path (a fresh lookup), or an inode looked up earlier.
  int some_file() {
    if (!remembered_.empty() && chance(25)) {
      auto it = remembered_.begin();
      std::advance(it, pick(remembered_.size()));
      if (model().find(it->second) && model().at(it->second).type == S_IFREG) return it->second;
    }
    const std::string& path = pick_of(kFileKeys);
    const size_t slash = path.rfind('/');
    int dir_id = resolve_dir(slash == std::string::npos ? "" : path.substr(0, slash));
    if (dir_id < 0 || ::testing::Test::HasFatalFailure()) return -1;
    return lookup(dir_id, slash == std::string::npos ? path : path.substr(slash + 1));
  }

  void getattr_step() {
    if (remembered_.empty()) return;
    auto it = remembered_.begin();
    std::advance(it, pick(remembered_.size()));
    const Ino ino = it->first;
    const int id = it->second;
    const std::string op = "getattr(" + std::to_string(ino) + ")";
    note(op);
    auto want = model().getattr(id);
    auto got = fs().getattr(ino);
    ASSERT_NO_FATAL_FAILURE(
        expect_outcome(want, got.has_value(), got ? nullptr : &got.error(), op));
    if (got) {
      ASSERT_NO_FATAL_FAILURE(check_attr(id, *got, op));
    }
  }

  // open(ino) on both sides; returns the file handle, or 0.
  uint64_t open(int id) {
    const Ino ino = model().at(id).actual;
    const std::string op = "open(" + std::to_string(ino) + " " + model().at(id).key + ")";
    note(op);
    Model::Handle h;
    bool keep_cache = false;
    auto want = model().open(id, &h, &keep_cache);
    auto got = fs().open(ino, O_RDONLY);
    EXPECT_NO_FATAL_FAILURE(
        expect_outcome(want, got.has_value(), got ? nullptr : &got.error(), op));
    if (::testing::Test::HasFatalFailure() || !got) return 0;
    EXPECT_EQ(got->keep_cache, keep_cache) << op << ": keep_cache\n" << recent();
    if (keep_cache) stats_["open with keep_cache"]++;
    handles_[got->fh] = h;
    return got->fh;
  }

  void read(uint64_t fh, uint64_t offset, size_t size) {
    const Model::Handle& h = handles_.at(fh);
    const std::string op = "read(fh " + std::to_string(fh) + " " + h.key + " ETag " + h.etag +
                           ", " + std::to_string(offset) + ", " + std::to_string(size) + ")";
    note(op);
    std::string expected;
    auto want = model().read(h, offset, size, &expected);
    auto got = fs().read(fh, offset, size);
    ASSERT_NO_FATAL_FAILURE(
        expect_outcome(want, got.has_value(), got ? nullptr : &got.error(), op));
    if (!got) return;
    if (auto cur = model().bucket.find(h.key);
        got->length > 0 && (cur == model().bucket.end() || cur->second.etag != h.etag)) {
      stats_["read of a gone version, from the cache"]++;
    }
    std::string bytes = read_result_bytes(*got);
    if (got->length > 0) {
      ASSERT_EQ(got->offset, offset);
    }
    ASSERT_EQ(bytes.size(), expected.size()) << op << "\n" << recent();
    ASSERT_TRUE(bytes == expected) << op << ": bytes that are not the pinned version's\n"
                                   << recent();
  }

  void release(uint64_t fh) {
    note("release(fh " + std::to_string(fh) + ")");
    model().release(handles_.at(fh));
    fs().release(fh);
    handles_.erase(fh);
  }

  void read_whole_file_step() {
    int id = some_file();
    if (id < 0 || ::testing::Test::HasFatalFailure() || model().at(id).type != S_IFREG) return;
    uint64_t fh = open(id);
    if (fh == 0 || ::testing::Test::HasFatalFailure()) return;
    const size_t chunk = 1000 + pick(3 * kBlock);
    const uint64_t size = handles_.at(fh).data.size();
    for (uint64_t off = 0; off <= size; off += chunk) {
      read(fh, off, chunk);
      if (::testing::Test::HasFatalFailure()) return;
    }
    release(fh);
  }

  void handle_step() {
    const size_t kind = pick(10);
    if (kind < 3 && handles_.size() < 3) {
      int id = some_file();
      if (id >= 0 && !::testing::Test::HasFatalFailure() && model().at(id).type == S_IFREG) {
        (void)open(id);
      }
    } else if (kind < 9 && !handles_.empty()) {
      auto it = handles_.begin();
      std::advance(it, pick(handles_.size()));
      const uint64_t size = it->second.data.size();
      const uint64_t offset = pick(size + 2);
      read(it->first, offset, 1 + pick(2 * kBlock));
    } else if (!handles_.empty()) {
      auto it = handles_.begin();
      std::advance(it, pick(handles_.size()));
      release(it->first);
    }
  }

  void forget_step() {
    if (remembered_.empty()) return;
    auto it = remembered_.begin();
    std::advance(it, pick(remembered_.size()));
    const Ino ino = it->first;
    const int id = it->second;
    remembered_.erase(it);
    Model::Inode* n = model().find(id);
    if (!n) return;
    note("forget(" + std::to_string(ino) + " " + n->key + ")");
    const uint64_t lookups = n->lookups;
    model().forget(id, lookups);
    fs().forget(ino, lookups);
    // Forgotten inodes are not used again (the kernel no longer knows them); one that was
    // dropped answers ESTALE.
    if (!model().find(id)) {
      auto st = fs().getattr(ino);
      ASSERT_FALSE(st) << "forgotten, unused inode " << ino << " still answers getattr\n"
                       << recent();
      ASSERT_EQ(st.error().code, ErrorCode::kStale) << describe(st.error());
    }
  }

  void run() {
    SCOPED_TRACE("NACRE_TEST_SEED=" + std::to_string(test_seed()) + " policy " +
                 policy_name(policy_));
    for (int step = 0; step < kSteps; ++step) {
      note("-- step " + std::to_string(step));
      const size_t kind = pick(100);
      if (kind < 40) {
        bucket_step();
      } else if (kind < 55) {
        readdir_step();
      } else if (kind < 70) {
        lookup_step();
      } else if (kind < 77) {
        getattr_step();
      } else if (kind < 84) {
        read_whole_file_step();
      } else if (kind < 97) {
        handle_step();
      } else {
        forget_step();
      }
      if (::testing::Test::HasFailure()) {
        ADD_FAILURE() << "stopped at step " << step << " of policy " << policy_name(policy_);
        return;
      }
    }
    for (const auto& [what, n] : stats_) std::cout << "  " << what << ": " << n << "\n";
    std::cout << "  " << kSteps << " steps; " << kept_dirs_
              << " lookups kept a directory whose prefix is gone" << std::endl;
  }

  ImportPolicy policy_;
  uint64_t seed_ = 0;
  std::mt19937_64 rng_;
  std::unique_ptr<Fixture> fx_;
  std::unique_ptr<Model> model_;
  uint64_t versions_ = 0;
  std::map<uint64_t, Model::Handle> handles_;  // fh → pinned version
  std::map<Ino, int> remembered_;              // inodes looked up (kernel references)
  std::map<Ino, std::pair<mode_t, std::string>> ino_identity_;
  std::map<Ino, int> owner_;  // inode number → model inode
  std::deque<std::string> log_;
  std::map<std::string, int> stats_;
  std::set<std::string> keys_seen_;  // what the run exercised, printed at the end
  int kept_dirs_ = 0;
};

// --- behaviours the random test found, pinned one by one ----------------------------------

std::set<std::pair<std::string, mode_t>> listing(FileSystem& fs, Ino dir) {
  std::set<std::pair<std::string, mode_t>> out;
  auto entries = fs.readdir(dir);
  EXPECT_TRUE(entries) << entries.error().describe();
  if (entries) {
    for (const auto& e : *entries) out.emplace(e.name, e.type);
  }
  return out;
}

// Without DELETED, readdir keeps a listed directory whose prefix is gone even when an
// object of the same name (hidden until then: "the directory wins") remains
// (list_directory: "if (!options_.import.deleted && !first) continue;"). A lookup of
// the name must answer the same; revalidate() instead turns it into a file, and the
// next readdir shows a file too: the answer depends on which call came first.
TEST(NamespacePolicy, WithoutDeletedLookupKeepsADirectoryWhosePrefixIsGone) {
  Fixture fx({/*new_objects=*/true, /*changed=*/true, /*deleted=*/false});
  ASSERT_TRUE(fx.store.put_object({kBucket, "p/d/e", s3::Body::from_memory("file"), {}, ""}));
  ASSERT_TRUE(fx.store.put_object({kBucket, "p/d/e/z", s3::Body::from_memory("z"), {}, ""}));
  FileSystem& fs = *fx.fs;
  auto d = fs.lookup(kRootIno, "d");
  ASSERT_TRUE(d);
  EXPECT_EQ(listing(fs, d->ino), (std::set<std::pair<std::string, mode_t>>{{"e", S_IFDIR}}));

  ASSERT_TRUE(fx.store.delete_object(kBucket, "p/d/e/z"));
  EXPECT_EQ(listing(fs, d->ino), (std::set<std::pair<std::string, mode_t>>{{"e", S_IFDIR}}))
      << "readdir: without DELETED the deleted directory stays";
  auto e = fs.lookup(d->ino, "e");
  ASSERT_TRUE(e) << e.error().describe();
  EXPECT_EQ(e->mode & S_IFMT, static_cast<mode_t>(S_IFDIR))
      << "lookup turned the directory readdir keeps into a file";
  EXPECT_EQ(listing(fs, d->ino), (std::set<std::pair<std::string, mode_t>>{{"e", S_IFDIR}}))
      << "readdir after the lookup";
}

// SEMANTICS.md, Consistency: "without DELETED, deleted objects stay listed (opening
// them fails)". The file system lets the open succeed; only reads of data not cached
// fail (EIO), and cached data of the deleted object is still served.
// docs/SEMANTICS.md: without DELETED a deleted object stays listed and opens on the
// version last known; what is cached of it is served, the rest fails with EIO (the
// version is gone), as FSx serves what it had loaded.
TEST(NamespacePolicy, WithoutDeletedADeletedObjectServesOnlyWhatIsCached) {
  Fixture fx({/*new_objects=*/true, /*changed=*/true, /*deleted=*/false});
  ASSERT_TRUE(fx.store.put_object({kBucket, "p/f", s3::Body::from_memory("data"), {}, ""}));
  ASSERT_TRUE(fx.store.put_object({kBucket, "p/g", s3::Body::from_memory("gone"), {}, ""}));
  FileSystem& fs = *fx.fs;
  EXPECT_EQ(listing(fs, kRootIno),
            (std::set<std::pair<std::string, mode_t>>{{"f", S_IFREG}, {"g", S_IFREG}}));
  auto f = fs.lookup(kRootIno, "f");
  ASSERT_TRUE(f) << f.error().describe();
  {  // f is read (and so cached) before the deletion; g is not
    auto h = fs.open(f->ino, O_RDONLY);
    ASSERT_TRUE(h);
    ASSERT_TRUE(fs.read(h->fh, 0, 4));
    fs.release(h->fh);
  }
  ASSERT_TRUE(fx.store.delete_object(kBucket, "p/f"));
  ASSERT_TRUE(fx.store.delete_object(kBucket, "p/g"));
  EXPECT_EQ(listing(fs, kRootIno),
            (std::set<std::pair<std::string, mode_t>>{{"f", S_IFREG}, {"g", S_IFREG}}))
      << "without DELETED the deleted objects stay listed";
  auto hf = fs.open(fs.lookup(kRootIno, "f")->ino, O_RDONLY);
  ASSERT_TRUE(hf) << hf.error().describe();
  auto cached = fs.read(hf->fh, 0, 4);
  ASSERT_TRUE(cached) << cached.error().describe();
  std::string bytes(4, '\0');
  ASSERT_EQ(::pread(cached->fd, bytes.data(), 4, 0), 4);
  EXPECT_EQ(bytes, "data");
  fs.release(hf->fh);
  auto hg = fs.open(fs.lookup(kRootIno, "g")->ino, O_RDONLY);
  ASSERT_TRUE(hg) << hg.error().describe();
  auto uncached = fs.read(hg->fh, 0, 4);
  ASSERT_FALSE(uncached) << "bytes of a deleted, never cached object";
  EXPECT_EQ(uncached.error().code, ErrorCode::kPreconditionFailed);
  fs.release(hg->fh);
}

TEST_P(NamespaceModelTest, RandomStepsMatchTheModel) {
  run();
}

INSTANTIATE_TEST_SUITE_P(ImportPolicies, NamespaceModelTest, ::testing::Range(0, 8),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return policy_name(policy_of(info.param));
                         });

}  // namespace
}  // namespace nacre::fs
