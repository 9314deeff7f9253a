#!/usr/bin/env bash
# Benchmarks, each compared side by side with its floor or a peer in the same run.
#
#   scripts/bench.sh [launch|limits|syscalls|masking|relay|all]...
#
# launch: `taskcell run -p build -- /bin/true` against bubblewrap with the same isolation
#         and against plain /bin/true, interleaved by hyperfine, as root and as a plain
#         user (BENCH_USER, default: taskcell-bench, created if missing).
# limits: the cost of a cell's cgroup: `run -p build` (the profile's limits; a cgroup where
#         the machine allows) against the same with processes and memory unlimited (no
#         cgroup, rlimits only), as root. TC=path skips the release build.
# relay:  output relay overhead: `taskcell run -- cat BIGFILE` with a masked secret (stdout
#         goes through the supervisor's masker) against `cat BIGFILE | cat` (a plain relay
#         through one extra process, the floor for any design that inspects output), and
#         taskcell without a secret (no relay). RELAY_MB (default 1024), RELAY_RUNS (5).
# masking: output masking throughput, 64 secrets over 1 GiB of output (criterion,
#         benches/masking.rs; MASK_BENCH_MIB sets the size). Prints GiB/s per CPU second
#         and wall for one pass, then criterion's wall-clock throughput.
# syscalls: ns per getppid() natively, under an allow-all seccomp filter and inside a cell
#         (Landlock + seccomp), interleaved; BIN_DIR=dir with taskcell and taskcell-probe.
# Needs: hyperfine, bubblewrap (apt-get install hyperfine bubblewrap), python3.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-300}
BENCH_USER=${BENCH_USER:-taskcell-bench}

need() { command -v "$1" >/dev/null 2>&1 || { echo "bench: $1 is missing (apt-get install $2)" >&2; exit 2; }; }

release_bin() {
  cargo build --release --quiet
  # A world-readable copy, so the plain user can run it too.
  install -D -m 0755 target/release/taskcell /var/tmp/taskcell-bench/taskcell
  echo /var/tmp/taskcell-bench/taskcell
}

ensure_user() {
  id "$BENCH_USER" >/dev/null 2>&1 || useradd --create-home --shell /bin/sh "$BENCH_USER"
}

# Print median, ratio to the first command, for a hyperfine JSON export.
table() {
  python3 - "$1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
base = {x["command"]: x["median"] for x in r}
ref = [x for x in r if x["command"].startswith("bwrap")]
ref = ref[0]["median"] if ref else r[0]["median"]
print(f"| {'command':<44} | median ms | mean ms | vs bwrap |")
print(f"|{'-'*46}|-----------|---------|----------|")
for x in r:
    print(f"| {x['command'][:44]:<44} | {x['median']*1e3:9.2f} | {x['mean']*1e3:7.2f} | {x['median']/ref:7.2f}x |")
PY
}

bench_launch() {
  need hyperfine hyperfine; need bwrap bubblewrap; need python3 python3
  local tc ws
  tc=$(release_bin)
  ensure_user
  ws=$(mktemp -d /tmp/taskcell-bench-ws.XXXXXX)
  chmod 0777 "$ws"
  for who in root "$BENCH_USER"; do
    local home runner=() json
    if [ "$who" = root ]; then home=$HOME; else home=$(getent passwd "$who" | cut -d: -f6); runner=(runuser -u "$who" --); fi
    # bubblewrap with the isolation taskcell's build profile has: every namespace
    # including net, the system read-only, the workspace read-write, tmpfs /tmp and home,
    # fresh /proc and /dev, a new session, die with parent.
    local bw="bwrap --unshare-all --die-with-parent --new-session --ro-bind /usr /usr --ro-bind /etc /etc"
    for l in bin sbin lib lib64; do [ -L /$l ] && bw+=" --symlink $(readlink /$l) /$l"; done
    bw+=" --tmpfs /tmp --proc /proc --dev /dev --tmpfs $home --bind $ws $ws --chdir $ws --hostname taskcell /bin/true"
    json=$(mktemp -d /tmp/taskcell-bench-out.XXXXXX)
    chmod 0777 "$json"; json=$json/launch.json
    echo "== launch, as $who"
    (cd "$ws" && "${runner[@]}" env HOME="$home" hyperfine -N --warmup 20 --runs "$RUNS" \
      --export-json "$json" \
      "$bw" \
      "$tc run -p build -w $ws -- /bin/true" \
      "/bin/true" >/dev/null)
    table "$json"
    rm -rf "$(dirname "$json")"
  done
  rm -rf "$ws"
}

