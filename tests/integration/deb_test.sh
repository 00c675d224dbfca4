#!/usr/bin/env bash
# The Debian package (cmake/packaging.cmake): makes it with `cpack -G DEB`
# from a build tree whose nacre binary is built, checks its metadata and
# contents (and that the Dockerfile's runtime stage installs every package it
# depends on), installs it for real with apt-get (dependencies come from the
# installed packages; nothing is downloaded when they are all there), runs
# /usr/bin/nacre --version, and removes it again (dpkg -r, also when a check
# fails). Needs root. Refuses to run when a nacre package or a /usr/bin/nacre
# of another origin is already there: it would replace and then remove it.
#
# Usage: deb_test.sh BUILD_DIR      (CPACK=/path/to/cpack picks another cpack)
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: deb_test.sh BUILD_DIR"; exit 1; }
build=$(cd "$1" && pwd)
root=$(cd "$(dirname "$0")/../.." && pwd)
cpack=${CPACK:-cpack}
[ -f "$build/CPackConfig.cmake" ] || { echo "FAIL: no $build/CPackConfig.cmake (configure with cmake first)"; exit 1; }
[ -x "$build/nacre" ] || { echo "FAIL: no $build/nacre: build it first (cmake --build $build --target nacre)"; exit 1; }
command -v "$cpack" >/dev/null || { echo "FAIL: cpack not found (Debian: cmake)"; exit 1; }
command -v dpkg-shlibdeps >/dev/null || { echo "FAIL: dpkg-shlibdeps not found: install dpkg-dev"; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "FAIL: deb_test.sh installs a package: run it as root"; exit 1; }
if dpkg-query -W -f='${Status}\n' nacre 2>/dev/null | grep -q ' installed$'; then
  echo "FAIL: a nacre package is already installed ($(dpkg-query -W -f='${Version}' nacre));" \
    "this test installs and removes its own: remove it first (dpkg -r nacre)"
  exit 1
fi
if [ -e /usr/bin/nacre ]; then
  echo "FAIL: /usr/bin/nacre exists and belongs to no package (installed by hand?); this test would" \
    "replace and then delete it: move it away first"
  exit 1
fi

