// Daemonising with a verdict: the parent process (the `nacre mount` the user
// ran) waits until the child has checked and started everything that can fail
// (the fetch threads, the metrics port, ...) and exits with the child's
// verdict, so a mount that cannot serve never reports success. libfuse's
// fuse_daemonize lets the parent exit before the child has started anything.
#pragma once

#include <string>

#include "common/error.h"

namespace nacre::cli {

class Daemon {
 public:
  // Unless `foreground`, forks. The parent waits for the child's verdict and
  // exits with it (never returns): 0 after ready(), 1 if the child exits or
  // dies first (the child has printed why on the stderr they share). When the
  // child was killed by a signal, the parent also detaches `mountpoint`, so a
  // crash leaves no dead mount (ENOTCONN) behind; a child that failed cleanly
  // has unmounted itself, and a mount below it is left alone. The child returns, in a new
  // session, with stderr still open. Call before any thread starts.
  [[nodiscard]] static Status start(bool foreground, const std::string& mountpoint);

  // The child is serving: the parent exits 0, and the child's standard
  // streams go to /dev/null. No-op in the foreground.
  static void ready();
};

}  // namespace nacre::cli
