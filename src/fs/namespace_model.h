// The reference model of namespace_model_test.cc: what a mount must show after
// a sequence of bucket changes and file-system operations, under one import
// policy and a metadata TTL of 0 (see that file for the rules it encodes).
// Test code only.
#pragma once

#include <sys/stat.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "common/error.h"
#include "fs/file_system.h"
#include "fs/names.h"

namespace nacre::fs::namespace_model {

inline constexpr uint32_t kBlock = 4096;  // the cache's block size in the test
inline const std::string kPrefix = "p/";  // the mount's prefix

// ---------------------------------------------------------------------------------------
// The reference model.

class Model {
 public:
  struct Object {
    std::string etag;
    std::string data;
  };
  struct Inode {
    Ino actual = 0;  // the number the file system gave it, once seen
    std::string key;
    mode_t type = S_IFREG;
    std::string etag;
    uint64_t size = 0;
    uint64_t lookups = 0;
    int open_handles = 0;
    std::string last_open_etag;
    int parent = -1;
    std::string name;
    // Directories.
    std::map<std::string, int> children;
    bool imported = false;
  };
  struct Handle {
    int inode = -1;
    std::string key;
    std::string etag;
    std::string data;  // the pinned version's bytes
  };
  // What an operation must answer: success, or an error of one of these codes.
  struct Outcome {
    bool ok = true;
    std::set<ErrorCode> codes;
    static Outcome fails(std::initializer_list<ErrorCode> c) { return {false, c}; }
  };

  static constexpr int kRoot = 0;

  explicit Model(ImportPolicy policy) : policy_(policy) {
    Inode root;
    root.actual = kRootIno;
    root.key = kPrefix;
    root.type = S_IFDIR;
    root.parent = kRoot;
    inodes_[kRoot] = root;
    ino_by_key_[kPrefix] = kRoot;
  }

  const ImportPolicy& policy() const { return policy_; }

  // Set when a revalidation kept a directory whose prefix is gone (without DELETED)
  // although an object of its name exists: lookup and readdir both keep it (a
  // regression: lookup used to turn it into a file, see
  // WithoutDeletedLookupKeepsADirectoryWhosePrefixIsGone). Counted by the test.
  bool kept_deleted_dir = false;

  // --- the bucket ---
  std::map<std::string, Object> bucket;  // mirror of the store: key → current version
  std::map<std::string, std::string> content_by_etag;

  // --- inodes ---
  Inode* find(int id) {
    auto it = inodes_.find(id);
    return it == inodes_.end() ? nullptr : &it->second;
  }
  Inode& at(int id) { return inodes_.at(id); }
  const std::map<int, Inode>& inodes() const { return inodes_; }

  bool attached(int id) {
    if (id == kRoot) return true;
    Inode* n = find(id);
    if (!n) return false;
    Inode* parent = find(n->parent);
    if (!parent) return false;
    auto it = parent->children.find(n->name);
    return it != parent->children.end() && it->second == id;
  }

  // --- operations, each mirroring its file-system counterpart ---

  // lookup(dir, name): the inode the name resolves to, or the expected error.
  std::pair<Outcome, int> lookup(int dir_id, const std::string& name) {
    if (!is_valid_name(name)) return {Outcome::fails({ErrorCode::kNotFound}), -1};
    Inode& dir = at(dir_id);
    if (dir.type != S_IFDIR) return {Outcome::fails({ErrorCode::kNotADirectory}), -1};
    if (!dir.children.contains(name) && dir.imported && !policy_.new_objects) {
      return {Outcome::fails({ErrorCode::kNotFound}), -1};  // NEW off: never imported
    }
    revalidate(dir_id, name);  // TTL 0: nothing is fresh
    Inode& d = at(dir_id);
    auto it = d.children.find(name);
    if (it == d.children.end()) return {Outcome::fails({ErrorCode::kNotFound}), -1};
    at(it->second).lookups++;
    return {Outcome{}, it->second};
  }

  // getattr(ino): the inode whose attributes are answered (the same one), or an error.
  Outcome getattr(int id) {
    Inode* n = find(id);
    if (!n) return Outcome::fails({ErrorCode::kStale});
    // Directories and detached inodes (deleted or superseded while open) answer with
    // what they last knew.
    if (n->type == S_IFDIR || !attached(id)) return {};
    int parent = n->parent;
    std::string name = n->name;
    revalidate(parent, name);
    if (!find(id)) return Outcome::fails({ErrorCode::kStale});
    return {};
  }

  // readdir(dir): lists the bucket and applies the import policy.
  void readdir(int dir_id) { list_directory(dir_id); }

