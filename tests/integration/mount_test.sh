#!/usr/bin/env bash
# Real FUSE mounts of the local RGW: listing and odd keys, FSx metadata,
# random/mmap/concurrent reads, close-to-open consistency, import policies,
# the node cache (reuse, bound, corruption), preload/status/release, bad
# input, unmount under load and the mount(8) helper.
# Usage: mount_test.sh NACRE_BINARY RGW_ENV_FILE   (needs /dev/fuse; run as root)
# Helpers (check, mount_fg, unmount, curl_put, the cleanup trap...): lib.sh.
# shellcheck source-path=SCRIPTDIR
set -uo pipefail
# shellcheck source=lib.sh
source "$(dirname "$(realpath "$0")")/lib.sh"
test_init mount "$@"

cat >"$work/tool.py" <<'PY'
import errno, mmap, os, random, subprocess, sys

def read_full(fd, n, off):
    out = b""
    while len(out) < n:
        c = os.pread(fd, n - len(out), off + len(out))
        if not c:
            break
        out += c
    return out

def load(path):
    with open(path, "rb") as f:
        return f.read()

def randread(path, src, seed, count):
    rnd = random.Random(int(seed))
    ref = load(src)
    size = len(ref)
    fd = os.open(path, os.O_RDONLY)
    special = [0, size - 1, size, size + 100, (1 << 20) - 1, 1 << 20, (8 << 20) - 1, 8 << 20, size - 4097]
    bad = 0
    for i in range(int(count)):
        off = special[i] if i < len(special) else rnd.randrange(0, size)
        length = rnd.choice([1, 7, 4096, 65536, 1 << 20, rnd.randrange(1, 3 << 20)])
        got = read_full(fd, length, off)
        if got != ref[off:off + length]:
            bad += 1
            print(f"read {i}: offset {off} length {length}: got {len(got)} bytes, expected "
                  f"{len(ref[off:off + length])}, equal prefix "
                  f"{next((k for k in range(len(got)) if k >= len(ref) - off or got[k] != ref[off + k]), len(got))}")
            if bad >= 5:
                break
    os.close(fd)
    print(f"{count} reads with seed {seed}: {bad} wrong")
    return 1 if bad else 0

def mmapread(path, src, seed, count):
    rnd = random.Random(int(seed))
    ref = load(src)
    with open(path, "rb") as f:
        m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        if len(m) != len(ref):
            print(f"mapped {len(m)} bytes, expected {len(ref)}")
            return 1
        pages = (len(ref) + 4095) // 4096
        bad = 0
        for i in range(int(count)):
            page = pages - 1 if i == 0 else rnd.randrange(pages)
            n = 4096 * rnd.choice([1, 1, 3, 64])
            off = page * 4096
            if m[off:off + n] != ref[off:off + n]:
                bad += 1
                print(f"mmap page {page} (+{n} bytes) differs")
        m.close()
    print(f"{count} mmap reads with seed {seed}: {bad} wrong")
    return 1 if bad else 0

def overwrite(path, old_src, new_src, *cmd):
    """Open, read 1 MiB, replace the object (cmd), read on: only old bytes or EIO."""
    old, new = load(old_src), load(new_src)
    fd = os.open(path, os.O_RDONLY)
    first = read_full(fd, 1 << 20, 0)
    if first != old[:1 << 20]:
        print("the first MiB is wrong before the overwrite")
        return 1
    subprocess.run(list(cmd), check=True, stdout=subprocess.DEVNULL)
    off = len(first)
    while True:
        try:
            c = os.pread(fd, 1 << 20, off)
        except OSError as e:
            os.close(fd)
            if e.errno == errno.EIO:
                print(f"EIO at offset {off} after the overwrite (no bytes of the new version)")
                return 0
            print(f"unexpected error at offset {off}: {e}")
            return 1
        if not c:
            break
        if c != old[off:off + len(c)]:
            what = "bytes of the NEW version" if c == new[off:off + len(c)] else "bytes of neither version"
            print(f"offset {off}: the old handle returned {what}")
            return 1
        off += len(c)
    os.close(fd)
    if off != len(old):
        print(f"short file: {off} of {len(old)} bytes")
        return 1
    print("the whole old version was returned (it was cached)")
    return 0

def read_expect_error(path, src):
    """Reading must fail (EIO/ENOENT); whatever came before must be the old bytes."""
    old = load(src)
    data = b""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        print(f"open failed: {errno.errorcode.get(e.errno, e.errno)}")
        return 0 if e.errno in (errno.ENOENT, errno.EIO) else 1
    try:
        while True:
            c = os.read(fd, 1 << 20)
            if not c:
                break
            data += c
    except OSError as e:
        ok = e.errno in (errno.ENOENT, errno.EIO) and old.startswith(data)
        print(f"read failed at {len(data)} with {errno.errorcode.get(e.errno, e.errno)}; "
              f"bytes before it {'match' if old.startswith(data) else 'DO NOT match'} the old version")
        return 0 if ok else 1
    finally:
        os.close(fd)
    print(f"read {len(data)} bytes without an error ({'the old content' if data == old else 'NOT the old content'})")
    return 1

