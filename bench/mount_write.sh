#!/usr/bin/env bash
# Benchmark of the write path of `nacre mount` against the same local Ceph RGW,
# with `nacre cp` as the reference upload and s3fs-fuse and rclone mount
# (--vfs-cache-mode writes) as the other FUSE clients. One table, every ratio
# computed within this run:
#
#   1. sequential write of a 2 GiB file through each mount: open(O_WRONLY|O_CREAT|
#      O_TRUNC), 1 MiB write()s from a pre-generated random buffer, close(); the
#      write phase and close() are timed apart. Reference: `nacre cp` of the same
#      bytes from a local file already in page cache. A write counts as done when
#      the whole object is in S3: Nacre and s3fs upload before close() returns
#      (checked: HEAD right after close), rclone uploads after close() in the
#      background, so its figure runs until a HEAD shows the object at full size
#      (polled every 0.1 s; rclone runs with --vfs-write-back 0s so the upload
#      starts at close instead of 5 s later).
#   2. `tar -xf` of 1000 small files (20 directories x 50 files of 1-16 KiB) into
#      each mount; for rclone the time runs until S3 lists all 1000 objects. S3
#      must hold the 1000 objects (and their bytes) afterwards.
#   3. peak RSS of the nacre mount process (VmRSS sampled every 0.5 s) while an
#      8 GiB file is written through it, close() included.
#
# Every run uses a fresh mount (and a fresh Nacre cache dir); objects, staging
# and caches are deleted between runs. Each step prints its rows when it is done;
# the end prints the whole table and whether each target is met.
# Targets: Nacre >= 0.80 x nacre cp and ahead of s3fs and rclone (1); Nacre's
# close() <= 10 % of its write time (1); Nacre untar faster than s3fs (2);
# peak RSS <= 256 MiB (3). Needs root (FUSE mounts) and free space in /tmp:
# the 8 GiB file is staged in the cache dir and lands in the RGW's OSD file.
#
# Usage: bench/mount_write.sh [--quick]    (starts and stops its own RGW)
#   --quick                     NACRE_BENCH_WRITE_GIB=0.25 (so 1 GiB for step 3)
#   NACRE_BENCH_WRITE_GIB=2     size of the file of step 1 (GiB, may be fractional)
#   NACRE_BENCH_RSS_GIB=8       size of the file of step 3 (default 4 x step 1)
#   NACRE_BENCH_DIRS=20 NACRE_BENCH_FILES_PER_DIR=50   the tree of step 2
#   ROUNDS=1                    runs of steps 1 and 2 per tool (best kept)
#   NACRE_BENCH_S3FS=0, NACRE_BENCH_RCLONE=0   leave that tool out
#   NACRE_S3_ENV=DIR/env        use an already running server (objects are removed after)
#   NACRE_BENCH_BINARY=PATH     the nacre binary to measure (default build/nacre,
#                               built first; a given binary is not built)
# Run it holding the build lock, so nothing compiles meanwhile:
#   flock /tmp/nacre-build.lock bash bench/mount_write.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export AWS_EC2_METADATA_DISABLED=true

quick=0
for arg in "$@"; do
  case $arg in
    --quick) quick=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "mount_write.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done
if [ "$quick" = 1 ]; then write_gib=${NACRE_BENCH_WRITE_GIB:-0.25}; else write_gib=${NACRE_BENCH_WRITE_GIB:-2}; fi
# Sizes in bytes, whole MiB.
# (awk prints MiB: mawk's %d stops at 2^31 - 1)
to_mib() { awk -v g="$1" 'BEGIN { m = int(g * 1024 + 0.5); if (m < 1) exit 1; printf "%d", m }'; }
write_mib=$(to_mib "$write_gib") || { echo "mount_write.sh: bad NACRE_BENCH_WRITE_GIB=$write_gib" >&2; exit 2; }
write_bytes=$((write_mib << 20))
if [ -n "${NACRE_BENCH_RSS_GIB:-}" ]; then
  rss_mib=$(to_mib "$NACRE_BENCH_RSS_GIB") || { echo "mount_write.sh: bad NACRE_BENCH_RSS_GIB=$NACRE_BENCH_RSS_GIB" >&2; exit 2; }
  rss_bytes=$((rss_mib << 20))
else
  rss_bytes=$((write_bytes * 4))
