#!/usr/bin/env bash
# Safety of the write path of `nacre mount`: what S3 and the staging directory
# hold after the mount process is killed, when the export fails, when the
# staging disk is full, when S3 denies the PUT, and a seeded random sequence
# of file operations checked against a model.
# Usage: write_safety_test.sh NACRE_BINARY RGW_ENV_FILE   (needs /dev/fuse; run as root)
#
#   1. kill -9 of the mount during large writes (>= 20 rounds): S3 holds the old
#      or a complete new version, never a partial one; no multipart upload is
#      left after the next mount; a closed staged file is exported by the next
#      mount, an unclosed one is kept and listed by `nacre status --staged`.
#   2. export failure (S3 stopped with SIGSTOP before close): close fails in
#      bounded time, the data stays staged, the background retry exports it
#      once S3 answers again.
#   3. full staging disk (a 64 MiB tmpfs): the write fails with ENOSPC and the
#      old object stays in S3.
#   4. AccessDenied at close (a second RGW user, a bucket policy denying
#      PutObject): close fails with EACCES, the data stays staged.
#   5. ~300 random operations (seed from NACRE_TEST_SEED, printed) against an
#      in-memory model, then S3 compared key by key and byte for byte.
#
# Checks 2 and 4 stop an RGW and set a bucket policy: they do that to an RGW
# of their own, started here in the work directory (about 15 s), never to the
# shared one of RGW_ENV_FILE, so this script can run next to the other tests.
# shellcheck source-path=SCRIPTDIR
set -uo pipefail
here=$(dirname "$(realpath "$0")")
# shellcheck source=lib.sh
source "$here/lib.sh"
test_init wsafe "$@"
s3_server="$here/../../scripts/s3-server"
umask 022

own_rgw_dir=""   # the private RGW of checks 2 and 4
own_rgw_pid=""   # its radosgw while it may be stopped
cleanup_first() {  # a stopped server would hang every unmount
  [ -z "$own_rgw_pid" ] || kill -CONT "$own_rgw_pid" 2>/dev/null
}
cleanup_last() {
  [ -z "$own_rgw_dir" ] || timeout 120 "$s3_server" stop "$own_rgw_dir" >/dev/null 2>&1
}

cat >"$work/ws.py" <<'PY'
import errno, hashlib, os, random, subprocess, sys, time

MiB = 1 << 20

def ename(e):
    return errno.errorcode.get(e, str(e))

def block(tag, i):
    """1 MiB of a pattern that differs per tag and per block."""
    return hashlib.sha256(f"{tag}:{i}".encode()).digest() * (MiB // 32)

def content(tag, mib):
    return b"".join(block(tag, i) for i in range(mib))

def gen(tag, mib, path):
    """Writes the pattern to a local file, prints its sha256."""
    data = content(tag, int(mib))
    with open(path, "wb") as f:
        f.write(data)
    print(hashlib.sha256(data).hexdigest())

def note(state, line):
    with open(state, "a") as f:
        f.write(line + "\n")
        f.flush()

def writer(path, tag, mib, state, pause_at="0"):
    """Rewrites path (O_TRUNC) with mib MiB of tag's pattern in 1 MiB writes,
    noting its progress in state: sha, opened, wrote N, closing, closed. With
    pause_at N > 0, it stops after N MiB, the file open, notes "paused N" and
    waits to be killed."""
    mib, pause_at = int(mib), int(pause_at)
    data = content(tag, mib)
    note(state, "sha " + hashlib.sha256(data).hexdigest())
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CREAT, 0o644)
    note(state, "opened")
    try:
        for i in range(mib):
            os.write(fd, data[i * MiB:(i + 1) * MiB])
            note(state, f"wrote {i + 1}")
            if i + 1 == pause_at:
                note(state, f"paused {pause_at}")
                time.sleep(3600)
    except OSError as e:
        note(state, "write-error " + ename(e.errno))
        os.close(fd)
        return
    note(state, "closing")
    try:
        os.close(fd)
        note(state, "closed")
    except OSError as e:
        note(state, "close-error " + ename(e.errno))

def write_then_close(path, mib, go, state):
    """Check 2: writes mib MiB of random bytes (saved next to state as .ref),
    waits for the file go, then closes; notes 'close ok SECONDS' or
    'close ERRNO SECONDS'."""
    data = os.urandom(int(mib) * MiB)
    with open(state + ".ref", "wb") as f:
        f.write(data)
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CREAT, 0o644)
    for i in range(0, len(data), MiB):
        os.write(fd, data[i:i + MiB])
    note(state, "written")
    while not os.path.exists(go):
        time.sleep(0.05)
    t0 = time.monotonic()
    try:
        os.close(fd)
        note(state, f"close ok {time.monotonic() - t0:.1f}")
    except OSError as e:
        note(state, f"close {ename(e.errno)} {time.monotonic() - t0:.1f}")