def tryop(op, path, path2=None):
    """On a read-only mount a write operation must fail with EROFS (a hard link also with EPERM/ENOTSUP)."""
    allowed = (errno.EROFS,) + ((errno.EPERM, errno.ENOTSUP) if op == "link" else ())
    try:
        if op == "create":
            with open(path, "w") as f:
                f.write("x")
        elif op == "append":
            with open(path, "a") as f:
                f.write("x")
        elif op == "truncate":
            os.truncate(path, 0)
        elif op == "touch":
            os.utime(path)
        elif op == "chmod":
            os.chmod(path, 0o600)
        elif op == "mkdir":
            os.mkdir(path)
        elif op == "unlink":
            os.unlink(path)
        elif op == "rmdir":
            os.rmdir(path)
        elif op == "rename":
            os.rename(path, path2)
        elif op == "symlink":
            os.symlink("target", path)
        elif op == "link":
            os.link(path, path2)
    except OSError as e:
        name = errno.errorcode.get(e.errno, str(e.errno))
        print(f"{op} {path}: {name} ({e.strerror})")
        return 0 if e.errno in allowed else 1
    print(f"{op} {path}: succeeded")
    return 1

def release_mid(path, src):
    ref = load(src)
    fd = os.open(path, os.O_RDONLY)
    first = read_full(fd, 1 << 20, 0)
    os.setxattr(path, "user.nacre.release", b"1")
    rest = read_full(fd, len(ref), len(first))
    os.close(fd)
    got = first + rest
    print(f"read {len(got)} of {len(ref)} bytes across the release: {'identical' if got == ref else 'DIFFERENT'}")
    return 0 if got == ref else 1

def getxattr_is(path, name, want):
    got = os.getxattr(path, name).decode()
    print(f"{name} = {got}")
    return 0 if got == want else 1

sys.exit(globals()[sys.argv[1]](*sys.argv[2:]))
PY
tool() { timeout "${TOOL_TIMEOUT:-120}" python3 "$work/tool.py" "$@"; }

# ---------------------------------------------------------------- fixtures
gen top 1000; gen f1 123; gen deep 5000; gen samefile 10; gen samex 20; gen l255 255
gen odd 77
gen rand60 $((60 * MiB + 12345)); gen mm20 $((20 * MiB + 777)); gen big300 $((300 * MiB))
gen ow40 $((40 * MiB + 1)); gen ow40.new $((40 * MiB + 1))
gen c1 $((40 * MiB)); gen c2 $((40 * MiB)); gen c3 $((40 * MiB)); gen mm20.new $((20 * MiB + 777))
gen keep 100; gen chg 1000; gen chg.new 2000; gen del 500; gen new 300; gen del2 $((20 * MiB))
gen p1 $((3 * MiB + 5)); gen p2 $((10 * MiB)); gen p3 $((1 * MiB)); gen gone $((1 * MiB))
: >"$src/empty"
printf 'top.txt' >"$src/linkbody"
long255=$(printf 'n%.0s' $(seq 255))
long256=$(printf 'n%.0s' $(seq 256))

upload_time=$(date +%s)
fixtures_ok=1
for kv in "top:tree/top.txt" "f1:tree/d1/f1" "deep:tree/d1/d2/deep.bin" "samefile:tree/same" \
          "samex:tree/same/x" "l255:tree/$long255" "odd:tree/a//b" "odd:tree/c/./d" "odd:tree/c/../e" \
          "odd:tree/$long256" "odd:tree/../escape" "odd:tree/./dot" "odd:tree/d1/$long256/inner" \
          "rand60:data/rand60" "mm20:data/mm20" "big300:data/big300" "ow40:data/ow40" \
          "c1:data/c1" "c2:data/c2" "c3:data/c3" "c1:data/del40" "empty:data/zero" "odd:data/sp ace ü.bin" \
          "keep:ttl/keep" "chg:ttl/chg" "del:ttl/del" "del2:ttl/del2" "keep:ttl/morph" \
          "p1:pre/p1" "p2:pre/p2" "p3:pre/sub/p3"; do
  up "$src/${kv%%:*}" "$p/${kv#*:}" || { echo "upload of ${kv#*:} failed"; fixtures_ok=0; }
done
# Directory markers and FSx metadata need headers: signed curl PUTs.
curl_put "tree/empty/" "$src/empty" || fixtures_ok=0
curl_put "tree/d1/" "$src/empty" || fixtures_ok=0
curl_put "tree/meta600" "$src/top" "x-amz-meta-file-permissions: 0100600" "x-amz-meta-file-owner: 1234" \
  "x-amz-meta-file-group: 4321" "x-amz-meta-file-mtime: 1600000000000000000ns" || fixtures_ok=0
curl_put "tree/link" "$src/linkbody" "x-amz-meta-file-permissions: 0120777" || fixtures_ok=0
# A directory of 1003 files: more than one LIST page.
[ "$(seq -f "$prefix/data/many/f-%04g" 1003 | curl_many PUT "$src/top")" = 0 ] || fixtures_ok=0
[ "$fixtures_ok" = 1 ] || { echo "FAIL: fixtures could not be uploaded"; exit 1; }
echo "fixtures uploaded ($((SECONDS - started)) s)"

# ------------------------------------------- 1, 2: a tree, odd keys, metadata
# The daemonising form (no -f); its pid is found by its unique mount point.
A="$work/A"
mkdir -p "$A" "$work/cacheA"
portA=$(free_port)
check "mount without -f daemonises and returns 0" \
  timeout 60 "$nacre" mount "$p/tree" "$A" --cache-dir "$work/cacheA" --metrics-address "127.0.0.1:$portA"
