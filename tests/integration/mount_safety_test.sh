#!/usr/bin/env bash
# Regressions from an outside review of `nacre mount`, one check (or group) per
# thing that broke: release on a read-only mount, the page cache mixing object
# versions, fstat of a deleted file, a deleted prefix that stayed, a taken
# metrics port, a bad -o uid, unmount with S3 stalled, cache file modes,
# setuid bits, symlinks leaving the mount, a held file larger than the cache,
# and a full cache disk.
# Usage: mount_safety_test.sh NACRE_BINARY RGW_ENV_FILE   (needs /dev/fuse; run as root)
#
# The stall check (g) freezes an RGW with SIGSTOP. It does that to an RGW of
# its own, started here in the work directory (about 10 s), never to the
# shared one of RGW_ENV_FILE: so this script can run next to mount_test,
# cli_test and s3_rgw_test under `ctest -j2` with no RESOURCE_LOCK.
# Everything else uses its own prefix, mount points, cache directories and
# ports, as mount_test does.
# shellcheck source-path=SCRIPTDIR
set -uo pipefail
here=$(dirname "$(realpath "$0")")
# shellcheck source=lib.sh
source "$here/lib.sh"
test_init safety "$@"
s3_server="$here/../../scripts/s3-server"
umask 022   # the usual one: the cache must not depend on a strict umask (check h)

stall_rgw_dir=""   # the private RGW of check g
stall_rgw_pid=""   # its radosgw while it may be stopped
cleanup_first() {  # a stopped server would hang every unmount and delete
  [ -z "$stall_rgw_pid" ] || kill -CONT "$stall_rgw_pid" 2>/dev/null
}
cleanup_last() {
  [ -z "$stall_rgw_dir" ] || timeout 120 "$s3_server" stop "$stall_rgw_dir" >/dev/null 2>&1
}

cat >"$work/safety.py" <<'PY'
import errno, hashlib, os, subprocess, sys, time

MiB = 1 << 20
fails = 0

def ok(name, detail=""):
    print(f"ok {name}" + (f": {detail}" if detail else ""), flush=True)

def bad(name, detail=""):
    global fails
    fails += 1
    print(f"FAIL {name}" + (f": {detail}" if detail else ""), flush=True)

def expect(cond, name, detail=""):
    (ok if cond else bad)(name, detail)

def load(path):
    with open(path, "rb") as f:
        return f.read()

def sha(b):
    return hashlib.sha256(b).hexdigest()[:16]

def read_full(fd, n, off):
    out = b""
    while len(out) < n:
        c = os.pread(fd, min(n - len(out), 8 * MiB), off + len(out))
        if not c:
            break
        out += c
    return out