def fill(path, mib):
    """Check 3: writes up to mib MiB (O_TRUNC) and closes; prints what failed."""
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    written, werr = 0, None
    chunk = os.urandom(MiB)
    try:
        for _ in range(int(mib)):
            os.write(fd, chunk)
            written += 1
    except OSError as e:
        werr = ename(e.errno)
    try:
        os.close(fd)
        cres = "ok"
    except OSError as e:
        cres = ename(e.errno)
    print(f"wrote {written} MiB, write error {werr}, close {cres}")

def small_write(path, mib, ref):
    """Check 4: writes mib MiB of random bytes (kept in ref) and closes;
    prints 'close ok' or 'close ERRNO'."""
    data = os.urandom(int(mib) * MiB)
    with open(ref, "wb") as f:
        f.write(data)
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CREAT, 0o644)
    os.write(fd, data)
    try:
        os.close(fd)
        print("close ok")
    except OSError as e:
        print("close " + ename(e.errno))

# ------------------------------------------------------------------ check 5

class Inode:
    def __init__(self):
        self.data = bytearray()

def randops(mnt, seed, nops, model_dir, log):
    """Random operations through the mount against a model of the files.
    Prints 'ok NAME' / 'FAIL NAME' lines; writes the final model (one file per
    key, relative paths) into model_dir."""
    seed = int(seed)
    rng = random.Random(seed)
    dirs = ["", "d1/", "d2/"]
    names = {}      # relative path -> Inode
    fds = []        # [fd, Inode, path-at-open, append]
    big_left = 3
    logf = open(log, "w")
    fails = 0
    reads = 0

    def say(msg):
        logf.write(msg + "\n")
        logf.flush()

    def P(rel):
        return os.path.join(mnt, rel)

    def rand_bytes(n):
        return rng.randbytes(n)

    for d in dirs[1:]:
        os.mkdir(P(d))
        say(f"mkdir {d}")

    def new_name():
        return rng.choice(dirs) + "f%03d" % rng.randrange(1000)

    def pick_file():
        return rng.choice(sorted(names)) if names else None

    def close_fd(entry):
        fds.remove(entry)
        os.close(entry[0])
        say(f"close fd {entry[0]} ({entry[2]})")

    def compare(got, ino, what):
        nonlocal fails, reads
        reads += 1
        if bytes(got) != bytes(ino.data):
            fails += 1
            first = next((i for i in range(min(len(got), len(ino.data))) if got[i] != ino.data[i]),
                         min(len(got), len(ino.data)))
            print(f"FAIL {what}: {len(got)} bytes read, the model has {len(ino.data)}; "
                  f"first difference at {first}", flush=True)
            return False
        return True

    def write_model(ino, off, data):
        if off > len(ino.data):
            ino.data.extend(b"\0" * (off - len(ino.data)))
        ino.data[off:off + len(data)] = data

    def read_path(rel):
        with open(P(rel), "rb") as f:
            return f.read()

    op_i = 0
    try:
        for op_i in range(int(nops)):
            r = rng.random()
            if r < 0.14 or not names:                      # create
                rel = new_name()
                if rel in names:
                    continue
                ino = Inode()
                fd = os.open(P(rel), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
                data = rand_bytes(rng.randrange(0, 256 * 1024))
                os.write(fd, data)
                ino.data[:] = data
                names[rel] = ino
                say(f"{op_i}: create {rel} with {len(data)} bytes (fd {fd})")
                if rng.random() < 0.4 and len(fds) < 4:
                    fds.append([fd, ino, rel, False])
                else:
                    os.close(fd)
            elif r < 0.28:                                  # write at a random offset
                if fds and rng.random() < 0.5:
                    entry = rng.choice(fds)
                    fd, ino, own = entry[0], entry[1], False
                else:
                    rel = pick_file()
                    ino = names[rel]
                    fd, own = os.open(P(rel), os.O_RDWR), True
                limit = 2 * MiB
                off = rng.randrange(0, min(len(ino.data) + 64 * 1024, limit))
                data = rand_bytes(rng.randrange(1, min(256 * 1024, limit - off) + 1))
                if entry_append(fds, fd):
                    off = len(ino.data)
                    data = data[:max(1, min(len(data), limit - off))]
                    os.write(fd, data)
                else:
                    os.pwrite(fd, data, off)
                write_model(ino, off, data)
                say(f"{op_i}: pwrite {len(data)} at {off} (fd {fd}{', own' if own else ''})")
                if own:
                    os.close(fd)
            elif r < 0.36:                                  # append
                rel = pick_file()
                ino = names[rel]
                if len(ino.data) >= 2 * MiB:
                    continue
                data = rand_bytes(rng.randrange(1, min(128 * 1024, 2 * MiB - len(ino.data)) + 1))
                fd = os.open(P(rel), os.O_WRONLY | os.O_APPEND)
                os.write(fd, data)
                ino.data.extend(data)
                say(f"{op_i}: append {len(data)} to {rel}")
                if rng.random() < 0.3 and len(fds) < 4:
                    fds.append([fd, ino, rel, True])
                else:
                    os.close(fd)
            elif r < 0.44:                                  # truncate
                if fds and rng.random() < 0.4:
                    entry = rng.choice(fds)
                    ino = entry[1]
                    n = rng.randrange(0, min(len(ino.data) + 128 * 1024, 2 * MiB))
                    os.ftruncate(entry[0], n)
                    say(f"{op_i}: ftruncate fd {entry[0]} to {n}")
                else:
                    rel = pick_file()
                    ino = names[rel]
                    n = rng.randrange(0, min(len(ino.data) + 128 * 1024, 2 * MiB))
                    os.truncate(P(rel), n)
                    say(f"{op_i}: truncate {rel} to {n}")
                if n < len(ino.data):
                    del ino.data[n:]
                else:
                    ino.data.extend(b"\0" * (n - len(ino.data)))
            elif r < 0.56:                                  # rename
                rel = pick_file()
                if rng.random() < 0.4 and len(names) > 1:
                    to = rng.choice([x for x in sorted(names) if x != rel])   # over an existing file
                else:
                    to = new_name()
                if to == rel:
                    continue
                os.rename(P(rel), P(to))
                names[to] = names.pop(rel)
                say(f"{op_i}: rename {rel} -> {to}")
            elif r < 0.63:                                  # unlink
                rel = pick_file()
                os.unlink(P(rel))
                del names[rel]
                say(f"{op_i}: unlink {rel}")
            elif r < 0.85:                                  # read and compare
                if fds and rng.random() < 0.3:
                    entry = rng.choice(fds)
                    fd, ino = entry[0], entry[1]
                    got = os.pread(fd, len(ino.data) + 10, 0) if entry[3] is False and is_readable(fd) else None
                    if got is not None:
                        while len(got) < len(ino.data):
                            c = os.pread(fd, len(ino.data) + 10 - len(got), len(got))
                            if not c:
                                break
                            got += c
                        say(f"{op_i}: pread fd {fd}: {len(got)} bytes")
                        compare(got, ino, f"op {op_i}: pread of fd {fd} ({entry[2]}) matches the model")
                        continue
                rel = pick_file()
                got = read_path(rel)
                say(f"{op_i}: read {rel}: {len(got)} bytes")
                compare(got, names[rel], f"op {op_i}: read of {rel} matches the model")
            elif r < 0.93:                                  # close an open file
                if fds:
                    close_fd(rng.choice(fds))
            elif r < 0.97:                                  # readdir compared with the model
                d = rng.choice(dirs)
                got = sorted(x for x in os.listdir(P(d) if d else mnt) if x not in ("d1", "d2"))
                want = sorted(k[len(d):] for k in names if k.startswith(d) and "/" not in k[len(d):])
                reads += 1
                say(f"{op_i}: listdir {d or '/'}: {len(got)} names")
                if got != want:
                    fails += 1
                    odd = sorted(set(got) ^ set(want))
                    print(f"FAIL op {op_i}: listdir {d or '/'} matches the model: "
                          f"extra {sorted(set(got) - set(want))}, missing {sorted(set(want) - set(got))}",
                          flush=True)
                    with open(log) as lf:
                        hist = [l.rstrip() for l in lf if any(d + x in l for x in odd)]
                    print("  operations on those names: " + " | ".join(hist[-8:]), flush=True)
            else:                                           # a large sequential file
                if big_left == 0:
                    continue
                big_left -= 1
                rel = rng.choice(dirs) + "big%d" % big_left
                mib = 20 + rng.randrange(0, 5)
                tail = rng.randrange(0, MiB)
                ino = names.get(rel) or Inode()
                if rel in names:
                    pass
                fd = os.open(P(rel), os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o644)
                data = bytearray()
                for i in range(mib):
                    b = rand_bytes(MiB)
                    os.write(fd, b)
                    data += b
                b = rand_bytes(tail)
                os.write(fd, b)
                data += b
                os.close(fd)
                ino.data[:] = data
                names[rel] = ino
                say(f"{op_i}: big sequential file {rel}: {len(data)} bytes")
                got = read_path(rel)
                compare(got, ino, f"op {op_i}: read of the large file {rel} matches the model")
    except OSError as e:
        fails += 1
        print(f"FAIL op {op_i} ({(open(log).read().splitlines() or ['start'])[-1]}...): "
              f"{ename(e.errno)} {e}", flush=True)
        for entry in list(fds):
            try:
                os.close(entry[0])
            except OSError:
                pass
        return fails
    # Close everything; every file must read as the model says.
    for entry in list(fds):
        try:
            close_fd(entry)
        except OSError as e:
            fails += 1
            print(f"FAIL close of fd {entry[0]} ({entry[2]}): {ename(e.errno)}", flush=True)
    bad = [rel for rel in sorted(names) if read_path(rel) != bytes(names[rel].data)]
    if bad:
        fails += 1
        print(f"FAIL after closing everything, every file reads as the model: differ {bad}", flush=True)
    else:
        print(f"ok after closing everything, the {len(names)} files read as the model", flush=True)
    if fails == 0:
        print(f"ok {op_i + 1} operations, {reads} reads/listings compared with the model", flush=True)
    os.makedirs(model_dir, exist_ok=True)
    for rel, ino in names.items():
        os.makedirs(os.path.dirname(os.path.join(model_dir, rel)) or model_dir, exist_ok=True)
        with open(os.path.join(model_dir, rel), "wb") as f:
            f.write(ino.data)
    return fails

def entry_append(fds, fd):
    return any(e[0] == fd and e[3] for e in fds)

def is_readable(fd):
    import fcntl
    return (fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE) in (os.O_RDWR, os.O_RDONLY)

if __name__ == "__main__":
    rc = globals()[sys.argv[1]](*sys.argv[2:])
    sys.exit(1 if isinstance(rc, int) and rc else 0)
PY
ws() { python3 "$work/ws.py" "$@"; }

# pychecks TITLE FUNCTION ARGS...: each "ok NAME" or "FAIL NAME" line a function
# of ws.py prints is a check named "TITLE: NAME"; a crash or no result is a failure.
pychecks() {
  local title=$1; shift
  local rc=0 n=0 line
  timeout 600 python3 "$work/ws.py" "$@" >"$work/py.out" 2>&1 || rc=$?
  while IFS= read -r line; do
    case $line in
      "ok "*) record OK "$title: ${line#ok }"; n=$((n + 1)) ;;
      "FAIL "*) record FAIL "$title: ${line#FAIL }"; n=$((n + 1)) ;;
      *) echo "     $line" ;;
    esac
  done <"$work/py.out"
  if [ "$n" = 0 ] || { [ "$rc" != 0 ] && ! grep -q '^FAIL ' "$work/py.out"; }; then
    record FAIL "$title: the helper exited with status $rc after $n checks"
  fi
}