fi
write_mib=$((write_bytes >> 20))
rss_mib=$((rss_bytes >> 20))
ndirs=${NACRE_BENCH_DIRS:-20}
per_dir=${NACRE_BENCH_FILES_PER_DIR:-50}
nfiles=$((ndirs * per_dir))
rounds=${ROUNDS:-1}
use_s3fs=${NACRE_BENCH_S3FS:-1}
use_rclone=${NACRE_BENCH_RCLONE:-1}
if [ "$(id -u)" -ne 0 ]; then
  echo "mount_write.sh: needs root (FUSE mounts, sync)" >&2
  exit 1
fi

log() { printf 'mount_write: [%3ds] %s\n' "$SECONDS" "$*" >&2; }

bash scripts/deps.sh
if [ -n "${NACRE_BENCH_BINARY:-}" ]; then
  nacre=$NACRE_BENCH_BINARY  # another build to compare, e.g. the last release
else
  bash scripts/build.sh build >/dev/null
  nacre=$root/build/nacre
fi
[ -x "$nacre" ] || { echo "mount_write.sh: no nacre binary at $nacre" >&2; exit 1; }
if [ "$use_s3fs" = 1 ] && ! command -v s3fs >/dev/null; then
  echo "mount_write.sh: s3fs is missing (scripts/deps.sh installs it; NACRE_BENCH_S3FS=0 leaves it out)" >&2; exit 1
fi
if [ "$use_rclone" = 1 ] && ! command -v rclone >/dev/null; then
  echo "mount_write.sh: rclone is missing (scripts/deps.sh installs it; NACRE_BENCH_RCLONE=0 leaves it out)" >&2; exit 1
fi

work=$(mktemp -d /tmp/nacre-write-bench.XXXXXX)
tools_log=$work/tools.log
: >"$tools_log"
own_server=0
declare -A mount_pid=()   # mount point -> FUSE daemon pid, while mounted
external_prefix=""        # our prefix on a server we did not start (emptied at exit)

# ------------------------------------------------------------------ mounts
# Unmounts MNT and waits (bounded) for its daemon to exit.
unmount() {  # MNT
  local mnt=$1 pid=${mount_pid[$1]:-} i
  timeout -k 2 60 fusermount3 -u "$mnt" 2>/dev/null || timeout -k 2 10 fusermount3 -uz "$mnt" 2>/dev/null || true
  if [ -n "$pid" ]; then
    for i in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  fi
  unset "mount_pid[$mnt]"
}

# Deletes every object under PREFIX/ (bounded).
delete_prefix() {  # PREFIX
  timeout -k 5 600 "$nacre" ls -r "s3://$b/$1/" 2>/dev/null | awk '{ print $4 }' |
    timeout -k 5 600 xargs -r -P8 -I{} "$nacre" rm "s3://$b/{}" >/dev/null 2>&1 || true
}

