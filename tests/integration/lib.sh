# Shared helpers of the shell integration tests that mount the RGW
# (mount_test.sh, mount_safety_test.sh). Sourced, not run:
#
#   source "$(dirname "$0")/lib.sh"
#   test_init NAME "$@"        # NACRE_BINARY RGW_ENV_FILE
#
# test_init checks the arguments, reads the S3 settings, makes the work
# directory ($work), the test's S3 prefix ($p = s3://BUCKET/$prefix) and the
# source directory for fixtures ($src), and installs the cleanup trap: every
# FUSE mount under $work is unmounted, every nacre and reader the test started
# is stopped, other mounts under $work (a tmpfs) are unmounted, the test's
# objects are deleted and $work is removed — even when a check fails or the
# script is interrupted. A script may define cleanup_first (run before
# anything else, e.g. to resume a stopped server) and cleanup_last (run after
# the objects are deleted, e.g. to stop a server of its own).
#
# Checks: check, expect_error and record print "ok   NAME" or "FAIL NAME" and
# count; test_finish prints the totals and gives the script's exit status.
# Nothing here skips a check: a missing requirement is a failure.

# shellcheck shell=bash disable=SC2034  # the variables are used by the scripts that source this
MiB=$((1024 * 1024))
passed=0
failed=0
started=$SECONDS
fg_pids=()   # foreground mounts started here (background jobs)
bg_pids=()   # readers and helpers started here
declare -A mount_pid mount_port

test_init() {  # test_init NAME NACRE_BINARY RGW_ENV_FILE
  local name=$1
  [ $# -ge 3 ] || { echo "usage: ${name}_test.sh NACRE_BINARY RGW_ENV_FILE"; exit 1; }
  [ -x "$2" ] || { echo "FAIL: nacre binary not found at $2"; exit 1; }
  [ -f "$3" ] || { echo "FAIL: S3 server settings missing at $3 (start scripts/s3-server)"; exit 1; }
  [ -e /dev/fuse ] || { echo "FAIL: /dev/fuse is missing"; exit 1; }
  command -v fusermount3 >/dev/null || { echo "FAIL: fusermount3 is missing (apt-get install fuse3)"; exit 1; }
  nacre=$(realpath "$2")
  env_file=$(realpath "$3")
  # shellcheck disable=SC1090
  source "$env_file"
  export AWS_EC2_METADATA_DISABLED=true
  work=$(mktemp -d "/tmp/nacre-$name-test.XXXXXX")
  prefix="$name-$$-$RANDOM"
  b="s3://$NACRE_TEST_BUCKET"
  p="$b/$prefix"
  src="$work/src"
  mkdir -p "$src"
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  echo "prefix $p, work directory $work"
}

test_finish() {  # the last line of a script: totals, exit status
  check "no mounts left under the test directory" bash -c "! awk -v w='$work/' 'index(\$2, w) == 1' /proc/mounts | grep -q ."
  echo "elapsed $((SECONDS - started)) s"
  echo "$passed passed, $failed failed"
  [ "$failed" -eq 0 ]
}

# mounts_under [fuse|other]: mount points under $work, deepest first.
mounts_under() {
  awk -v w="$work/" -v kind="${1:-}" 'index($2, w) == 1 {
      fuse = ($3 ~ /^fuse/)
      if (kind == "" || (kind == "fuse" && fuse) || (kind == "other" && !fuse)) print $2
    }' /proc/mounts | sort -r
}

cleanup() {
  set +e
  local pid mp
  if declare -F cleanup_first >/dev/null; then cleanup_first; fi
  for pid in "${bg_pids[@]}"; do kill "$pid" 2>/dev/null; kill -CONT "$pid" 2>/dev/null; done
  mounts_under fuse | while read -r mp; do
    timeout 20 fusermount3 -u "$mp" 2>/dev/null || timeout 20 umount -l "$mp" 2>/dev/null
  done
  for pid in "${fg_pids[@]}" $(daemon_pids); do
    for _ in $(seq 50); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then kill "$pid" 2>/dev/null; sleep 1; kill -9 "$pid" 2>/dev/null; fi
  done
  for pid in "${bg_pids[@]}"; do kill -9 "$pid" 2>/dev/null; done
  wait 2>/dev/null
  # tmpfs and other helper mounts, once nothing uses them.
  mounts_under other | while read -r mp; do
    timeout 20 umount "$mp" 2>/dev/null || timeout 20 umount -l "$mp" 2>/dev/null
  done
  # The test's objects.
  if [ -n "${p:-}" ]; then
    timeout 60 "$nacre" ls -r "$p/" 2>/dev/null | sed -E 's/^[^ ]+ [^ ]+ +[0-9]+ //' | curl_many DELETE >/dev/null
  fi
  if declare -F cleanup_last >/dev/null; then cleanup_last; fi
  if [ -n "$(mounts_under)" ]; then
    echo "cleanup: still mounted, $work left in place:"; mounts_under
  else
    rm -rf --one-file-system "$work"
  fi
}