sha_of() { sha256sum <"$1" | cut -c1-64; }

# s3get URL_BASE KEY OUT: a signed GET of KEY (full key) from the endpoint URL_BASE
# with the current credentials into OUT; fails unless HTTP 200.
s3get() {
  local code
  code=$(timeout 120 curl -s --path-as-is -o "$3" -w '%{http_code}' \
    --aws-sigv4 "aws:amz:us-east-1:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
    -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$1/$NACRE_TEST_BUCKET/$2")
  [ "$code" = 200 ] || { echo "GET $2: HTTP $code"; return 1; }
}
s3sha() {  # s3sha URL_BASE KEY: sha256 of the object
  s3get "$1" "$2" "$work/get.tmp" || return 1
  sha_of "$work/get.tmp"
}
# uploads_of URL_BASE KEY: the number of multipart uploads in progress for KEY.
# (curl 7.88 signs the query as given: parameters sorted, each with "=", the
# prefix's "/" encoded.)
uploads_of() {
  local code
  code=$(timeout 60 curl -s --path-as-is -o "$work/uploads.xml" -w '%{http_code}' \
    --aws-sigv4 "aws:amz:us-east-1:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
    -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$1/$NACRE_TEST_BUCKET?prefix=${2//\//%2F}&uploads=") || return 1
  [ "$code" = 200 ] || { echo "ListMultipartUploads: HTTP $code" >&2; return 1; }
  python3 -c 'import re, sys
xml = open(sys.argv[1]).read()
print(sum(1 for k in re.findall(r"<Upload>.*?<Key>(.*?)</Key>", xml) if k == sys.argv[2]))' "$work/uploads.xml" "$2"
}
no_uploads() {
  local n
  n=$(uploads_of "$1" "$2") || return 1
  [ "$n" = 0 ] && return 0
  echo "$n uploads in progress for $2:"
  python3 -c 'import re, sys
for u in re.findall(r"<Upload>(.*?)</Upload>", open(sys.argv[1]).read()):
    print("  ", " ".join(re.findall(r"<(?:UploadId|Initiated)>(.*?)<", u)))' "$work/uploads.xml"
  return 1
}
# abort_uploads URL_BASE KEY: aborts the uploads left for KEY (after a failed
# check, so that the next rounds are judged on their own)
abort_uploads() {
  local id
  for id in $(python3 -c 'import re, sys
for u in re.findall(r"<Upload>(.*?)</Upload>", open(sys.argv[1]).read()):
    if re.search(r"<Key>(.*?)</Key>", u).group(1) == sys.argv[2]:
        print(re.search(r"<UploadId>(.*?)</UploadId>", u).group(1))' "$work/uploads.xml" "$2"); do
    timeout 60 curl -s --path-as-is -o /dev/null -X DELETE --aws-sigv4 "aws:amz:us-east-1:s3" \
      --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" \
      "$1/$NACRE_TEST_BUCKET/$2?uploadId=$id"
  done
}
# staged_lines CACHE: `nacre status --staged` of a cache dir (its file lines)
staged() { timeout 30 "$nacre" status --staged --cache-dir "$1"; }
kill_wait() {  # kill_wait PID: SIGKILL, wait until gone
  kill -9 "$1" 2>/dev/null
  wait_for 10 gone "$1"
  wait "$1" 2>/dev/null
  return 0
}

# ================================================= 1: kill -9 during large writes
t="kill -9 during large writes"
rounds=${NACRE_KILL_ROUNDS:-21}
new_mib=48
kkey="$prefix/kill/big"
kcache="$work/cacheK"
declare -A known   # sha256 -> version name
old_sha=$(ws gen old 24 "$src/old")
known[$old_sha]=old
check "$t: upload the old version (24 MiB)" up "$src/old" "$p/kill/big"
check "$t: mount -f K" mount_fg K "$p/kill" "$kcache"
K="$work/K"
seen_paths=" "
is_round() {  # is_round SHA NAME: the object is that version
  local s
  s=$(s3sha "$AWS_ENDPOINT_URL" "$kkey") || { echo "$s"; return 1; }
  [ "$s" = "$1" ] || { echo "S3 holds ${known[$s]:-an unknown content ${s:0:16}}, not $2"; return 1; }
}
# in_known SHA: prints which version the object is; fails for an unknown content
in_known() {
  local s
  s=$(s3sha "$AWS_ENDPOINT_URL" "$kkey") || { echo "$s"; return 1; }
  if [ -n "${known[$s]:-}" ]; then echo "S3 holds ${known[$s]}"; else echo "S3 holds an unknown content ${s:0:16} (partial?)"; return 1; fi
}
for r in $(seq 1 "$rounds"); do
  mode=$((r % 3))
  state="$work/round$r.state"
  : >"$state"
  kpid=${mount_pid[$K]:-}
  if [ -z "$kpid" ] || ! alive "$kpid"; then record FAIL "$t: round $r: no mount to kill"; break; fi
  at=0
  [ "$mode" = 0 ] && at=$((4 + (r * 7) % 40))
  python3 "$work/ws.py" writer "$K/big" "round$r" "$new_mib" "$state" "$at" >"$work/writer$r.log" 2>&1 &
  wpid=$!
  bg_pids+=("$wpid")
  case $mode in
    0) what="after $at MiB written, the file open"
       wait_for 120 grep -qx "paused $at" "$state" && sleep 0.$((r % 5)) ;;
    1) d=$(awk -v i=$((r / 3 % 6)) 'BEGIN {split("0 0.005 0.02 0.05 0.1 0.3", a, " "); print a[i + 1]}')
       what="${d} s into close()"
       wait_for 120 grep -qx closing "$state" && sleep "$d" ;;
    2) d=$(awk -v i=$((r / 3 % 5)) 'BEGIN {split("0 0.05 0.2 0.5 1", a, " "); print a[i + 1]}')
       what="${d} s after close() returned"
       wait_for 180 grep -Eq '^(closed|close-error)' "$state" && sleep "$d" ;;
  esac
  reached=$?
  kill -9 "$kpid"
  kill_wait "$wpid"
  wait_for 10 gone "$kpid"; wait "$kpid" 2>/dev/null
  progress=$(grep -E '^(wrote|closing|closed|close-error|write-error)' "$state" | tail -1)
  rsha=$(sed -n 's/^sha //p' "$state")
  [ -n "$rsha" ] && known[$rsha]=round$r
  echo "     round $r: killed $what; the writer had reached: ${progress:-nothing}"
  [ "$reached" = 0 ] || record FAIL "$t: round $r: the writer never reached the kill point ($what)" "$work/writer$r.log"
  timeout 20 fusermount3 -u "$K" 2>/dev/null || timeout 20 fusermount3 -uz "$K"
  check "$t: round $r: S3 holds the old or a complete new version (not partial)" in_known
  if grep -qx closed "$state"; then
    check "$t: round $r: close() had returned 0, so S3 holds round$r" is_round "$rsha" "round$r"
  fi
  check "$t: round $r: remount the same cache dir" mount_fg K "$p/kill" "$kcache"
  staged_now() { staged "$kcache" >"$work/staged.out"; }
  if grep -qx closed "$state"; then
    :   # exported before the kill; nothing staged to find
  elif grep -qx closing "$state"; then
    # Killed during close: the manifest says complete (the next mount exports it)
    # or not (kept as writing): either way nothing is lost.
    round_found() {
      [ "$(s3sha "$AWS_ENDPOINT_URL" "$kkey")" = "$rsha" ] && { echo "exported by the remount"; return 0; }
      staged_now || return 1
      awk -v u="s3://$NACRE_TEST_BUCKET/$kkey" '$1 == "writing" && $3 == u {print $4}' "$work/staged.out" |
        while read -r path; do
          case $seen_paths in *" $path "*) continue ;; esac
          [ -f "$path" ] && { echo "kept as writing: $path"; exit 0; }
        done | grep .
    }
    check "$t: round $r (killed in close): exported by the remount within 30 s or kept as writing" \
      wait_for 30 round_found
  else
    # Killed while writing: kept on disk as "writing", never exported or deleted.
    at_least=$(sed -n 's/^wrote //p' "$state" | tail -1)
    kept() {
      staged_now || { echo "nacre status --staged failed"; return 1; }
      local path size
      read -r path size < <(awk -v u="s3://$NACRE_TEST_BUCKET/$kkey" '$1 == "writing" && $3 == u {print $4, $2}' "$work/staged.out" |
        while read -r path size; do case $seen_paths in *" $path "*) ;; *) echo "$path $size" ;; esac; done | tail -1)
      [ -n "${path:-}" ] || { echo "no new 'writing' line for s3://$NACRE_TEST_BUCKET/$kkey:"; cat "$work/staged.out"; return 1; }
      [ -f "$path" ] || { echo "$path does not exist"; return 1; }
      seen_paths+="$path "
      echo "writing $size bytes at $path"
      [ "$size" -ge $(( ${at_least:-0} * MiB )) ] || { echo "smaller than the ${at_least:-0} MiB written"; return 1; }
    }
    check "$t: round $r (killed while writing): nacre status --staged lists it as writing, data file present" kept
  fi
  # The next mount aborted the dead process's upload; a recovery export ends within 30 s.
  f0=$failed
  check "$t: round $r: no multipart upload left for the key after the remount" wait_for 30 no_uploads "$AWS_ENDPOINT_URL" "$kkey"
  if [ "$failed" != "$f0" ]; then
    sed 's/^/     mount log: /' "$work/K.log" | tail -8
    abort_uploads "$AWS_ENDPOINT_URL" "$kkey"
  fi
  check "$t: round $r: S3 still holds a complete version after the remount" in_known
  # Remember every path already listed so the next rounds find their own.
  if staged_now; then
    while read -r path; do seen_paths+="$path "; done < <(awk '$1 != "total" {print $4}' "$work/staged.out")
  fi