cleanup() {
  local rc=$? m
  trap - EXIT INT TERM
  for m in "${!mount_pid[@]}"; do unmount "$m"; done
  if [ "$own_server" = 1 ]; then
    scripts/s3-server stop "$work/rgw" >/dev/null 2>&1 || true
  elif [ -n "$external_prefix" ]; then
    delete_prefix "$external_prefix"
  fi
  if [ "$rc" != 0 ] && [ -s "$tools_log" ]; then
    echo "--- last lines of $tools_log:" >&2; tail -n 20 "$tools_log" >&2
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Waits (bounded) until MNT is a mount point served by live PID.
wait_mounted() {  # MNT PID
  local i
  for i in $(seq 300); do
    kill -0 "$2" 2>/dev/null || return 1
    mountpoint -q "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

nmounts=0
new_mountpoint() { nmounts=$((nmounts + 1)); mnt=$work/mnt-$nmounts; mkdir -p "$mnt"; }

# Each mount_* mounts s3://$b/PREFIX read-write in the foreground (-f),
# backgrounded here so $! is the daemon; sets mnt and dpid. Nacre also sets
# cdir (its cache dir, fresh) and port (its metrics endpoint).
# A nacre mount that dies of a signal while starting is counted as a failure
# (mount.nacre, the script exits 1) and tried again, at most 3 times, so the
# measurements still come out.
crashes=0
mount_nacre() {  # PREFIX
  local i attempt rc
  for attempt in 1 2 3; do
    new_mountpoint
    cdir=$work/cache-$nmounts
    mkdir -p "$cdir"
    port=$(free_port)
    "$nacre" mount "s3://$b/$1" "$mnt" --cache-dir "$cdir" --metrics-address "127.0.0.1:$port" -f \
      >>"$work/nacre.log" 2>&1 &
    dpid=$!
    mount_pid[$mnt]=$dpid
    if wait_mounted "$mnt" "$dpid"; then
      for i in $(seq 100); do metrics >/dev/null && break; sleep 0.1; done
      sleep 0.2
      if kill -0 "$dpid" 2>/dev/null && mountpoint -q "$mnt"; then
        metrics >/dev/null && return 0
        log "nacre metrics endpoint 127.0.0.1:$port does not answer"
        return 1
      fi
    fi
    rc=0
    kill -0 "$dpid" 2>/dev/null || wait "$dpid" 2>/dev/null || rc=$?
    unmount "$mnt"
    rm -rf "$cdir"
    if [ "$rc" -gt 128 ] && [ "$attempt" -lt 3 ]; then
      crashes=$((crashes + 1))
      fail mount.nacre "nacre mount died of signal $((rc - 128)) while starting, $crashes time(s) (tried again)"
      continue
    fi
    log "nacre mount failed, status $rc (see below)"; tail -n 20 "$work/nacre.log" >&2
    return 1
  done
  return 1
}
mount_s3fs() {  # PREFIX
  new_mountpoint
  cdir=""
  s3fs "$b:/$1" "$mnt" -f -o "url=$AWS_ENDPOINT_URL,use_path_request_style,passwd_file=$work/s3fs.passwd,endpoint=$AWS_REGION" \
    >>"$work/s3fs.log" 2>&1 &
  dpid=$!
  mount_pid[$mnt]=$dpid
  wait_mounted "$mnt" "$dpid" || { log "s3fs mount failed"; tail -n 20 "$work/s3fs.log" >&2; return 1; }
}
mount_rclone() {  # PREFIX
  new_mountpoint
  cdir=$work/rclone-cache-$nmounts
  # rclone's AWS SDK refuses AWS_CA_BUNDLE with its own HTTP transport
  # ("LoadCustomCABundleError ... unsupported transport"): leave it out.
  # --vfs-write-back 0s: upload as soon as the file is closed (default: 5 s later).
  env -u AWS_CA_BUNDLE RCLONE_CONFIG="$work/rclone.conf" \
    rclone mount "rgw:$b/$1" "$mnt" --vfs-cache-mode writes --vfs-write-back 0s --cache-dir "$cdir" \
    >>"$work/rclone.log" 2>&1 &
  dpid=$!
  mount_pid[$mnt]=$dpid
  wait_mounted "$mnt" "$dpid" || { log "rclone mount failed"; tail -n 20 "$work/rclone.log" >&2; return 1; }
}
mount_tool() {  # TOOL PREFIX
  case $1 in
    nacre) mount_nacre "$2" ;;
    s3fs) mount_s3fs "$2" ;;
    rclone) mount_rclone "$2" ;;
  esac
}
unmount_tool() {  # unmounts $mnt, removes its cache dir
  unmount "$mnt"
  [ -z "${cdir:-}" ] || rm -rf "$cdir"
  dpid=""
}

metrics() { curl -sf --max-time 5 "http://127.0.0.1:$port/metrics"; }
# S3 requests Nacre made, "op count" per line, from its metrics endpoint.
nacre_requests() {
  metrics | awk '/^nacre_s3_requests_total\{/ { match($0, /operation="[^"]*"/); op = substr($0, RSTART + 11, RLENGTH - 12); print op, $2 + 0 }'
}

