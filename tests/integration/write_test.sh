#!/usr/bin/env bash
# The write path through a real FUSE mount of the local RGW, every operation
# checked on the mount AND directly in S3 (nacre stat for size, ETag and
# metadata headers, nacre cp ... - for the bytes): create/write/close, empty
# and multipart files, overwrite/append/in-place writes of objects uploaded
# directly, truncate/ftruncate/fallocate, readers before close, unlink,
# mkdir/rmdir, symlink, rename (file, over a file, directory, open file),
# chmod/chown/utimens (user metadata and content type kept), a second mount,
# exact errnos, read-only mounts, export policies and an empty prefix.
# Usage: write_test.sh NACRE_BINARY RGW_ENV_FILE   (needs /dev/fuse; run as root)
# Helpers (check, mount_fg, unmount, curl_put, the cleanup trap...): lib.sh.
# shellcheck source-path=SCRIPTDIR
set -uo pipefail
# shellcheck source=lib.sh
source "$(dirname "$(realpath "$0")")/lib.sh"
test_init write "$@"
umask 022   # the modes expected below (0100644...) assume it, whatever the caller's

[ "$(id -u)" = 0 ] || { echo "FAIL: write_test.sh must run as root (chown, setpriv, FUSE)"; exit 1; }
command -v setpriv >/dev/null || { echo "FAIL: setpriv is missing (apt-get install util-linux)"; exit 1; }

cat >"$work/tool.py" <<'PY'
import errno, mmap, os, subprocess, sys

def load(path):
    with open(path, "rb") as f:
        return f.read()

def ename(e):
    return errno.errorcode.get(e, str(e))

def errno_is(want, op, path, *args):
    """The operation must fail with exactly one of the errnos in WANT (names joined by |)."""
    allowed = want.split("|")
    try:
        if op == "create":
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
        elif op == "excl":
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        elif op == "write":     # open an existing file for writing, write, close
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, b"x")
            finally:
                os.close(fd)
        elif op == "mkdir":
            os.mkdir(path)
        elif op == "rmdir":
            os.rmdir(path)
        elif op == "unlink":
            os.unlink(path)
        elif op == "rename":
            os.rename(path, args[0])
        elif op == "symlink":
            os.symlink("target", path)
        elif op == "link":
            os.link(path, args[0])
        elif op == "mkfifo":
            os.mkfifo(path)
        elif op == "chmod":
            os.chmod(path, 0o600)
        elif op == "truncate":
            os.truncate(path, 0)
        elif op == "setxattr":
            os.setxattr(path, "user.foo", b"bar")
        else:
            print(f"unknown op {op}")
            return 1
    except OSError as e:
        print(f"{op} {os.path.basename(path)[:40]}: {ename(e.errno)} ({e.strerror})")
        return 0 if ename(e.errno) in allowed else 1
    print(f"{op} {path}: succeeded, expected {want}")
    return 1

def pwrite(path, offset, datafile):
    """Open WITHOUT O_TRUNC, write DATAFILE's bytes at OFFSET, close."""
    fd = os.open(path, os.O_WRONLY)
    data = load(datafile)
    n = os.pwrite(fd, data, int(offset))
    os.close(fd)
    print(f"wrote {n} bytes at {offset}")
    return 0 if n == len(data) else 1

def ftruncate(path, size):
    fd = os.open(path, os.O_RDWR)
    os.ftruncate(fd, int(size))
    st = os.fstat(fd)
    os.close(fd)
    print(f"fstat size after ftruncate: {st.st_size}")
    return 0 if st.st_size == int(size) else 1

def fallocate(path, offset, length):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    os.posix_fallocate(fd, int(offset), int(length))
    st = os.fstat(fd)
    os.close(fd)
    print(f"size after posix_fallocate: {st.st_size}")
    return 0