done
check "$t: unmount K" unmount "$K"
check "$t: after the unmount, no multipart upload is left" no_uploads "$AWS_ENDPOINT_URL" "$kkey"
check "$t: after the unmount, S3 holds a complete version" in_known
echo "     ($((SECONDS - started)) s so far)"

# ================================================= 3: a full staging disk
t="full staging disk"
old_f=$(ws gen fullold 4 "$src/fullold")
check "$t: upload the old version (4 MiB)" up "$src/fullold" "$p/full/f"
mkdir -p "$work/tmpfs"
check "$t: a 64 MiB tmpfs for the cache dir" mount -t tmpfs -o size=64m,mode=0700 nacre-wsafe-cache "$work/tmpfs"
check "$t: mount -f F, cache on the tmpfs" mount_fg F "$p/full" "$work/tmpfs/c" --cache-min-free 0
ws fill "$work/F/f" 100 >"$work/fill.out" 2>&1
fillres=$(cat "$work/fill.out")
echo "     $fillres"
check "$t: the write fails with ENOSPC" grep -q "write error ENOSPC" "$work/fill.out"
check "$t: close fails with ENOSPC (or succeeds without exporting)" grep -Eq "close (ENOSPC|ok)$" "$work/fill.out"
s3_is_old() { local s; s=$(s3sha "$AWS_ENDPOINT_URL" "$prefix/full/f") || return 1; [ "$s" = "$old_f" ] || { echo "S3 holds ${s:0:16}, not the old version"; return 1; }; }
check "$t: S3 keeps the old content" s3_is_old
check "$t: no multipart upload left for the key (within 30 s)" wait_for 30 no_uploads "$AWS_ENDPOINT_URL" "$prefix/full/f"
listed_as() {  # listed_as CACHE STATE KEY [SIZE]: nacre status --staged lists KEY in STATE, data file present
  timeout 30 "$nacre" status --staged --cache-dir "$1" >"$work/st.out" 2>&1 || { cat "$work/st.out"; return 1; }
  awk -v s="$2" -v u="s3://$NACRE_TEST_BUCKET/$3" -v n="${4:-}" '
    $1 == s && $3 == u && (n == "" || $2 == n) {print; f = system("test -f " $4) == 0}
    END {exit !f}' "$work/st.out" || { echo "not listed as $2 (or its data file is missing):"; cat "$work/st.out"; return 1; }
}
# write-failed as documented; "writing" when the disk was too full to rewrite
# the manifest too: neither is ever exported, both are kept.
listed_failed() { listed_as "$work/tmpfs/c" write-failed "$prefix/full/f" || listed_as "$work/tmpfs/c" writing "$prefix/full/f"; }
check "$t: nacre status --staged lists the file (write-failed or writing), data kept" listed_failed
check "$t: unmount F" unmount "$work/F"
check "$t: S3 still keeps the old content after the unmount" s3_is_old
check "$t: unmount the tmpfs" umount "$work/tmpfs"

