#!/usr/bin/env bash
# Benchmark of the CSI driver (issue 7, "Figures"): how long `nacre csi` takes
# to create a volume and to put a volume in a pod, next to what the same steps
# cost without it, all measured in this run against a local Ceph RGW:
#
#   1. CreateVolume of a fresh volume (HEAD + PUT of its marker object), and its
#      DeleteVolume (deleteData "true"). Floor: one S3 PUT of an empty object
#      (curl --aws-sigv4; curl's own time_total, so no process start-up).
#   2. CreateVolume of a volume linked to a dataset (s3ImportPath: one
#      ListObjectsV2 of it). Floor: one ListObjectsV2 max-keys=1 (curl).
#   3. NodeStageVolume + NodePublishVolume of a volume whose dataset is already
#      mounted on the node ("a ready mount": same parameters, so the same
#      `nacre mount`): two bind mounts. Floors: two `mount --bind` of a
#      directory (and two `umount -l` for unpublish + unstage), and the same
#      as bare mount(2)/umount2(2) calls made by csi_bench itself.
#   4. NodeStageVolume + NodePublishVolume that starts a new mount (a volume
#      with a metadataTtl of its own, fresh cache directory), until its target
#      answers `ls`. Peers: a cold `nacre mount` of the dataset (same options
#      as the driver gives it) and a cold `s3fs` mount, each until `ls` of the
#      mount point answers with the dataset's entries. Then unpublish +
#      unstage, which stops that mount.
#
# The CSI calls are made and timed by build/bench/csi_bench (bench/csi_bench.cc,
# a gRPC client over the driver's unix socket, steady clock); the floors and
# peers by this script. Every step runs ROUNDS times; the tables show medians
# (csi_bench's own table also min and max). Ratio = Nacre / peer. Targets
# (issue 7): CreateVolume <= 100 ms; NodeStage + NodePublish to a ready mount
# <= 1000 ms. Needs root (mounts) and /dev/fuse.
#
# Builds nothing: expects build/nacre and build/bench/csi_bench, made with
#   flock /tmp/nacre-build.lock cmake --build build -j2 --target nacre csi_bench
#
# Usage: bench/csi.sh [--quick]    (starts and stops its own RGW and driver)
# Run it holding the build lock, so nothing compiles meanwhile:
#   flock /tmp/nacre-build.lock bash bench/csi.sh
#   --quick                  ROUNDS=5
#   ROUNDS=20                rounds of every step
#   NACRE_BENCH_S3FS=0       leave s3fs out
#   NACRE_S3_ENV=DIR/env     use an already running server (its objects are removed after)
#   NACRE_BENCH_BINARY=PATH  the nacre binary to measure (default build/nacre)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export AWS_EC2_METADATA_DISABLED=true
export LC_ALL=C  # EPOCHREALTIME with a '.'

quick=0
for arg in "$@"; do
  case $arg in
    --quick) quick=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "csi.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done
if [ "$quick" = 1 ]; then rounds=${ROUNDS:-5}; else rounds=${ROUNDS:-20}; fi
use_s3fs=${NACRE_BENCH_S3FS:-1}
if [ "$(id -u)" -ne 0 ]; then
  echo "csi.sh: needs root (bind mounts, FUSE mounts)" >&2
  exit 1
fi

log() { printf 'csi: [%3ds] %s\n' "$SECONDS" "$*" >&2; }

nacre=${NACRE_BENCH_BINARY:-$root/build/nacre}
csi_bench=$root/build/bench/csi_bench
for bin in "$nacre" "$csi_bench"; do
  if [ ! -x "$bin" ]; then
    echo "csi.sh: $bin is missing; build it first:" >&2
    echo "  flock /tmp/nacre-build.lock cmake --build build -j2 --target nacre csi_bench" >&2
    exit 1
  fi
done
if [ "$use_s3fs" = 1 ] && ! command -v s3fs >/dev/null; then
  echo "csi.sh: s3fs is missing (apt-get install s3fs; NACRE_BENCH_S3FS=0 leaves it out)" >&2
  exit 1
fi
for c in curl mawk fusermount3 mountpoint; do
  command -v "$c" >/dev/null || { echo "csi.sh: $c is missing" >&2; exit 1; }
done

work=$(mktemp -d /tmp/nacre-csi-bench.XXXXXX)
tools_log=$work/tools.log
: >"$tools_log"
own_server=0
driver_pid=""
bench_pid=""      # timeout running csi_bench, while it runs
external_keys=()  # objects we wrote on a server we did not start
peer_pids=()      # daemons of the peer mounts (nacre mount, s3fs)