def whole(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        return read_full(fd, 1 << 40, 0)
    finally:
        os.close(fd)

def which(got, **candidates):
    """Which version got is, e.g. which(b, v1=v1, v2=v2) -> "v2"."""
    for name, ref in candidates.items():
        if got == ref:
            return name
    return f"none of {', '.join(candidates)} ({len(got)} bytes, sha256 {sha(got)})"

def v2_bytes(chunk, off, v1, v2):
    """Bytes of chunk (at offset off) that differ from v1 and equal v2."""
    return sum(1 for i, c in enumerate(chunk)
               if off + i < len(v2) and (off + i >= len(v1) or c != v1[off + i]) and c == v2[off + i])

def versions(path, v1f, v2f, v3f, nacre, url, ttl):
    """Check b: an open handle (A) pins v1; opens by path after an overwrite see v2;
    neither pollutes the other's page cache. Then fstat(A2) keeps v2's size when the
    path shows v3 (another size)."""
    v1, v2, v3 = load(v1f), load(v2f), load(v3f)
    wait = float(ttl) + 1.5
    print(f"v1 sha256 {sha(v1)}, v2 {sha(v2)} ({len(v2)} bytes), v3 {sha(v3)} ({len(v3)} bytes)")
    a = os.open(path, os.O_RDONLY)
    # No kernel read-ahead on A: Nacre's prefetch then loads well under the 48 MiB, so
    # A's later reads reach blocks of v1 that were never fetched (EIO, not v2's bytes).
    os.posix_fadvise(a, 0, 0, os.POSIX_FADV_RANDOM)
    first = read_full(a, MiB, 0)
    expect(first == v1[:MiB], "A (opened before the overwrite) reads v1's first MiB", which(first, v1=v1[:MiB], v2=v2[:MiB]))
    subprocess.run([nacre, "cp", v2f, url], check=True, stdout=subprocess.DEVNULL, timeout=120)
    time.sleep(wait)
    b = whole(path)
    expect(b == v2, "B (a new open after the TTL) reads exactly v2", which(b, v1=v1, v2=v2))
    again = read_full(a, MiB, 0)
    expect(again == v1[:MiB], "A re-reads v1's first MiB (cached, A pins v1)", which(again, v1=v1[:MiB], v2=v2[:MiB]))
    off, eio, foreign, other = MiB, None, 0, 0
    while off < len(v1):
        try:
            c = os.pread(a, MiB, off)
        except OSError as e:
            eio = e.errno
            break
        if not c:
            break
        if c != v1[off:off + len(c)]:
            n2 = v2_bytes(c, off, v1, v2)
            foreign += n2
            other += sum(1 for i, x in enumerate(c) if off + i >= len(v1) or x != v1[off + i]) - n2
        off += len(c)
    detail = (f"read {off} of {len(v1)} bytes, then "
              + ("end of file" if eio is None else errno.errorcode.get(eio, str(eio)))
              + f"; bytes of v2 (not v1): {foreign}, of neither: {other}")
    expect(foreign == 0 and other == 0 and (eio is None or eio == errno.EIO)
           and (eio is not None or off == len(v1)),
           "A's other reads return only v1 bytes or EIO, never v2's", detail)
    c = whole(path)
    expect(c == v2, "C (a new open after A's reads) reads exactly v2: A did not pollute the page cache",
           which(c, v1=v1, v2=v2))
    os.close(a)

    # Round 2: a different size, seen by path and by fstat of an older handle.
    a2 = os.open(path, os.O_RDONLY)
    first = read_full(a2, MiB, 0)
    expect(first == v2[:MiB], "A2 (opened on v2) reads v2's first MiB", which(first, v2=v2[:MiB], v3=v3[:MiB]))
    subprocess.run([nacre, "cp", v3f, url], check=True, stdout=subprocess.DEVNULL, timeout=120)
    time.sleep(wait)
    size_path = os.stat(path).st_size
    size_fd = os.fstat(a2).st_size
    expect(size_path == len(v3), "stat PATH shows v3's size after the TTL", f"{size_path}, v3 has {len(v3)}")
    expect(size_fd == len(v2), "fstat(A2) still shows v2's size", f"{size_fd}, v2 has {len(v2)}")
    c = whole(path)
    expect(c == v3, "a new open reads exactly v3", which(c, v2=v2, v3=v3))
    os.close(a2)

def deleted(path, src, nacre, url, ttl):
    """Check c: fstat of an open file whose object was deleted."""
    ref = load(src)
    fd = os.open(path, os.O_RDONLY)
    head = read_full(fd, 4096, 0)
    expect(head == ref[:4096], "the open file reads its first bytes")
    subprocess.run([nacre, "rm", url], check=True, stdout=subprocess.DEVNULL, timeout=60)
    time.sleep(float(ttl) + 1.5)
    try:
        st = os.fstat(fd)
        expect(st.st_size == len(ref), "fstat(fd) succeeds after the object was deleted",
               f"size {st.st_size} of {len(ref)}")
    except OSError as e:
        bad("fstat(fd) succeeds after the object was deleted", f"{errno.errorcode.get(e.errno)} ({e.strerror})")
    try:
        os.stat(path)
        bad("stat PATH fails with ENOENT", "it succeeded")
    except OSError as e:
        expect(e.errno == errno.ENOENT, "stat PATH fails with ENOENT", errno.errorcode.get(e.errno, str(e.errno)))
    os.close(fd)

def links(mnt, contained):
    """Check j: readlink (and following) of symlinks whose targets leave the mount."""
    contained = contained == "1"
    cases = [("l/abs", "/etc/passwd", True), ("l/up", "../../escape", True),
             ("l/in", "inside/target", False), ("l/uptop", "../top.txt", False)]
    for name, target, escapes in cases:
        path = f"{mnt}/{name}"
        try:
            got = os.readlink(path)
            res = f"-> {got}"
        except OSError as e:
            got, res = None, f"{errno.errorcode.get(e.errno, e.errno)} ({e.strerror})"
        if contained and escapes:
            expect(got is None and res.startswith("EACCES"), f"readlink {name} ({target}) is refused with EACCES", res)
            try:
                with open(path, "rb") as f:
                    f.read(1)
                bad(f"open through {name} is refused", "it opened")
            except OSError as e:
                expect(e.errno == errno.EACCES, f"open through {name} is refused with EACCES",
                       errno.errorcode.get(e.errno, str(e.errno)))
        else:
            expect(got == target, f"readlink {name} gives {target}", res)
    # The inside ones resolve to their targets' bytes.
    for name, want in (("l/in", f"{mnt}/l/inside/target"), ("l/uptop", f"{mnt}/top.txt")):
        try:
            expect(load(f"{mnt}/{name}") == load(want), f"{name} resolves inside the mount")
        except OSError as e:
            bad(f"{name} resolves inside the mount", str(e))

try:
    globals()[sys.argv[1]](*sys.argv[2:])
except Exception as e:  # a crash is a failure of the check group, with its reason
    import traceback
    traceback.print_exc(file=sys.stdout)
    sys.exit(2)
sys.exit(0)
PY

# pychecks TITLE FUNCTION ARGS...: runs a function of safety.py; each "ok NAME"
# or "FAIL NAME" line it prints is a check named "TITLE: NAME"; other lines are
# shown as details. A crash or a run without results is a failure too.
pychecks() {
  local title=$1; shift
  local rc=0 n=0 line
  timeout 300 python3 "$work/safety.py" "$@" >"$work/py.out" 2>&1 || rc=$?
  while IFS= read -r line; do
    case $line in
      "ok "*) record OK "$title: ${line#ok }"; n=$((n + 1)) ;;
      "FAIL "*) record FAIL "$title: ${line#FAIL }"; n=$((n + 1)) ;;
      *) echo "     $line" ;;
    esac
  done <"$work/py.out"
  if [ "$rc" != 0 ] || [ "$n" = 0 ]; then record FAIL "$title: the helper exited with status $rc after $n checks"; fi
}

