#include "cli/daemon.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

namespace nacre::cli {

namespace {
int verdict_fd = -1;  // the child's end of the pipe, until ready()
}

Status Daemon::start(bool foreground, const std::string& mountpoint) {
  if (foreground) return {};
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return fail_errno("pipe", errno);
  pid_t pid = ::fork();
  if (pid < 0) {
    int err = errno;
    ::close(fds[0]);
    ::close(fds[1]);
    return fail_errno("fork", err);
  }
  if (pid > 0) {
    ::close(fds[1]);
    char verdict = 1;
    ssize_t n;
    do {
      n = ::read(fds[0], &verdict, 1);
    } while (n < 0 && errno == EINTR);
    if (n == 1 && verdict == 0) ::_exit(0);
    // EOF: the child exited or died before it was ready (its end of the pipe closes
    // only then). One that failed cleanly unmounted on its way out: another mount now
    // on that path (stacked below it) is not ours to touch. One killed by a signal
    // left its mount behind, dead (ENOTCONN): detach it (root only; otherwise the
    // user sees ENOTCONN and unmounts it with fusermount3 -u).
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (WIFSIGNALED(status)) (void)::umount2(mountpoint.c_str(), MNT_DETACH);
    ::_exit(1);
  }
  ::close(fds[0]);
  verdict_fd = fds[1];
  if (::setsid() < 0) return fail_errno("setsid", errno);
  if (::chdir("/") != 0) return fail_errno("chdir /", errno);
  return {};
}

void Daemon::ready() {
  if (verdict_fd < 0) return;
  int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null >= 0) {
    ::dup2(null, STDIN_FILENO);
    ::dup2(null, STDOUT_FILENO);
    ::dup2(null, STDERR_FILENO);
    ::close(null);
  }
  const char ok = 0;
  (void)!::write(verdict_fd, &ok, 1);
  ::close(verdict_fd);
  verdict_fd = -1;
}

}  // namespace nacre::cli