# ------------------------------------------------------------------ cleanup
# Waits (bounded) for PID to exit, then TERM, then KILL. Only our own pids.
stop_pid() {  # PID
  local pid=$1 i
  for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

# Mount points under $work, deepest first.
mounts_under_work() {
  awk -v w="$work/" 'index($5, w) == 1 { print length($5), $5 }' /proc/self/mountinfo |
    sort -rn | cut -d' ' -f2-
}

cleanup() {
  local rc=$? m pf pid
  trap - EXIT INT TERM
  if [ -n "$bench_pid" ]; then
    kill -TERM "$bench_pid" 2>/dev/null || true
    stop_pid "$bench_pid"
    wait "$bench_pid" 2>/dev/null || true
  fi
  if [ -n "$driver_pid" ]; then
    kill -TERM "$driver_pid" 2>/dev/null || true
    stop_pid "$driver_pid"
    wait "$driver_pid" 2>/dev/null || true
  fi
  # Whatever is still mounted (bind mounts of the driver and of step 3's
  # floor, FUSE mounts the driver or the peers left): detach, so the FUSE
  # daemons see their connection end and exit.
  while read -r m; do
    [ -n "$m" ] && { umount -l "$m" 2>/dev/null || true; }
  done < <(mounts_under_work)
  # The driver's `nacre mount` daemons (pid files exist while they run) and the peers'.
  for pf in "$work"/state/mounts/*.pid "$work"/peer/*.pid; do
    [ -f "$pf" ] || continue
    pid=$(cat "$pf" 2>/dev/null) || continue
    [ -n "$pid" ] && stop_pid "$pid"
  done
  for pid in "${peer_pids[@]}"; do stop_pid "$pid"; wait "$pid" 2>/dev/null || true; done
  if [ "$own_server" = 1 ]; then
    scripts/s3-server stop "$work/rgw" >/dev/null 2>&1 || true
  elif [ ${#external_keys[@]} -gt 0 ]; then
    printf '%s\n' "${external_keys[@]}" |
      timeout -k 5 120 xargs -P4 -I{} "$nacre" rm "s3://$b/{}" >/dev/null 2>&1 || true
  fi
  if [ "$rc" != 0 ]; then
    if [ -s "$tools_log" ]; then echo "--- last lines of the tools' log:" >&2; tail -n 20 "$tools_log" >&2; fi
    if [ -s "$work/driver.log" ]; then echo "--- last lines of the driver's log:" >&2; tail -n 30 "$work/driver.log" >&2; fi
  fi
  if [ -n "$(mounts_under_work)" ]; then
    echo "csi.sh: mounts are left under $work; not removing it:" >&2
    mounts_under_work >&2
  else
    rm -rf --one-file-system "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------ timing
now_us() { local t=$EPOCHREALTIME; echo $((10#${t/./})); }
ms_between() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b - a) / 1000 }'; }

declare -A samples=()  # step -> space-separated ms
add() { samples[$1]="${samples[$1]:-} $2"; }
# "n min median max" of a step's samples
stats() {  # STEP
  tr ' ' '\n' <<<"${samples[$1]:-}" | grep -v '^$' | sort -g |
    awk '{ v[NR] = $1 } END {
      if (NR == 0) { print "0 - - -"; exit }
      m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
      printf "%d %.2f %.2f %.2f\n", NR, v[1], m, v[NR] }'
}

# ------------------------------------------------------------------ server, data
if [ -z "${NACRE_S3_ENV:-}" ]; then
  own_server=1
  log "starting Ceph RGW..."
  scripts/s3-server start "$work/rgw" >/dev/null 2>>"$tools_log"
  NACRE_S3_ENV=$work/rgw/env
fi
# shellcheck disable=SC1090
source "$NACRE_S3_ENV"
b=$NACRE_TEST_BUCKET
pfx="csi-bench-$$"
dataset=$pfx/dataset

s3curl() {  # curl args...: a SigV4-signed request to the RGW
  curl -sS --max-time 30 --aws-sigv4 "aws:amz:$AWS_REGION:s3" \
    --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$@"
}

log "uploading a small dataset to s3://$b/$dataset/..."
mkdir -p "$work/data"
printf '{"architectures": ["MistralForCausalLM"], "hidden_size": 4096}\n' >"$work/data/config.json"
printf '{"bos_token_id": 1, "eos_token_id": 2}\n' >"$work/data/generation_config.json"
head -c 65536 /dev/urandom | base64 >"$work/data/tokenizer.json"
head -c $((4 << 20)) /dev/urandom >"$work/data/model.safetensors"
nfiles=0
for f in "$work/data"/*; do
  external_keys+=("$dataset/${f##*/}")
  timeout -k 5 120 "$nacre" cp "$f" "s3://$b/$dataset/${f##*/}" >/dev/null
  nfiles=$((nfiles + 1))
done
rm -rf "$work/data"

# ------------------------------------------------------------------ the driver
log "starting nacre csi --mode all..."
mkdir -p "$work/state" "$work/cache"
"$nacre" csi --endpoint "unix://$work/csi.sock" --node-id csi-bench-node --mode all \
  --state-dir "$work/state" --cache-dir "$work/cache" \
  --s3-endpoint-url "$AWS_ENDPOINT_URL" --s3-region "$AWS_REGION" >"$work/driver.log" 2>&1 &
driver_pid=$!

log "csi_bench: $rounds round(s) of each CSI step..."
mkdir -p "$work/csi"
# csi_bench waits for the driver's Probe to answer ready (bounded) and undoes
# what it created, staged and published, also when a call fails.
# In the background, so a signal to this script runs its trap at once.
timeout -k 10 1800 "$csi_bench" --socket "$work/csi.sock" --env-file "$NACRE_S3_ENV" \
  --dataset "$dataset" --work "$work/csi" --rounds "$rounds" --expect-entries "$nfiles" \
  --tag "csi-bench-$$" --base-prefix "$pfx/fresh" >"$work/csi_bench.out" 2>"$work/csi_bench.err" &
bench_pid=$!
bench_rc=0
wait "$bench_pid" || bench_rc=$?
bench_pid=""
if [ "$bench_rc" != 0 ]; then
  cat "$work/csi_bench.err" "$work/csi_bench.out" >&2
  log "csi_bench FAILED"
  exit 1
fi
[ -s "$work/csi_bench.err" ] && cat "$work/csi_bench.err" >&2
kill -0 "$driver_pid" 2>/dev/null || { log "the driver exited during the run"; exit 1; }
# Nothing of the run may be left mounted by the driver.
if [ -n "$(mounts_under_work)" ]; then
  log "mounts left after csi_bench's teardown:"; mounts_under_work >&2
  exit 1
fi
kill -TERM "$driver_pid"
wait "$driver_pid" 2>/dev/null || true
driver_pid=""

# ------------------------------------------------------------------ floors and peers
log "floors: S3 PUT of an empty object and ListObjectsV2 (curl), $rounds round(s)..."
for i in $(seq "$rounds"); do
  key="$pfx/peer/put-$i/"
  external_keys+=("$key")
  out=$(s3curl -o /dev/null -w '%{http_code} %{time_total}' -X PUT --data-binary '' \
    "$AWS_ENDPOINT_URL/$b/$key")
  [ "${out%% *}" = 200 ] || { log "curl PUT $key answered HTTP ${out%% *}"; exit 1; }
  add put "$(awk -v s="${out#* }" 'BEGIN { printf "%.2f", s * 1000 }')"
  out=$(s3curl -o /dev/null -w '%{http_code} %{time_total}' \
    "$AWS_ENDPOINT_URL/$b?list-type=2&max-keys=1&prefix=${dataset//\//%2F}%2F")
  [ "${out%% *}" = 200 ] || { log "curl ListObjectsV2 answered HTTP ${out%% *}"; exit 1; }
  add list "$(awk -v s="${out#* }" 'BEGIN { printf "%.2f", s * 1000 }')"
done

log "floor: mount --bind x2 and umount -l x2, $rounds round(s)..."
mkdir -p "$work/bind/src" "$work/bind/stage" "$work/bind/target"
for i in $(seq "$rounds"); do
  t0=$(now_us)
  mount --bind "$work/bind/src" "$work/bind/stage"
  mount --bind "$work/bind/stage" "$work/bind/target"
  t1=$(now_us)
  umount -l "$work/bind/target"
  umount -l "$work/bind/stage"
  t2=$(now_us)
  add bind "$(ms_between "$t0" "$t1")"
  add umount "$(ms_between "$t1" "$t2")"
done

# Until `ls MNT` lists the dataset's entries (bounded); 0 when it did.
ls_answers() {  # MNT
  local n
  n=$(timeout -k 2 20 ls -A "$1" 2>>"$tools_log" | wc -l) || return 1
  [ "$n" = "$nfiles" ]
}

log "peer: cold nacre mount + ls, $rounds round(s)..."
mkdir -p "$work/peer"
for i in $(seq "$rounds"); do
  mnt=$work/peer/nacre-$i cache=$work/peer/nacre-cache-$i pf=$work/peer/nacre-$i.pid
  mkdir -p "$mnt" "$cache"
  # What the driver runs for a read-only linked volume (src/csi/volume_spec.cc
  # mount_arguments), with a fresh cache directory.
  t0=$(now_us)
  if ! timeout -k 5 120 "$nacre" mount "s3://$b/$dataset" "$mnt" --cache-dir "$cache" \
    --cache-size 10G --metadata-ttl $((100 + i)) --import-policy NEW,CHANGED,DELETED \
    --export-policy NEW,CHANGED,DELETED --allow-other --read-only \
    --endpoint-url "$AWS_ENDPOINT_URL" --region "$AWS_REGION" --pid-file "$pf" 2>>"$tools_log"; then
    log "nacre mount failed"; exit 1
  fi
  ls_answers "$mnt" || { log "ls of the nacre mount did not list $nfiles entries"; exit 1; }
  t1=$(now_us)
  add nacre_mount "$(ms_between "$t0" "$t1")"
  pid=$(cat "$pf")
  fusermount3 -u "$mnt" 2>>"$tools_log" || umount -l "$mnt"
  stop_pid "$pid"
  rm -rf "$cache"
done

if [ "$use_s3fs" = 1 ]; then
  log "peer: cold s3fs mount + ls, $rounds round(s)..."
  printf '%s:%s\n' "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" >"$work/s3fs.passwd"
  chmod 600 "$work/s3fs.passwd"
  for i in $(seq "$rounds"); do
    mnt=$work/peer/s3fs-$i
    mkdir -p "$mnt"
    t0=$(now_us)
    s3fs "$b:/$dataset" "$mnt" -f -o "url=$AWS_ENDPOINT_URL,use_path_request_style,passwd_file=$work/s3fs.passwd,endpoint=$AWS_REGION,ro" \
      >>"$tools_log" 2>&1 &
    pid=$!
    peer_pids+=("$pid")
    ok=0
    for _ in $(seq 3000); do  # 30 s
      kill -0 "$pid" 2>/dev/null || break
      if mountpoint -q "$mnt" && ls_answers "$mnt"; then ok=1; break; fi
      sleep 0.01
    done
    t1=$(now_us)
    [ "$ok" = 1 ] || { log "s3fs did not mount $mnt (see the tools' log)"; exit 1; }
    add s3fs_mount "$(ms_between "$t0" "$t1")"
    fusermount3 -u "$mnt" 2>>"$tools_log" || umount -l "$mnt"
    stop_pid "$pid"
    wait "$pid" 2>/dev/null || true
    peer_pids=()
  done
fi

# ------------------------------------------------------------------ tables
echo
echo "CSI driver benchmark: nacre csi --mode all on one node, local Ceph RGW, a $nfiles-file dataset; $rounds round(s) per step"
echo
cat "$work/csi_bench.out"
echo
printf '%-36s %4s %9s %9s %9s\n' "floor / peer" n min median max
for k in put list bind umount nacre_mount s3fs_mount; do
  [ -n "${samples[$k]:-}" ] || continue
  case $k in
    put) label="S3 PUT empty object (curl)" ;;
    list) label="S3 ListObjectsV2 max-keys=1 (curl)" ;;
    bind) label="mount --bind x2" ;;
    umount) label="umount -l x2" ;;
    nacre_mount) label="nacre mount + ls (cold)" ;;
    s3fs_mount) label="s3fs mount + ls (cold)" ;;
  esac
  read -r n mn md mx <<<"$(stats "$k")"
  printf '%-36s %4s %9s %9s %9s\n' "$label" "$n" "$mn" "$md" "$mx"