def visible_before_close(path, out, s3url, nacre):
    """A writer's bytes are seen by another fd and another process before close;
    S3 has nothing until close. The other processes are started BEFORE the
    writer opens: a fork after it would copy the writer's fd, and its close at
    exec is a FUSE flush of the writer's handle (an export, as for any close)."""
    a, b = os.urandom(70000), os.urandom(5000)
    cat = subprocess.Popen(["sh", "-c", 'read go && exec cat "$0"', path],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    head = subprocess.Popen(["sh", "-c", 'read go && exec "$0" stat "$1"', nacre, s3url],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    w = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    os.write(w, a)
    r = os.open(path, os.O_RDONLY)
    got = os.pread(r, 1 << 20, 0)
    if got != a:
        print(f"another fd read {len(got)} bytes, not the {len(a)} written")
        return 1
    seen = cat.communicate(b"go\n", timeout=30)[0]
    if seen != a:
        print(f"cat read {len(seen)} bytes, not the {len(a)} written")
        return 1
    st = head.communicate(b"go\n", timeout=60)[0]
    if head.returncode == 0:
        print(f"the object exists in S3 before close:\n{st.decode()}")
        return 1
    os.write(w, b)
    got = os.pread(r, 1 << 20, 0)
    if got != a + b:
        print(f"after a second write another fd read {len(got)} bytes, not {len(a + b)}")
        return 1
    os.close(r)
    os.close(w)
    with open(out, "wb") as f:
        f.write(a + b)
    print(f"{len(a + b)} bytes seen by another fd and by cat before close; S3 had none")
    return 0

def rename_open(path, newpath, out):
    """Write, rename while open, write more, close."""
    a, b = os.urandom(30000), os.urandom(20000)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    os.write(fd, a)
    os.rename(path, newpath)
    os.write(fd, b)
    os.close(fd)
    with open(out, "wb") as f:
        f.write(a + b)
    print(f"wrote {len(a)} + {len(b)} bytes around the rename")
    return 0

def append_at_end(path, datafile):
    """O_APPEND: a write after lseek(0) lands at the end."""
    data = load(datafile)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, data)
    os.close(fd)
    return 0

def odirect(path, datafile):
    """O_DIRECT open + write of aligned buffers, then an O_DIRECT read back."""
    data = load(datafile)
    buf = mmap.mmap(-1, len(data))
    buf.write(data)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC | os.O_DIRECT, 0o644)
    n = os.write(fd, buf)
    os.close(fd)
    if n != len(data):
        print(f"O_DIRECT write wrote {n} of {len(data)}")
        return 1
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    rbuf = mmap.mmap(-1, len(data))
    m = os.readv(fd, [rbuf])
    os.close(fd)
    if m != len(data) or rbuf[:] != data:
        print(f"O_DIRECT read back {m} bytes, {'equal' if rbuf[:m] == data[:m] else 'DIFFERENT'}")
        return 1
    print(f"{n} bytes written and read back with O_DIRECT")
    return 0

sys.exit(globals()[sys.argv[1]](*sys.argv[2:]))
PY
tool() { timeout "${TOOL_TIMEOUT:-120}" python3 "$work/tool.py" "$@"; }

