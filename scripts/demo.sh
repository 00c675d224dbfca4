#!/usr/bin/env bash
# The README's main job: serve a model from a local S3 server through a Nacre
# mount. Starts a Ceph RGW on 127.0.0.1, generates a Mistral-7B-Instruct-shaped
# safetensors model (real tensor names, shapes and dtypes; random values),
# uploads it with `nacre cp`, mounts the prefix with `nacre mount`, loads every
# tensor through the mount as a safetensors loader does (mmap, tensor by
# tensor) checking every checksum, and prints cold and warm time-to-weights
# beside the raw S3 time for the same bytes. Cleans up, also on failure.
#
#   NACRE_DEMO_LAYERS=4   transformer layers (4 ≈ 2.1 GiB; 32 = the full 14.5 GB)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export AWS_EC2_METADATA_DISABLED=true
layers=${NACRE_DEMO_LAYERS:-4}

bash scripts/deps.sh
bash scripts/build.sh build
nacre=$root/build/nacre
model_tool=$root/bench/safetensors_model.py

work=$(mktemp -d /var/tmp/nacre-demo.XXXXXX)
mnt=$work/models
cleanup() {
  set +e  # every step runs, whatever the one before did
  if grep -q " $mnt " /proc/mounts 2>/dev/null; then
    fusermount3 -u "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null
  fi
  if [ -n "${mount_pid:-}" ]; then
    kill "$mount_pid" 2>/dev/null
    wait "$mount_pid" 2>/dev/null
  fi
  scripts/s3-server stop "$work/rgw" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
drop_page_cache() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }

echo "== starting a local S3 server (Ceph RGW)"
scripts/s3-server start "$work/rgw" >/dev/null
# shellcheck disable=SC1091
source "$work/rgw/env"
echo "   endpoint $AWS_ENDPOINT_URL, bucket $NACRE_TEST_BUCKET"

echo "== generating a Mistral-7B-Instruct-shaped model with $layers layers"
python3 "$model_tool" generate "$work/src" --layers "$layers" >/dev/null
prefix="models/mistral-7b-instruct"
echo "== uploading it with nacre cp (parallel multipart)"
for f in "$work"/src/*; do
  "$nacre" cp "$f" "s3://$NACRE_TEST_BUCKET/$prefix/"
done
"$nacre" ls "s3://$NACRE_TEST_BUCKET/$prefix/"
rm -rf "$work/src"
bytes=$("$nacre" ls "s3://$NACRE_TEST_BUCKET/$prefix/" |
  awk '$NF ~ /safetensors$/ {s += $3} END {printf "%.0f\n", s}')  # mawk prints big sums as 2.2e+09

echo "== raw S3: one curl GET per shard, in sequence"
start=$(date +%s.%N)
for key in $("$nacre" ls "s3://$NACRE_TEST_BUCKET/$prefix/" | awk '$NF ~ /safetensors$/ {print $NF}'); do
  curl -sf --aws-sigv4 "aws:amz:$AWS_REGION:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
    -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -o /dev/null "$AWS_ENDPOINT_URL/$NACRE_TEST_BUCKET/$prefix/$key"
done
raw=$(python3 -c "import time; print(f'{time.time() - $start:.2f}')")

echo "== mounting s3://$NACRE_TEST_BUCKET/$prefix on $mnt"
mkdir -p "$mnt"
"$nacre" mount "s3://$NACRE_TEST_BUCKET/$prefix" "$mnt" --read-only --metadata-ttl forever \
  --cache-dir "$work/cache" -f --log-level warn &
mount_pid=$!
for _ in $(seq 100); do grep -q " $mnt " /proc/mounts && break; sleep 0.1; done
grep -q " $mnt " /proc/mounts || { echo "the mount did not come up" >&2; exit 1; }
ls -l "$mnt"

load() {  # prints seconds to load and verify every tensor
  python3 "$model_tool" load "$mnt" --verify --json | python3 -c "import json,sys; print(f\"{json.load(sys.stdin)['seconds']:.2f}\")"
}
drop_page_cache
echo "== cold load through the mount (every tensor checksummed)"
cold=$(load)
drop_page_cache
echo "== warm load from the node cache (page cache dropped)"
warm=$(load)
echo "== warm load from the page cache (a new process)"
hot=$(load)
"$nacre" status "$mnt" | tail -1

python3 - "$bytes" "$raw" "$cold" "$warm" "$hot" <<'PY'
import sys
b, raw, cold, warm, hot = int(sys.argv[1]), *map(float, sys.argv[2:])
mib = b / 2**20
print(f"\nTime to weights for {mib:.0f} MiB of Mistral-shaped safetensors (local Ceph RGW)\n")
print(f"{'':<36}{'seconds':>9}{'MiB/s':>9}{'vs raw S3':>11}")
for name, t in [("raw S3 (curl GET per shard)", raw), ("cold, through the Nacre mount", cold),
                ("warm, node cache (page cache dropped)", warm), ("warm, page cache (new process)", hot)]:
    print(f"{name:<36}{t:>9.2f}{mib / t:>9.0f}{raw / t:>10.2f}x")
PY
echo "== every tensor loaded and verified; cleaning up"
