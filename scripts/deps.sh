#!/usr/bin/env bash
# Installs what Nacre needs to build, test, benchmark and demo on Debian 12.
# Idempotent: does nothing when everything is present.
set -euo pipefail
packages=(
  build-essential cmake pkg-config git python3
  libcurl4-openssl-dev libssl-dev libpugixml-dev nlohmann-json3-dev libspdlog-dev libcli11-dev
  libgtest-dev libgmock-dev libfuse3-dev fuse3 prometheus-cpp-dev
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  dpkg-dev
  ceph-mon ceph-osd radosgw ceph-common
  curl awscli s3fs rclone
)
# kubectl renders the Kubernetes manifests in the tests; Debian's is in
# kubernetes-client. A kubectl installed some other way is used as it is.
command -v kubectl >/dev/null 2>&1 || packages+=(kubernetes-client)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