sha() { sha256sum | cut -c1-64; }
sha_of() { sha256sum <"$1" | cut -c1-64; }
not_mounted() { ! is_mounted "$1"; }
no_daemon() { [ -z "$(daemon_pids "$1")" ]; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}'; }
cached_bytes() {  # cached_bytes PATH: cached bytes per `nacre status` (its total line)
  timeout 30 "$nacre" status "$1" | awk '{c = $2} END {print c}'
}
cached_is() {  # cached_is PATH OP N, e.g. cached_is FILE -eq 0
  local c
  c=$(cached_bytes "$1") || { echo "nacre status $1 failed"; return 1; }
  echo "$c bytes cached"
  test "$c" "$2" "$3"
}
same_sha() {  # same_sha FILE REFERENCE: reads FILE whole, compares sha256
  local got
  got=$(timeout 120 cat "$1" | sha) || { echo "reading $1 failed"; return 1; }
  echo "sha256 ${got:0:16}"
  [ "$got" = "$(sha_of "$2")" ] || { echo "sha256 differs from the reference's"; return 1; }
}
# data_disk DIR: bytes of data the cache's .data files hold on disk (they are sparse:
# their apparent size is the object's size whatever is cached). Summed over their
# data extents (SEEK_DATA/SEEK_HOLE), not du: du also counts the blocks of a file's
# extent tree, file system metadata that grows with the holes eviction punches (it
# once put a cache of exactly 16 MiB of blocks 4 KiB over its bound).
data_disk() {
  python3 - "$1" <<'PY'
import os, sys
total = 0
for root, _, files in os.walk(sys.argv[1]):
    for name in files:
        if not name.endswith(".data"):
            continue
        try:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
        except OSError:  # evicted meanwhile
            continue
        try:
            off, end = 0, os.fstat(fd).st_size
            while off < end:
                try:
                    start = os.lseek(fd, off, os.SEEK_DATA)
                except OSError:  # ENXIO: no data after off
                    break
                hole = os.lseek(fd, start, os.SEEK_HOLE)
                total += hole - start
                off = hole
        finally:
            os.close(fd)
print(total)
PY
}

# ---------------------------------------------------------------- fixtures
gen f3 $((3 * MiB + 5)); gen g1 $((1 * MiB)); gen small 1000
gen v1 $((48 * MiB)); gen v2 $((48 * MiB)); gen v3 $((40 * MiB + 3)); gen del $((2 * MiB))
gen m64 $((64 * MiB)); gen f20 $((20 * MiB + 7)); gen big256 $((256 * MiB))
fixtures_ok=1
for kv in "f3:ro/f3" "g1:ro/sub/g1" "small:ro/sub/small" "v1:t/v" "del:t/del" "small:t/dir/a" \
          "small:t/dir/b" "small:t/dir/sub/c" "small:meta/plain" "small:sym/top.txt" \
          "small:sym/l/inside/target" "m64:big/m64" "f20:full/f20"; do
  up "$src/${kv%%:*}" "$p/${kv#*:}" || { echo "upload of ${kv#*:} failed"; fixtures_ok=0; }