  // open(ino): the handle's version, or the expected error.
  Outcome open(int id, Handle* handle, bool* keep_cache) {
    Inode* n = find(id);
    if (!n) return Outcome::fails({ErrorCode::kStale});
    if (n->type == S_IFDIR) return Outcome::fails({ErrorCode::kIsADirectory});
    if (!attached(id)) return Outcome::fails({ErrorCode::kStale});
    const int parent = n->parent;
    const std::string name = n->name;
    revalidate(parent, name);  // close-to-open: always, with TTL 0
    Inode* m = find(id);
    Inode* dir = find(parent);
    if (!m || !dir) return Outcome::fails({ErrorCode::kStale});
    auto it = dir->children.find(name);
    if (it == dir->children.end()) return Outcome::fails({ErrorCode::kNotFound});
    if (it->second != id) return Outcome::fails({ErrorCode::kStale});
    *keep_cache = m->last_open_etag == m->etag;
    m->last_open_etag = m->etag;
    m->open_handles++;
    handle->inode = id;
    handle->key = m->key;
    handle->etag = m->etag;
    handle->data = content_by_etag.at(m->etag);
    return {};
  }

  // read(fh, offset, size): the bytes every read must return, or the error.
  Outcome read(const Handle& h, uint64_t offset, size_t size, std::string* expected) {
    const uint64_t file_size = h.data.size();
    expected->clear();
    if (offset >= file_size || size == 0) return {};
    const uint64_t length = std::min<uint64_t>(size, file_size - offset);
    *expected = h.data.substr(offset, length);
    const uint64_t first = offset / kBlock, last = (offset + length - 1) / kBlock;
    auto current = bucket.find(h.key);
    const bool version_exists = current != bucket.end() && current->second.etag == h.etag;
    auto& cached = cached_[{h.key, h.etag}];
    bool all_cached = true;
    for (uint64_t b = first; b <= last; ++b) all_cached = all_cached && cached.contains(b);
    if (!version_exists && !all_cached) {
      // The pinned version is gone: the GET (If-Match) fails, with EIO; never another
      // version's bytes.
      return Outcome::fails({ErrorCode::kPreconditionFailed});
    }
    for (uint64_t b = first; b <= last; ++b) cached.insert(b);
    return {};
  }

  // The revalidation open() starts with, alone (for an open the file system refused).
  void revalidate_inode(int id) {
    Inode& n = at(id);
    revalidate(n.parent, n.name);
  }

  void release(const Handle& h) {
    Inode* n = find(h.inode);
    if (!n) return;
    if (n->open_handles > 0) n->open_handles--;
    drop_if_unused(h.inode);
  }

  void forget(int id, uint64_t nlookup) {
    Inode* n = find(id);
    if (!n || id == kRoot) return;
    n->lookups = nlookup > n->lookups ? 0 : n->lookups - nlookup;
    drop_if_unused(id);
  }

  // What the bucket shows below a directory prefix: valid names of common prefixes
  // (directories) and of plain objects (files); hidden keys left out.
  struct View {
    std::set<std::string> dirs;
    std::map<std::string, const Object*> files;  // may include names also in dirs
  };
  View view(const std::string& prefix) const {
    View v;
    for (auto it = bucket.lower_bound(prefix); it != bucket.end() && it->first.starts_with(prefix);
         ++it) {
      const std::string rest = it->first.substr(prefix.size());
      if (rest.empty()) continue;  // the directory's own marker
      size_t slash = rest.find('/');
      std::string name = rest.substr(0, slash);
      if (!is_valid_name(name)) continue;
      if (slash != std::string::npos) {
        v.dirs.insert(name);
      } else {
        v.files[name] = &it->second;
      }
    }
    return v;
  }

 private:
  // file_system.h: "a key keeps its inode number while the mount lives, except that the
  // kernel must never see an inode change type or mix two versions in its page cache".
  int child_ino(int dir_id, const std::string& name, const std::string& key, mode_t type,
                const std::string* etag = nullptr) {
    int id = -1;
    if (auto it = ino_by_key_.find(key); it != ino_by_key_.end()) {
      const Inode& old = at(it->second);
      const bool superseded =
          etag && !old.etag.empty() && old.etag != *etag && old.open_handles > 0;
      if (old.type == type && !superseded) {
        id = it->second;
      } else {
        ino_by_key_.erase(it);
      }
    }
    int replaced = -1;
    {
      Inode& dir = at(dir_id);
      if (auto it = dir.children.find(name); it != dir.children.end() && it->second != id) {
        replaced = it->second;
      }
    }
    if (id < 0) {
      id = next_id_++;
      Inode n;
      n.key = key;
      n.type = type;
      inodes_[id] = n;
      ino_by_key_[key] = id;
    }
    Inode& n = at(id);
    n.parent = dir_id;
    n.name = name;
    at(dir_id).children[name] = id;
    if (replaced >= 0) drop_if_unused(replaced);
    return id;
  }