# utime+stime of a process in seconds.
proc_cpu() { awk -v t="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13) / t }' "/proc/$1/stat"; }

calc() { awk "BEGIN { printf \"%$1\", $2 }"; }   # FORMAT EXPR
free_bytes() { df -B1 --output=avail "$work" | tail -n 1 | tr -d ' '; }
gib() { calc .1f "$1 / 1073741824"; }

# ------------------------------------------------------------------ helpers
cat >"$work/helper.py" <<'PY'
"""Helpers of bench/mount_write.sh.

gen PATH BYTES                write the benchmark's bytes to a local file
write PATH BYTES URL NACRE [RSS_PID]
    open(O_WRONLY|O_CREAT|O_TRUNC), write BYTES in 1 MiB blocks of a random
    buffer generated before the clock starts, close(); then HEAD URL (nacre stat)
    until the object has BYTES bytes. With RSS_PID, sample its VmRSS every 0.5 s
    from the first write to the end. Prints JSON: write, close, wait seconds
    (wait = after close until the object is whole in S3, 0 when the first HEAD
    right after close already shows it), visible_at_close, cpu (this process),
    rss_peak_kb, rss_samples.
tree TAR DIRS PER_DIR         build the tar of step 2; prints "files bytes"
count URL FILES BYTES NACRE TIMEOUT
    list URL recursively until it holds FILES non-directory objects of BYTES
    bytes in all (or TIMEOUT s); prints "files bytes"; exit 1 on timeout
"""
import json, os, random, subprocess, sys, tarfile, threading, time, io

BLOCK = 1 << 20
BUF = 32 << 20


def buffer():
    return memoryview(random.Random(1).randbytes(BUF))


def write_file(path, size, buf):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    t0 = time.monotonic()
    off = 0
    while off < size:
        p = off % BUF
        chunk = buf[p:p + min(BLOCK, size - off)]
        while chunk:
            chunk = chunk[os.write(fd, chunk):]
        off += BLOCK
    t1 = time.monotonic()
    os.close(fd)
    t2 = time.monotonic()
    return t1 - t0, t2 - t1


def head_size(nacre, url):
    r = subprocess.run([nacre, "stat", url], capture_output=True, text=True)
    if r.returncode != 0:
        return None
    for line in r.stdout.splitlines():
        if line.startswith("size:"):
            return int(line.split()[1])
    return None


def listing(nacre, url):
    r = subprocess.run([nacre, "ls", "-r", url], capture_output=True, text=True)
    files = nbytes = 0
    for line in r.stdout.splitlines():
        f = line.split()
        if len(f) >= 4 and not f[3].endswith("/"):
            files += 1
            nbytes += int(f[2])
    return files, nbytes


def main():
    cmd = sys.argv[1]
    if cmd == "gen":
        write_file(sys.argv[2], int(sys.argv[3]), buffer())
    elif cmd == "write":
        path, size, url, nacre = sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
        rss_pid = sys.argv[6] if len(sys.argv) > 6 else None
        buf = buffer()
        peak = [0, 0]
        done = threading.Event()

        def sample():
            while True:
                try:
                    with open(f"/proc/{rss_pid}/status") as f:
                        for line in f:
                            if line.startswith("VmRSS:"):
                                peak[0] = max(peak[0], int(line.split()[1]))
                                peak[1] += 1
                except OSError:
                    pass
                if done.wait(0.5):
                    return

        th = None
        if rss_pid:
            th = threading.Thread(target=sample, daemon=True)
            th.start()
        c0 = os.times()
        w, c = write_file(path, size, buf)
        c1 = os.times()
        t = time.monotonic()
        visible = head_size(nacre, url) == size
        wait = 0.0
        deadline = t + 900 + size / (10 << 20)
        while not visible:
            if time.monotonic() > deadline:
                print(f"object {url} not whole in S3 {time.monotonic() - t:.0f} s after close",
                      file=sys.stderr)
                sys.exit(3)
            time.sleep(0.1)
            if head_size(nacre, url) == size:
                wait = time.monotonic() - t
                break
        done.set()
        if th:
            th.join()
        cpu = (c1.user - c0.user) + (c1.system - c0.system)
        print(json.dumps({"write": round(w, 3), "close": round(c, 3), "wait": round(wait, 3),
                          "visible_at_close": wait == 0.0, "cpu": round(cpu, 2),
                          "rss_peak_kb": peak[0], "rss_samples": peak[1]}))
    elif cmd == "tree":
        tar, dirs, per = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        rnd = random.Random(2)
        files = nbytes = 0
        with tarfile.open(tar, "w", format=tarfile.GNU_FORMAT) as t:
            for d in range(dirs):
                ti = tarfile.TarInfo(f"tree/d{d:02d}")
                ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 1700000000
                t.addfile(ti)
                for i in range(per):
                    n = rnd.randint(1024, 16384)
                    ti = tarfile.TarInfo(f"tree/d{d:02d}/f{i:03d}.bin")
                    ti.size, ti.mode, ti.mtime = n, 0o644, 1700000000
                    t.addfile(ti, io.BytesIO(rnd.randbytes(n)))
                    files += 1
                    nbytes += n
        print(files, nbytes)
    elif cmd == "count":
        url, files, nbytes, nacre, tmo = (sys.argv[2], int(sys.argv[3]), int(sys.argv[4]),
                                          sys.argv[5], float(sys.argv[6]))
        deadline = time.monotonic() + tmo
        while True:
            got = listing(nacre, url)
            if got == (files, nbytes) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        print(*got)
        sys.exit(0 if got == (files, nbytes) else 1)


main()
PY
helper() { python3 "$work/helper.py" "$@"; }

# ------------------------------------------------------------------ space, server, data
# Disk needed in /tmp: the step 3 file staged in the cache dir, the step 1
# source file (deleted before step 3, counted anyway), and when we run the RGW
# its OSD file (sparse, on the same disk), which holds every object written,
# deleted ones too until RGW's garbage collection runs (60 s and more after).
ntools=$((1 + use_s3fs + use_rclone))
osd_need=0
if [ -z "${NACRE_S3_ENV:-}" ]; then
  osd_need=$(( (ntools + 1) * rounds * write_bytes + rss_bytes + nfiles * 16384 * ntools * rounds + (2 << 30) ))
fi
need=$(( rss_bytes + write_bytes + osd_need + (2 << 30) ))
have=$(free_bytes)
if [ "$have" -lt "$need" ]; then
  echo "mount_write.sh: not enough free space in $(dirname "$work"): $(gib "$have") GiB free, $(gib "$need") GiB needed" \
       "($(gib "$rss_bytes") GiB staged in the Nacre cache dir for step 3, the $(gib "$write_bytes") GiB source file," \
       "$(gib "$osd_need") GiB for the RGW OSD file, 2 GiB margin). Free space, or shrink with" \
       "NACRE_BENCH_WRITE_GIB / NACRE_BENCH_RSS_GIB." >&2
  exit 1
fi

if [ -z "${NACRE_S3_ENV:-}" ]; then
  own_server=1
  export NACRE_S3_OSD_SIZE=${NACRE_S3_OSD_SIZE:-$(( osd_need + (20 << 30) ))}
  log "starting Ceph RGW..."
  scripts/s3-server start "$work/rgw" >/dev/null 2>>"$tools_log"
  NACRE_S3_ENV=$work/rgw/env
fi
# shellcheck disable=SC1090
source "$NACRE_S3_ENV"
b=$NACRE_TEST_BUCKET
pfx="bench-write-$$"
[ "$own_server" = 1 ] || external_prefix=$pfx
io_timeout() { echo $((180 + ($1 >> 20) / 10)); }   # seconds to move BYTES at >= 10 MiB/s

printf '%s:%s\n' "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" >"$work/s3fs.passwd"
chmod 600 "$work/s3fs.passwd"
cat >"$work/rclone.conf" <<EOF
[rgw]
type = s3
provider = Ceph
env_auth = true
endpoint = $AWS_ENDPOINT_URL
region = $AWS_REGION
EOF
tools=(nacre)
[ "$use_s3fs" = 1 ] && tools+=(s3fs)
[ "$use_rclone" = 1 ] && tools+=(rclone)

log "generating the $write_mib MiB source file and the tar of $nfiles files..."
helper gen "$work/src" "$write_bytes"
read -r tar_files tar_bytes < <(helper tree "$work/tree.tar" "$ndirs" "$per_dir")
[ "$tar_files" = "$nfiles" ] || { log "tar holds $tar_files files, expected $nfiles"; exit 1; }

# ------------------------------------------------------------------ table
declare -A failed=()
rows=()       # formatted rows, printed again at the end
targets=()    # "text|figure|MET or MISSED"
fmt_row() {  # STEP TOOL SECONDS RATE RATIO NOTE
  printf '%-24s %-12s %9s %14s %7s  %s' "$@"
}
header=$(fmt_row "step" "tool" "seconds" "rate" "ratio" "notes")
rule=$(printf '%0.s-' $(seq ${#header}))
add_row() {  # same arguments as fmt_row; prints the row now and keeps it
  local r
  r=$(fmt_row "$@")
  rows+=("$r")
  printf '%s\n' "$r"
}
fail() {  # NAME REASON
  failed[$1]=$2
  log "FAILED: $1: $2"
}
target() {  # TEXT FIGURE OK(1/0)
  local res=MISSED
  [ "$3" = 1 ] && res=MET
  targets+=("$(printf '%-58s %-30s %s' "$1" "$2" "$res")")
}
target_fail() { targets+=("$(printf '%-58s %-30s %s' "$1" "no figure ($2 failed)" MISSED)"); }

echo
echo "results as they come ($write_mib MiB sequential write, $nfiles-file untar, $rss_mib MiB for RSS):"
echo "$header"
echo "$rule"

# ------------------------------------------------------------------ step 1
declare -A best=() best_write=() best_close=() best_wait=() best_cpu=() visible=()
keep_best() {  # NAME TOTAL WRITE CLOSE WAIT CPU
  if [ -z "${best[$1]:-}" ] || awk "BEGIN { exit !($2 < ${best[$1]}) }"; then
    best[$1]=$2; best_write[$1]=$3; best_close[$1]=$4; best_wait[$1]=$5; best_cpu[$1]=$6
  fi
}
object_size() { timeout -k 5 60 "$nacre" stat "s3://$b/$1" 2>/dev/null | awk '/^size:/ { print $2 }'; }

for r in $(seq "$rounds"); do
  log "1. sequential write of $write_mib MiB, round $r/$rounds: nacre cp..."
  key="$pfx/cp-$r/object"
  timeout -k 5 300 sync
  cat "$work/src" >/dev/null   # in page cache
  if out=$(python3 bench/measure.py timeout -k 5 "$(io_timeout "$write_bytes")" "$nacre" cp "$work/src" "s3://$b/$key" 2>>"$tools_log"); then
    read -r w c <<<"$out"
    if [ "$(object_size "$key")" = "$write_bytes" ]; then
      keep_best seq.cp "$w" "$w" 0 0 "$c"
    else
      fail seq.cp "object has size '$(object_size "$key")', expected $write_bytes"
    fi
  else
    fail seq.cp "nacre cp failed (see $tools_log)"
  fi
  "$nacre" rm "s3://$b/$key" >/dev/null 2>&1 || true

  for t in "${tools[@]}"; do
    log "1. sequential write of $write_mib MiB, round $r/$rounds: $t mount..."
    prefix="$pfx/seq-$t-$r"
    if ! mount_tool "$t" "$prefix"; then fail "seq.$t" "mount failed"; continue; fi
    timeout -k 5 300 sync
    c0=$(proc_cpu "$dpid")
    if out=$(timeout -k 5 "$(io_timeout "$write_bytes")" python3 "$work/helper.py" write "$mnt/object" "$write_bytes" \
               "s3://$b/$prefix/object" "$nacre" 2>>"$tools_log"); then
      c1=$(proc_cpu "$dpid")
      read -r w c wt vis cw < <(python3 -c 'import json, sys; d = json.loads(sys.argv[1]); print(d["write"], d["close"], d["wait"], int(d["visible_at_close"]), d["cpu"])' "$out")
      keep_best "seq.$t" "$(calc .3f "$w + $c + $wt")" "$w" "$c" "$wt" "$(calc .2f "$cw + $c1 - $c0")"
      visible[$t]=$vis
      if [ "$t" != rclone ] && [ "$vis" != 1 ]; then
        fail "seq.$t" "close() returned but the object was whole in S3 only $wt s later"
      fi
      if [ "$t" = nacre ]; then
        # After an export with no open handle the staged files are removed.
        sleep 0.5
        left=$(find "$cdir/staging" -type f 2>/dev/null | wc -l)
        [ "$left" = 0 ] || fail seq.nacre "$left staged file(s) left in $cdir/staging after close"
      fi
    else
      fail "seq.$t" "write through the mount failed (see $tools_log)"
    fi
    unmount_tool
    delete_prefix "$prefix"
  done
done
rm -f "$work/src"

cp_s=${best[seq.cp]:-}
rate_of() { calc .0f "$write_bytes / 1048576 / $1"; }
if [ -n "$cp_s" ]; then
  add_row "1 write $write_mib MiB" "nacre cp" "$cp_s" "$(rate_of "$cp_s") MiB/s" "1.00" \
    "reference; CPU ${best_cpu[seq.cp]} s"
else
  add_row "1 write $write_mib MiB" "nacre cp" FAIL - - "${failed[seq.cp]}"
fi
for t in "${tools[@]}"; do
  name=seq.$t
  if [ -n "${failed[$name]:-}" ] || [ -z "${best[$name]:-}" ]; then
    add_row "1 write $write_mib MiB" "$t mount" FAIL - - "${failed[$name]:-no result}"
    continue
  fi
  s=${best[$name]}
  ratio=-
  [ -z "$cp_s" ] || ratio=$(calc .2f "$cp_s / $s")
  note="write ${best_write[$name]} s + close ${best_close[$name]} s"
  [ "${best_wait[$name]}" = 0 ] || [ "${best_wait[$name]}" = 0.0 ] || note+=" + upload after close ${best_wait[$name]} s"
  note+=" ($(calc .1f "100 * ${best_close[$name]} / $s") % close); CPU ${best_cpu[$name]} s"
  add_row "1 write $write_mib MiB" "$t mount" "$s" "$(rate_of "$s") MiB/s" "$ratio" "$note"
done
if [ -n "${best[seq.nacre]:-}" ] && [ -z "${failed[seq.nacre]:-}" ]; then
  ns=${best[seq.nacre]}
  if [ -n "$cp_s" ]; then
    q=$(calc .2f "$cp_s / $ns")
    target "1 Nacre mount >= 0.80 x nacre cp (rate)" "$q x" "$(awk "BEGIN { print ($q >= 0.80) }")"
  else
    target_fail "1 Nacre mount >= 0.80 x nacre cp (rate)" "nacre cp"
  fi
  pct=$(calc .1f "100 * ${best_close[seq.nacre]} / $ns")
  target "1 Nacre close() <= 10 % of its write time" "$pct % (${best_close[seq.nacre]} s of $ns s)" "$(awk "BEGIN { print ($pct <= 10) }")"
  for t in "${tools[@]:1}"; do
    if [ -n "${best[seq.$t]:-}" ] && [ -z "${failed[seq.$t]:-}" ]; then
      q=$(calc .2f "${best[seq.$t]} / $ns")
      target "1 Nacre mount ahead of $t ($t time / Nacre time)" "$q x" "$(awk "BEGIN { print ($q > 1) }")"
    else
      target_fail "1 Nacre mount ahead of $t" "$t"
    fi
  done
else
  target_fail "1 Nacre mount >= 0.80 x nacre cp (rate)" "Nacre"
  target_fail "1 Nacre close() <= 10 % of its write time" "Nacre"
fi

# ------------------------------------------------------------------ step 2
declare -A untar_best=() untar_note=()
for r in $(seq "$rounds"); do
  for t in "${tools[@]}"; do
    log "2. untar of $nfiles files, round $r/$rounds: $t mount..."
    name=untar.$t
    prefix="$pfx/untar-$t-$r"
    if ! mount_tool "$t" "$prefix"; then fail "$name" "mount failed"; continue; fi
    timeout -k 5 300 sync
    [ "$t" = nacre ] && nacre_requests >"$work/req0"
    # rclone uploads after close(): its time runs until S3 lists every file.
    cmd=(tar -xf "$work/tree.tar" -C "$mnt")
    if [ "$t" = rclone ]; then
      cmd=(bash -c 'tar -xf "$1" -C "$2" && python3 "$3" count "$4" "$5" "$6" "$7" 600 >/dev/null' _
           "$work/tree.tar" "$mnt" "$work/helper.py" "s3://$b/$prefix/" "$nfiles" "$tar_bytes" "$nacre")
    fi
    if out=$(python3 bench/measure.py timeout -k 5 900 "${cmd[@]}" 2>>"$tools_log"); then
      read -r w c <<<"$out"
      if [ "$t" = nacre ]; then
        nacre_requests >"$work/req1"
        untar_note[$t]="S3 requests: $(awk 'FILENAME == ARGV[1] { a[$1] = $2; next } $2 - a[$1] > 0 { printf "%s%s %d", s, $1, $2 - a[$1]; s = ", " }' "$work/req0" "$work/req1")"
      fi
      # What S3 holds right after tar returned (for rclone: after the wait above).
      if got=$(helper count "s3://$b/$prefix/" "$nfiles" "$tar_bytes" "$nacre" 0); then
        if [ -z "${untar_best[$t]:-}" ] || awk "BEGIN { exit !($w < ${untar_best[$t]}) }"; then untar_best[$t]=$w; fi
      else
        fail "$name" "S3 holds $got (files bytes) under $prefix/ after tar, expected $nfiles $tar_bytes"
      fi
    else
      fail "$name" "tar -xf failed (see $tools_log)"
    fi
    unmount_tool
    delete_prefix "$prefix"
  done
done
ns=${untar_best[nacre]:-}
[ -n "${failed[untar.nacre]:-}" ] && ns=""
ss=""
[ "$use_s3fs" = 1 ] && [ -z "${failed[untar.s3fs]:-}" ] && ss=${untar_best[s3fs]:-}
for t in "${tools[@]}"; do
  s=${untar_best[$t]:-}
  if [ -n "${failed[untar.$t]:-}" ] || [ -z "$s" ]; then
    add_row "2 untar $nfiles files" "$t mount" FAIL - - "${failed[untar.$t]:-no result}"
    continue
  fi
  ratio=-
  [ -z "$ss" ] || ratio=$(calc .2f "$ss / $s")
  note=""
  [ "$t" = s3fs ] && note="reference"
  [ "$t" = rclone ] && note="until S3 lists all $nfiles"
  [ "$t" = nacre ] && note="${untar_note[nacre]:-}"
  add_row "2 untar $nfiles files" "$t mount" "$s" "$(calc .0f "$nfiles / $s") files/s" "$ratio" "$note"
done
if [ -n "$ns" ] && [ -n "$ss" ]; then
  q=$(calc .2f "$ss / $ns")
  target "2 Nacre untar faster than s3fs (s3fs / Nacre)" "$q x" "$(awk "BEGIN { print ($q > 1) }")"
elif [ "$use_s3fs" = 1 ]; then
  target_fail "2 Nacre untar faster than s3fs" "$([ -z "$ns" ] && echo Nacre || echo s3fs)"
else
  targets+=("$(printf '%-58s %-30s %s' "2 Nacre untar faster than s3fs" "not measured (NACRE_BENCH_S3FS=0)" MISSED)")
fi
if [ -n "$ns" ]; then
  target "2 S3 holds the $nfiles files after Nacre's untar" "$nfiles files, $tar_bytes bytes" 1
else
  target "2 S3 holds the $nfiles files after Nacre's untar" "${failed[untar.nacre]:-no result}" 0
fi

# ------------------------------------------------------------------ step 3
log "3. RSS of the nacre mount while writing $rss_mib MiB..."
have=$(free_bytes)
need3=$(( rss_bytes + (1 << 30) ))
[ "$own_server" = 1 ] && need3=$(( need3 + rss_bytes ))
rss_kb=""
if [ "$have" -lt "$need3" ]; then
  fail rss.nacre "not enough free space in $(dirname "$work") for step 3: $(gib "$have") GiB free, $(gib "$need3") GiB needed (staging + OSD + 1 GiB)"
elif mount_nacre "$pfx/rss"; then
  timeout -k 5 300 sync
  if out=$(timeout -k 5 "$(io_timeout "$rss_bytes")" python3 "$work/helper.py" write "$mnt/object" "$rss_bytes" \
             "s3://$b/$pfx/rss/object" "$nacre" "$dpid" 2>>"$tools_log"); then
    read -r rss_kb samples w c < <(python3 -c 'import json, sys; d = json.loads(sys.argv[1]); print(d["rss_peak_kb"], d["rss_samples"], d["write"], d["close"])' "$out")
    hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$dpid/status")
    [ "$samples" -gt 0 ] || fail rss.nacre "no VmRSS sample of pid $dpid"
    tot=$(calc .3f "$w + $c")
    add_row "3 write $rss_mib MiB" "nacre mount" "$tot" "$(calc .0f "$rss_mib / $tot") MiB/s" - \
      "peak VmRSS $(calc .0f "$rss_kb / 1024") MiB ($samples samples); VmHWM since mount $(calc .0f "$hwm / 1024") MiB; close $c s"
  else
    fail rss.nacre "write through the mount failed (see $tools_log)"
  fi
  unmount_tool
  delete_prefix "$pfx/rss"
else
  fail rss.nacre "mount failed"
fi
if [ -n "$rss_kb" ] && [ -z "${failed[rss.nacre]:-}" ]; then
  m=$(calc .0f "$rss_kb / 1024")
  target "3 peak RSS of nacre mount <= 256 MiB" "$m MiB" "$(awk "BEGIN { print ($m <= 256) }")"
else
  add_row "3 write $rss_mib MiB" "nacre mount" FAIL - - "${failed[rss.nacre]:-no result}"
  target_fail "3 peak RSS of nacre mount <= 256 MiB" "Nacre"
fi

# ------------------------------------------------------------------ summary
echo
echo "Nacre mount write benchmark: $write_mib MiB sequential write, untar of $nfiles files" \
     "($ndirs dirs x $per_dir, $tar_bytes bytes), $rss_mib MiB for RSS; local Ceph RGW; best of $rounds round(s)"
echo
echo "$header"
echo "$rule"
printf '%s\n' "${rows[@]}"
echo
echo "ratio: step 1 nacre cp time / tool time (= rate ratio); step 2 s3fs time / tool time."
echo "rclone: time includes the upload it does after close() (until S3 shows the whole object / all files)."
echo
echo "targets:"
printf '  %s\n' "${targets[@]}"
problems=$(grep -c -i -E '\[(warning|error|critical)\]' "$work/nacre.log" 2>/dev/null || true)
[ "${problems:-0}" = 0 ] || { echo; echo "the nacre mount logs hold $problems warning/error line(s):"; grep -i -E '\[(warning|error|critical)\]' "$work/nacre.log" | head -n 5; }
for k in "${!failed[@]}"; do echo "FAILED $k: ${failed[$k]}"; done
for k in "${!failed[@]}"; do
  case $k in *.nacre) exit 1 ;; esac
done
exit 0