bench_limits() {
  need hyperfine hyperfine; need python3 python3
  local tc ws json
  tc=${TC:-$(release_bin)}
  ws=$(mktemp -d /tmp/taskcell-bench-ws.XXXXXX)
  json=$(mktemp -d /tmp/taskcell-bench-out.XXXXXX)/limits.json
  echo "== limits, as $(id -un)"
  (cd "$ws" && hyperfine -N --warmup 20 --runs "$RUNS" --export-json "$json" \
    "$tc run -p build -w $ws --processes unlimited --memory unlimited -- /bin/true" \
    "$tc run -p build -w $ws -- /bin/true" >/dev/null)
  table "$json"
  rm -rf "$(dirname "$json")" "$ws"
}

bench_relay() {
  need hyperfine hyperfine
  local tc dir size=${RELAY_MB:-1024}
  tc=$(release_bin)
  dir=$(mktemp -d /tmp/taskcell-bench-relay.XXXXXX)
  chmod 0755 "$dir"
  head -c "$((size * 1024 * 1024))" /dev/urandom >"$dir/big"
  echo "== relay, ${size} MiB of random bytes to /dev/null"
  (cd "$dir" && hyperfine --warmup 1 --runs "${RELAY_RUNS:-5}" \
    --export-json "$dir/relay.json" \
    -n "cat BIGFILE | cat" "cat $dir/big | cat >/dev/null" \
    -n "taskcell run, 1 masked secret" "$tc run -p build -w $dir --secret T=generate:16 -- cat $dir/big >/dev/null" \
    -n "taskcell run, no secret (no relay)" "$tc run -p build -w $dir -- cat $dir/big >/dev/null" >/dev/null)
  python3 - "$dir/relay.json" "$size" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
mib = int(sys.argv[2])
ref = r[0]["median"]
print(f"| {'command':<36} | median s | MiB/s | vs cat pipe |")
print(f"|{'-'*38}|----------|-------|-------------|")
for x in r:
    print(f"| {x['command'][:36]:<36} | {x['median']:8.3f} | {mib/x['median']:5.0f} | {x['median']/ref:10.2f}x |")
PY
  rm -rf "$dir"
}

bench_masking() {
  echo "== masking: 64 secrets, ${MASK_BENCH_MIB:-1024} MiB per iteration"
  cargo bench --bench masking 2>&1 | grep -E 'masking bench|one pass|^masking/|time:|thrpt:' | grep -v '%'
}

# bench_syscalls' binaries: BIN_DIR (default target/release, built if missing).
ensure_syscall_bins() {
    BIN_DIR=${BIN_DIR:-target/release}
    if [ ! -x "$BIN_DIR/taskcell" ] || [ ! -x "$BIN_DIR/taskcell-probe" ]; then
        cargo build --release --bin taskcell --bin taskcell-probe >&2
    fi
    BIN_DIR=$(cd "$BIN_DIR" && pwd)
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# ns per getppid() in a tight loop: natively, under a trivial allow-everything seccomp
# filter (the floor any filter costs on this kernel), and inside a cell (Landlock and the
# full seccomp filter active). Interleaved rounds, so drifts of the machine hit all three.
bench_syscalls() {
    ensure_syscall_bins
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

what=("$@")
[ ${#what[@]} -gt 0 ] || what=(all)
for w in "${what[@]}"; do
  case "$w" in
    launch) bench_launch ;;
    limits) bench_limits ;;
    syscalls) bench_syscalls ;;
    relay) bench_relay ;;
    masking) bench_masking ;;
    all) bench_launch; bench_limits; bench_syscalls; bench_masking; bench_relay ;;
    *) echo "unknown benchmark $w" >&2; exit 2 ;;
  esac
done
