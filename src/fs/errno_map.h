// The one place that maps Nacre error codes to errno for the file system.
#pragma once

#include "common/error.h"

namespace nacre::fs {

int to_errno(const Error& error);

}  // namespace nacre::fs
