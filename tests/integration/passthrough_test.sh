#!/usr/bin/env bash
# FUSE kernel passthrough through real mounts of the local RGW (Linux 6.9+,
# root): the mount's read mode in its log; a fully cached file opened
# read-only is served by the kernel from the cache file (the open counted in
# nacre_passthrough_opens_total, no read reaching the daemon:
# nacre_read_bytes_total does not move) for read() and mmap; a warm remount
# (no GET); a corrupted cache file (the open is not passthrough, the bad block
# is fetched again, the next open is); the cache file removed and the file
# released (`nacre release`) under a held passthrough fd; a write open while
# passthrough-open (ETXTBSY), then after the reader closed; --passthrough off;
# a mount without CAP_SYS_ADMIN (an unprivileged user, through the setuid
# fusermount3). Where that user cannot open /dev/fuse (a container's /dev
# without udev: mode 0600, and libfuse gives up before fusermount3 runs), the
# user's mount runs in a private mount namespace whose /dev/fuse has Debian's
# udev mode, 0666.
# Reads are checked after `echo 3 > /proc/sys/vm/drop_caches`: otherwise the
# FUSE inode's page cache could serve them in cached mode as well, and "no
# read reached the daemon" would prove nothing. (The page cache is dropped
# system-wide: tests running beside this one only get slower.)
# A kernel without passthrough cannot be had here: the unit tests cover INIT.
# Usage: passthrough_test.sh NACRE_BINARY RGW_ENV_FILE   (needs /dev/fuse; run as root)
# Helpers (check, mount_fg, unmount, the cleanup trap...): lib.sh.
# shellcheck source-path=SCRIPTDIR
set -uo pipefail
# shellcheck source=lib.sh
source "$(dirname "$(realpath "$0")")/lib.sh"
test_init passthrough "$@"

[ "$(id -u)" = 0 ] || { echo "FAIL: passthrough_test.sh must run as root (passthrough needs CAP_SYS_ADMIN; drop_caches, setpriv)"; exit 1; }
command -v setpriv >/dev/null || { echo "FAIL: setpriv is missing (apt-get install util-linux)"; exit 1; }