version=$(sed -n 's/^CMAKE_PROJECT_VERSION:STATIC=//p' "$build/CMakeCache.txt")
[ -n "$version" ] || { echo "FAIL: no CMAKE_PROJECT_VERSION in $build/CMakeCache.txt"; exit 1; }
arch=$(dpkg --print-architecture)
work=$(mktemp -d /tmp/nacre-deb-test.XXXXXX)
chmod 755 "$work"  # apt's _apt user reads the .deb from here
installed=0
cleanup() {
  set +e
  if [ "$installed" -eq 1 ] && dpkg-query -W nacre >/dev/null 2>&1; then
    dpkg -r nacre >/dev/null 2>&1 || echo "cleanup: dpkg -r nacre failed"
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
passed=0
failed=0
started=$SECONDS

check() {  # check NAME COMMAND... : the command must succeed
  local name=$1; shift
  if "$@" >"$work/out" 2>&1; then
    passed=$((passed + 1)); echo "ok   $name"
  else
    failed=$((failed + 1)); echo "FAIL $name"; sed 's/^/     /' "$work/out" | tail -15
  fi
}
field_is() {  # field_is FIELD EXPECTED
  local v; v=$(dpkg-deb -f "$deb" "$1")
  [ "$v" = "$2" ] || { echo "$1 is '$v', not '$2'"; return 1; }
}
depends_on() {  # depends_on PACKAGE_PATTERN...: Depends names each
  local d p; d=$(dpkg-deb -f "$deb" Depends)
  for p in "$@"; do
    echo "$d" | tr ',' '\n' | sed 's/^ *//' | grep -Eq "^($p)( |\$)" || { echo "Depends lacks $p: $d"; return 1; }
  done
}
holds() {  # holds PATH...: the package's file list has each
  local p
  for p in "$@"; do grep -Fxq ".$p" "$work/contents" || { echo "no $p in the package"; return 1; }; done
}
version_is() {  # version_is BINARY
  local v; v=$("$1" --version)
  [ "$v" = "nacre $version" ] || { echo "$1 --version says '$v', not 'nacre $version'"; return 1; }
}

# --- make the package ---------------------------------------------------------
# Into $work, never into the build tree. The CPack configuration does not
# make the install step build anything (CMAKE_SKIP_INSTALL_ALL_DEPENDENCY):
# it packages the binary the build made.
check "cpack -G DEB" "$cpack" -G DEB --config "$build/CPackConfig.cmake" -B "$work/pkg"
deb=$(find "$work/pkg" -maxdepth 1 -name 'nacre_*.deb' | head -1)
check "the package is nacre_${version}_$arch.deb" test "$(basename "${deb:-none}")" = "nacre_${version}_$arch.deb"
[ -n "$deb" ] || { echo "$passed passed, $((failed + 1)) failed"; exit 1; }
echo "package: $deb ($(du -h "$deb" | cut -f1))"
dpkg-deb -I "$deb" | sed 's/^/     /'
dpkg-deb -c "$deb" | awk '{ print $NF }' | sed 's:/$::' >"$work/contents"

check "Package: nacre" field_is Package nacre
check "Version: $version" field_is Version "$version"
check "Architecture: $arch" field_is Architecture "$arch"
check "Maintainer: Nacre developers" field_is Maintainer "Nacre developers"
check "Depends (dpkg-shlibdeps): libfuse3, libcurl4, libssl3, libpugixml, libstdc++, libc6" \
  depends_on 'libfuse3-[0-9]+' libcurl4 libssl3 'libpugixml[0-9a-z]*' libstdc\\+\\+6 libc6
check "Depends: fuse3 (fusermount3)" depends_on fuse3
check "Description names the file system and the CSI driver" \
  bash -c "dpkg-deb -f '$deb' Description | grep -q 'S3' && dpkg-deb -f '$deb' Description | grep -q 'CSI'"
check "holds /usr/bin/nacre, the manifests and the docs" holds /usr/bin/nacre \
  /usr/share/nacre/deploy/kubernetes/base/kustomization.yaml /usr/share/nacre/deploy/kubernetes/base/csidriver.yaml \
  /usr/share/nacre/deploy/kubernetes/overlays/static/pv.yaml /usr/share/nacre/deploy/kubernetes/examples/vllm/deployment.yaml \
  /usr/share/doc/nacre/README.md /usr/share/doc/nacre/KUBERNETES.md /usr/share/doc/nacre/CONFIGURATION.md
check "nothing outside /usr" bash -c "! grep -v -e '^\.\$' -e '^\./usr\(/\|\$\)' '$work/contents'"

# The Dockerfile is not built by the tests (no image can be pulled here), but
# its runtime stage must install what the package depends on: each Depends
# entry is listed there, is pulled in by a listed package, or is provided by
# one (libc6, libgcc-s1 and libstdc++6 come with debian:12-slim).
t_dockerfile_runtime() {
  local listed have d bad=0
  listed=$(awk '/^FROM debian:12-slim/ { on = 1; next } on && /^FROM/ { on = 0 }
    on && /apt-get install/ { inst = 1 }
    on && inst { for (i = 1; i <= NF; i++) if ($i ~ /^[a-z0-9][a-z0-9.+-]+$/ && $i != "apt-get" && $i != "install" && $i != "rm") print $i }
    on && inst && /rm -rf/ { inst = 0 }' "$root/Dockerfile")
  [ -n "$listed" ] || { echo "no apt-get install in the Dockerfile's debian:12-slim stage"; return 1; }
  # shellcheck disable=SC2086  # one package name per word
  have=$( { echo libc6 libgcc-s1 libstdc++6 $listed | tr ' ' '\n'
    apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces \
      --no-enhances $listed 2>/dev/null | sed -n 's/^ *\(Pre\)\{0,1\}Depends: <\{0,1\}\([^ >]*\)>\{0,1\}$/\2/p; s/^\([a-z0-9][^ ]*\)$/\1/p'
    apt-cache show $listed 2>/dev/null | sed -n 's/^Provides: //p' | tr ',' '\n' | sed 's/^ *//; s/ .*//'
  } | sort -u)
  for d in $(dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed 's/^ *//; s/ .*//'); do
    echo "$have" | grep -Fxq "$d" || { echo "the Dockerfile's runtime stage lacks $d"; bad=1; }
  done
  return $bad
}
check "the Dockerfile's runtime stage installs every dependency of the package" t_dockerfile_runtime

# --- install it, run it, remove it -------------------------------------------
installed=1
check "apt-get install ./nacre_${version}_$arch.deb" \
  env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$deb"
check "dpkg: nacre $version installed" \
  bash -c "[ \"\$(dpkg-query -W -f='\${Status} \${Version}' nacre)\" = 'install ok installed $version' ]"
check "/usr/bin/nacre --version: nacre $version" version_is /usr/bin/nacre
check "/usr/bin/nacre is stripped (no .debug_info section)" \
  bash -c "! readelf -S /usr/bin/nacre | grep -q debug_info"
check "/usr/bin/nacre csi --help" bash -c "/usr/bin/nacre csi --help | grep -q -- --endpoint"
check "the manifests are installed" test -f /usr/share/nacre/deploy/kubernetes/base/node.yaml
check "dpkg -r nacre" dpkg -r nacre
check "removed: no /usr/bin/nacre, no /usr/share/nacre" bash -c "[ ! -e /usr/bin/nacre ] && [ ! -e /usr/share/nacre ]"
installed=0

echo "elapsed $((SECONDS - started)) s"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