done
curl_put "meta/suid" "$src/small" "x-amz-meta-file-permissions: 0104755" || fixtures_ok=0
curl_put "meta/sgid" "$src/small" "x-amz-meta-file-permissions: 0102755" || fixtures_ok=0
for kv in "abs:/etc/passwd" "up:../../escape" "in:inside/target" "uptop:../top.txt"; do
  printf '%s' "${kv#*:}" >"$src/link-${kv%%:*}"
  curl_put "sym/l/${kv%%:*}" "$src/link-${kv%%:*}" "x-amz-meta-file-permissions: 0120777" || fixtures_ok=0
done
[ "$fixtures_ok" = 1 ] || { echo "FAIL: fixtures could not be uploaded"; exit 1; }
echo "fixtures uploaded ($((SECONDS - started)) s)"

# ------------------------------------------- a: release on a read-only mount
t="release on a read-only mount"
check "$t: mount -f --read-only" mount_fg A "$p/ro" "$work/cacheA" --read-only
A="$work/A"
check "$t: the mount is ro in /proc/mounts" \
  bash -c "awk -v m='$A' '\$2 == m && \$4 ~ /^ro/ {f = 1} END {exit !f}' /proc/mounts"
check "$t: a first read of f3 is right" same_sha "$A/f3" "$src/f3"
check "$t: status shows f3 cached" cached_is "$A/f3" -eq "$(size_of "$src/f3")"
check "$t: nacre release FILE exits 0" timeout 30 "$nacre" release "$A/f3"
check "$t: status shows 0 cached bytes of f3" cached_is "$A/f3" -eq 0
check "$t: a read after the release returns the right bytes" same_sha "$A/f3" "$src/f3"
timeout 60 cat "$A/sub/g1" "$A/sub/small" >/dev/null
check "$t: status shows sub/ cached" cached_is "$A/sub" -gt 0
check "$t: nacre release DIRECTORY exits 0" timeout 30 "$nacre" release "$A/sub"
check "$t: status shows 0 cached bytes under sub/" cached_is "$A/sub" -eq 0
check "$t: sub/g1 still reads right" same_sha "$A/sub/g1" "$src/g1"
check "$t: unmount" unmount "$A"

# ------------------------------------------- b, c, d: versions, deletes (TTL 1)
check "mount -f T (--metadata-ttl 1 --hydrate-min-size off)" \
  mount_fg T "$p/t" "$work/cacheT" --metadata-ttl 1 --hydrate-min-size off
T="$work/T"
pychecks "page cache never mixes versions" versions "$T/v" "$src/v1" "$src/v2" "$src/v3" "$nacre" "$p/t/v" 1
pychecks "fstat of an open file whose object was deleted" deleted "$T/del" "$src/del" "$nacre" "$p/t/del" 1

t="deleted prefix disappears"
check "$t: dir is listed and is a directory" \
  bash -c "timeout 10 ls '$T' | grep -qx dir && [ -d '$T/dir' ] && [ \"\$(timeout 10 ls '$T/dir' | tr '\n' ' ')\" = 'a b sub ' ] && [ -d '$T/dir/sub' ]"
for k in dir/a dir/b dir/sub/c; do s3rm "$p/t/$k" || echo "     rm $k failed"; done
sleep 2.5
check "$t: stat MNT/dir fails with ENOENT after the TTL" \
  bash -c "! timeout 10 stat '$T/dir' >/dev/null 2>'$work/stat.err' && grep -q 'No such file or directory' '$work/stat.err'"
check "$t: ls MNT no longer lists dir" bash -c "l=\$(timeout 10 ls '$T') && ! grep -qx dir <<<\"\$l\""
check "$t: stat MNT/dir/sub fails too" bash -c "! timeout 10 stat '$T/dir/sub' >/dev/null 2>&1"
check "$t: unmount" unmount "$T"

# ------------------------------------------- e: metrics port taken
t="metrics port taken fails the mount"
python3 -c 'import socket, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
print(s.getsockname()[1], flush=True); time.sleep(900)' >"$work/port" &
bg_pids+=($!)
wait_for 10 test -s "$work/port"
taken=$(head -1 "$work/port")
mkdir -p "$work/E"
expect_error "$t: nacre mount (daemonising) exits non-zero naming 127.0.0.1:$taken" "127\.0\.0\.1:$taken: Address already in use" \
  timeout 60 "$nacre" mount "$p/ro" "$work/E" --cache-dir "$work/cacheE" --metrics-address "127.0.0.1:$taken"
