#include "s3/retry.h"

#include <algorithm>
#include <random>

namespace nacre::s3 {

std::chrono::milliseconds RetryPolicy::backoff(int failed_attempts) const {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  int shift = std::min(failed_attempts, 20);
  long long ceiling = std::min<long long>(cap.count(), base.count() << shift);
  std::uniform_int_distribution<long long> dist(0, std::max<long long>(ceiling, 1));
  return std::chrono::milliseconds(dist(rng));
}

}  // namespace nacre::s3
