#!/usr/bin/env bash
# Benchmarks, each compared side by side with its floor or a peer in the same run.
#
#   scripts/bench.sh [launch|limits|masking|all]...
#
# launch: `taskcell run -p build -- /bin/true` against bubblewrap with the same isolation
#         and against plain /bin/true, interleaved by hyperfine, as root and as a plain
#         user (BENCH_USER, default: taskcell-bench, created if missing).
# limits: the cost of a cell's cgroup: `run -p build` (the profile's limits; a cgroup where
#         the machine allows) against the same with processes and memory unlimited (no
#         cgroup, rlimits only), as root. TC=path skips the release build.
# masking: output masking throughput, 64 secrets over 1 GiB of output (criterion,
#         benches/masking.rs; MASK_BENCH_MIB sets the size). Prints GiB/s per CPU second
#         and wall for one pass, then criterion's wall-clock throughput.
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

bench_masking() {
  echo "== masking: 64 secrets, ${MASK_BENCH_MIB:-1024} MiB per iteration"
  cargo bench --bench masking 2>&1 | grep -E 'masking bench|one pass|^masking/|time:|thrpt:' | grep -v '%'
}

what=("$@")
[ ${#what[@]} -gt 0 ] || what=(all)
for w in "${what[@]}"; do
  case "$w" in
    launch) bench_launch ;;
    limits) bench_limits ;;
    masking) bench_masking ;;
    all) bench_launch; bench_limits; bench_masking ;;
    *) echo "unknown benchmark $w" >&2; exit 2 ;;
  esac
done