check "$t: nothing is left mounted" wait_for 10 not_mounted "$work/E"
check "$t: no nacre is left running" wait_for 10 no_daemon "$work/E"
kill "${bg_pids[-1]}" 2>/dev/null

# ------------------------------------------- f: bad -o uid
# bad_option ARG...: nacre mount with ARGs must exit 1..123 (not a crash or a
# hang) with a message naming the bad value, and leave no mount or process.
bad_option() {
  local pattern=$1 rc=0; shift
  timeout 60 "$nacre" mount "$p/ro" "$work/F" --cache-dir "$work/cacheF" "$@" >"$work/bad.out" 2>"$work/bad.err" || rc=$?
  head -3 "$work/bad.err"
  [ "$rc" != 0 ] || { echo "exit 0: the mount succeeded"; return 1; }
  [ "$rc" -lt 124 ] || { echo "exit status $rc: killed by a signal or timed out"; return 1; }
  grep -Eq "$pattern" "$work/bad.err" || { echo "exit $rc, but stderr does not match /$pattern/"; return 1; }
  wait_for 10 not_mounted "$work/F" || { echo "$work/F is mounted"; return 1; }
  wait_for 10 no_daemon "$work/F" || { echo "a nacre process is left: $(daemon_pids "$work/F")"; return 1; }
}
mkdir -p "$work/F"
check "bad -o uid: uid=abc" bad_option "uid.*abc" -o uid=abc
check "bad -o uid: gid=abc" bad_option "gid.*abc" -o gid=abc
check "bad -o uid: uid=99999999999 (out of range)" bad_option "uid.*99999999999" -o uid=99999999999
check "bad -o uid: uid= (empty)" bad_option "uid" -o uid=
check "bad -o uid: ro,uid=12x,allow_other" bad_option "uid.*12x" -o ro,uid=12x,allow_other
check "bad -o uid: --uid abc" bad_option "uid.*abc" --uid abc
check "bad -o uid: --gid abc" bad_option "gid.*abc" --gid abc

# ------------------------------------------- g: unmount with S3 stalled
# An RGW of our own (see the top): stopping the shared one would stall every
# test running next to this one.
t="unmount is bounded with S3 stalled"
stall_rgw_dir="$work/rgw"
start_stall_rgw() {
  NACRE_S3_OSD_SIZE=$((8 << 30)) timeout 300 "$s3_server" start "$stall_rgw_dir" >/dev/null 2>"$work/rgw.log" ||
    { tail -5 "$work/rgw.log"; return 1; }
  stall_url=$(sed -n 's/^export AWS_ENDPOINT_URL=//p' "$stall_rgw_dir/env")
  local pid
  pid=$(tr -dc 0-9 <"$stall_rgw_dir/run/client.rgw.pid")
  # The pid must be that RGW's: its command line names our ceph.conf.
  tr '\0' '\n' <"/proc/$pid/cmdline" | grep -Fxq "$(realpath "$stall_rgw_dir")/ceph.conf" ||
    { echo "pid $pid is not the radosgw of $stall_rgw_dir"; return 1; }
  stall_rgw=$pid
  echo "radosgw pid $pid at $stall_url"
}
stall_url="" stall_rgw=""
in_flight() { [ "$(metric "$1" nacre_s3_bytes_in_flight)" -gt 0 ]; }
gone_all() { local p; for p; do alive "$p" && return 1; done; return 0; }
alive_all() { local p; for p; do alive "$p" || return 1; done; return 0; }
# hydration_waits PORT LOG: within 10 s, bytes are in flight from S3; else what the
# daemon's metrics and log say (it failed here twice under load, cause not found)
hydration_waits() {
  wait_for 10 in_flight "$1" && return 0
  echo "no bytes in flight after 10 s; the daemon's S3 and cache metrics:"
  timeout 10 curl -s "http://127.0.0.1:$1/metrics" | grep -E '^nacre_(s3_(req|bytes)|cache_(miss|hit|refused))' | head -7
  echo "the end of its log:"
  tail -5 "$2"
  return 1
}
# await_exit PID: waits up to 30 s for PID to exit; if it still runs after 5 s,
# saves where its threads wait (in $work/threads, shown by the check that fails)
await_exit() {
  rm -f "$work/threads"
  wait_for 5 gone "$1" && return
  thread_waits "$1" >"$work/threads"
  wait_for 25 gone "$1"
}
# exited_in_time SECS: SECS <= 5; else where the daemon's threads waited after 5 s
exited_in_time() {
  awk -v s="$1" 'BEGIN {exit !(s <= 5)}' && return 0
  cat "$work/threads" 2>/dev/null
  return 1
}
check "$t: an RGW of its own starts" start_stall_rgw
check "$t: upload 256 MiB to it" \
  timeout 300 "$nacre" cp --endpoint-url "$stall_url" "$src/big256" "$b/$prefix/stall/big256"