  void drop_if_unused(int id) {
    Inode* n = find(id);
    if (!n || id == kRoot || n->lookups > 0 || n->open_handles > 0 || attached(id)) return;
    // A detached, unused directory takes its unreachable children with it.
    std::vector<int> children;
    for (const auto& [name, child] : n->children) children.push_back(child);
    n->children.clear();
    for (int child : children) drop_if_unused(child);
    if (auto it = ino_by_key_.find(n->key); it != ino_by_key_.end() && it->second == id) {
      ino_by_key_.erase(it);
    }
    inodes_.erase(id);
  }

  void apply(int id, const Object& o) {
    Inode& n = at(id);
    n.etag = o.etag;
    n.size = o.data.size();
  }

  bool may_import_new(bool first) const { return first || policy_.new_objects; }

  void list_directory(int dir_id) {
    const std::string prefix = at(dir_id).key;
    const View v = view(prefix);
    const bool first = !at(dir_id).imported;
    std::set<std::string> seen;
    for (const auto& name : v.dirs) {
      seen.insert(name);
      const bool known = at(dir_id).children.contains(name);
      if (!known && !may_import_new(first)) continue;
      child_ino(dir_id, name, prefix + name + "/", S_IFDIR);
    }
    for (const auto& [name, object] : v.files) {
      if (seen.contains(name)) continue;  // the directory wins
      seen.insert(name);
      auto existing = at(dir_id).children.find(name);
      if (existing == at(dir_id).children.end()) {
        if (!may_import_new(first)) continue;
        apply(child_ino(dir_id, name, prefix + name, S_IFREG, &object->etag), *object);
        continue;
      }
      Inode& shown = at(existing->second);
      if (shown.type == S_IFDIR) {
        // The prefix is gone, an object of that name remains: without DELETED the
        // directory stays.
        if (!policy_.deleted && !first) continue;
        apply(child_ino(dir_id, name, prefix + name, S_IFREG, &object->etag), *object);
        continue;
      }
      if (shown.etag != object->etag && !policy_.changed) continue;  // keeps its version
      apply(child_ino(dir_id, name, prefix + name, S_IFREG, &object->etag), *object);
    }
    std::vector<int> gone;
    Inode& dir = at(dir_id);
    for (auto it = dir.children.begin(); it != dir.children.end();) {
      if (!seen.contains(it->first) && (first || policy_.deleted)) {
        gone.push_back(it->second);
        it = dir.children.erase(it);
      } else {
        ++it;
      }
    }
    for (int id : gone) drop_if_unused(id);
    at(dir_id).imported = true;
  }

  // A lookup by name past the TTL: a one-key LIST for the directory case, else a HEAD.
  void revalidate(int dir_id, const std::string& name) {
    const std::string key = at(dir_id).key + name;
    bool is_dir = false;
    for (auto it = bucket.lower_bound(key + "/");
         it != bucket.end() && it->first.starts_with(key + "/"); ++it) {
      is_dir = true;
      break;
    }
    const Inode& dir = at(dir_id);
    auto existing = dir.children.find(name);
    const bool known = existing != dir.children.end();
    const bool may_add = !dir.imported || policy_.new_objects;
    if (is_dir) {
      if (known || may_add) child_ino(dir_id, name, key + "/", S_IFDIR);
      return;
    }
    auto head = bucket.find(key);
    if (head != bucket.end()) {
      if (!known && !may_add) return;
      if (known) {
        const Inode& shown = at(existing->second);
        if (shown.type != S_IFDIR && shown.etag != head->second.etag && !policy_.changed) return;
        // As list_directory decides: without DELETED a listed directory whose prefix
        // is gone stays a directory, even though an object of its name remains.
        if (shown.type == S_IFDIR && !policy_.deleted && dir.imported) {
          kept_deleted_dir = true;
          return;
        }
      }
      apply(child_ino(dir_id, name, key, S_IFREG, &head->second.etag), head->second);
      return;
    }
    if (known && (policy_.deleted || !dir.imported)) {
      int gone = existing->second;
      at(dir_id).children.erase(name);
      drop_if_unused(gone);
    }
  }

  ImportPolicy policy_;
  std::map<int, Inode> inodes_;
  std::map<std::string, int> ino_by_key_;
  int next_id_ = 1;
  // Blocks of (key, ETag) known to be in the node cache: read through some handle.
  // (Dropping an unheld version when a newer one of the key is opened is not modelled:
  // a version is never opened again once the mount moved past it, and ETags never
  // repeat here, so it never decides an outcome.)
  std::map<std::pair<std::string, std::string>, std::set<uint64_t>> cached_;
};

}  // namespace nacre::fs::namespace_model
