#!/usr/bin/env bash
# Benchmark of the S3 client: a 2 GiB object downloaded to /dev/null and
# uploaded, by `nacre cp`, a single `curl --aws-sigv4` GET (the raw rate one
# connection gets), and the aws CLI, all against the same local Ceph RGW in
# one run. Prints MiB/s, the ratio to the reference, and client CPU-seconds
# per GiB. Each figure is the best of ROUNDS runs, rounds interleaved.
#
# Usage: bench/s3_transfer.sh            (starts and stops its own RGW)
#   NACRE_BENCH_MIB=2048 ROUNDS=3        object size and rounds
#   NACRE_S3_ENV=DIR/env                 use an already running server
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export AWS_EC2_METADATA_DISABLED=true
mib=${NACRE_BENCH_MIB:-2048}
rounds=${ROUNDS:-3}

bash scripts/deps.sh
bash scripts/build.sh build >/dev/null
nacre=$root/build/nacre

work=$(mktemp -d /tmp/nacre-bench.XXXXXX)
own_server=0
cleanup() {
  set +e
  if [ "$own_server" = 1 ]; then scripts/s3-server stop "$work/rgw" >/dev/null 2>&1; fi
  rm -rf "$work"
}
trap cleanup EXIT
if [ -z "${NACRE_S3_ENV:-}" ]; then
  own_server=1
  scripts/s3-server start "$work/rgw" >/dev/null
  NACRE_S3_ENV=$work/rgw/env
fi
# shellcheck disable=SC1090
source "$NACRE_S3_ENV"
b=$NACRE_TEST_BUCKET
key="bench/object-$$"

echo "generating a $mib MiB file..." >&2
head -c $((mib * 1024 * 1024)) /dev/urandom >"$work/src"
"$nacre" cp "$work/src" "s3://$b/$key" >/dev/null

measure() { python3 "$root/bench/measure.py" "$@"; }
declare -A best_wall best_cpu
record() {  # record NAME WALL CPU: keep the fastest run
  local name=$1 wall=$2 cpu=$3
  if [ -z "${best_wall[$name]:-}" ] || python3 -c "import sys; sys.exit(0 if $wall < ${best_wall[$name]} else 1)"; then
    best_wall[$name]=$wall
    best_cpu[$name]=$cpu
  fi
}

curl_get() {
  curl -sf --aws-sigv4 "aws:amz:$AWS_REGION:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
    -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -o /dev/null "$AWS_ENDPOINT_URL/$b/$key"
}
export -f curl_get
export b key

for r in $(seq "$rounds"); do
  echo "round $r/$rounds..." >&2
  read -r w c < <(measure bash -c curl_get); record "download curl (1 GET)" "$w" "$c"
  read -r w c < <(measure "$nacre" cp "s3://$b/$key" /dev/null); record "download nacre cp" "$w" "$c"
  read -r w c < <(measure aws --endpoint-url "$AWS_ENDPOINT_URL" s3 cp "s3://$b/$key" -); record "download aws cli" "$w" "$c"
  read -r w c < <(measure "$nacre" cp "$work/src" "s3://$b/$key-up-nacre"); record "upload nacre cp" "$w" "$c"
  read -r w c < <(measure aws --endpoint-url "$AWS_ENDPOINT_URL" s3 cp "$work/src" "s3://$b/$key-up-aws"); record "upload aws cli" "$w" "$c"
done
for k in "$key" "$key-up-nacre" "$key-up-aws"; do "$nacre" rm "s3://$b/$k" >/dev/null 2>&1 || true; done

python3 - "$mib" <<PY
import sys
mib = float(sys.argv[1])
rows = {
$(for k in "${!best_wall[@]}"; do echo "  \"$k\": (${best_wall[$k]}, ${best_cpu[$k]}),"; done)
}
def rate(name): return mib / rows[name][0]
print(f"\nS3 client benchmark: {mib:.0f} MiB object, local Ceph RGW, best of $rounds rounds\n")
print(f"{'tool':<26}{'MiB/s':>9}{'ratio':>22}{'CPU-s/GiB':>11}")
for name, ref in [("download curl (1 GET)", None), ("download nacre cp", "download curl (1 GET)"),
                  ("download aws cli", "download curl (1 GET)"), ("upload aws cli", None),
                  ("upload nacre cp", "upload aws cli")]:
    ratio = f"{rate(name) / rate(ref):.2f} x {ref.split()[1]}" if ref else "reference"
    print(f"{name:<26}{rate(name):>9.0f}{ratio:>22}{rows[name][1] / (mib / 1024):>11.2f}")
PY