# stall_round NAME HOW: mount (daemonised, hydration off, TTL forever so the
# open needs no HEAD), read 1 MiB, stop the RGW, start a reader of the rest
# (it stalls on a GET), then unmount as HOW says; the daemon must exit within 5 s.
#   kill-then-umount: SIGKILL the reader, then a plain fusermount3 -u
#   lazy-then-kill:   fusermount3 -u -z with the reader inside, then SIGKILL it
#   idle-hydrating:   hydration on; open and close the file after stopping the RGW,
#                     so only background GETs wait and no FUSE request is in flight
#                     (libfuse's loop then returns at once: the regression the
#                     review found was that the cancel was skipped in that case)
#   many-readers:     six readers at different offsets keep up to 12 READs (the
#                     kernel's max_background) waiting; with 16 workers (the default)
#                     a listing must still be answered. It hung when libfuse was
#                     handed the loop config in the wrong layout: 10 workers, which
#                     exited after a request while others waited on S3.
#   every-worker-busy: --fuse-threads 2 and three readers at different offsets, so
#                     every FUSE worker waits on a GET and none reads /dev/fuse: the
#                     daemon must still see the unmount (libfuse sees it only
#                     when a worker reads the device)
stall_round() {
  local name=$1 how=$2 mnt="$work/$1" pid reader t0 secs fetched hydrate=off threads=16 r
  local readers=()
  [ "$how" = idle-hydrating ] && hydrate=1M
  [ "$how" = every-worker-busy ] && threads=2
  check "$t ($how): mount (daemonised)" mount_daemon "$name" "$b/$prefix/stall" "$work/cacheG-$name" \
    --endpoint-url "$stall_url" --hydrate-min-size "$hydrate" --metadata-ttl forever --fetch-threads 4 \
    --fuse-threads "$threads" --log-file "$work/$name.daemon.log" --log-level debug
  pid=${mount_pid[$mnt]:-}
  [ -n "$pid" ] || { record FAIL "$t ($how): no daemon to test"; return; }
  if [ "$how" = idle-hydrating ]; then
    stat "$mnt/big256" >/dev/null  # the HEAD happens now; the open needs none
    kill -STOP "$stall_rgw"
    stall_rgw_pid=$stall_rgw
    timeout 20 dd if="$mnt/big256" of=/dev/null bs=1M count=0 status=none ||
      echo "     the open of big256 failed or took over 20 s (rc $?)"
    check "$t ($how): background GETs wait on the stopped S3" \
      hydration_waits "${mount_port[$name]}" "$work/$name.daemon.log"
    t0=$(now)
    check "$t ($how): fusermount3 -u succeeds" timeout 20 fusermount3 -u "$mnt"
    await_exit "$pid"
    secs=$(since "$t0")
    check "$t ($how): the nacre daemon exits within 5 s of the unmount (took $secs s)" \
      exited_in_time "$secs"
    kill -CONT "$stall_rgw"
    stall_rgw_pid=""
    alive "$pid" && { kill -9 "$pid"; echo "     killed the daemon $pid left running"; }
    return
  fi
  timeout 60 dd if="$mnt/big256" of=/dev/null bs=1M count=1 status=none
  ls "$mnt" >/dev/null  # listed now: with the TTL forever, a listing needs no S3 after
  wait_for 20 bash -c "[ \"\$(curl -s http://127.0.0.1:${mount_port[$name]}/metrics | awk '\$1 == \"nacre_s3_bytes_in_flight\" {print \$2}')\" = 0 ]"
  kill -STOP "$stall_rgw"
  stall_rgw_pid=$stall_rgw
  if [ "$how" = every-worker-busy ] || [ "$how" = many-readers ]; then
    local offsets="64 128 192"
    [ "$how" = many-readers ] && offsets="40 72 104 136 168 200"
    for r in $offsets; do
      dd if="$mnt/big256" of=/dev/null bs=1M skip="$r" count=16 status=none 2>/dev/null &
      readers+=("$!")
    done
  else
    cat "$mnt/big256" >/dev/null 2>&1 &
    readers+=("$!")
  fi
  reader=${readers[0]}
  bg_pids+=("${readers[@]}")
  disown "${readers[@]}"   # no "Killed" job notice
  sleep 3
  fetched=$(metric "${mount_port[$name]}" nacre_s3_bytes_fetched_total)
  check "$t ($how): the readers are stalled on S3 ($fetched of $((256 * MiB)) bytes fetched)" \
    bash -c "$(declare -f alive alive_all); alive_all ${readers[*]} && [ '$fetched' -lt $((256 * MiB)) ]"
  if [ "$how" = many-readers ]; then
    check "$t ($how): ls answers within 5 s while the readers wait" timeout 5 ls "$mnt"
  fi
  if [ "$how" != lazy-then-kill ]; then
    kill -KILL "${readers[@]}"
    check "$t ($how): the killed readers exit within 5 s" wait_for 5 gone_all "${readers[@]}"
    t0=$(now)
    check "$t ($how): fusermount3 -u succeeds" timeout 20 fusermount3 -u "$mnt"
  else
    t0=$(now)
    check "$t ($how): fusermount3 -u -z with the reader inside" timeout 20 fusermount3 -u -z "$mnt"
    kill -KILL "$reader"
    check "$t ($how): the killed reader exits within 5 s" wait_for 5 gone "$reader"
  fi
  await_exit "$pid"
  secs=$(since "$t0")
  check "$t ($how): the nacre daemon exits within 5 s of the unmount (took $secs s)" \
    exited_in_time "$secs"
  check "$t ($how): nothing left mounted" not_mounted "$mnt"
  kill -CONT "$stall_rgw"
  stall_rgw_pid=""
  alive "$pid" && { kill -9 "$pid"; echo "     killed the daemon $pid left running"; }
  timeout 20 fusermount3 -u -z "$mnt" 2>/dev/null
}
if [ -n "$stall_rgw" ]; then
  stall_round G1 kill-then-umount
  stall_round G2 lazy-then-kill
  stall_round G3 idle-hydrating
  stall_round G4 every-worker-busy
  stall_round G5 many-readers
  check "$t: the RGW answers again after SIGCONT" \
    bash -c "timeout 60 '$nacre' stat --endpoint-url '$stall_url' '$b/$prefix/stall/big256' >/dev/null"
