// Bounded exponential backoff with full jitter (the AWS architecture blog's
// "Exponential Backoff And Jitter"): sleep = random(0, min(cap, base * 2^n)).
#pragma once

#include <chrono>

namespace nacre::s3 {

struct RetryPolicy {
  int max_attempts = 5;  // including the first
  std::chrono::milliseconds base{100};
  std::chrono::milliseconds cap{5000};

  std::chrono::milliseconds backoff(int failed_attempts) const;
};

}  // namespace nacre::s3
