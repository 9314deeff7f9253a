#!/usr/bin/env bash
# taskcell benchmarks. Usage: scripts/bench.sh [NAME...]   (default: all)
#   bench_relay   output relay overhead: `taskcell run -- cat BIGFILE` (with a masked
#                 secret, so stdout goes through the supervisor's masker) against
#                 `cat BIGFILE | cat` (a plain relay through one extra process).
# Needs hyperfine (apt-get install -y hyperfine). Builds the release binary.
set -euo pipefail
cd "$(dirname "$0")/.."

need_hyperfine() {
    command -v hyperfine >/dev/null || {
        echo "hyperfine is missing: apt-get install -y hyperfine" >&2
        exit 1
    }
}

release_bin() {
    cargo build --release --quiet
    echo "$PWD/target/release/taskcell"
}

bench_relay() {
    need_hyperfine
    local bin size dir
    bin=$(release_bin)
    size=${RELAY_MB:-1024}
    dir=$(mktemp -d /tmp/taskcell-bench-XXXXXX)
    chmod 755 "$dir"
    trap 'rm -rf "$dir"' RETURN
    head -c "$((size * 1024 * 1024))" /dev/urandom >"$dir/big"
    echo "relay: ${size} MiB of random bytes, output to /dev/null"
    hyperfine --warmup 1 --runs "${RUNS:-5}" \
        --export-markdown "$dir/relay.md" \
        -n "cat | cat" "cat $dir/big | cat >/dev/null" \
        -n "taskcell run (no secret)" "$bin run -p build -w $dir -- cat $dir/big >/dev/null" \
        -n "taskcell run (1 masked secret)" "$bin run -p build -w $dir --secret T=generate:16 -- cat $dir/big >/dev/null"
    cat "$dir/relay.md"
}

all=(bench_relay)
if [ $# -eq 0 ]; then set -- "${all[@]}"; fi
for b in "$@"; do
    "$b"
done