else
  record FAIL "$t: no RGW of its own, the stall rounds cannot run"
fi
check "$t: the private RGW stops" timeout 120 "$s3_server" stop "$stall_rgw_dir"
stall_rgw_dir=""

# ------------------------------------------- h: cache files are private
t="cache files are private"
check "$t: mount -f with a fresh --cache-dir under umask $(umask)" mount_fg H "$p/ro" "$work/h/cache"
H="$work/H"
check "$t: read files through it" bash -c "timeout 60 cat '$H/f3' '$H/sub/g1' >/dev/null"
private_ok() {
  local c="$work/h/cache" wide
  [ -n "$(find "$c" -name '*.data')" ] || { echo "no .data file in $c:"; find "$c" -ls; return 1; }
  wide=$(find "$c" \( -type d ! -perm 0700 \) -o \( ! -type d ! -perm 0600 \) -printf '%m %p\n')
  [ -z "$wide" ] || { echo "not private:"; echo "$wide"; return 1; }
  echo "$(find "$c" -type d | wc -l) directories 0700, $(find "$c" ! -type d | wc -l) files 0600"
}
check "$t: the cache dir and every directory under it are 0700, every file 0600" private_ok
check "$t: unmount" unmount "$H"
check "$t: still private after the unmount" private_ok

# ------------------------------------------- i: setuid bits
t="setuid bits masked without -o suid"
check "$t: mount -f" mount_fg I1 "$p/meta" "$work/cacheI1"
check "$t: mount -f -o suid" mount_fg I2 "$p/meta" "$work/cacheI2" -o suid
mode_is() { local m; m=$(timeout 10 stat -c %a "$1") || return 1; echo "$1: $m"; [ "$m" = "$2" ]; }
check "$t: 0104755 shows 755 on a normal mount" mode_is "$work/I1/suid" 755
check "$t: 0102755 shows 755 on a normal mount" mode_is "$work/I1/sgid" 755
check "$t: 0104755 shows 4755 with -o suid" mode_is "$work/I2/suid" 4755
check "$t: 0102755 shows 2755 with -o suid" mode_is "$work/I2/sgid" 2755
check "$t: unmount" unmount "$work/I1"
check "$t: unmount -o suid" unmount "$work/I2"

