#!/usr/bin/env bash
# Benchmarks (numbers, not pass/fail; tests never assert on time).
#   scripts/bench.sh [syscalls|all]
# BIN_DIR: where taskcell and taskcell-probe are (default: target/release, built if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN_DIR=${BIN_DIR:-target/release}
BIN_DIR=$(mkdir -p "$BIN_DIR" && cd "$BIN_DIR" && pwd)

ensure_bins() {
    if [ ! -x "$BIN_DIR/taskcell" ] || [ ! -x "$BIN_DIR/taskcell-probe" ]; then
        cargo build --release --bin taskcell --bin taskcell-probe >&2
    fi
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# ns per getppid() in a tight loop: natively, under a trivial allow-everything seccomp
# filter (the floor any filter costs on this kernel), and inside a cell (Landlock and the
# full seccomp filter active). Interleaved rounds, so drifts of the machine hit all three.
bench_syscalls() {
    ensure_bins
    local n=${SYSCALL_LOOPS:-2000000} rounds=${SYSCALL_ROUNDS:-7}
    local probe="$BIN_DIR/taskcell-probe" tc="$BIN_DIR/taskcell"
    local dir ws
    dir=$(cd "$(dirname "$probe")" && pwd)
    ws=$(mktemp -d /tmp/taskcell-bench-XXXXXX)
    chmod 755 "$ws"
    local native=() floor=() cell=()
    for _ in $(seq "$rounds"); do
        native+=("$("$probe" getppid-loop "$n")")
        floor+=("$("$probe" allow-all-loop "$n")")
        cell+=("$(cd "$ws" && "$tc" run -q -p build --read "$dir" -- "$dir/taskcell-probe" getppid-loop "$n")")
    done
    rmdir "$ws"
    local mn mf mc
    mn=$(printf '%s\n' "${native[@]}" | median)
    mf=$(printf '%s\n' "${floor[@]}" | median)
    mc=$(printf '%s\n' "${cell[@]}" | median)
    echo "getppid ns/call (median of $rounds rounds x $n calls; kernel $(uname -r))"
    printf '  %-34s %8.1f\n' "native" "$mn"
    printf '  %-34s %8.1f\n' "trivial allow-all seccomp filter" "$mf"
    printf '  %-34s %8.1f\n' "inside a cell (landlock+seccomp)" "$mc"
    awk -v f="$mf" -v c="$mc" -v n="$mn" 'BEGIN {
        printf "  cell / trivial-filter floor        %8.3f  (goal <= 1.05)\n", c / f;
        printf "  filter floor over native           %8.1f ns\n", f - n }'
}

case "${1:-all}" in
    syscalls) bench_syscalls ;;
    all) bench_syscalls ;;
    *) echo "usage: $0 [syscalls|all]" >&2; exit 2 ;;
esac