# ================================================= 5: random operations against a model
t="random operations"
seed=${NACRE_TEST_SEED:-$(( (RANDOM << 15) | RANDOM ))}
echo "     random operations: seed $seed (NACRE_TEST_SEED=$seed reproduces them)"
check "$t: mount -f R" mount_fg R "$p/rand" "$work/cacheR"
pychecks "$t (seed $seed)" randops "$work/R" "$seed" 300 "$work/model" "$work/randops.log"
s3_matches_model() {
  local bad=0 key rel
  timeout 60 "$nacre" ls -r "$p/rand/" | sed -E 's/^[^ ]+ [^ ]+ +[0-9]+ //' | sed "s#^$prefix/rand/##" | sort >"$work/s3keys" ||
    { echo "listing failed"; return 1; }
  { printf 'd1/\nd2/\n'; (cd "$work/model" 2>/dev/null && find . -type f | sed 's#^\./##'); } | sort >"$work/modelkeys"
  if ! cmp -s "$work/s3keys" "$work/modelkeys"; then
    echo "key sets differ (< S3, > model):"; diff "$work/s3keys" "$work/modelkeys" | grep '^[<>]' | head; bad=1
  fi
  while read -r rel; do
    case $rel in */) continue ;; esac
    [ -f "$work/model/$rel" ] || continue
    s3get "$AWS_ENDPOINT_URL" "$prefix/rand/$rel" "$work/obj.tmp" || { bad=1; continue; }
    cmp -s "$work/obj.tmp" "$work/model/$rel" || { echo "$rel: bytes differ ($(size_of "$work/obj.tmp") in S3, $(size_of "$work/model/$rel") in the model)"; bad=1; }
  done <"$work/s3keys"
  echo "$(grep -vc '/$' "$work/s3keys") objects compared"
  [ "$bad" = 0 ]
}
check "$t (seed $seed): every key under the prefix in S3 matches the model byte for byte" s3_matches_model
check "$t: unmount R" unmount "$work/R"
check "$t (seed $seed): S3 still matches the model after the unmount" s3_matches_model
echo "     ($((SECONDS - started)) s so far)"