# ---------------------------------------------------------------- S3 helpers
# k NAME: the S3 URL of a name under the main mount's prefix.
k() { echo "$p/w/$1"; }
# meta URL HEADER: a header of nacre stat (size, etag, content-type, x-amz-meta-...).
meta() {
  local out
  out=$(timeout 60 "$nacre" stat "$1") || { echo "nacre stat $1 failed" >&2; return 1; }
  echo "$out" | sed -n "s/^$2: //p"
}
# meta_is URL HEADER VALUE
meta_is() {
  local got
  got=$(meta "$1" "$2") || return 1
  [ "$got" = "$3" ] || { echo "$2 of $1 is '$got', expected '$3'"; return 1; }
  echo "$2: $got"
}
# s3_bytes URL FILE: the object's bytes have FILE's sha256 (and its size per HEAD).
s3_bytes() {
  local want got size
  want=$(sha256sum <"$2" | cut -d' ' -f1)
  got=$(timeout 120 "$nacre" cp "$1" - | sha256sum | cut -d' ' -f1)
  size=$(meta "$1" size) || return 1
  [ "$size" = "$(size_of "$2")" ] || { echo "size of $1 is $size, expected $(size_of "$2")"; return 1; }
  [ "$got" = "$want" ] || { echo "sha256 of $1 is $got, expected $want"; return 1; }
  echo "$size bytes, sha256 ${got:0:16}..."
}
s3_absent() {
  if timeout 60 "$nacre" stat "$1" >"$work/stat.out" 2>&1; then
    echo "$1 still exists:"; cat "$work/stat.out"; return 1
  fi
  grep -Eq "NoSuchKey|not found|404" "$work/stat.out" || { echo "stat failed otherwise:"; cat "$work/stat.out"; return 1; }
}
s3_present() { timeout 60 "$nacre" stat "$1" >/dev/null; }
# mtime_ok URL: file-mtime is "<19 digits>ns" within 10 minutes of now.
mtime_ok() {
  local m now
  m=$(meta "$1" x-amz-meta-file-mtime) || return 1
  [[ $m =~ ^[0-9]{19}ns$ ]] || { echo "file-mtime '$m' is not <ns>ns"; return 1; }
  now=$(date +%s%N)
  local d=$(( now - ${m%ns} )); d=${d#-}
  [ "$d" -lt 600000000000 ] || { echo "file-mtime $m is $d ns from now ($now)"; return 1; }
  echo "file-mtime $m"
}
# keys_under URL/: every key under a prefix, relative to it, sorted.
keys_under() { timeout 60 "$nacre" ls -r "$1" | sed -E 's/^[^ ]+ [^ ]+ +[0-9]+ //' | sed "s|^${1#"$b/"}||" | sort; }
# same_file MNT_PATH FILE: the mount reads FILE's bytes.
same_file() { timeout 60 cmp "$1" "$2"; }
# curl_put_ct KEY FILE CONTENT_TYPE [HEADER...]: a PUT with a content type of its own.
curl_put_ct() {
  local key=$1 file=$2 ct=$3; shift 3
  local hdrs=() h code
  for h in "$@"; do hdrs+=(-H "$h"); done
  code=$(timeout 60 curl -s --path-as-is -o "$work/curl.out" -w '%{http_code}' \
    --aws-sigv4 "aws:amz:${AWS_REGION:-us-east-1}:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
    -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -H "Content-Type: $ct" "${hdrs[@]}" \
    -X PUT --data-binary "@$file" "$AWS_ENDPOINT_URL/$NACRE_TEST_BUCKET/$prefix/$key")
  [ "$code" = 200 ] || { echo "PUT $key: HTTP $code: $(cat "$work/curl.out")" >&2; return 1; }
}

# ---------------------------------------------------------------- fixtures
gen small 100000; gen small2 77777; gen big40 $((40 * MiB)); gen ow.old 50000; gen ow.new 1234
gen app.old 3000; gen app.add 4567; gen mid.old $((3 * MiB + 17)); gen mid.patch 10000
gen dd.patch 4096; gen tr.old 5000; gen ft.old 9000; gen ren 11111; gen ren2 2222; gen ren3 3333
gen rx 100; gen ry 200; gen rz 300; gen custom 999; gen apnd.old 1500; gen apnd.add 600
gen direct 8192; gen p.exist1 400; gen p.exist2 500; gen p.exist3 600; gen p.new 700; gen fresh 12345
: >"$src/empty"

fixtures_ok=1
for kv in "ow.old:w/existing/ow.bin" "app.old:w/existing/app.bin" "mid.old:w/existing/mid.bin" \
          "mid.old:w/existing/dd.bin" "tr.old:w/existing/tr.bin" "ft.old:w/existing/ft.bin" \
          "rx:w/rdir/x" "ry:w/rdir/y" "rz:w/rdir/sub/z" "apnd.old:w/existing/apnd.bin" \
          "small2:w/existing/victim" "p.exist1:pol/exist1" "p.exist2:pol/exist2" "p.exist3:pol/exist3"; do
  up "$src/${kv%%:*}" "$p/${kv#*:}" || { echo "upload of ${kv#*:} failed"; fixtures_ok=0; }
done
curl_put_ct "w/existing/custom.bin" "$src/custom" "text/x-test" "x-amz-meta-custom: keep" || fixtures_ok=0
[ "$fixtures_ok" = 1 ] || { echo "FAIL: fixtures could not be uploaded"; exit 1; }
check "the fixture uploaded with curl has its custom header and content type" \
  bash -c "[ \"\$(timeout 60 '$nacre' stat '$(k existing/custom.bin)' | grep -E '^(content-type|x-amz-meta-custom):' | tr '\n' ' ')\" = 'content-type: text/x-test x-amz-meta-custom: keep ' ]"
echo "fixtures uploaded ($((SECONDS - started)) s)"

# Other users must reach the mount point (for the setpriv check): $work is 0700.
chmod 0711 "$work"
check "mount -f W (read-write, --allow-other)" mount_fg W "$p/w" "$work/cacheW" --allow-other
W="$work/W"

# ------------------------------------------- create, write, close
write_umask() { (umask 027; cat "$src/small" >"$W/f1"); }
check "create + write + close (umask 027)" write_umask
check "f1 reads back on the mount" same_file "$W/f1" "$src/small"
check "f1 in S3: same bytes" s3_bytes "$(k f1)" "$src/small"
check "f1 in S3: file-permissions 0100640 (0666 & ~027)" meta_is "$(k f1)" x-amz-meta-file-permissions 0100640
check "f1 in S3: file-owner is the caller's ($(id -u))" meta_is "$(k f1)" x-amz-meta-file-owner "$(id -u)"
check "f1 in S3: file-group is the caller's ($(id -g))" meta_is "$(k f1)" x-amz-meta-file-group "$(id -g)"
check "f1 in S3: file-mtime in ns with the ns suffix" mtime_ok "$(k f1)"
check "f1 on the mount: mode 640, owner root" bash -c "[ \"\$(stat -c '%a %u %g' '$W/f1')\" = '640 $(id -u) $(id -g)' ]"

# A caller other than root (setpriv): owner and group are the caller's.
check "mkdir shared + chmod 1777 through the mount" bash -c "mkdir '$W/shared' && chmod 1777 '$W/shared'"
check "uid 4321 gid 8765 creates a file (umask 002)" \
  setpriv --reuid 4321 --regid 8765 --clear-groups bash -c "umask 002; cat '$src/small2' >'$W/shared/byuser'"
check "byuser in S3: file-owner 4321" meta_is "$(k shared/byuser)" x-amz-meta-file-owner 4321
check "byuser in S3: file-group 8765" meta_is "$(k shared/byuser)" x-amz-meta-file-group 8765
check "byuser in S3: file-permissions 0100664" meta_is "$(k shared/byuser)" x-amz-meta-file-permissions 0100664
check "byuser in S3: same bytes" s3_bytes "$(k shared/byuser)" "$src/small2"
check "shared/ marker in S3: file-permissions 0041777 after chmod" \
  meta_is "$(k shared/)" x-amz-meta-file-permissions 0041777

check "touch of a new file" touch "$W/empty"
check "empty in S3: a 0-byte object" meta_is "$(k empty)" size 0
check "empty in S3: the empty MD5 as ETag" meta_is "$(k empty)" etag d41d8cd98f00b204e9800998ecf8427e
check "empty in S3: file-permissions 0100644" meta_is "$(k empty)" x-amz-meta-file-permissions 0100644

check "a 40 MiB file written with dd bs=1M" timeout 300 dd if="$src/big40" of="$W/big40" bs=1M status=none
check "big40 reads back on the mount" same_file "$W/big40" "$src/big40"
check "big40 in S3: same bytes" s3_bytes "$(k big40)" "$src/big40"
check "big40 in S3: a multipart ETag (\"-N\")" bash -c "meta() { timeout 60 '$nacre' stat \"\$1\" | sed -n \"s/^\$2: //p\"; }; e=\$(meta '$(k big40)' etag); echo \"etag \$e\"; [[ \$e =~ -[0-9]+\$ ]]"

# ------------------------------------------- objects uploaded directly: overwrite, append, in place
check "overwrite with O_TRUNC (shell >) of an uploaded object" bash -c "cat '$src/ow.new' >'$W/existing/ow.bin'"
check "ow.bin in S3: the new bytes only" s3_bytes "$(k existing/ow.bin)" "$src/ow.new"
check "ow.bin on the mount: the new bytes" same_file "$W/existing/ow.bin" "$src/ow.new"

check "append (>>) to an uploaded object" bash -c "cat '$src/app.add' >>'$W/existing/app.bin'"
cat "$src/app.old" "$src/app.add" >"$src/app.want"
check "app.bin in S3: old bytes + appended bytes" s3_bytes "$(k existing/app.bin)" "$src/app.want"

mid_off=$((MiB + 7))
check "pwrite 10000 bytes at 1 MiB + 7 (no O_TRUNC) into an uploaded 3 MiB object" \
  tool pwrite "$W/existing/mid.bin" "$mid_off" "$src/mid.patch"
python3 - "$src/mid.old" "$src/mid.patch" "$mid_off" "$src/mid.want" <<'PY'
import sys
old, patch, off = bytearray(open(sys.argv[1], "rb").read()), open(sys.argv[2], "rb").read(), int(sys.argv[3])
old[off:off + len(patch)] = patch
open(sys.argv[4], "wb").write(old)
PY
check "mid.bin in S3: the old object with the 10000 bytes replaced" s3_bytes "$(k existing/mid.bin)" "$src/mid.want"
check "mid.bin on the mount: the same" same_file "$W/existing/mid.bin" "$src/mid.want"

check "dd conv=notrunc of 4096 bytes at 2 MiB into an uploaded object" \
  timeout 60 dd if="$src/dd.patch" of="$W/existing/dd.bin" bs=4096 seek=512 conv=notrunc status=none
python3 - "$src/mid.old" "$src/dd.patch" $((2 * MiB)) "$src/dd.want" <<'PY'
import sys
old, patch, off = bytearray(open(sys.argv[1], "rb").read()), open(sys.argv[2], "rb").read(), int(sys.argv[3])
old[off:off + len(patch)] = patch
open(sys.argv[4], "wb").write(old)
PY
check "dd.bin in S3: the old object with 4096 bytes replaced" s3_bytes "$(k existing/dd.bin)" "$src/dd.want"

# ------------------------------------------- truncate, ftruncate, fallocate
check "truncate -s 1000 of an uploaded 5000-byte object" truncate -s 1000 "$W/existing/tr.bin"
head -c 1000 "$src/tr.old" >"$src/tr.want1"
check "tr.bin in S3: the first 1000 bytes" s3_bytes "$(k existing/tr.bin)" "$src/tr.want1"
check "truncate -s 20000 (larger)" truncate -s 20000 "$W/existing/tr.bin"
{ cat "$src/tr.want1"; head -c 19000 /dev/zero; } >"$src/tr.want2"
check "tr.bin in S3: 1000 bytes then 19000 zeros" s3_bytes "$(k existing/tr.bin)" "$src/tr.want2"
check "tr.bin on the mount: the same" same_file "$W/existing/tr.bin" "$src/tr.want2"
check "truncate(2) by path (no open) to 500" python3 -c "import os; os.truncate('$W/existing/tr.bin', 500)"
head -c 500 "$src/tr.old" >"$src/tr.want3"
check "tr.bin in S3 after truncate(2) by path: 500 bytes" s3_bytes "$(k existing/tr.bin)" "$src/tr.want3"

check "ftruncate (python) of an uploaded 9000-byte object to 300" tool ftruncate "$W/existing/ft.bin" 300
head -c 300 "$src/ft.old" >"$src/ft.want"
check "ft.bin in S3: the first 300 bytes" s3_bytes "$(k existing/ft.bin)" "$src/ft.want"

check "posix_fallocate of 100000 bytes on a new file" tool fallocate "$W/falloc" 0 100000
head -c 100000 /dev/zero >"$src/falloc.want"
check "falloc in S3: 100000 zeros" s3_bytes "$(k falloc)" "$src/falloc.want"
check "posix_fallocate past the end of f1 (to 150000)" tool fallocate "$W/f1" 100000 50000
{ cat "$src/small"; head -c 50000 /dev/zero; } >"$src/f1.falloc"
check "f1 in S3: its bytes then 50000 zeros" s3_bytes "$(k f1)" "$src/f1.falloc"
check "f1 keeps file-permissions 0100640 after the rewrite" meta_is "$(k f1)" x-amz-meta-file-permissions 0100640

# ------------------------------------------- readers before close
check "a writer's bytes are seen by another fd and by cat before close (not in S3 yet)" \
  tool visible_before_close "$W/live" "$src/live.want" "$(k live)" "$nacre"
check "live in S3 after close: every byte written" s3_bytes "$(k live)" "$src/live.want"

# ------------------------------------------- unlink, mkdir, rmdir
check "rm of f1" rm "$W/f1"
check "f1 is gone from S3" s3_absent "$(k f1)"
check "f1 is gone from the mount" bash -c "! [ -e '$W/f1' ] && ! ls '$W' | grep -qx f1"
check "rm of an uploaded object (existing/victim)" rm "$W/existing/victim"
check "existing/victim is gone from S3" s3_absent "$(k existing/victim)"

check "mkdir (umask 027)" bash -c "umask 027; mkdir '$W/newdir'"
check "newdir/ marker in S3: size 0" meta_is "$(k newdir/)" size 0
check "newdir/ marker in S3: file-permissions 0040750" meta_is "$(k newdir/)" x-amz-meta-file-permissions 0040750
check "newdir/ marker in S3: file-owner $(id -u)" meta_is "$(k newdir/)" x-amz-meta-file-owner "$(id -u)"
check "a file in newdir" cp "$src/small2" "$W/newdir/inner"
check "newdir/inner in S3" s3_bytes "$(k newdir/inner)" "$src/small2"
check "rmdir of a non-empty directory: ENOTEMPTY" tool errno_is ENOTEMPTY rmdir "$W/newdir"
check "newdir/ marker still in S3" s3_present "$(k newdir/)"
check "rm newdir/inner, rmdir newdir" bash -c "rm '$W/newdir/inner' && rmdir '$W/newdir'"
check "newdir/ marker gone from S3" s3_absent "$(k newdir/)"
check "newdir/inner gone from S3" s3_absent "$(k newdir/inner)"
check "newdir gone from the mount" bash -c "! [ -e '$W/newdir' ]"

# ------------------------------------------- symlink
check "ln -s ../f1-target/x sym" ln -s ../f1-target/x "$W/sym"
printf '%s' "../f1-target/x" >"$src/sym.want"
check "sym in S3: the body is the target" s3_bytes "$(k sym)" "$src/sym.want"
check "sym in S3: file-permissions 0120777" meta_is "$(k sym)" x-amz-meta-file-permissions 0120777
check "readlink on the writing mount" bash -c "[ \"\$(readlink '$W/sym')\" = ../f1-target/x ]"

# ------------------------------------------- rename
cp "$src/ren" "$W/ren.a"
check "mv of a file" mv "$W/ren.a" "$W/ren.b"
check "ren.b in S3: the bytes" s3_bytes "$(k ren.b)" "$src/ren"
check "ren.a gone from S3" s3_absent "$(k ren.a)"
check "ren.b on the mount, ren.a not" bash -c "cmp '$W/ren.b' '$src/ren' && ! [ -e '$W/ren.a' ]"
cp "$src/ren2" "$W/ren.c"
check "mv over an existing file" mv -f "$W/ren.c" "$W/ren.b"
check "ren.b in S3: replaced by ren.c's bytes" s3_bytes "$(k ren.b)" "$src/ren2"
check "ren.c gone from S3" s3_absent "$(k ren.c)"
check "ren.b on the mount: ren.c's bytes" same_file "$W/ren.b" "$src/ren2"

check "rdir (uploaded: x, y, sub/z) is listed on the mount" \
  bash -c "[ \"\$(cd '$W/rdir' && find . -type f | sort | tr '\n' ' ')\" = './sub/z ./x ./y ' ]"
check "mv of a directory with 3 files (one in a subdirectory)" mv "$W/rdir" "$W/rdir2"
check "rdir2 in S3: x, y, sub/z" bash -c "[ \"\$(timeout 60 '$nacre' ls -r '$(k rdir2/)' | sed -E 's|.*/rdir2/||' | grep -v '/\$' | sort | tr '\n' ' ')\" = 'sub/z x y ' ]"
check "rdir2/x in S3: the bytes" s3_bytes "$(k rdir2/x)" "$src/rx"
check "rdir2/y in S3: the bytes" s3_bytes "$(k rdir2/y)" "$src/ry"
check "rdir2/sub/z in S3: the bytes" s3_bytes "$(k rdir2/sub/z)" "$src/rz"
check "nothing left under rdir/ in S3" bash -c "[ -z \"\$(timeout 60 '$nacre' ls -r '$(k rdir/)')\" ]"
check "rdir2 on the mount: the files read back, rdir gone" \
  bash -c "cmp '$W/rdir2/sub/z' '$src/rz' && cmp '$W/rdir2/x' '$src/rx' && ! [ -e '$W/rdir' ]"

check "write, rename while open, write more, close" tool rename_open "$W/openmv.a" "$W/openmv.b" "$src/openmv.want"
check "openmv.b in S3: all the bytes written" s3_bytes "$(k openmv.b)" "$src/openmv.want"
check "openmv.a not in S3" s3_absent "$(k openmv.a)"
check "openmv.b on the mount: all the bytes" same_file "$W/openmv.b" "$src/openmv.want"

# ------------------------------------------- chmod, chown, utimens
cp "$src/small2" "$W/attr"
check "chmod 0600" chmod 0600 "$W/attr"
check "attr in S3: file-permissions 0100600" meta_is "$(k attr)" x-amz-meta-file-permissions 0100600
check "chown 1234:5678" chown 1234:5678 "$W/attr"
check "attr in S3: file-owner 1234" meta_is "$(k attr)" x-amz-meta-file-owner 1234
check "attr in S3: file-group 5678" meta_is "$(k attr)" x-amz-meta-file-group 5678
check "touch -d 2001-02-03 04:05:06.123456789 UTC (utimens)" touch -d "2001-02-03 04:05:06.123456789 UTC" "$W/attr"
check "attr in S3: file-mtime 981173106123456789ns" meta_is "$(k attr)" x-amz-meta-file-mtime 981173106123456789ns
check "attr in S3: the bytes are unchanged" s3_bytes "$(k attr)" "$src/small2"
check "attr in S3: the mode survives chown and touch" meta_is "$(k attr)" x-amz-meta-file-permissions 0100600
check "attr on the mount: 600 1234 5678 981173106" \
  bash -c "[ \"\$(stat -c '%a %u %g %Y' '$W/attr')\" = '600 1234 5678 981173106' ]"

check "chmod 0640 of the object with a custom header and content type" chmod 0640 "$W/existing/custom.bin"
check "custom.bin in S3: file-permissions 0100640" meta_is "$(k existing/custom.bin)" x-amz-meta-file-permissions 0100640
check "custom.bin in S3: x-amz-meta-custom survives" meta_is "$(k existing/custom.bin)" x-amz-meta-custom keep
check "custom.bin in S3: the content type survives" meta_is "$(k existing/custom.bin)" content-type text/x-test
check "custom.bin in S3: the bytes are unchanged" s3_bytes "$(k existing/custom.bin)" "$src/custom"
# A content overwrite keeps the other user metadata and the content type too.
check "overwrite (shell >) of the object with a custom header" bash -c "cat '$src/small2' >'$W/existing/custom.bin'"
check "custom.bin in S3 after the overwrite: the new bytes" s3_bytes "$(k existing/custom.bin)" "$src/small2"
check "custom.bin in S3 after the overwrite: x-amz-meta-custom kept" meta_is "$(k existing/custom.bin)" x-amz-meta-custom keep
check "custom.bin in S3 after the overwrite: the content type kept" meta_is "$(k existing/custom.bin)" content-type text/x-test
check "custom.bin in S3 after the overwrite: file-permissions 0100640 kept" \
  meta_is "$(k existing/custom.bin)" x-amz-meta-file-permissions 0100640

# ------------------------------------------- errnos
long256=$(printf 'n%.0s' $(seq 256))
check "create of a 256-byte name: ENAMETOOLONG" tool errno_is ENAMETOOLONG create "$W/$long256"
check "mkdir of a 256-byte name: ENAMETOOLONG" tool errno_is ENAMETOOLONG mkdir "$W/$long256"
# Hard links: FUSE's link answers ENOTSUP (the kernel passes it through, seen on Linux 6.x).
check "hard link: ENOTSUP" tool errno_is ENOTSUP link "$W/ren.b" "$W/hard"
check "mkfifo: ENOTSUP" tool errno_is ENOTSUP mkfifo "$W/fifo"
check "setxattr user.foo: ENOTSUP" tool errno_is ENOTSUP setxattr "$W/ren.b"
check "O_CREAT|O_EXCL of an existing file: EEXIST" tool errno_is EEXIST excl "$W/ren.b"
check "nothing was created by the failed operations" \
  bash -c "! [ -e '$W/hard' ] && ! [ -e '$W/fifo' ] && ! ls '$W' | awk 'length > 255' | grep -q ."
check "no hard link / fifo key in S3" bash -c "! timeout 60 '$nacre' ls '$p/w/' | grep -Eq ' (hard|fifo)\$'"
check "O_APPEND: a write after lseek(0) lands at the end" tool append_at_end "$W/existing/apnd.bin" "$src/apnd.add"
cat "$src/apnd.old" "$src/apnd.add" >"$src/apnd.want"
check "apnd.bin in S3: old bytes + appended bytes" s3_bytes "$(k existing/apnd.bin)" "$src/apnd.want"
check "O_DIRECT open + write + read back" tool odirect "$W/direct" "$src/direct"
check "direct in S3: the bytes" s3_bytes "$(k direct)" "$src/direct"

# ------------------------------------------- a second mount sees the same attributes
check "mount -f W2 (new cache dir)" mount_fg W2 "$p/w" "$work/cacheW2"
W2="$work/W2"
for f in attr existing/custom.bin shared/byuser big40 live; do
  check "W2 shows $f with W's mode, owner, group and mtime" \
    bash -c "a=\$(stat -c '%f %u %g %y' '$W/$f') && b=\$(stat -c '%f %u %g %y' '$W2/$f') && echo \"\$b\" && [ \"\$a\" = \"\$b\" ] || { echo \"W: \$a\"; false; }"
done
check "readlink through the second mount" bash -c "[ \"\$(readlink '$W2/sym')\" = ../f1-target/x ]"
check "W2 reads the bytes written through W" \
  bash -c "cmp '$W2/big40' '$src/big40' && cmp '$W2/existing/mid.bin' '$src/mid.want' && cmp '$W2/openmv.b' '$src/openmv.want'"
check "unmount W2" unmount "$W2"
check "unmount W" unmount "$W"
check "no staged files left in W's cache after a clean unmount" \
  bash -c "[ -z \"\$(find '$work/cacheW' -path '*staging*' -type f 2>/dev/null)\" ] || { find '$work/cacheW' -path '*staging*' -type f; false; }"
echo "-- read-write checks done ($((SECONDS - started)) s)"

# ------------------------------------------- read-only mount
check "an empty directory to rmdir on R (made in S3)" curl_put "w/rodir/" "$src/empty"
check "mount -f R (--read-only)" mount_fg R "$p/w" "$work/cacheR" --read-only
R="$work/R"
for op in "create $R/ro-new" "write $R/ren.b" "unlink $R/ren.b" "mkdir $R/ro-dir" "rmdir $R/rodir" \
          "rename $R/ren.b $R/ro-moved" "symlink $R/ro-link" "chmod $R/ren.b" "truncate $R/ren.b" \
          "setxattr $R/ren.b"; do
  # shellcheck disable=SC2086
  check "read-only mount: ${op%% *} fails with EROFS" tool errno_is EROFS $op
done
check "read-only mount: nothing changed in S3" \
  bash -c "s=\$(timeout 60 '$nacre' ls -r '$p/w/') && ! echo \"\$s\" | grep -Eq '/(ro-new|ro-dir/?|ro-moved|ro-link)\$' && echo \"\$s\" | grep -q '/w/rodir/\$' && timeout 60 '$nacre' cp '$(k ren.b)' - | cmp - '$src/ren2'"
check "read-only mount: ren.b keeps file-permissions 0100644" meta_is "$(k ren.b)" x-amz-meta-file-permissions 0100644
check "unmount R" unmount "$R"

# ------------------------------------------- export policy NONE
check "mount -f N (--export-policy NONE)" mount_fg N "$p/pol" "$work/cacheN" --export-policy NONE
N="$work/N"
check "NONE: the mount warns that nothing is exported" grep -q "export policy NONE: changes stay on this node" "$work/N.log"
check "NONE: create a file" cp "$src/p.new" "$N/none-new"
check "NONE: the new file is not in S3" s3_absent "$p/pol/none-new"
check "NONE: the new file reads back on the mount" same_file "$N/none-new" "$src/p.new"
check "NONE: unlink of an existing object" rm "$N/exist1"
check "NONE: the unlinked file is gone on the mount" bash -c "! [ -e '$N/exist1' ] && ! ls '$N' | grep -qx exist1"
check "NONE: the unlinked object is still in S3" s3_bytes "$p/pol/exist1" "$src/p.exist1"
check "NONE: rename answers EXDEV" tool errno_is EXDEV rename "$N/exist3" "$N/renamed"
check "NONE: the rename changed nothing in S3" bash -c "timeout 60 '$nacre' stat '$p/pol/exist3' >/dev/null && ! timeout 60 '$nacre' stat '$p/pol/renamed' >/dev/null 2>&1"
check "unmount N" unmount "$N"

# ------------------------------------------- export policy NEW
check "mount -f E (--export-policy NEW)" mount_fg E "$p/pol" "$work/cacheE" --export-policy NEW
E="$work/E"
check "NEW: create a file" cp "$src/p.new" "$E/new-new"
check "NEW: the new file is in S3" s3_bytes "$p/pol/new-new" "$src/p.new"
check "NEW: the new file has FSx metadata" meta_is "$p/pol/new-new" x-amz-meta-file-permissions 0100644
check "NEW: overwrite an existing object (shell >)" bash -c "cat '$src/p.new' >'$E/exist2'"
check "NEW: the overwritten object is unchanged in S3" s3_bytes "$p/pol/exist2" "$src/p.exist2"
check "NEW: the mount shows the new bytes (kept staged)" same_file "$E/exist2" "$src/p.new"
check "NEW: mkdir is exported" bash -c "mkdir '$E/newdir' && timeout 60 '$nacre' stat '$p/pol/newdir/' >/dev/null"
check "NEW: rm of an existing object is not exported" bash -c "rm '$E/exist3' && timeout 60 '$nacre' stat '$p/pol/exist3' >/dev/null"
check "NEW: rename answers EXDEV" tool errno_is EXDEV rename "$E/new-new" "$E/new-renamed"
check "unmount E" unmount "$E"

# ------------------------------------------- a read-write mount of an empty prefix
check "no object under the fresh prefix" bash -c "[ -z \"\$(timeout 60 '$nacre' ls -r '$p/fresh/')\" ]"
check "mount -f F of a prefix with no objects (read-write)" mount_fg F "$p/fresh" "$work/cacheF"
F="$work/F"
check "the fresh mount is an empty directory" bash -c "[ -d '$F' ] && [ -z \"\$(ls -A '$F')\" ]"
check "write a file into the fresh mount" bash -c "mkdir '$F/sub' && cp '$src/fresh' '$F/sub/file'"
check "the file appears in S3" s3_bytes "$p/fresh/sub/file" "$src/fresh"
check "the sub/ marker appears in S3" meta_is "$p/fresh/sub/" x-amz-meta-file-permissions 0040755
check "unmount F" unmount "$F"

test_finish