held=""   # a file descriptor of this shell held open on a mounted file (children inherit it)
hold() { held=""; exec {held}<"$1" || held=""; }
close_held() { if [ -n "$held" ]; then exec {held}<&-; fi; held=""; }
cleanup_first() {
  close_held   # a held fd would keep the mount busy
  local f
  if [ "$failed" -gt 0 ]; then   # what the mounts logged, for the failures above
    for f in "$work"/*.log; do
      [ -s "$f" ] && { echo "--- the last lines of $(basename "$f"):"; tail -4 "$f" | cut -c1-200; }
    done
  fi
}

cat >"$work/tool.py" <<'PY'
import errno, hashlib, mmap, os, sys

def ename(e):
    return errno.errorcode.get(e, str(e))

def fdsha(fd, want):
    """pread the whole file from offset 0 through an inherited fd (no new open)."""
    fd, h, off = int(fd), hashlib.sha256(), 0
    try:
        while True:
            c = os.pread(fd, 1 << 20, off)
            if not c:
                break
            h.update(c)
            off += len(c)
    except OSError as e:
        print(f"pread at offset {off} through fd {fd} failed: {ename(e.errno)} ({e.strerror})")
        return 1
    got = h.hexdigest()
    print(f"{off} bytes through the held fd {fd}: sha256 {got}" + ("" if got == want else f", expected {want}"))
    return 0 if got == want else 1

def mmapsha(path, want):
    with open(path, "rb") as f:
        m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        got = hashlib.sha256(m).hexdigest()
        n = len(m)
        m.close()
    print(f"{n} mapped bytes: sha256 {got}" + ("" if got == want else f", expected {want}"))
    return 0 if got == want else 1

def errno_is(want, op, path):
    """A write open (open r+b) or a truncate of path must fail with errno WANT."""
    try:
        if op == "open_rw":
            open(path, "r+b").close()
        elif op == "truncate":
            os.truncate(path, os.stat(path).st_size)
    except OSError as e:
        print(f"{op} {path}: {ename(e.errno)} ({e.strerror})")
        return 0 if ename(e.errno) == want else 1
    print(f"{op} {path}: succeeded, expected {want}")
    return 1

def write_byte(path, local, offset):
    """Open path r+b, flip the byte at offset, close (close reports the export); the same in local."""
    offset = int(offset)
    with open(local, "r+b") as f:
        f.seek(offset)
        b = bytes([f.read(1)[0] ^ 0xFF])
        f.seek(offset)
        f.write(b)
    try:
        f = open(path, "r+b")
    except OSError as e:
        print(f"open(r+b) of {path} failed: {ename(e.errno)} ({e.strerror})")
        return 1
    try:
        f.seek(offset)
        f.write(b)
        f.close()
    except OSError as e:
        print(f"write/close of {path} failed: {ename(e.errno)} ({e.strerror})")
        return 1
    print(f"wrote 0x{b[0]:02x} at offset {offset} and closed")
    return 0

def data_file_of(path, cache_dir):
    """The cache data file of a mounted file: <cache>/v1/h[0:2]/h.data, h = sha256(bucket\\0key\\0etag)."""
    url = os.getxattr(path, "user.nacre.s3_url").decode()
    etag = os.getxattr(path, "user.nacre.etag").decode()
    bucket, key = url[len("s3://"):].split("/", 1)
    h = hashlib.sha256(b"\0".join(x.encode() for x in (bucket, key, etag))).hexdigest()
    data = os.path.join(cache_dir, "v1", h[:2], h + ".data")
    if not os.path.isfile(data):
        print(f"{data} (the entry of {url}, ETag {etag}) does not exist", file=sys.stderr)
        return 1
    print(data)
    return 0

def corrupt(path):
    """Flip 4 KiB in the middle of path."""
    fd = os.open(path, os.O_RDWR)
    size = os.fstat(fd).st_size
    off = size // 2 // 4096 * 4096
    b = os.pread(fd, 4096, off)
    os.pwrite(fd, bytes(x ^ 0xFF for x in b), off)
    os.close(fd)
    print(f"flipped {len(b)} bytes at offset {off} of {path} ({size} bytes)")
    return 0

sys.exit(globals()[sys.argv[1]](*sys.argv[2:]))
PY
tool() { timeout "${TOOL_TIMEOUT:-120}" python3 "$work/tool.py" "$@"; }

# ---------------------------------------------------------------- helpers
drop_caches() {
  sync
  echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || record FAIL "echo 3 > /proc/sys/vm/drop_caches failed"
}

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

# reads_right PATH SHA256 [RUNNER...]: a new open of PATH, read whole (by RUNNER,
# e.g. as_nobody), must hash to SHA256.
reads_right() {
  local path=$1 want=$2 got; shift 2
  got=$("$@" timeout 120 sha256sum "$path" | cut -d' ' -f1)
  [ "$got" = "$want" ] || { echo "sha256 of $path is '${got:-<the read failed>}', expected $want"; return 1; }
  echo "sha256 $want"
}

# snap NAME: the mount's counters, "passthrough_opens read_bytes GetObject bad_blocks".
snap() {
  local port=${mount_port[$1]}
  echo "$(metric "$port" nacre_passthrough_opens_total) $(metric "$port" nacre_read_bytes_total)" \
       "$(metric "$port" 'nacre_s3_requests_total{operation="GetObject"}') $(metric "$port" nacre_cache_bad_blocks_total)"
}

# mode_has NAME PATTERN...: the mount's "read mode:" log line (logged at INIT)
# contains every PATTERN.
mode_has() {
  local name=$1 line pat; shift
  wait_for 10 grep -q 'read mode:' "$work/$name.log"
  line=$(grep -m1 -o 'read mode:.*' "$work/$name.log")
  for pat; do
    [[ $line == *"$pat"* ]] || { echo "the log's read mode line is '${line:-<none in $work/$name.log>}', expected '$pat' in it"; return 1; }
  done
  echo "$line"
}

# ---------------------------------------------------------------- fixtures
gen f40 $((40 * MiB)); gen r40 $((40 * MiB + 4097)); gen w40 $((40 * MiB)); gen s4 $((4 * MiB))
sha_f40=$(sha_of "$src/f40") sha_r40=$(sha_of "$src/r40") sha_w40=$(sha_of "$src/w40") sha_s4=$(sha_of "$src/s4")
cp "$src/w40" "$src/w40.new"   # what w40 becomes after case 5's write
fixtures_ok=1
for f in f40 r40 w40 s4; do up "$src/$f" "$p/data/$f" || { echo "upload of $f failed"; fixtures_ok=0; }; done
[ "$fixtures_ok" = 1 ] || { echo "FAIL: fixtures could not be uploaded"; exit 1; }
echo "fixtures uploaded ($((SECONDS - started)) s)"

# ------------------------------------------- 1: passthrough on this machine
t0=$SECONDS
echo "== 1: the mount runs in passthrough mode; a fully cached 40 MiB file is read by the kernel (read, mmap)"
check "1: mount -f M1" mount_fg M1 "$p/data" "$work/cacheM"
M1="$work/M1"
check "1: the log says 'read mode: passthrough' (kernel $(uname -r), root)" mode_has M1 "read mode: passthrough"

read -r pt0 rb0 get0 _ <<<"$(snap M1)"
check "1: the first (cold) read of f40 returns the right bytes" reads_right "$M1/f40" "$sha_f40"
read -r pt1 rb1 get1 _ <<<"$(snap M1)"
check "1: the cold open was not passthrough (passthrough opens $pt0 -> $pt1), it fetched (GetObject $get0 -> $get1)" \
  test "$pt1" -eq "$pt0" -a "$get1" -gt "$get0"

drop_caches
check "1: a second open (page cache dropped) returns the right bytes" reads_right "$M1/f40" "$sha_f40"
read -r pt2 rb2 get2 _ <<<"$(snap M1)"
check "1: the second open was passthrough: nacre_passthrough_opens_total $pt1 -> $pt2 (expected +1)" \
  test "$pt2" -eq $((pt1 + 1))
check "1: its reads never reached the daemon: nacre_read_bytes_total $rb1 -> $rb2 (expected no change)" \
  test "$rb2" -eq "$rb1"
check "1: and nothing was fetched: GetObject $get1 -> $get2" test "$get2" -eq "$get1"

drop_caches
check "1: an mmap read (python3 mmap) returns the right bytes" tool mmapsha "$M1/f40" "$sha_f40"
read -r pt3 rb3 _ _ <<<"$(snap M1)"
check "1: the mmap open was passthrough: nacre_passthrough_opens_total $pt2 -> $pt3 (expected +1)" \
  test "$pt3" -eq $((pt2 + 1))
check "1: its page faults never reached the daemon: nacre_read_bytes_total $rb2 -> $rb3 (expected no change)" \
  test "$rb3" -eq "$rb2"

# Below --passthrough-min-size (8M by default) a fully cached file stays in cached mode.
check "1: a 4 MiB file reads right (cold)" reads_right "$M1/s4" "$sha_s4"
drop_caches
read -r pt4 rb4 _ _ <<<"$(snap M1)"
check "1: the 4 MiB file reads right again, fully cached" reads_right "$M1/s4" "$sha_s4"
read -r pt5 rb5 _ _ <<<"$(snap M1)"
check "1: a file below --passthrough-min-size is not passthrough (opens $pt4 -> $pt5, read bytes +$((rb5 - rb4)))" \
  test "$pt5" -eq "$pt4" -a $((rb5 - rb4)) -eq $((4 * MiB))
check "1: unmount M1" unmount "$M1"
echo "-- case 1 done ($((SECONDS - t0)) s)"

# ------------------------------------------- 2: warm remount
t0=$SECONDS
echo "== 2: a remount with the same --cache-dir serves f40 by passthrough without any GET"
check "2: mount -f M2 (same cache directory)" mount_fg M2 "$p/data" "$work/cacheM"
M2="$work/M2"
check "2: the log says 'read mode: passthrough'" mode_has M2 "read mode: passthrough"
drop_caches
check "2: f40 reads right after the remount (page cache dropped)" reads_right "$M2/f40" "$sha_f40"
read -r pt rb gets _ <<<"$(snap M2)"
check "2: the open was passthrough: nacre_passthrough_opens_total = $pt (expected 1)" test "$pt" -eq 1
check "2: 0 GetObject requests (got $gets)" test "$gets" -eq 0
check "2: no read reached the daemon: nacre_read_bytes_total = $rb (expected 0)" test "$rb" -eq 0
check "2: unmount M2" unmount "$M2"
echo "-- case 2 done ($((SECONDS - t0)) s)"

# ------------------------------------------- 3: a corrupted cache file
t0=$SECONDS
echo "== 3: a cache file corrupted while unmounted: the open is not passthrough, the bad block is fetched again"
corrupt_biggest() {  # the biggest regular file under v1/ that is not a metadata file: f40's data
  local f
  f=$(find "$work/cacheM/v1" -type f ! -name '*.meta' ! -name '*.tmp' ! -name LOCK -printf '%s %p\n' |
        sort -nr | head -1 | cut -d' ' -f2-)
  [ -n "$f" ] || { echo "no data file under $work/cacheM/v1:"; find "$work/cacheM" -type f -ls; return 1; }
  [ "$(size_of "$f")" = "$(size_of "$src/f40")" ] ||
    { echo "the biggest cache file $f has $(size_of "$f") bytes, not f40's $(size_of "$src/f40")"; return 1; }
  tool corrupt "$f"
}
check "3: overwrite 4 KiB in the middle of the cached data file" corrupt_biggest
check "3: mount -f M3 (same cache directory)" mount_fg M3 "$p/data" "$work/cacheM"
M3="$work/M3"
drop_caches
read -r pt0 rb0 get0 bad0 <<<"$(snap M3)"
check "3: f40 reads right despite the corrupted cache file" reads_right "$M3/f40" "$sha_f40"
read -r pt1 rb1 get1 bad1 <<<"$(snap M3)"
check "3: the bad block was detected: nacre_cache_bad_blocks_total $bad0 -> $bad1 (expected >= 1)" test "$bad1" -ge 1
check "3: and fetched again: GetObject $get0 -> $get1 (expected > 0)" test "$get1" -gt "$get0"
check "3: that open was not passthrough: nacre_passthrough_opens_total $pt0 -> $pt1 (expected no change)" \
  test "$pt1" -eq "$pt0"
drop_caches
check "3: the following open reads right" reads_right "$M3/f40" "$sha_f40"
read -r pt2 rb2 get2 _ <<<"$(snap M3)"
check "3: and is passthrough again: nacre_passthrough_opens_total $pt1 -> $pt2 (expected +1), read bytes +$((rb2 - rb1)), GetObject +$((get2 - get1))" \
  test "$pt2" -eq $((pt1 + 1)) -a "$rb2" -eq "$rb1" -a "$get2" -eq "$get1"
echo "-- case 3 done ($((SECONDS - t0)) s)"

# ------------------------------------------- 4: cache file removed / released under a passthrough fd
t0=$SECONDS
echo "== 4a: the cache data file removed (rm) while a passthrough fd is held"
read -r pt0 rb0 _ _ <<<"$(snap M3)"
hold "$M3/f40"
read -r pt1 _ _ _ <<<"$(snap M3)"
check "4a: the held open (fd $held) is passthrough: nacre_passthrough_opens_total $pt0 -> $pt1 (expected +1)" \
  test "$pt1" -eq $((pt0 + 1))
data_f40=$(tool data_file_of "$M3/f40" "$work/cacheM" 2>"$work/df.err")
check "4a: rm of f40's cache data file ${data_f40:-<not found: $(cat "$work/df.err")>}" \
  bash -c "[ -n '$data_f40' ] && rm '$data_f40' && ! [ -e '$data_f40' ]"
drop_caches
check "4a: the whole file reads right through the held fd after the rm" tool fdsha "$held" "$sha_f40"
read -r _ rb1 get1 _ <<<"$(snap M3)"
check "4a: those reads never reached the daemon: nacre_read_bytes_total $rb0 -> $rb1" test "$rb1" -eq "$rb0"
close_held
check "4a: after the reader closed, a new open reads right (the removed entry is fetched again)" \
  reads_right "$M3/f40" "$sha_f40"
read -r _ _ get2 _ <<<"$(snap M3)"
echo "     (GetObject $get1 -> $get2 for that read)"

echo "== 4b: nacre release of a file while a passthrough fd is held"
check "4b: r40 reads right (cold: cached whole)" reads_right "$M3/r40" "$sha_r40"
read -r pt0 rb0 _ _ <<<"$(snap M3)"
hold "$M3/r40"
read -r pt1 _ _ _ <<<"$(snap M3)"
check "4b: the held open (fd $held) is passthrough: nacre_passthrough_opens_total $pt0 -> $pt1 (expected +1)" \
  test "$pt1" -eq $((pt0 + 1))
check "4b: nacre release of r40 exits 0" timeout 30 "$nacre" release "$M3/r40"
check "4b: nacre status shows r40 released (0 %)" \
  bash -c "timeout 30 '$nacre' status '$M3/r40' | tee /dev/stderr | grep -Eq '^released .* 0\.0%'"
drop_caches
check "4b: the whole file reads right through the held fd after the release" tool fdsha "$held" "$sha_r40"
check "4b: a new open while the fd is held reads right" reads_right "$M3/r40" "$sha_r40"
read -r pt2 rb2 get2 _ <<<"$(snap M3)"
echo "     (while held: passthrough opens $pt1 -> $pt2, read bytes +$((rb2 - rb0)))"
close_held
check "4b: after the reader closed, a new open reads right" reads_right "$M3/r40" "$sha_r40"
read -r pt3 _ get3 _ <<<"$(snap M3)"
echo "     (GetObject $get2 -> $get3 for that read: the released file is fetched again)"
drop_caches
check "4b: once cached again, r40 reads right" reads_right "$M3/r40" "$sha_r40"
read -r pt4 _ _ _ <<<"$(snap M3)"
check "4b: and that open is passthrough: nacre_passthrough_opens_total $pt3 -> $pt4 (expected +1)" \
  test "$pt4" -eq $((pt3 + 1))
echo "-- case 4 done ($((SECONDS - t0)) s)"

# ------------------------------------------- 5: a write open while passthrough-open
t0=$SECONDS
echo "== 5: a write open of a file open by passthrough fails with ETXTBSY; after the reader closes it works"
check "5: w40 reads right (cold: cached whole)" reads_right "$M3/w40" "$sha_w40"
read -r pt0 _ _ _ <<<"$(snap M3)"
hold "$M3/w40"
read -r pt1 _ _ _ <<<"$(snap M3)"
check "5: the held open (fd $held) is passthrough: nacre_passthrough_opens_total $pt0 -> $pt1 (expected +1)" \
  test "$pt1" -eq $((pt0 + 1))
check "5: open(w40, 'r+b') while passthrough-open fails with ETXTBSY (26)" tool errno_is ETXTBSY open_rw "$M3/w40"
check "5: truncate(w40) while passthrough-open fails with ETXTBSY (26)" tool errno_is ETXTBSY truncate "$M3/w40"
check "5: the held reader still reads the old bytes" tool fdsha "$held" "$sha_w40"
close_held
check "5: after the reader closed: open(r+b), write a byte at 20 MiB, close" \
  tool write_byte "$M3/w40" "$src/w40.new" $((20 * MiB))
check "5: a new open reads the written content" timeout 120 cmp "$M3/w40" "$src/w40.new"
check "5: S3 holds the written content" bash -c "timeout 120 '$nacre' cp '$p/data/w40' - | cmp - '$src/w40.new'"
check "5: unmount M3" unmount "$M3"
echo "-- case 5 done ($((SECONDS - t0)) s)"

# ------------------------------------------- 6: --passthrough off
t0=$SECONDS
echo "== 6: --passthrough off: cached mode, every read through the daemon"
check "6: mount -f OFF --passthrough off" mount_fg OFF "$p/data" "$work/cacheOff" --passthrough off
OFF="$work/OFF"
check "6: the log says 'read mode: cached' and '--passthrough off'" mode_has OFF "read mode: cached" "--passthrough off"
check "6: f40 reads right (cold)" reads_right "$OFF/f40" "$sha_f40"
drop_caches
read -r _ rb0 get0 _ <<<"$(snap OFF)"
check "6: f40 reads right again, fully cached" reads_right "$OFF/f40" "$sha_f40"
read -r pt rb1 get1 _ <<<"$(snap OFF)"
check "6: nacre_passthrough_opens_total stays 0 (got $pt)" test "$pt" -eq 0
check "6: the reads went through the daemon (read bytes +$((rb1 - rb0))), from the cache (GetObject +$((get1 - get0)))" \
  test $((rb1 - rb0)) -eq "$(size_of "$src/f40")" -a "$get1" -eq "$get0"
check "6: unmount OFF" unmount "$OFF"
echo "-- case 6 done ($((SECONDS - t0)) s)"

# ------------------------------------------- 7: no CAP_SYS_ADMIN
t0=$SECONDS
echo "== 7: an unprivileged user's mount (through the setuid fusermount3): cached mode, no CAP_SYS_ADMIN"
nobody=65534
u_ns=()   # where the user's mount is visible: () here, (nsenter -t PID -m --) in 7b
as_nobody() { "${u_ns[@]}" setpriv --reuid=$nobody --regid=$nobody --clear-groups -- env HOME=/nonexistent "$@"; }
nobody_can_open_fuse() { setpriv --reuid=$nobody --regid=$nobody --clear-groups -- test -r /dev/fuse -a -w /dev/fuse; }
chmod 711 "$work"   # the user must reach its mount point and cache; $src stays 0700
mounted_for() { awk -v m="$2" '$2 == m {f = 1} END {exit !f}' "/proc/$1/mounts" 2>/dev/null; }

# Why an unprivileged mount failed, for the failure message (the reason first).
fusermount_diagnosis() {
  local fm
  fm=$(command -v fusermount3)
  if ! nobody_can_open_fuse; then
    echo "WHY: uid $nobody cannot open /dev/fuse ($(stat -c '%A %U:%G' /dev/fuse)). libfuse 3.14 opens /dev/fuse"
    echo "  itself and runs fusermount3 only when mount(2) then fails with EPERM: a failed open is final,"
    echo "  fusermount3 is never reached. Debian's udev rule makes /dev/fuse 0666; this /dev has no udev."
  fi
  echo "fusermount3 is $(stat -c '%A %U' "$fm") on a file system mounted $(findmnt -no OPTIONS -T "$fm")"
  echo "as uid $nobody: $(setpriv --reuid=$nobody --regid=$nobody --clear-groups -- grep -E 'CapEff|NoNewPrivs' /proc/self/status | tr -s '\t\n' '  ')"
  echo "/etc/fuse.conf: $(grep -v '^#' /etc/fuse.conf 2>/dev/null | tr '\n' ' ')"
}

# mount_nobody NAME [DEV]: `nacre mount -f` as uid 65534 (S3 settings from the
# environment) on $work/NAME with cache $work/cacheNAME. With DEV: in a private
# mount namespace whose /dev/fuse is DEV; the mount is visible there only.
mount_nobody() {
  local name=$1 dev=${2:-} mnt=$work/$1 cache=$work/cache$1 port pid
  mkdir -p "$mnt" "$cache"
  chown $nobody:$nobody "$mnt" "$cache"
  port=$(free_port)
  local cmd=(setpriv "--reuid=$nobody" "--regid=$nobody" --clear-groups -- env HOME=/nonexistent
             "$nacre" mount "$p/data" "$mnt" --cache-dir "$cache" -f --metrics-address "127.0.0.1:$port")
  if [ -z "$dev" ]; then
    "${cmd[@]}" >>"$work/$name.log" 2>&1 &
  else   # unshare and sh exec (no fork): the pid is nacre's
    # shellcheck disable=SC2016  # expanded by that sh
    unshare -m --propagation private -- "$(dirname "$(realpath "$0")")/own_mount_ns.sh" "$work" \
      sh -c 'mount --bind "$0" /dev/fuse && exec "$@"' "$dev" "${cmd[@]}" >>"$work/$name.log" 2>&1 &
  fi
  pid=$!
  fg_pids+=("$pid")
  mount_pid[$mnt]=$pid
  mount_port[$name]=$port
  u_ns=()
  [ -z "$dev" ] || u_ns=(nsenter -t "$pid" -m --)
  wait_for 30 bash -c "awk -v m='$mnt' '\$2 == m {f = 1} END {exit !f}' /proc/$pid/mounts 2>/dev/null || ! kill -0 $pid 2>/dev/null"
  if ! mounted_for "$pid" "$mnt" || ! wait_for 10 metrics_up "$port"; then
    echo "the mount as uid $nobody did not come up; its log:"; tail -3 "$work/$name.log"
    [ -n "$dev" ] || fusermount_diagnosis
    return 1
  fi
  echo "nacre (pid $pid) runs as uid $(ps -o uid= -p "$pid" | tr -d ' '), $(grep CapEff "/proc/$pid/status" | tr -s '\t' ' ')"
}

unmount_nobody() {  # unmount_nobody NAME: fusermount3 -u as the user; nacre must exit
  local mnt=$work/$1 pid=${mount_pid[$work/$1]}
  as_nobody fusermount3 -u "$mnt" || return 1
  wait_for 10 gone "$pid" || { echo "nacre $pid still running 10 s after fusermount3 -u"; return 1; }
  wait "$pid" 2>/dev/null
  ! is_mounted "$mnt" || { echo "$mnt is still mounted"; return 1; }
}

case7() {  # case7 LABEL NAME [DEV]: mount as uid 65534; the read mode; two reads as that user
  local l=$1 name=$2 dev=${3:-} mnt=$work/$2 pid pt rb0 rb1 get0 get1
  check "$l: nacre mount -f as uid $nobody (mounted by the setuid fusermount3)" mount_nobody "$name" "$dev"
  pid=${mount_pid[$mnt]}
  mounted_for "$pid" "$mnt" || return 0
  check "$l: a user mount (user_id=$nobody in its mount table)" \
    bash -c "awk -v m='$mnt' '\$2 == m && \$4 ~ /user_id=$nobody,/ {f = 1} END {exit !f}' /proc/$pid/mounts"
  check "$l: the log says 'read mode: cached' and 'CAP_SYS_ADMIN'" mode_has "$name" "read mode: cached" "CAP_SYS_ADMIN"
  # Root may not read a user's FUSE mount without allow_other: read as that user.
  check "$l: f40 reads right as uid $nobody (cold)" reads_right "$mnt/f40" "$sha_f40" as_nobody
  drop_caches
  read -r _ rb0 get0 _ <<<"$(snap "$name")"
  check "$l: f40 reads right again as uid $nobody, fully cached" reads_right "$mnt/f40" "$sha_f40" as_nobody
  read -r pt rb1 get1 _ <<<"$(snap "$name")"
  check "$l: nacre_passthrough_opens_total stays 0 (got $pt)" test "$pt" -eq 0
  check "$l: the reads went through the daemon (read bytes +$((rb1 - rb0))), from the cache (GetObject +$((get1 - get0)))" \
    test $((rb1 - rb0)) -eq "$(size_of "$src/f40")" -a "$get1" -eq "$get0"
  check "$l: fusermount3 -u as uid $nobody; nacre exits" unmount_nobody "$name"
}

if nobody_can_open_fuse; then
  case7 7 U
else
  # This /dev/fuse is 0600 (a container's /dev, no udev): the user could not even
  # open it. The checks run where /dev/fuse has Debian's udev mode, 0666: in a
  # private mount namespace with such a node bound over it.
  echo "-- /dev/fuse is $(stat -c %A /dev/fuse) here: the user mounts in a mount namespace whose /dev/fuse is 0666"
  mknod -m 666 "$work/fuse-dev" c $((16#$(stat -c %t /dev/fuse))) $((16#$(stat -c %T /dev/fuse)))
  case7 7 U "$work/fuse-dev"
  u_ns=()
fi
echo "-- case 7 done ($((SECONDS - t0)) s)"

test_finish