# ------------------------------------------- j: symlinks leaving the mount
t="symlinks leaving the mount are refused with --contain-symlinks"
check "$t: mount -f --contain-symlinks" mount_fg J1 "$p/sym" "$work/cacheJ1" --contain-symlinks
check "$t: mount -f (without)" mount_fg J2 "$p/sym" "$work/cacheJ2"
pychecks "$t" links "$work/J1" 1
refused=$(metric "${mount_port[J1]}" nacre_refused_symlinks_total)
check "$t: nacre_refused_symlinks_total > 0 (got $refused)" test "$refused" -gt 0
pychecks "without --contain-symlinks every symlink reads" links "$work/J2" 0
check "$t: unmount" unmount "$work/J1"
check "$t: unmount (without)" unmount "$work/J2"

# ------------------------------------------- k: a held file larger than the cache
t="held model larger than the cache stays within the bound"
check "$t: mount -f --cache-size 16M --cache-min-free 0 --hydrate-min-size 1M" \
  mount_fg K "$p/big" "$work/cacheK" --cache-size 16M --cache-min-free 0 --hydrate-min-size 1M
K="$work/K"
bound=$((16 * MiB))
read_bounded() {
  local port=${mount_port[K]} max_used=0 max_disk=0 used disk reader
  timeout 300 sha256sum <"$K/m64" >"$work/k.sha" &
  reader=$!
  bg_pids+=("$reader")
  while alive "$reader"; do
    used=$(metric "$port" nacre_cache_used_bytes)
    disk=$(data_disk "$work/cacheK")
    [ "${used:-0}" -gt "$max_used" ] && max_used=$used
    [ "${disk:-0}" -gt "$max_disk" ] && max_disk=$disk
    sleep 0.2
  done
  wait "$reader" || { echo "the read failed"; return 1; }
  used=$(metric "$port" nacre_cache_used_bytes); disk=$(data_disk "$work/cacheK")
  [ "$used" -gt "$max_used" ] && max_used=$used
  [ "$disk" -gt "$max_disk" ] && max_disk=$disk
  echo "sha256 $(cut -c1-16 "$work/k.sha"), at most nacre_cache_used_bytes $max_used, .data on disk $max_disk (bound $bound)"
  [ "$(cut -c1-64 "$work/k.sha")" = "$(sha_of "$src/m64")" ] || { echo "WRONG BYTES"; return 1; }
  if [ "$max_used" -gt "$bound" ] || [ "$max_disk" -gt "$bound" ]; then echo "over the bound"; return 1; fi
}
check "$t: 64 MiB read right, cache <= 16 MiB throughout" read_bounded
uncached=$(metric "${mount_port[K]}" nacre_uncached_read_bytes_total)
refused=$(metric "${mount_port[K]}" nacre_cache_refused_blocks_total)
check "$t: nacre_uncached_read_bytes_total > 0 (got $uncached)" test "$uncached" -gt 0
check "$t: nacre_cache_refused_blocks_total > 0 (got $refused)" test "$refused" -gt 0
check "$t: unmount" unmount "$K"

# ------------------------------------------- l: a full cache disk
t="full cache disk at open is not EIO"
mkdir -p "$work/tmpfs"
check "$t: an 8 MiB tmpfs for the cache" mount -t tmpfs -o size=8m,mode=0700 nacre-test-cache "$work/tmpfs"
check "$t: mount -f, cache on the tmpfs" mount_fg L1 "$p/full" "$work/tmpfs/c1" --cache-min-free 0
check "$t: mount -f --hydrate-min-size 1M, cache on the tmpfs" \
  mount_fg L2 "$p/full" "$work/tmpfs/c2" --cache-min-free 0 --hydrate-min-size 1M
fill() {
  dd if=/dev/zero of="$work/tmpfs/fill" bs=64k status=none 2>/dev/null
  local avail
  avail=$(df --output=avail -B1 "$work/tmpfs" | tail -1 | tr -d ' ')
  echo "$avail bytes left"
  [ "$avail" -lt 65536 ]
}
check "$t: fill the tmpfs" fill
check "$t: a 20 MiB file reads right (served from S3)" same_sha "$work/L1/f20" "$src/f20"
check "$t: a 20 MiB file reads right with hydration" same_sha "$work/L2/f20" "$src/f20"
for m in L1 L2; do
  u=$(metric "${mount_port[$m]}" nacre_uncached_read_bytes_total)
  check "$t: $m: nacre_uncached_read_bytes_total > 0 (got $u)" test "$u" -gt 0
done
check "$t: unmount" unmount "$work/L1"
check "$t: unmount (hydration)" unmount "$work/L2"
check "$t: unmount the tmpfs" umount "$work/tmpfs"

test_finish