check "the daemonised mount is in /proc/mounts as fuse.nacre" \
  bash -c "awk -v m='$A' '\$2 == m && \$3 == \"fuse.nacre\" {f = 1} END {exit !f}' /proc/mounts"
mount_pid[$A]=$(daemon_pids "$A" | head -1)
wait_for 10 metrics_up "$portA"

# 2: FSx metadata, looked up by name before anything listed the directory.
check "file-permissions 0100600 and file-owner 1234 show in stat" \
  bash -c "[ \"\$(timeout 10 stat -c '%a %u %g %F' '$A/meta600')\" = '600 1234 4321 regular file' ]"
check "file-mtime metadata is the file's mtime" bash -c "[ \"\$(timeout 10 stat -c %Y '$A/meta600')\" = 1600000000 ]"
check "a 0120777 object is a symlink" bash -c "[ \"\$(timeout 10 stat -c %F '$A/link')\" = 'symbolic link' ]"
check "readlink gives the object's body" bash -c "[ \"\$(timeout 10 readlink '$A/link')\" = top.txt ]"
check "the symlink resolves inside the mount" timeout 10 cmp "$A/link" "$src/top"

# 1: the tree.
expected_files="$(printf '%s\n' "./top.txt" "./d1/f1" "./d1/d2/deep.bin" "./same/x" "./meta600" "./link" "./$long255" | sort)"
files_ok() {
  local listed
  listed=$(cd "$A" && timeout 30 find . -not -type d | sort) || { echo "find failed"; return 1; }
  [ "$listed" = "$expected_files" ] || { echo "listed:"; echo "$listed" | cut -c1-80; return 1; }
}
check "exactly the valid keys are listed as files" files_ok
check "nested prefixes are directories" bash -c "[ -d '$A/d1' ] && [ -d '$A/d1/d2' ] && timeout 10 cmp '$A/d1/d2/deep.bin' '$src/deep'"
check "a dir/ marker with nothing under it is an empty directory" \
  bash -c "[ -d '$A/empty' ] && [ -z \"\$(timeout 10 ls -A '$A/empty')\" ]"
