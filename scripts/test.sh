#!/usr/bin/env bash
# The README's test command: installs dependencies, builds, and runs every
# test — unit tests, unit tests again under ASan+UBSan, and the integration
# tests against a real Ceph RGW on 127.0.0.1 that ctest starts and stops.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export AWS_EC2_METADATA_DISABLED=true  # tests never look for cloud credentials

bash scripts/deps.sh
bash scripts/build.sh build

echo "== unit and integration tests"
status=0
(cd build && ctest --output-on-failure -j2) || status=1

if [ "${NACRE_SKIP_SANITIZERS:-0}" != 1 ]; then
  echo "== unit tests under ASan+UBSan"
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DNACRE_SANITIZE=ON >/dev/null
  cmake --build build-asan -j2
  (cd build-asan && ctest --output-on-failure -j2 -L unit) || status=1
fi

# Belt and braces: nothing a test started may outlive the run.
scripts/s3-server stop build/rgw >/dev/null 2>&1 || true
exit $status
