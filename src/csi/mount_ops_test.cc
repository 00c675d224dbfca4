#include "csi/mount_ops.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fuse.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>
#include <filesystem>
#include <vector>

#include "csi/mounter.h"
#include "csi/node_state.h"

namespace nacre::csi {
namespace {

TEST(MountOps, MountinfoIsParsedWithEscapesAndReadOnlyFlag) {
  const std::string text =
      "22 1 0:21 / /proc rw,nosuid - proc proc rw\n"
      "98 25 0:52 / /var/lib/kubelet/pods/a\\040b/volumes ro,relatime shared:5 master:1 - "
      "fuse.nacre nacre:models/mistral rw,user_id=0\n"
      "99 98 0:52 / /var/lib/kubelet/pods/a\\040b/volumes rw - fuse.nacre nacre:x rw\n"
      "garbage\n";
  auto table = parse_mountinfo(text);
  ASSERT_EQ(table.size(), 3u);
  EXPECT_EQ(table[1].mount_point, "/var/lib/kubelet/pods/a b/volumes");
  EXPECT_EQ(table[1].fs_type, "fuse.nacre");
  EXPECT_EQ(table[1].source, "nacre:models/mistral");
  EXPECT_EQ(table[1].minor, 52u);
  EXPECT_TRUE(table[1].read_only);
  EXPECT_FALSE(table[0].read_only);
  // The topmost of stacked mounts wins.
  auto top = find_mount(table, "/var/lib/kubelet/pods/a b/volumes");
  ASSERT_TRUE(top);
  EXPECT_EQ(top->source, "nacre:x");
  EXPECT_FALSE(find_mount(table, "/nowhere"));
}

// A FUSE mount with no daemon behind it. Its INIT is answered with an error at once, so
// whatever stats it (another test's df) fails fast instead of waiting for a daemon.
struct BareFuseMount {
  std::string dir;
  int fd = -1;
  unsigned minor = 0;
  bool mounted = false;
  bool answered = false;  // INIT got its error reply
  int error = 0;          // errno of a failed open or mount