check "the d1/ marker is not a file in d1" bash -c "[ \"\$(timeout 10 ls -A '$A/d1' | tr '\n' ' ')\" = 'd2 f1 ' ]"
sizes_ok() {
  local f s
  for f in top.txt:top d1/f1:f1 d1/d2/deep.bin:deep same/x:samex meta600:top "$long255:l255"; do
    s=$(timeout 10 stat -c %s "$A/${f%%:*}") || return 1
    [ "$s" = "$(size_of "$src/${f#*:}")" ] || { echo "${f%%:*}: size $s, expected $(size_of "$src/${f#*:}")"; return 1; }
  done
}
check "sizes match the objects" sizes_ok
mtimes_ok() {
  local f t
  for f in top.txt d1/f1 d1/d2/deep.bin; do
    t=$(timeout 10 stat -c %Y "$A/$f") || return 1
    if [ "$t" -lt $((upload_time - 120)) ] || [ "$t" -gt $(($(date +%s) + 120)) ]; then
      echo "$f: mtime $t, uploaded at $upload_time"; return 1
    fi
  done
}
check "file mtimes are the upload time" mtimes_ok
check "the contents read back" bash -c "timeout 10 cmp '$A/top.txt' '$src/top' && timeout 10 cmp '$A/d1/f1' '$src/f1' && timeout 10 cmp '$A/same/x' '$src/samex'"
check "a 255-byte name is a file" timeout 10 cmp "$A/$long255" "$src/l255"
check "a 256-byte component is not listed (no name over 255 bytes)" \
  bash -c "[ -z \"\$(timeout 30 find '$A' -mindepth 1 -printf '%f\\n' | awk 'length > 255')\" ] && [ \$(timeout 10 ls -A '$A/d1' | wc -l) = 2 ]"
check "a//b: no entry for the empty component or b" \
  bash -c "! [ -e '$A/b' ] && { ! [ -e '$A/a' ] || [ -z \"\$(timeout 10 ls -A '$A/a')\" ]; }"
check "c/./d and c/../e map to nothing (no d, no e anywhere)" \
  bash -c "! [ -e '$A/e' ] && ! [ -e '$A/d' ] && { ! [ -e '$A/c' ] || [ -z \"\$(timeout 10 ls -A '$A/c')\" ]; }"
check "../escape and ./dot under the root map to nothing" \
  bash -c "! [ -e '$A/escape' ] && ! [ -e '$A/dot' ] && ! [ -e '$work/escape' ] && [ \$(timeout 10 ls -a '$A' | grep -cx '\\.\\.') = 1 ] && [ \$(timeout 10 ls -a '$A' | grep -cx '\\.') = 1 ]"
hidden=$(metric "$portA" nacre_hidden_keys_total)
check "nacre_hidden_keys_total > 0 (got $hidden)" bash -c "[ '$hidden' -gt 0 ]"
check "a file 'same' and a prefix 'same/': same is a directory" \
  bash -c "[ -d '$A/same' ] && [ \"\$(timeout 10 stat -c %F '$A/same')\" = directory ]"
shadowed=$(metric "$portA" nacre_shadowed_keys_total)
check "nacre_shadowed_keys_total > 0 (got $shadowed)" bash -c "[ '$shadowed' -gt 0 ]"
check "reading the shadowed name gives EISDIR" bash -c "timeout 10 cat '$A/same' 2>&1 | grep -q 'Is a directory'"
check "a file used as a directory gives ENOTDIR" bash -c "timeout 10 ls '$A/top.txt/x' 2>&1 | grep -q 'Not a directory'"
check "inode numbers are stable" bash -c "[ \"\$(timeout 10 stat -c %i '$A/d1/f1')\" = \"\$(sleep 1.2; timeout 10 stat -c %i '$A/d1/f1')\" ]"
check "df (statfs) works on the mount" timeout 10 df "$A"
check "user.nacre.s3_url names the object" \
  tool getxattr_is "$A/d1/f1" user.nacre.s3_url "$p/tree/d1/f1"

# 12 (writes): nothing can be written on a --read-only mount (mounts are
# read-write by default; tests/integration/write_test.sh checks the writes).
check "mount -f RO (--read-only)" mount_fg RO "$p/tree" "$work/cacheRO" --read-only
RO="$work/RO"
for op in "create $RO/new" "append $RO/top.txt" "truncate $RO/top.txt" "touch $RO/top.txt" "chmod $RO/top.txt" \
          "mkdir $RO/newdir" "unlink $RO/top.txt" "rmdir $RO/empty" "rename $RO/top.txt $RO/moved" \
          "symlink $RO/newlink" "link $RO/top.txt $RO/hard"; do
  # shellcheck disable=SC2086
  check "read-only mount: write op fails with EROFS: ${op%% *}" tool tryop $op
done
nothing_written() {
  local listing
  listing=$(timeout 30 "$nacre" ls -r "$p/tree/") || { echo "ls failed"; return 1; }
  [ "$(echo "$listing" | grep -c /tree/top.txt)" = 1 ] || { echo "top.txt not listed once"; return 1; }
  if echo "$listing" | grep -E "/tree/(new|newdir/?|moved|newlink|hard)\$"; then return 1; fi
  ! [ -e "$RO/new" ] && ! [ -e "$RO/moved" ] && [ -e "$RO/top.txt" ] && [ -d "$RO/empty" ]
}
check "no write reached S3 or the mount" nothing_written
check "top.txt is unchanged in S3" bash -c "timeout 30 '$nacre' cp '$p/tree/top.txt' - | cmp - '$src/top'"
check "unmount RO" unmount "$RO"

check "unmount of the daemonised mount; its nacre exits" unmount "$A"

# When a listing came first (ls -l, then stat), docs/SEMANTICS.md says: LIST
# carries no metadata, so within the TTL the entries show the mount defaults
# without a HEAD each; once the TTL has passed, a stat reads the metadata, and
# a symlink then shows as a symlink (under a new inode number).
check "mount -f A2" mount_fg A2 "$p/tree" "$work/cacheA2"
A2="$work/A2"
timeout 20 ls -l "$A2" >/dev/null
check "after a listing, within the TTL: mount defaults (no HEAD per entry)" \
  bash -c "[ \"\$(timeout 10 stat -c '%a %u' '$A2/meta600')\" = '644 0' ]"
sleep 2
check "after the TTL: meta600 shows mode 600 uid 1234" \
  bash -c "[ \"\$(timeout 10 stat -c '%a %u' '$A2/meta600')\" = '600 1234' ]"
check "after the TTL: link is a symlink" bash -c "[ \"\$(timeout 10 stat -c %F '$A2/link')\" = 'symbolic link' ]"
check "after the TTL: link resolves" bash -c "timeout 10 cat '$A2/link' | cmp - '$src/top'"
check "unmount (fusermount3 -u) of a foreground mount; nacre exits" unmount "$A2"
echo "-- tree checks done ($((SECONDS - started)) s)"

# ------------------------------------------- 3, 5, 8, 10: reads and the cache
check "mount -f B" mount_fg B "$p/data" "$work/cacheB"
B="$work/B"
seed=${MOUNT_TEST_SEED:-$RANDOM}
echo "random read seed: $seed (set MOUNT_TEST_SEED to repeat)"
check "random offsets and lengths of a cold 60 MiB file (seed $seed)" tool randread "$B/rand60" "$src/rand60" "$seed" 300
check "whole-file cmp of the 60 MiB file" timeout 120 cmp "$B/rand60" "$src/rand60"
check "stat size of the 60 MiB file" bash -c "[ \$(timeout 10 stat -c %s '$B/rand60') = $(size_of "$src/rand60") ]"
check "mmap reads at random pages of a cold 20 MiB file (seed $seed)" tool mmapread "$B/mm20" "$src/mm20" "$seed" 400
check "whole-file cmp of the mmapped file" timeout 120 cmp "$B/mm20" "$src/mm20"
check "unmount B" unmount "$B"

# Random access with hydration off fetches only what is read (plus prefetch).
check "mount -f H (--hydrate-min-size off)" mount_fg H "$p/data" "$work/cacheH" --hydrate-min-size off
H="$work/H"
check "a 1 MiB read in the middle of the 60 MiB file" \
  bash -c "timeout 30 dd if='$H/rand60' of=/dev/null bs=1M skip=30 count=1 status=none"
sleep 1
fetched_h=$(metric "${mount_port[H]}" nacre_s3_bytes_fetched_total)
check "with hydration off, far less than the 60 MiB file is fetched ($fetched_h bytes)" \
  test "$fetched_h" -gt 0 -a "$fetched_h" -lt $((32 * MiB))
check "unmount H" unmount "$H"

# 8: a remount with the same cache reads without any GET.
check "mount -f B2" mount_fg B2 "$p/data" "$work/cacheB"
B2="$work/B2"
check "after a remount: both files read back identical" \
  bash -c "timeout 120 cmp '$B2/rand60' '$src/rand60' && timeout 120 cmp '$B2/mm20' '$src/mm20'"
gets=$(metric "${mount_port[B2]}" 'nacre_s3_requests_total{operation="GetObject"}')
fetched=$(metric "${mount_port[B2]}" nacre_s3_bytes_fetched_total)
check "after a remount: 0 GetObject, 0 bytes fetched (got $gets GETs, $fetched bytes)" \
  bash -c "[ '$gets' = 0 ] && [ '$fetched' = 0 ]"
# Served from the cache: by the daemon (cache hits), or by kernel passthrough
# (rand60 is complete; mm20 too once hydrated), whose reads the daemon never sees.
hits=$(metric "${mount_port[B2]}" nacre_cache_hit_blocks_total)
pt=$(metric "${mount_port[B2]}" nacre_passthrough_opens_total)
check "after a remount: served from the cache (cache hits $hits, passthrough opens $pt)" \
  bash -c "[ '$hits' -gt 0 ] || [ '$pt' -gt 0 ]"
check "unmount B2" unmount "$B2"

# 10: a corrupted block in the cache is detected and fetched again.
corrupt() {
  local data
  data=$(find "$work/cacheB" -name '*.data' -size "$(size_of "$src/rand60")c" | head -1)
  [ -n "$data" ] || { echo "no .data file of $(size_of "$src/rand60") bytes in the cache:"; find "$work/cacheB" -type f -ls; return 1; }
  python3 - "$data" <<'PY'
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
off = os.fstat(fd).st_size // 2
b = os.pread(fd, 4096, off)
os.pwrite(fd, bytes(x ^ 0xFF for x in b), off)
os.close(fd)
PY
}
check "flip 4 KiB in the middle of the cached .data file" corrupt
check "mount -f B3" mount_fg B3 "$p/data" "$work/cacheB"
B3="$work/B3"
check "a corrupted cache block: the file still reads back identical" timeout 120 cmp "$B3/rand60" "$src/rand60"
bad=$(metric "${mount_port[B3]}" nacre_cache_bad_blocks_total)
gets=$(metric "${mount_port[B3]}" 'nacre_s3_requests_total{operation="GetObject"}')
check "nacre_cache_bad_blocks_total >= 1 (got $bad)" bash -c "[ '$bad' -ge 1 ]"
check "the bad block was fetched again: GetObject >= 1 (got $gets)" bash -c "[ '$gets' -ge 1 ]"
check "unmount B3" unmount "$B3"

# The cache is keyed by ETag: an object changed while unmounted is read anew.
up "$src/mm20.new" "$p/data/mm20"
check "mount -f B4" mount_fg B4 "$p/data" "$work/cacheB"
B4="$work/B4"
check "an object changed between mounts reads the new content, not the cached one" \
  timeout 120 cmp "$B4/mm20" "$src/mm20.new"
check "unmount B4" unmount "$B4"
echo "-- read and cache checks done ($((SECONDS - started)) s)"

# ------------------------------------------- 4, 6: concurrency, consistency
check "mount -f C" mount_fg C "$p/data" "$work/cacheC"
C="$work/C"
concurrent() {
  local pids=() i rc=0
  for i in 1 2 3 4; do timeout 300 cmp "$C/big300" "$src/big300" & pids+=($!); done
  for i in "${pids[@]}"; do wait "$i" || { echo "reader $i: cmp failed"; rc=1; }; done
  return $rc
}
check "4 concurrent readers of a cold 300 MiB file get the right bytes" concurrent
fetched=$(metric "${mount_port[C]}" nacre_s3_bytes_fetched_total)
check "single-flight: bytes fetched = file size ($fetched vs $((300 * MiB)))" bash -c "[ '$fetched' = $((300 * MiB)) ]"

check "an open handle never sees the overwritten object's bytes" \
  tool overwrite "$C/ow40" "$src/ow40" "$src/ow40.new" timeout 120 "$nacre" cp "$src/ow40.new" "$p/data/ow40"
sleep 2
check "a new open after the TTL sees the new content" timeout 120 cmp "$C/ow40" "$src/ow40.new"
check "an open handle whose object is deleted gets EIO, never other bytes" \
  tool overwrite "$C/del40" "$src/c1" /dev/null timeout 60 "$nacre" rm "$p/data/del40"
check "a 0-byte object is an empty file" bash -c "[ \$(timeout 10 stat -c %s '$C/zero') = 0 ] && timeout 10 cmp '$C/zero' /dev/null"
check "a key with a space and UTF-8 reads back" timeout 10 cmp "$C/sp ace ü.bin" "$src/odd"
many_ok() {
  local n
  n=$(timeout 60 ls "$C/many" | wc -l)
  [ "$n" = 1003 ] || { echo "listed $n of 1003 entries"; return 1; }
  timeout 10 cmp "$C/many/f-1003" "$src/top" && timeout 10 cmp "$C/many/f-0001" "$src/top"
}
check "a directory of 1003 objects lists completely (LIST pagination)" many_ok
check "unmount C" unmount "$C"
echo "-- concurrency checks done ($((SECONDS - started)) s)"

# ------------------------------------------- 7, 12: import policies and TTL
check "mount -f D" mount_fg D "$p/ttl" "$work/cacheD"
check "mount -f E" mount_fg E "$p/ttl" "$work/cacheE" --import-policy NEW
check "mount -f F" mount_fg F "$p/ttl" "$work/cacheF" --metadata-ttl forever
D="$work/D" E="$work/E" F="$work/F"
for m in "$D" "$E" "$F"; do
  check "$(basename "$m"): the initial listing" bash -c "[ \"\$(timeout 10 ls '$m' | tr '\n' ' ')\" = 'chg del del2 keep morph ' ]"
done
# Cache the first part of del2 on F, so a later read starts with good bytes.
timeout 20 head -c 100 "$F/del2" >/dev/null
timeout 10 stat "$D/morph" >/dev/null   # the kernel now knows morph as a file
up "$src/new" "$p/ttl/new"
up "$src/chg.new" "$p/ttl/chg"
s3rm "$p/ttl/del"
s3rm "$p/ttl/del2"
s3rm "$p/ttl/morph"
up "$src/new" "$p/ttl/morph/inner"
sleep 2
check "default policy: a new object appears after the TTL" bash -c "timeout 10 ls '$D' | grep -qx new && timeout 10 cmp '$D/new' '$src/new'"
check "default policy: a changed object shows the new size" bash -c "[ \$(timeout 10 stat -c %s '$D/chg') = 2000 ]"
check "default policy: a changed object reads the new content" timeout 10 cmp "$D/chg" "$src/chg.new"
check "default policy: a deleted object disappears" bash -c "! timeout 10 ls '$D' | grep -qx del && ! [ -e '$D/del' ]"
check "default policy: a file replaced by a prefix becomes a directory" \
  bash -c "[ \"\$(timeout 10 stat -c %F '$D/morph')\" = directory ] && timeout 10 cmp '$D/morph/inner' '$src/new'"
check "NEW: a new object appears" bash -c "timeout 10 ls '$E' | grep -qx new"
check "NEW: a deleted object stays listed" bash -c "timeout 10 ls '$E' | grep -qx del"
check "NEW: a changed object keeps its old size" bash -c "[ \$(timeout 10 stat -c %s '$E/chg') = 1000 ]"
check "forever: a new object does not appear in the listing" bash -c "! timeout 10 ls '$F' | grep -qx new"
check "forever: a new object cannot be looked up by name" bash -c "! timeout 10 stat '$F/new' >/dev/null 2>&1"
check "forever: a deleted, never-opened object gives an error, not data" tool read_expect_error "$F/del" "$src/del"
check "forever: a deleted, partly cached object gives an error after the old bytes" \
  tool read_expect_error "$F/del2" "$src/del2"
for m in D E F; do check "unmount $m" unmount "$work/$m"; done
echo "-- import checks done ($((SECONDS - started)) s)"

# ------------------------------------------- 9: the cache bound
check "mount -f G" mount_fg G "$p/data" "$work/cacheG" --cache-size 64M --cache-min-free 0
G="$work/G"
limit=$((64 * MiB + 8 * MiB))
bounded() {
  local f used disk
  for f in c1 c2 c3 c1; do
    timeout 120 cmp "$G/$f" "$src/$f" || { echo "$f reads wrong"; return 1; }
    used=$(metric "${mount_port[G]}" nacre_cache_used_bytes)
    disk=$(find "$work/cacheG" -name '*.data' -print0 | du -c --block-size=1 --files0-from=- | tail -1 | cut -f1)
    echo "after $f: nacre_cache_used_bytes $used, .data on disk $disk"
    if [ "$used" -gt "$limit" ] || [ "$disk" -gt "$limit" ]; then echo "over the bound of $limit"; return 1; fi
  done
}
check "--cache-size 64M: three 40 MiB files read right, the cache stays <= 72 MiB" bounded
check "evictions were counted" bash -c "[ $(metric "${mount_port[G]}" nacre_cache_evictions_total) -ge 1 ]"
check "unmount G" unmount "$G"

# ------------------------------------------- 11: preload, status, release
check "mount -f I" mount_fg I "$p/pre" "$work/cacheI"
I="$work/I"
check "status of a cold file: 0 %" bash -c "timeout 30 '$nacre' status '$I/p1' | grep -E '^released .* 0\.0%  $I/p1\$'"
check "release while a handle is reading: the handle still reads the right bytes" tool release_mid "$I/p2" "$src/p2"
check "preload of the directory exits 0 with progress" \
  bash -c "timeout 120 '$nacre' preload '$I' 2>'$work/preload.err' | grep -q 'preloaded 3 files' && grep -Eq '\\[[#.]{30}\\] .* / .*ETA' '$work/preload.err'"
check "status after preload: 100 % for every file" \
  bash -c "timeout 30 '$nacre' status '$I' >'$work/status' && [ \$(grep -c '^cached .*100\.0%' '$work/status') = 3 ] && grep -q '^total .*100\.0%' '$work/status'"
sed 's/^/     /' "$work/status" 2>/dev/null
check "release of a file exits 0" timeout 30 "$nacre" release "$I/p1"
check "status after release: 0 %" bash -c "timeout 30 '$nacre' status '$I/p1' | grep -E '^released .* 0\.0%'"
check "the released file still reads correctly" timeout 60 cmp "$I/p1" "$src/p1"
check "release does not touch the other files" bash -c "timeout 30 '$nacre' status '$I/p2' | grep -q '100\.0%'"
expect_error "status outside a mount" "Nacre mount" timeout 30 "$nacre" status "$src/p1"
up "$src/gone" "$p/pre/gone"
sleep 1.2
timeout 10 ls "$I" >/dev/null   # the listing now has 'gone'
s3rm "$p/pre/gone"
expect_error "preload of a file whose object was deleted exits non-zero" "gone" \
  timeout 60 "$nacre" preload "$I/gone"
check "unmount I" unmount "$I"

# ------------------------------------------- 12: bad input
bad_mount() {  # bad_mount SOURCE MOUNTPOINT [ENV...]: must fail within 30 s, not mounted
  local source=$1 mnt=$2; shift 2
  local start=$SECONDS rc=0
  # shellcheck disable=SC2086  # bad_opts: extra mount options, split on spaces
  env "$@" timeout 60 "$nacre" mount "$source" "$mnt" --cache-dir "${bad_cache:-$work/cacheX}" ${bad_opts:-} || rc=$?
  if [ $rc = 0 ]; then echo "mount succeeded" >&2; return 0; fi
  [ $((SECONDS - start)) -le 30 ] || { echo "took $((SECONDS - start)) s" >&2; return 0; }
  if is_mounted "$mnt"; then echo "but $mnt is mounted" >&2; return 0; fi
  return 1
}
mkdir -p "$work/X"
expect_error "mount of a missing bucket" "NoSuchBucket" bad_mount "s3://nacre-no-such-bucket-$$" "$work/X"
bad_opts=--read-only expect_error "read-only mount of a missing prefix" "holds no objects" \
  bad_mount "$p/no-such-prefix" "$work/X"
# Read-write, the same prefix mounts (as an empty directory): files written there create it.
check "read-write mount of a missing prefix succeeds" mount_fg Y "$p/no-such-prefix" "$work/cacheY"
check "the missing prefix mounts as an empty directory" bash -c "[ -z \"\$(timeout 10 ls -A '$work/Y')\" ]"
check "unmount Y" unmount "$work/Y"
check "the read-write mount created no object under the missing prefix" \
  bash -c "[ -z \"\$(timeout 30 '$nacre' ls -r '$p/no-such-prefix/')\" ]"
expect_error "mount with a wrong secret key" "SignatureDoesNotMatch|InvalidCredentials|AccessDenied" \
  bad_mount "$p/tree" "$work/X" AWS_SECRET_ACCESS_KEY=wrong
expect_error "mount on a missing mount point" "not an existing directory" bad_mount "$p/tree" "$work/nonexistent"
expect_error "mount of a prefix with a .. component" "'\.\.' component|\.\." bad_mount "$p/../x" "$work/X"
check "mount -f L" mount_fg L "$p/tree" "$work/cacheL"
bad_cache="$work/cacheL" expect_error "a second mount on a cache directory in use" "in use by another process" \
  bad_mount "$p/tree" "$work/X"
check "unmount L" unmount "$work/L"
check "nothing was mounted by the failed mounts" bash -c "! awk -v w='$work/' 'index(\$2, w) == 1' /proc/mounts | grep -q ."
check "no nacre left running by the failed mounts" bash -c "[ -z \"\$(ps -eo comm=,args= | awk -v w='$work/X' '\$1 == \"nacre\" && index(\$0, w)')\" ]"
echo "-- bad input checks done ($((SECONDS - started)) s)"

# ------------------------------------------- 13: unmount with reads in flight
check "mount -f H" mount_fg H "$p/data" "$work/cacheH" --fetch-threads 2 --part-size 2
H="$work/H"
timeout 120 cat "$H/big300" >/dev/null 2>&1 &
reader=$!
bg_pids+=("$reader")
wait_for 20 bash -c "[ \$(curl -s http://127.0.0.1:${mount_port[H]}/metrics | awk '\$1 == \"nacre_s3_bytes_fetched_total\" {printf \"%.0f\", \$2}') -gt 0 ]"
reader_cat=$(ps -o pid= --ppid "$reader" | tr -d ' ')   # timeout's child
bg_pids+=("$reader_cat")
kill -STOP "$reader_cat" 2>/dev/null   # hold the reader mid-file; the whole-file load goes on
in_flight=$(metric "${mount_port[H]}" nacre_s3_bytes_fetched_total)
echo "     unmounting with $in_flight of $((300 * MiB)) bytes fetched"
check "the read was still in flight at unmount" bash -c "[ -n '$reader_cat' ] && ps -p '$reader_cat' >/dev/null"
unmount_busy() {  # the open file makes fusermount3 -u fail (EBUSY): umount -l, then let the reader finish
  local pid=${mount_pid[$H]}
  timeout 20 fusermount3 -u "$H" 2>/dev/null || timeout 20 umount -l "$H" || return 1
  kill -CONT "$reader_cat" 2>/dev/null
  wait_for 10 bash -c "! ps -o stat= -p $pid | grep -qv '^Z'" || { echo "nacre $pid still running 10 s after the unmount"; return 1; }
  wait "$pid" 2>/dev/null
  ! is_mounted "$H" || { echo "$H is still mounted"; return 1; }
}
check "unmount with a read in flight: nacre exits within 10 s, nothing mounted" unmount_busy
kill -CONT "$reader_cat" 2>/dev/null
check "the reader is not left hanging" wait_for 30 bash -c "! ps -p $reader >/dev/null"
kill "$reader" 2>/dev/null; wait "$reader" 2>/dev/null

# SIGTERM to the mount process with a read in flight (what a supervisor does).
check "mount -f H2" mount_fg H2 "$p/data" "$work/cacheH2" --fetch-threads 2 --part-size 2
H2="$work/H2"
timeout 120 cat "$H2/big300" >/dev/null 2>&1 &
reader=$!
bg_pids+=("$reader")
wait_for 20 bash -c "[ \$(curl -s http://127.0.0.1:${mount_port[H2]}/metrics | awk '\$1 == \"nacre_s3_bytes_fetched_total\" {printf \"%.0f\", \$2}') -gt 0 ]"
kill -TERM "${mount_pid[$H2]}"
term_ok() {
  wait_for 10 bash -c "! ps -o stat= -p ${mount_pid[$H2]} | grep -qv '^Z'" || { echo "nacre still running 10 s after SIGTERM"; return 1; }
  ! is_mounted "$H2" || { echo "still mounted after SIGTERM"; return 1; }
}
check "SIGTERM with a read in flight: nacre exits within 10 s and unmounts" term_ok
wait_for 30 bash -c "! ps -p $reader >/dev/null"
kill "$reader" 2>/dev/null; wait "$reader" 2>/dev/null
is_mounted "$H2" && { timeout 20 fusermount3 -u "$H2" || umount -l "$H2"; }
echo "-- unmount checks done ($((SECONDS - started)) s)"

# ------------------------------------------- 14: mount(8) with type fuse.nacre
# mount(8) (util-linux >= 2.38) drops PATH and HOME before it runs
# /sbin/mount.fuse3, so `PATH=dir:$PATH mount -t fuse.nacre` cannot find a
# nacre outside the default PATH. Both halves are tested instead: mount.fuse3
# itself running "nacre SOURCE MNT -o ..." from PATH, and mount(8) with the
# "-t fuse PROGRAM#SOURCE" form that names the binary.
# helper_checks NAME MNT: a helper-made (daemonised) mount shows the files, is
# read-only, and goes away with umount.
helper_checks() {
  local name=$1 mnt=$2 pid
  pid=$(daemon_pids "$mnt" | head -1)
  mount_pid[$mnt]=$pid
  check "$name: a nacre process serves the mount" test -n "$pid"
  check "$name: the files are visible and read back" \
    bash -c "timeout 10 ls '$mnt' | grep -qx top.txt && timeout 10 cmp '$mnt/top.txt' '$src/top' && timeout 10 cmp '$mnt/d1/d2/deep.bin' '$src/deep'"
  check "$name: mounted read-only as fuse.nacre" \
    bash -c "awk -v m='$mnt' '\$2 == m && \$3 == \"fuse.nacre\" && \$4 ~ /^ro/ {f = 1} END {exit !f}' /proc/mounts"
  check "$name: ro, so writes fail with EROFS" tool tryop create "$mnt/new"
  umount_helper() {
    timeout 20 umount "$mnt" || return 1
    [ -n "$pid" ] || { echo "no nacre process was found for $mnt"; return 1; }
    wait_for 10 gone "$pid" || { echo "nacre $pid still running"; return 1; }
    ! is_mounted "$mnt"
  }
  check "$name: umount; nacre exits" umount_helper
}
# scripts/deps.sh installs fuse3 and the tests run as root: a missing helper
# or a non-root run is a failure, not a reason to skip.
helper_missing=""
[ -x /sbin/mount.fuse3 ] || helper_missing="/sbin/mount.fuse3 is missing (apt-get install fuse3)"
[ "$(id -u)" = 0 ] || helper_missing="${helper_missing:+$helper_missing; }mount(8) needs root, this runs as uid $(id -u)"
if [ -z "$helper_missing" ]; then
  mkdir -p "$work/bin" "$work/J" "$work/K"
  ln -s "$nacre" "$work/bin/nacre"
  check "mount.fuse3 -t fuse.nacre runs nacre from PATH" \
    env PATH="$work/bin:$PATH" timeout 60 /sbin/mount.fuse3 "$p/tree" "$work/J" -t fuse.nacre \
      -o "endpoint-url=$AWS_ENDPOINT_URL,cache-dir=$work/cacheJ,ro"
  helper_checks "mount.fuse3" "$work/J"
  if [ "$(env -i /bin/sh -c 'command -v nacre' 2>/dev/null | xargs -r realpath)" = "$nacre" ]; then
    check "mount -t fuse.nacre" timeout 60 mount -t fuse.nacre "$p/tree" "$work/K" \
      -o "endpoint-url=$AWS_ENDPOINT_URL,cache-dir=$work/cacheK,ro"
  else
    check "mount -t fuse 'NACRE#SOURCE'" timeout 60 mount -t fuse "$nacre#$p/tree" "$work/K" \
      -o "endpoint-url=$AWS_ENDPOINT_URL,cache-dir=$work/cacheK,ro"
  fi
  helper_checks "mount(8)" "$work/K"
else
  record FAIL "mount(8) and mount.fuse3 checks cannot run: $helper_missing"
fi

test_finish