done

# Median of a csi_bench row (the step name is everything before the last 4 fields).
csi_median() {  # STEP
  awk -v s="$1" 'NF >= 5 { name = $1; for (i = 2; i <= NF - 4; i++) name = name " " $i
    if (name == s) { print $(NF - 1); found = 1 } } END { if (!found) print "-" }' "$work/csi_bench.out"
}
peer_median() { local x; x=$(stats "$1"); x=${x#* }; x=${x#* }; echo "${x%% *}"; }

rows=$work/rows
: >"$rows"
row() {  # STEP NACRE_MS PEER_LABEL PEER_MS TARGET_MS(- for none)
  printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$rows"
}
row "CreateVolume, fresh volume" "$(csi_median "CreateVolume fresh")" "S3 PUT empty (curl)" "$(peer_median put)" 100
row "DeleteVolume, fresh (deleteData)" "$(csi_median "DeleteVolume fresh")" "-" "-" -
row "CreateVolume, linked (s3ImportPath)" "$(csi_median "CreateVolume linked")" "S3 LIST 1 key (curl)" "$(peer_median list)" 100
row "Stage+Publish, ready mount" "$(csi_median "ready: stage+publish")" "mount --bind x2" "$(peer_median bind)" 1000
row "Stage+Publish, ready mount" "$(csi_median "ready: stage+publish")" "mount(2) bind x2" "$(csi_median "floor: mount(2) MS_BIND x2")" 1000
row "Unpublish+Unstage, mount stays" "$(csi_median "ready: unpublish+unstage")" "umount -l x2" "$(peer_median umount)" -
row "Unpublish+Unstage, mount stays" "$(csi_median "ready: unpublish+unstage")" "umount2 lazy x2" "$(csi_median "floor: umount2(MNT_DETACH) x2")" -
row "Stage+Publish+ls, new mount" "$(csi_median "cold: stage+publish+ls")" "nacre mount+ls cold" "$(peer_median nacre_mount)" -
if [ "$use_s3fs" = 1 ]; then
  row "Stage+Publish+ls, new mount" "$(csi_median "cold: stage+publish+ls")" "s3fs mount+ls cold" "$(peer_median s3fs_mount)" -
fi
row "Unpublish+Unstage, mount stopped" "$(csi_median "cold: unpublish+unstage")" "-" "-" -

echo
awk -F'\t' '
  { for (i = 1; i <= 5; i++) c[NR, i] = $i; n = NR }
  END {
    h[1] = "step"; h[2] = "Nacre ms"; h[3] = "peer"; h[4] = "peer ms"; h[5] = "ratio"
    h[6] = "target"; h[7] = "result"
    for (r = 1; r <= n; r++) {
      nacre = c[r, 2]; peer = c[r, 4]; tgt = c[r, 5]
      v[r, 1] = c[r, 1]; v[r, 2] = nacre; v[r, 3] = c[r, 3]; v[r, 4] = peer
      v[r, 5] = (nacre != "-" && peer != "-" && peer + 0 > 0) ? sprintf("%.2f", nacre / peer) : "-"
      v[r, 6] = tgt == "-" ? "-" : "<= " tgt " ms"
      v[r, 7] = tgt == "-" ? "-" : (nacre == "-" ? "FAIL" : (nacre + 0 <= tgt + 0 ? "MET" : "MISSED"))
    }
    for (i = 1; i <= 7; i++) { w[i] = length(h[i]); for (r = 1; r <= n; r++) if (length(v[r, i]) > w[i]) w[i] = length(v[r, i]) }
    line = ""
    for (i = 1; i <= 7; i++) line = line sprintf("%" (i == 1 || i == 3 ? "-" : "") w[i] "s  ", h[i])
    print line
    line = ""
    for (i = 1; i <= 7; i++) { d = ""; for (j = 0; j < w[i]; j++) d = d "-"; line = line d "  " }
    print line
    for (r = 1; r <= n; r++) {
      line = ""
      for (i = 1; i <= 7; i++) line = line sprintf("%" (i == 1 || i == 3 ? "-" : "") w[i] "s  ", v[r, i])
      print line
    }
  }' "$rows"
echo
echo "  medians over $rounds round(s); ratio = Nacre / peer. CSI figures are csi_bench's client-side"
echo "  gRPC call times; curl's are its time_total (no process start-up); mount --bind, umount -l,"
echo "  nacre mount and s3fs include starting their process (mount(2)/umount2 are bare syscalls"
echo "  timed in csi_bench). Targets from issue 7 (Figures)."
problems=$(grep -c -i -E '\[(warning|error|critical)\]' "$work/driver.log" 2>/dev/null || true)
[ "${problems:-0}" = 0 ] || echo "  the driver's log holds $problems warning/error line(s)"