# ================================================= 2 and 4: an RGW of our own
own_rgw_dir="$work/rgw"
own_url="" own_rgw=""
start_own_rgw() {
  NACRE_S3_OSD_SIZE=$((8 << 30)) timeout 300 "$s3_server" start "$own_rgw_dir" >/dev/null 2>"$work/rgw.log" ||
    { tail -5 "$work/rgw.log"; return 1; }
  own_url=$(sed -n 's/^export AWS_ENDPOINT_URL=//p' "$own_rgw_dir/env")
  local pid
  pid=$(tr -dc 0-9 <"$own_rgw_dir/run/client.rgw.pid")
  tr '\0' '\n' <"/proc/$pid/cmdline" | grep -Fxq "$(realpath "$own_rgw_dir")/ceph.conf" ||
    { echo "pid $pid is not the radosgw of $own_rgw_dir"; return 1; }
  own_rgw=$pid
  echo "radosgw pid $pid at $own_url"
}
check "an RGW of its own starts (for the export failure and AccessDenied checks)" start_own_rgw

# ------------------------------------------------- 2: export failure
t="export failure"
if [ -n "$own_rgw" ]; then
  # A stopped server accepts connections and never answers: each request fails
  # after --stall-timeout; 10 s and 3 attempts bound close() well under 120 s.
  check "$t: mount -f E on the private RGW (--stall-timeout 10 --max-attempts 3)" \
    mount_fg E "$b/$prefix/exp" "$work/cacheE" --endpoint-url "$own_url" --stall-timeout 10 --max-attempts 3
  state="$work/exp.state"; : >"$state"
  python3 "$work/ws.py" write_then_close "$work/E/f20" 20 "$work/exp.go" "$state" >"$work/exp.log" 2>&1 &
  epid=$!
  bg_pids+=("$epid")
  check "$t: 20 MiB written (file still open)" wait_for 120 grep -qx written "$state"
  sleep 1   # let the streamed parts finish: the stop hits the close
  kill -STOP "$own_rgw"; own_rgw_pid=$own_rgw
  touch "$work/exp.go"
  check "$t: close() returns within 120 s" wait_for 120 grep -q '^close ' "$state"
  res=$(grep '^close ' "$state")
  echo "     $res"
  check "$t: close() fails with EIO or ETIMEDOUT ($res)" grep -Eq '^close (EIO|ETIMEDOUT) ' "$state"
  kill_wait "$epid"
  check "$t: the staged file is still there (nacre status --staged: closed)" \
    listed_as "$work/cacheE" closed "$prefix/exp/f20" $((20 * MiB))
  kill -CONT "$own_rgw"; own_rgw_pid=""
  ref_sha=$(sha_of "$state.ref")
  exported() { [ "$(s3sha "$own_url" "$prefix/exp/f20" 2>/dev/null)" = "$ref_sha" ]; }
  t0=$SECONDS
  check "$t: after the server resumes, the background retry exports it within 60 s" wait_for 60 exported
  echo "     (exported $((SECONDS - t0)) s after the resume)"
  check "$t: then nothing is left staged" \
    wait_for 20 bash -c "timeout 30 '$nacre' status --staged --cache-dir '$work/cacheE' | grep -q '^total .* 0 staged files'"
  check "$t: no multipart upload left" no_uploads "$own_url" "$prefix/exp/f20"
  check "$t: unmount E" unmount "$work/E"
