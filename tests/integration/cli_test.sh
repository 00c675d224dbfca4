#!/usr/bin/env bash
# The nacre S3 tools against the local RGW: round trips, help, and the errors
# a user meets. Usage: cli_test.sh NACRE_BINARY RGW_ENV_FILE
set -uo pipefail
nacre=$1
env_file=$2
[ -x "$nacre" ] || { echo "FAIL: nacre binary not found at $nacre"; exit 1; }
[ -f "$env_file" ] || { echo "FAIL: S3 server settings missing at $env_file (start scripts/s3-server)"; exit 1; }
# shellcheck disable=SC1090
source "$env_file"
export AWS_EC2_METADATA_DISABLED=true

work=$(mktemp -d /tmp/nacre-cli-test.XXXXXX)
trap 'rm -rf "$work"' EXIT
prefix="cli-$$-$RANDOM"
b="s3://$NACRE_TEST_BUCKET"
passed=0
failed=0

check() {  # check NAME COMMAND... : the command must succeed
  local name=$1; shift
  if "$@" >"$work/out" 2>"$work/err"; then
    passed=$((passed + 1)); echo "ok   $name"
  else
    failed=$((failed + 1)); echo "FAIL $name"; sed 's/^/     /' "$work/err" | head -5
  fi
}

expect_error() {  # expect_error NAME PATTERN COMMAND... : must fail, stderr matching PATTERN
  local name=$1 pattern=$2; shift 2
  local start=$SECONDS
  if "$@" >"$work/out" 2>"$work/err"; then
    failed=$((failed + 1)); echo "FAIL $name: succeeded but should have failed"; return
  fi
  if grep -Eq "$pattern" "$work/err"; then
    passed=$((passed + 1)); echo "ok   $name ($((SECONDS - start)) s): $(head -1 "$work/err")"
  else
    failed=$((failed + 1)); echo "FAIL $name: stderr does not match /$pattern/:"; sed 's/^/     /' "$work/err"
  fi
}

for cmd in "" ls cp rm stat; do
  check "help $cmd" bash -c "'$nacre' $cmd --help | grep -q -- '--help'"
done
for cmd in ls cp rm stat; do
  check "$cmd takes the S3 flags" bash -c "'$nacre' $cmd --help | grep -q -- '--endpoint-url' && '$nacre' $cmd --help | grep -q -- '--profile' && '$nacre' $cmd --help | grep -q -- '--region'"
done

head -c 1000 /dev/urandom >"$work/small"
head -c $((40 * 1024 * 1024 + 123)) /dev/urandom >"$work/big"
check "upload small" "$nacre" cp "$work/small" "$b/$prefix/small"
check "upload big as multipart" "$nacre" cp --part-size 8 --concurrency 4 "$work/big" "$b/$prefix/dir/"
check "ls shows the object and the prefix" bash -c "'$nacre' ls '$b/$prefix/' | grep -q ' 1000 small' && '$nacre' ls '$b/$prefix/' | grep -q 'PRE dir/'"
check "ls -r lists every key" bash -c "[ \$('$nacre' ls -r '$b/$prefix/' | wc -l) -eq 2 ]"
check "download small" "$nacre" cp "$b/$prefix/small" "$work/small.back"
check "small round trip is identical" cmp "$work/small" "$work/small.back"
mkdir -p "$work/dl"
check "download big into a directory" "$nacre" cp --part-size 5 "$b/$prefix/dir/big" "$work/dl/"
check "big round trip is identical" cmp "$work/big" "$work/dl/big"
check "download to a pipe" bash -c "'$nacre' cp '$b/$prefix/dir/big' - | cmp - '$work/big'"
check "server-side copy" "$nacre" cp "$b/$prefix/dir/big" "$b/$prefix/copy"
check "stat shows the copy's size" bash -c "'$nacre' stat '$b/$prefix/copy' | grep -q 'size: $((40 * 1024 * 1024 + 123))'"
check "rm" "$nacre" rm "$b/$prefix/copy"
expect_error "stat after rm" "NoSuchKey|not found" "$nacre" stat "$b/$prefix/copy"

# Profiles from a shared credentials file.
mkdir -p "$work/home/.aws"
printf '[testprofile]\naws_access_key_id = %s\naws_secret_access_key = %s\n' \
  "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" >"$work/home/.aws/credentials"
check "--profile from ~/.aws/credentials" env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY \
  HOME="$work/home" "$nacre" ls --profile testprofile "$b/$prefix/"
expect_error "unknown profile" "profile 'nosuch'" env HOME="$work/home" "$nacre" ls --profile nosuch "$b/$prefix/"

# Bad input: each gets a specific message and a non-zero exit.
expect_error "unknown bucket" "NoSuchBucket" "$nacre" ls "s3://nacre-no-such-bucket/"
expect_error "wrong secret key" "SignatureDoesNotMatch|InvalidCredentials" \
  env AWS_SECRET_ACCESS_KEY=wrong "$nacre" ls "$b/"
expect_error "unknown access key" "InvalidAccessKeyId|AccessDenied|InvalidCredentials" \
  env AWS_ACCESS_KEY_ID=NOSUCHKEY "$nacre" ls "$b/"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
expect_error "unreachable endpoint" "NetworkError.*(refused|connect)" \
  timeout 60 "$nacre" ls --endpoint-url "http://127.0.0.1:$port" --max-attempts 2 "$b/"
expect_error "missing object leaves no file behind" "NoSuchKey" "$nacre" cp "$b/$prefix/absent" "$work/absent"
check "no partial file" bash -c "! ls '$work'/absent* 2>/dev/null"
# A symlink planted at the partial name is never followed: its target keeps
# its bytes and the user is told to remove it.
echo precious >"$work/victim"
ln -s "$work/victim" "$work/planted.nacre-partial"
expect_error "symlink at the partial name" "remove it" "$nacre" cp "$b/$prefix/small" "$work/planted"
check "the symlink's target is untouched" bash -c "[ \"\$(cat '$work/victim')\" = precious ] && [ ! -e '$work/planted' ]"
echo leftover >"$work/again.nacre-partial"
check "a leftover partial file is replaced" "$nacre" cp "$b/$prefix/small" "$work/again"
check "the replaced download is complete" cmp "$work/small" "$work/again"
: >"$work/zero"
check "upload empty" "$nacre" cp "$work/zero" "$b/$prefix/zero"
check "download empty (a ranged GET of it is a 416)" "$nacre" cp "$b/$prefix/zero" "$work/zero.back"
check "empty round trip is identical" cmp "$work/zero" "$work/zero.back"
expect_error "bucket name with capitals" "not a valid S3 bucket name" "$nacre" ls "s3://Nacre-Test/"
expect_error "bucket name '..'" "not a valid S3 bucket name" "$nacre" cp "s3://../etc" "$work/x"
expect_error "not an s3 URL" "not an s3://" "$nacre" ls "/tmp"
expect_error "missing local file" "cannot open" "$nacre" cp "$work/nope" "$b/$prefix/nope"
expect_error "endpoint without scheme" "has no scheme" "$nacre" ls --endpoint-url 127.0.0.1:1 "$b/"
expect_error "no credentials at all" "no AWS credentials found" \
  env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY HOME="$work/empty" "$nacre" ls "$b/"

"$nacre" rm "$b/$prefix/small" >/dev/null 2>&1
"$nacre" rm "$b/$prefix/dir/big" >/dev/null 2>&1
"$nacre" rm "$b/$prefix/zero" >/dev/null 2>&1
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