# ---------------------------------------------------------------- checks

record() {  # record OK|FAIL NAME [DETAIL FILE]
  if [ "$1" = OK ]; then
    passed=$((passed + 1)); echo "ok   $2"
  else
    failed=$((failed + 1)); echo "FAIL $2"
    [ -n "${3:-}" ] && [ -s "$3" ] && sed 's/^/     /' "$3" | head -15
  fi
  return 0
}

check() {  # check NAME COMMAND... : the command must succeed
  local name=$1; shift
  if "$@" >"$work/out" 2>"$work/err"; then
    if [ -s "$work/out" ]; then record OK "$name: $(head -1 "$work/out" | cut -c1-110)"; else record OK "$name"; fi
  else
    cat "$work/out" >>"$work/err"; record FAIL "$name" "$work/err"
  fi
}

expect_error() {  # expect_error NAME PATTERN COMMAND... : must fail, stderr matching PATTERN
  local name=$1 pattern=$2; shift 2
  local start=$SECONDS
  if "$@" >"$work/out" 2>"$work/err"; then
    failed=$((failed + 1)); echo "FAIL $name: succeeded but should have failed"
    cat "$work/out" "$work/err" | sed 's/^/     /' | head -10; return 0
  fi
  if grep -Eq "$pattern" "$work/err"; then
    passed=$((passed + 1)); echo "ok   $name ($((SECONDS - start)) s): $(head -1 "$work/err")"
  else
    failed=$((failed + 1)); echo "FAIL $name: stderr does not match /$pattern/:"; sed 's/^/     /' "$work/err" | head -10
  fi
}

# ---------------------------------------------------------------- processes

alive() {  # alive PID: running and not a zombie
  local st
  st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [[ $st != Z* ]]
}

# nacre processes whose arguments name a path under $work (default) or the
# given mount point: how daemonised mounts are found, never by name alone.
daemon_pids() {
  ps -eo pid=,comm=,args= | awk -v w="${1:-$work/}" '$2 == "nacre" && index($0, w) {print $1}'
}

wait_for() {  # wait_for SECONDS COMMAND...: poll every 0.1 s
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do [ $SECONDS -ge $deadline ] && return 1; sleep 0.1; done
}

gone() { ! alive "$1"; }

