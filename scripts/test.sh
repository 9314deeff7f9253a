#!/usr/bin/env bash
# Build the test binaries and run them all: unit tests and integration tests that start
# real cells. Run it as root and as a plain user; both must pass.
#
#   scripts/test.sh                  build (needs cargo), then run every test binary
#   scripts/test.sh --no-build       run the binaries of the last build (for a user who
#                                    cannot reach the Rust toolchain)
#   scripts/test.sh [--no-build] -- ARGS   pass ARGS to every test binary (e.g. --ignored)
set -euo pipefail
cd "$(dirname "$0")/.."
list=target/test-binaries.txt
build=1
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) build=0 ;;
    --) shift; args=("$@"); break ;;
    *) echo "usage: scripts/test.sh [--no-build] [-- ARGS]" >&2; exit 2 ;;
  esac
  shift
done

if [ "$build" = 1 ]; then
  cargo build --quiet
  cargo test --no-run --quiet --message-format=json \
    | grep -E '"profile":\{[^}]*"test":true' | grep -o '"executable":"[^"]*"' | sed 's/^"executable":"//; s/"$//' > "$list.new"
  mv "$list.new" "$list"
fi
if [ ! -s "$list" ]; then
  echo "no test binaries listed in $list: run scripts/test.sh once with cargo available" >&2
  exit 2
fi

passed=0 failed=0 status=0
while read -r bin; do
  [ -x "$bin" ] || { echo "missing test binary $bin (rebuild)" >&2; exit 2; }
  echo "== $(basename "$bin") (as $(id -un))"
  out=$(mktemp)
  if ! "$bin" "${args[@]}" 2>&1 | tee "$out"; then status=1; fi
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
  p=$(grep -o 'test result: [A-Za-z]*\. [0-9]* passed; [0-9]* failed' "$out" | awk '{s+=$4; f+=$6} END {print s+0, f+0}')
  passed=$((passed + ${p% *})); failed=$((failed + ${p#* }))
  rm -f "$out"
done < "$list"
echo "$passed passed, $failed failed"
exit $status
