#include "csi/mount_ops.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

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
