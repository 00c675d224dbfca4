#!/usr/bin/env bash
# The README's main job: starts a local S3 server (Ceph RGW), generates a
# model-shaped file, uploads it with Nacre (parallel multipart), lists it,
# downloads it back (parallel ranged GETs), checks it byte for byte, and
# cleans up — also on failure.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export AWS_EC2_METADATA_DISABLED=true
size_mib=${NACRE_DEMO_MIB:-512}

bash scripts/deps.sh
bash scripts/build.sh build
nacre=$root/build/nacre

work=$(mktemp -d /tmp/nacre-demo.XXXXXX)
cleanup() {
  scripts/s3-server stop "$work/rgw" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== starting a local S3 server (Ceph RGW) in $work/rgw"
scripts/s3-server start "$work/rgw" >/dev/null
# shellcheck disable=SC1091
source "$work/rgw/env"
echo "   endpoint $AWS_ENDPOINT_URL, bucket $NACRE_TEST_BUCKET"

echo "== generating a ${size_mib} MiB model shard"
mkdir -p "$work/model"
head -c $((size_mib * 1024 * 1024)) /dev/urandom >"$work/model/model-00001-of-00001.safetensors"
echo '{"architectures": ["MistralForCausalLM"], "hidden_size": 4096}' >"$work/model/config.json"

dest="s3://$NACRE_TEST_BUCKET/models/mistral-7b-instruct"
t0=$(date +%s.%N)
"$nacre" cp "$work/model/model-00001-of-00001.safetensors" "$dest/"
"$nacre" cp "$work/model/config.json" "$dest/"
t1=$(date +%s.%N)
echo "== uploaded with nacre cp in $(python3 -c "print(f'{$t1-$t0:.2f}')") s"
echo "== nacre ls $dest/"
"$nacre" ls "$dest/"
mkdir -p "$work/back"
t0=$(date +%s.%N)
"$nacre" cp "$dest/model-00001-of-00001.safetensors" "$work/back/"
t1=$(date +%s.%N)
rate=$(python3 -c "print(f'{$size_mib/($t1-$t0):.0f}')")
echo "== downloaded with nacre cp at $rate MiB/s"
cmp "$work/model/model-00001-of-00001.safetensors" "$work/back/model-00001-of-00001.safetensors"
echo "== round trip identical: OK"