else
  record FAIL "$t: no RGW of its own: the export failure check cannot run"
fi

# ------------------------------------------------- 4: AccessDenied -> EACCES at close
t="AccessDenied at close"
user2="nacre-wsafe2"
key2=NACREWSAFESECONDKEY
secret2="nacre-wsafe-second-secret-0123456789"
create_user2() {
  local conf
  conf="$(realpath "$own_rgw_dir")/ceph.conf"
  [ -f "$conf" ] || { echo "no ceph.conf in $own_rgw_dir"; return 1; }
  command -v radosgw-admin >/dev/null || { echo "radosgw-admin is missing"; return 1; }
  timeout 60 radosgw-admin -c "$conf" user create --uid="$user2" --display-name="Nacre write safety" \
    --access-key="$key2" --secret-key="$secret2" >"$work/user2.out" 2>&1 ||
    { echo "radosgw-admin user create failed:"; tail -5 "$work/user2.out"; return 1; }
  echo "user $user2 created"
}
put_policy() {
  local res="arn:aws:s3:::$NACRE_TEST_BUCKET" who="arn:aws:iam:::user/$user2" code
  cat >"$work/policy.json" <<EOF
{"Version": "2012-10-17", "Statement": [
  {"Effect": "Allow", "Principal": {"AWS": ["$who"]}, "Action": ["s3:ListBucket"], "Resource": ["$res"]},
  {"Effect": "Allow", "Principal": {"AWS": ["$who"]}, "Action": ["s3:GetObject"], "Resource": ["$res/$prefix/*"]},
  {"Effect": "Deny", "Principal": {"AWS": ["$who"]}, "Action": ["s3:PutObject"], "Resource": ["$res/$prefix/*"]}
]}
EOF
  code=$(timeout 60 curl -s --path-as-is -o "$work/curl.out" -w '%{http_code}' \
    --aws-sigv4 "aws:amz:us-east-1:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
    -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -X PUT --data-binary "@$work/policy.json" \
    "$own_url/$NACRE_TEST_BUCKET?policy=")
  [ "$code" = 200 ] || [ "$code" = 204 ] || { echo "PutBucketPolicy: HTTP $code: $(cat "$work/curl.out")"; return 1; }
  echo "PutBucketPolicy: HTTP $code"
}
as_user2() { AWS_ACCESS_KEY_ID=$key2 AWS_SECRET_ACCESS_KEY=$secret2 "$@"; }
user2_put_denied() {
  local code
  echo x >"$work/x"
  code=$(timeout 60 curl -s --path-as-is -o "$work/curl.out" -w '%{http_code}' \
    --aws-sigv4 "aws:amz:us-east-1:s3" --user "$key2:$secret2" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" \
    -X PUT --data-binary "@$work/x" "$own_url/$NACRE_TEST_BUCKET/$prefix/deny/probe")
  echo "PUT as $user2: HTTP $code"
  [ "$code" = 403 ]
}
if [ -n "$own_rgw" ]; then
  check "$t: a second RGW user (radosgw-admin)" create_user2
  check "$t: PutBucketPolicy (List and Get allowed, PutObject denied on the prefix)" put_policy
  gen deny_old $((1 * MiB))
  check "$t: the owner uploads an object under the prefix" \
    timeout 60 "$nacre" cp --endpoint-url "$own_url" "$src/deny_old" "$b/$prefix/deny/old"
  check "$t: the second user can GET it" as_user2 s3get "$own_url" "$prefix/deny/old" "$work/get2.tmp"
  check "$t: the second user's PUT is refused (403)" user2_put_denied
  check "$t: mount -f D as the second user" as_user2 mount_fg D "$b/$prefix/deny" "$work/cacheD" --endpoint-url "$own_url"
  check "$t: the second user reads through the mount" cmp "$work/D/old" "$src/deny_old"
  ws small_write "$work/D/new" 1 "$work/deny.ref" >"$work/deny.out" 2>&1
  echo "     $(cat "$work/deny.out")"
  check "$t: close() fails with EACCES" grep -qx "close EACCES" "$work/deny.out"
  check "$t: the data stays staged (nacre status --staged: closed)" \
    listed_as "$work/cacheD" closed "$prefix/deny/new" "$MiB"
  staged_data_is_ref() {
    local path
    path=$(timeout 30 "$nacre" status --staged --cache-dir "$work/cacheD" | awk -v u="s3://$NACRE_TEST_BUCKET/$prefix/deny/new" '$3 == u {print $4}' | tail -1)
    [ -n "$path" ] && cmp "$path" "$work/deny.ref"
  }
  check "$t: the staged data is what was written" staged_data_is_ref
  check "$t: the object does not exist in S3" bash -c "! timeout 30 '$nacre' stat --endpoint-url '$own_url' '$b/$prefix/deny/new' >/dev/null 2>&1"
  check "$t: unmount D" unmount "$work/D"
else
  record FAIL "$t: no RGW of its own: cannot create a second user (radosgw-admin needs the RGW's ceph.conf)"
fi
check "the private RGW stops" timeout 120 "$s3_server" stop "$own_rgw_dir"
own_rgw_dir=""

test_finish
