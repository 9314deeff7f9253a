#!/bin/sh
# Fuzz taskcell's parsers with cargo-fuzz (libFuzzer; needs a nightly toolchain).
# Usage: scripts/fuzz.sh [TARGET] [SECONDS]
#   targets: http_request, socks_request (the proxy), duration, size (limits), profile
#   (the profile loader). CI runs each briefly when a nightly toolchain and cargo-fuzz are
#   there (.ci/run). Installs cargo-fuzz when missing.
set -eu
cd "$(dirname "$0")/.."
target="${1:-http_request}"
secs="${2:-60}"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz (cargo install cargo-fuzz)" >&2
    cargo install cargo-fuzz
fi
if ! rustup toolchain list 2>/dev/null | grep -q nightly; then
    echo "cargo fuzz needs a nightly toolchain: rustup toolchain install nightly" >&2
    exit 2
fi
mkdir -p fuzz/corpus/"$target"
# Seed the corpus with a few well-formed requests.
if [ "$target" = http_request ]; then
    printf 'CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n' > fuzz/corpus/http_request/connect
    printf 'GET http://example.test:8080/a?b HTTP/1.1\r\nHost: example.test\r\nProxy-Connection: keep-alive\r\n\r\n' > fuzz/corpus/http_request/absolute
fi
if [ "$target" = profile ]; then
    cp profiles/*.toml fuzz/corpus/profile/
fi
exec cargo +nightly fuzz run "$target" -- -max_total_time="$secs" -max_len=20000