  explicit BareFuseMount(const std::string& where) : dir(where) {
    fd = ::open("/dev/fuse", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
      error = errno;
      return;
    }
    const std::string opts = "fd=" + std::to_string(fd) + ",rootmode=40000,user_id=0,group_id=0";
    mounted = ::mount("nacre-test", dir.c_str(), "fuse.nacre-test", MS_NOSUID | MS_NODEV,
                      opts.c_str()) == 0;
    if (!mounted) {
      error = errno;
      return;
    }
    if (auto e = find_mount(read_mountinfo(), dir)) minor = e->minor;
    std::vector<char> buf(1 << 17);  // the kernel refuses reads below max_write + headers
    if (::read(fd, buf.data(), buf.size()) >= static_cast<ssize_t>(sizeof(fuse_in_header))) {
      fuse_out_header out{sizeof(fuse_out_header), -ENOSYS, 0};
      std::memcpy(&out.unique, buf.data() + offsetof(fuse_in_header, unique), sizeof out.unique);
      answered = ::write(fd, &out, sizeof out) == static_cast<ssize_t>(sizeof out);
    }
  }
  ~BareFuseMount() { end(); }
  void end() {
    if (mounted) ::umount2(dir.c_str(), MNT_DETACH);
    mounted = false;
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
  // The connection is still up: nothing is queued (EAGAIN). An aborted one fails the
  // read (ENODEV, or ECONNABORTED on newer kernels).
  bool alive() const {
    char buf[1 << 17];
    return ::read(fd, buf, sizeof buf) < 0 && errno == EAGAIN;
  }
};

// Node::stop_mount opens a stuck mount's fusectl abort file (FuseConnection) before
// the lazy unmount and aborts through it after a wait. Before, it aborted by number
// after the wait, and the number had meanwhile gone to the next FUSE mount on the
// node (another pod's volume), whose connection the abort ended (CI: write_safety_test
// got ENOTCONN while csi_e2e_test unstaged a frozen mount). This checks what that
// rests on: an abort through the file opened before never reaches the new mount.
TEST(MountOps, AnAbortOpenedBeforeTheUnmountNeverReachesTheMountThatTookItsNumber) {
  ASSERT_EQ(::geteuid(), 0u) << "this test needs root (it mounts FUSE file systems)";
  ASSERT_EQ(::access("/dev/fuse", R_OK | W_OK), 0) << "this test needs /dev/fuse";
  char tmpl[] = "/tmp/nacre-fusectl-test-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string root = tmpl;
  struct Cleanup {
    std::string root;
    ~Cleanup() {
      std::error_code ec;
      std::filesystem::remove_all(root, ec);  // after the mounts below are gone
    }
  } cleanup{root};
  // The kernel gives the lowest free device number, shared with every other anonymous
  // mount (tmpfs, proc) that other tests make meanwhile: mounts that fill lower holes
  // are kept until one gets the freed number; one above it means the number went
  // elsewhere, and the round starts again.
  for (int round = 0; round < 20; ++round) {
    const std::string dir = root + "/" + std::to_string(round);
    std::filesystem::create_directories(dir + "/stuck");
    auto stuck = std::make_unique<BareFuseMount>(dir + "/stuck");
    ASSERT_TRUE(stuck->mounted) << "cannot mount FUSE: " << std::strerror(stuck->error);
    ASSERT_TRUE(stuck->answered && stuck->minor > 0) << "no INIT to answer, or not in mountinfo";
    const unsigned number = stuck->minor;
    auto conn = FuseConnection::open(number);  // what stop_mount does before unmounting
    ASSERT_TRUE(conn) << conn.error().describe();
    stuck->end();  // the unmount ends the connection and frees its number

    std::vector<std::unique_ptr<BareFuseMount>> fillers;
    for (int i = 0; i < 50; ++i) {
      std::filesystem::create_directories(dir + "/" + std::to_string(i));
      auto next = std::make_unique<BareFuseMount>(dir + "/" + std::to_string(i));
      ASSERT_TRUE(next->mounted) << "cannot mount FUSE: " << std::strerror(next->error);
      ASSERT_TRUE(next->answered && next->minor > 0) << "no INIT to answer, or not in mountinfo";
      if (next->minor > number) break;
      if (next->minor < number) {
        fillers.push_back(std::move(next));
        continue;
      }
      ASSERT_TRUE(conn->abort());
      EXPECT_TRUE(next->alive())
          << "the abort of the ended connection reached the mount that took its number";
      // What the old code did, opening the file by number after the unmount, does end
      // the new mount: the check above can tell the two apart.
      auto by_number = FuseConnection::open(number);
      ASSERT_TRUE(by_number) << by_number.error().describe();
      ASSERT_TRUE(by_number->abort());
      EXPECT_FALSE(next->alive()) << "an abort by number reaches whatever mount has it now";
      return;
    }
  }
  FAIL() << "in 20 rounds no new FUSE mount got the number a stuck one freed (other mounts "
            "kept taking it)";
}

TEST(MountOps, RunProcessReportsStatusOutputAndLines) {
  std::vector<std::string> lines;
  auto r = run_process({"/bin/sh", "-c", "echo one; echo two >&2; echo $NACRE_X; exit 3"},
                       {{"NACRE_X", "three"}}, std::chrono::seconds(10),
                       [&](const std::string& l) { lines.push_back(l); });
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 3);
  EXPECT_EQ(lines, (std::vector<std::string>{"one", "two", "three"}));
}

TEST(MountOps, RunProcessKillsWhatOutlivesItsDeadline) {
  auto start = std::chrono::steady_clock::now();
  auto r = run_process({"/bin/sleep", "30"}, {}, std::chrono::milliseconds(300));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, -1);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  auto missing = run_process({"/nonexistent/nacre"}, {}, std::chrono::seconds(5));
  EXPECT_TRUE(!missing || missing->status != 0);
}

TEST(MountOps, ProbeAnswersForALocalDirectoryAndProcessAliveSeesZombies) {
  Probe p = probe_path("/tmp", std::chrono::seconds(2));
  EXPECT_TRUE(p.answered);
  EXPECT_EQ(p.error, 0);
  EXPECT_GT(p.bytes_total, 0u);
  Probe missing = probe_path("/nonexistent-nacre-path", std::chrono::seconds(2));
  EXPECT_TRUE(missing.answered);
  EXPECT_EQ(missing.error, ENOENT);
  EXPECT_TRUE(process_alive(::getpid()));
  pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ::usleep(200 * 1000);
  EXPECT_FALSE(process_alive(child));  // a zombie until reaped
  int status = 0;
  ::waitpid(child, &status, 0);
  EXPECT_FALSE(process_alive(child));
}

TEST(Mounter, RunsWhatThePluginAsksWithItsEnvironmentAndAnswersItsStatus) {
  char dir[] = "/tmp/nacre-mounter-XXXXXX";
  ASSERT_TRUE(::mkdtemp(dir));
  const std::string socket = std::string(dir) + "/mounter.sock";
  pid_t mounter = ::fork();
  if (mounter == 0) ::_exit(run_mounter(socket) ? 0 : 1);
  Launcher launch = mounter_launcher(socket);
  Result<RunResult> r = fail(ErrorCode::kNetwork, "not tried");
  for (int i = 0; i < 100; ++i) {  // until the mounter listens
    r = launch({"/bin/sh", "-c", "echo \"$NACRE_X\"; (sleep 0.2 &); exit 4"},
               {{"NACRE_X", "hello"}}, std::chrono::seconds(10), {});
    if (r) break;
    ::usleep(50 * 1000);
  }
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->status, 4);
  EXPECT_EQ(r->output, "hello\n");
  struct stat st {};
  ASSERT_EQ(::stat(socket.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ::kill(mounter, SIGTERM);
  int status = 0;
  ASSERT_EQ(::waitpid(mounter, &status, 0), mounter);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  // Gone: the plugin is told so, it does not hang.
  auto gone = launch({"/bin/true"}, {}, std::chrono::seconds(2), {});
  EXPECT_FALSE(gone);
  ::rmdir(dir);
}

TEST(NodeStateFile, RoundTripsAndRefusesDamage) {
  char dir[] = "/tmp/nacre-node-state-XXXXXX";
  ASSERT_TRUE(::mkdtemp(dir));
  const std::string file = std::string(dir) + "/node.json";
  NodeState empty = *NodeState::load(file);  // missing: a first start
  EXPECT_TRUE(empty.mounts.empty());
  NodeState s;
  s.mounts["k1"] =
      MountRecord{"/m/k1", "/c/k1", "s3://b/p", {"mount", "s3://b/p"}, {"*.json"}, 1234, true};
  s.volumes["fresh:b/p"] = VolumeRecord{"k1", "s1", "2000", "/stage", true, 30, {"/t1", "/t2"}};
  s.volumes["linked:b/q;v=x"] = VolumeRecord{"k1", "s1", "", "/stage2", false, 0, {}};
  ASSERT_TRUE(s.save(file));
  auto back = NodeState::load(file);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->mounts.at("k1").pid, 1234);
  EXPECT_EQ(back->mounts.at("k1").args.size(), 2u);
  EXPECT_EQ(back->volumes.at("fresh:b/p").targets.size(), 2u);
  EXPECT_EQ(back->volumes.at("fresh:b/p").preload_wait_seconds, 30);
  EXPECT_EQ(back->volumes.at("fresh:b/p").mount_group, "2000");
  EXPECT_EQ(back->volumes.at("fresh:b/p").settings, "s1");
  EXPECT_EQ(back->users("k1"), 2);
  FILE* f = std::fopen(file.c_str(), "w");
  std::fputs("{ not json", f);
  std::fclose(f);
  EXPECT_FALSE(NodeState::load(file));
  ::unlink(file.c_str());
  ::rmdir(dir);
}

}  // namespace
}  // namespace nacre::csi