thread_waits() {  # thread_waits PID: how many of PID's threads wait where (wchan)
  local task
  echo "pid $1 still runs; its threads wait in:"
  for task in /proc/"$1"/task/*; do echo "$(cat "$task/comm" "$task/wchan" 2>/dev/null | tr '\n' ' ')"; done |
    sort | uniq -c
}

# ---------------------------------------------------------------- mounts

is_mounted() { awk -v m="$1" '$2 == m {f = 1} END {exit !f}' /proc/mounts; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

metrics_up() { timeout 5 curl -sf "http://127.0.0.1:$1/metrics" >/dev/null; }

metric() {  # metric PORT SERIES: the value (0 when absent), e.g. metric 9100 'nacre_s3_requests_total{operation="GetObject"}'
  timeout 10 curl -s "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n {v = $2} END {printf "%.0f\n", v + 0}'
}

# mount_fg NAME SOURCE CACHE_DIR [ARGS...]: `nacre mount -f` in the background on
# $work/NAME with a metrics port; waits until it is mounted and serving metrics.
# The cache directory is left to nacre to create.
mount_fg() {
  local name=$1 src=$2 cache=$3; shift 3
  local mnt="$work/$name" port
  port=$(free_port)
  mkdir -p "$mnt"
  "$nacre" mount "$src" "$mnt" --cache-dir "$cache" -f --metrics-address "127.0.0.1:$port" "$@" \
    >>"$work/$name.log" 2>&1 &
  local pid=$!
  fg_pids+=("$pid")
  mount_pid[$mnt]=$pid
  mount_port[$name]=$port
  if ! wait_for 30 is_mounted "$mnt" || ! wait_for 10 metrics_up "$port"; then
    echo "     mount $name did not come up:"; sed 's/^/     /' "$work/$name.log" | tail -5
    return 1
  fi
}

# mount_daemon NAME SOURCE CACHE_DIR [ARGS...]: `nacre mount` without -f (it
# daemonises) on $work/NAME with a metrics port; records the daemon's pid.
mount_daemon() {
  local name=$1 src=$2 cache=$3; shift 3
  local mnt="$work/$name" port
  port=$(free_port)
  mkdir -p "$mnt"
  timeout 60 "$nacre" mount "$src" "$mnt" --cache-dir "$cache" --metrics-address "127.0.0.1:$port" "$@" \
    >>"$work/$name.log" 2>&1 || { echo "nacre mount exited $?:"; tail -5 "$work/$name.log"; return 1; }
  is_mounted "$mnt" || { echo "nacre mount returned 0 but $mnt is not mounted"; return 1; }
  mount_pid[$mnt]=$(daemon_pids "$mnt" | head -1)
  mount_port[$name]=$port
  [ -n "${mount_pid[$mnt]}" ] || { echo "no nacre process found for $mnt"; return 1; }
  wait_for 10 metrics_up "$port" || { echo "no metrics on port $port"; return 1; }
}

# unmount MNT: fusermount3 -u (umount -l when busy); the mount's nacre must
# exit within 10 s. Returns non-zero when it stays mounted or alive, or when
# the mount's nacre process is not known.
unmount() {
  local mnt=$1 pid=${mount_pid[$1]:-}
  [ -n "$pid" ] || { echo "no nacre process known for $mnt"; return 1; }
  timeout 20 fusermount3 -u "$mnt" 2>>"$work/unmount.err" || timeout 20 umount -l "$mnt" 2>>"$work/unmount.err"
  wait_for 10 gone "$pid" || {
    echo "nacre $pid still running 10 s after unmount"
    thread_waits "$pid"
    return 1
  }
  wait "$pid" 2>/dev/null
  ! is_mounted "$mnt" || { echo "$mnt is still mounted"; return 1; }
}

# ---------------------------------------------------------------- S3 and files

gen() { head -c "$2" /dev/urandom >"$src/$1"; }   # gen NAME BYTES: a random fixture in $src
size_of() { stat -c %s "$1"; }
up() { timeout 120 "$nacre" cp "$@" >/dev/null; }   # up LOCAL S3URL
s3rm() { timeout 60 "$nacre" rm "$1" >/dev/null; }

# curl_put KEY FILE [HEADER...]: a PUT of $prefix/KEY with user metadata (nacre
# cp sets none), e.g. FSx's "x-amz-meta-file-permissions: 0120777".
curl_put() {
  local key=$1 file=$2; shift 2
  local hdrs=() h
  for h in "$@"; do hdrs+=(-H "$h"); done
  local code
  code=$(timeout 60 curl -s --path-as-is -o "$work/curl.out" -w '%{http_code}' \
    --aws-sigv4 "aws:amz:${AWS_REGION:-us-east-1}:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
    -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -H "Content-Type: application/octet-stream" "${hdrs[@]}" \
    -X PUT --data-binary "@$file" \
    "$AWS_ENDPOINT_URL/$NACRE_TEST_BUCKET/$prefix/$key")
  [ "$code" = 200 ] || { echo "PUT $key: HTTP $code: $(cat "$work/curl.out")" >&2; return 1; }
}

# curl_many METHOD [FILE]: PUT FILE to (or DELETE) every key read from stdin, in
# one signed curl run (a thousand nacre processes would take much longer).
curl_many() {
  local method=$1 file=${2:-}
  python3 -c '
import os, sys, urllib.parse
method, body = sys.argv[1], sys.argv[2]
for line in sys.stdin:
    key = line.rstrip("\n")
    if not key:
        continue
    url = "%s/%s/%s" % (os.environ["AWS_ENDPOINT_URL"], os.environ["NACRE_TEST_BUCKET"], urllib.parse.quote(key, safe="/"))
    print("upload-file = \"%s\"" % body if method == "PUT" else "request = \"DELETE\"")
    print("url = \"%s\"" % url)
    print("output = \"/dev/null\"")
' "$method" "$file" >"$work/curl.cfg"
  timeout 120 curl -s --path-as-is -K "$work/curl.cfg" --aws-sigv4 "aws:amz:${AWS_REGION:-us-east-1}:s3" \
    --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" \
    -w '%{http_code}\n' | grep -cvE '^20[04]$'   # prints the number of failed requests
}
