#!/usr/bin/env bash
# Benchmarks, each compared side by side with its floor or a peer in the same run.
#
#   scripts/bench.sh [launch|limits|syscalls|masking|relay|proxy|inject|all]...
#
# launch: `taskcell run -p build -- /bin/true` against bubblewrap with the same isolation
#         and against plain /bin/true, interleaved (scripts/interleave.py: every round
#         runs each command once; hyperfine's blocks drifted apart here), as root and as a plain
#         user (BENCH_USER, default: taskcell-bench, created if missing). TC=path skips
#         the release build; LAUNCH_COMPARE="path..." adds other taskcell binaries (e.g.
#         an older build) to the same interleaved run. Prints `perf stat`'s CPU time of
#         each too (PERF_RUNS, default 30; skipped without perf): under load the wall
#         clock mostly measures the wait for a CPU. BENCH_RT=1 (root): every command
#         runs under SCHED_FIFO priority 1 (chrt), ahead of the machine's other work, for
#         numbers on a shared, busy machine.
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
# inject: HTTPS requests/s on a keep-alive connection and the time of a new connection,
#         through an intercepting tunnel (injected secret; the secret firewall watching
#         INJECT_WATCHED secrets, default 8) against a plain CONNECT tunnel. INJECT_BODY=N:
#         the Python client POSTs N-byte JSON bodies instead of GETs.
# Needs: hyperfine, bubblewrap (apt-get install hyperfine bubblewrap), python3, perf (optional).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-300}
BENCH_USER=${BENCH_USER:-taskcell-bench}

need() { command -v "$1" >/dev/null 2>&1 || { echo "bench: $1 is missing (apt-get install $2)" >&2; exit 2; }; }

# Where cargo puts release binaries (.cargo/config.toml sets build.target to the host's
# triple: target/<triple>/release).
release_dir() { echo "target/$(rustc -vV | sed -n 's/^host: //p')/release"; }

release_bin() {
  cargo build --release --quiet
  # A world-readable copy, so the plain user can run it too.
  install -D -m 0755 "$(release_dir)/taskcell" /var/tmp/taskcell-bench/taskcell
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
  tc=${TC:-$(release_bin)}
  ensure_user
  ws=$(mktemp -d /tmp/taskcell-bench-ws.XXXXXX)
  chmod 0777 "$ws"
  echo "launch: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg), kernel $(uname -r)"
  for who in root "$BENCH_USER"; do
    local home runner=() json
    if [ "$who" = root ]; then home=$HOME; else home=$(getent passwd "$who" | cut -d: -f6); runner=(runuser -u "$who" --); fi
    # bubblewrap with the isolation taskcell's build profile has: every namespace
    # including net, the system read-only, the workspace read-write, tmpfs /tmp and home,
    # fresh /proc and /dev, a new session, die with parent.
    local bw="bwrap --unshare-all --die-with-parent --new-session --ro-bind /usr /usr --ro-bind /etc /etc"
    for l in bin sbin lib lib64; do [ -L /$l ] && bw+=" --symlink $(readlink /$l) /$l"; done
    bw+=" --tmpfs /tmp --proc /proc --dev /dev --tmpfs $home --bind $ws $ws --chdir $ws --hostname taskcell /bin/true"
    local cmds=(-n "bwrap (same isolation)" "$bw" -n "taskcell run -p build" "$tc run -p build -w $ws -- /bin/true")
    local other
    for other in ${LAUNCH_COMPARE:-}; do
      cmds+=(-n "taskcell run -p build ($(basename "$other"))" "$other run -p build -w $ws -- /bin/true")
    done
    cmds+=(-n "/bin/true" "/bin/true")
    json=$(mktemp -d /tmp/taskcell-bench-out.XXXXXX)
    chmod 0777 "$json"; json=$json/launch.json
    echo "== launch, as $who"
    local rt=()
    [ "${BENCH_RT:-0}" = 1 ] && rt=(chrt -f 1)
    # Interleaved: each round runs every command once (see scripts/interleave.py).
    local pairs=() k
    for ((k = 1; k < ${#cmds[@]}; k += 3)); do
      pairs+=("${cmds[k]}" "$(python3 -c 'import json,sys; print(json.dumps(sys.argv[1].split()))' "${cmds[k+1]}")")
    done
    # A copy the plain user can read, next to the results.
    install -m 0755 scripts/interleave.py "$(dirname "$json")/interleave.py"
    (cd "$ws" && "${rt[@]}" "${runner[@]}" env HOME="$home" python3 "$(dirname "$json")/interleave.py" \
      "$RUNS" "$json" "${pairs[@]}")
    table "$json"
    rm -rf "$(dirname "$json")"
    if command -v perf >/dev/null 2>&1; then
      local i
      for ((i = 1; i < ${#cmds[@]}; i += 3)); do
        local cpu
        cpu=$(cd "$ws" && "${rt[@]}" "${runner[@]}" env HOME="$home" perf stat -x, -e task-clock -r "${PERF_RUNS:-30}" ${cmds[i+1]} 2>&1 >/dev/null | awk -F, '/task-clock/ {printf "%.2f", $1}')
        printf '  CPU time (perf stat task-clock, all processes, mean of %s): %-32s %s ms\n' "${PERF_RUNS:-30}" "${cmds[i]}" "$cpu"
      done
    fi
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

# bench_syscalls' binaries: BIN_DIR (default target/<triple>/release, built if missing).
ensure_syscall_bins() {
    BIN_DIR=${BIN_DIR:-$(release_dir)}
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

# ------------------------------------------------------------------ proxy
# proxy: 1 GiB through a CONNECT tunnel of a `proxy` cell against the same transfer direct
#        on loopback and through `socat -b 131072`; connection setup latency and rate.
#        Needs socat (apt-get install socat). TC=path skips the release build.
WORK=""
PIDS=()
proxy_cleanup() {
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    [ -n "$WORK" ] && rm -rf "$WORK" "$WORK.vault"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

now() { date +%s.%N; }

# A server on 127.0.0.1:$1 that sends $2 (a file) to every client.
file_server() {
    socat -b 131072 -U "TCP-LISTEN:$1,bind=127.0.0.1,reuseaddr,fork" "FILE:$2" &
    PIDS+=($!)
    sleep 0.3
}

# ------------------------------------------------------------------ bench_proxy
# 1 GiB through a CONNECT tunnel of the cell's proxy, against the same transfer
# direct on loopback and through `socat -b 131072` as a plain relay; then the added
# latency of setting up a connection through the proxy (median of 500).
bench_proxy() {
    local TASKCELL="${TC:-}"
    [ -n "$TASKCELL" ] || TASKCELL=$(release_bin)
    WORK="$(mktemp -d /tmp/taskcell-bench.XXXXXX)"
    chmod 755 "$WORK"
    PIDS=()
    trap proxy_cleanup EXIT
    command -v socat >/dev/null || { echo "bench_proxy needs socat (apt-get install -y socat)" >&2; return 1; }
    local size=$((1024 * 1024 * 1024))
    local data="$WORK/1g"
    truncate -s "$size" "$data"   # sparse: reading it costs no disk I/O
    local p_direct p_relay p_up p_tunnel t0 t1
    p_direct=$(free_port); file_server "$p_direct" "$data"

    # Direct on loopback (best of 3 runs, like the others: the machine may be busy).
    local direct=0 r
    for _ in 1 2 3; do
        t0=$(now)
        socat -b 131072 -u "TCP:127.0.0.1:$p_direct" /dev/null
        t1=$(now)
        r=$(echo "$t0 $t1" | awk -v s="$size" '{printf "%.0f", s/($2-$1)/1048576}')
        [ "$r" -gt "$direct" ] && direct=$r
    done

    # socat as a plain relay.
    p_relay=$(free_port)
    socat -b 131072 "TCP-LISTEN:$p_relay,bind=127.0.0.1,reuseaddr,fork" "TCP:127.0.0.1:$p_direct" &
    PIDS+=($!)
    sleep 0.3
    local relay=0
    for _ in 1 2 3; do
        t0=$(now)
        socat -b 131072 -u "TCP:127.0.0.1:$p_relay" /dev/null
        t1=$(now)
        r=$(echo "$t0 $t1" | awk -v s="$size" '{printf "%.0f", s/($2-$1)/1048576}')
        [ "$r" -gt "$relay" ] && relay=$r
    done

    # Through the cell's proxy (CONNECT tunnel), timed inside the cell.
    cat > "$WORK/bench.toml" <<TOML
extends = "build"
[network]
mode = "proxy"
allow = ["bench.test:$p_direct", "127.0.0.1:$p_direct"]
resolve = { "bench.test" = "127.0.0.1" }
TOML
    local tunnel
    tunnel=$("$TASKCELL" run -q -p "$WORK/bench.toml" -w "$WORK" -- /bin/sh -c \
        "for i in 1 2 3; do t0=\$(date +%s.%N); socat -b 131072 -u PROXY:127.0.0.1:bench.test:$p_direct,proxyport=3128 /dev/null; t1=\$(date +%s.%N); echo \$t0 \$t1; done" |
        awk -v s="$size" '{r=s/($2-$1)/1048576; if (r>m) m=r} END {printf "%.0f", m}')

    echo "bench_proxy: 1 GiB direct loopback:        $direct MiB/s"
    echo "bench_proxy: 1 GiB via socat -b 131072:     $relay MiB/s ($(awk -v a="$relay" -v b="$direct" 'BEGIN{printf "%.2f", a/b}')x direct)"
    echo "bench_proxy: 1 GiB via CONNECT tunnel:      $tunnel MiB/s ($(awk -v a="$tunnel" -v b="$direct" 'BEGIN{printf "%.2f", a/b}')x direct)"

    # Connection setup: an echo server; 500 connections direct (from the host) and through
    # the proxy (from inside a cell), each one round trip of one byte.
    p_up=$(free_port)
    # An echo server without a process per connection (socat's fork would dominate).
    cat > "$WORK/echo.py" <<'PY'
import selectors, socket, sys
sel = selectors.DefaultSelector()
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", int(sys.argv[1]))); l.listen(512); l.setblocking(False)
sel.register(l, selectors.EVENT_READ)
while True:
    for key, _ in sel.select():
        s = key.fileobj
        if s is l:
            c, _ = l.accept(); c.setblocking(False); sel.register(c, selectors.EVENT_READ)
            continue
        try:
            d = s.recv(65536)
        except OSError:
            d = b""
        if d:
            s.sendall(d)
        else:
            sel.unregister(s); s.close()
PY
    python3 "$WORK/echo.py" "$p_up" &
    PIDS+=($!)
    sleep 0.5
    cat > "$WORK/lat.py" <<'PY'
import socket, statistics, sys, time
mode, host, port, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
samples = []
start = time.perf_counter()
for _ in range(n):
    t0 = time.perf_counter()
    if mode == "direct":
        s = socket.create_connection(("127.0.0.1", port))
    else:
        s = socket.create_connection(("127.0.0.1", 3128))
        s.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\n\r\n".encode())
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += s.recv(4096)  # nothing follows the head until we send
        assert head.startswith(b"HTTP/1.1 200"), head
    s.sendall(b"x")
    assert s.recv(1) == b"x"
    samples.append(time.perf_counter() - t0)
    s.close()
print(f"{statistics.median(samples)*1000:.3f} {n/(time.perf_counter()-start):.0f}")
PY
    local lat_direct lat_proxy
    local rate_direct rate_proxy
    read -r lat_direct rate_direct < <(python3 "$WORK/lat.py" direct 127.0.0.1 "$p_up" 500)
    cat > "$WORK/lat.toml" <<TOML
extends = "build"
[network]
mode = "proxy"
allow = ["lat.test:$p_up", "127.0.0.1:$p_up"]
resolve = { "lat.test" = "127.0.0.1" }
TOML
    read -r lat_proxy rate_proxy < <("$TASKCELL" run -q -p "$WORK/lat.toml" -w "$WORK" -- /usr/bin/python3 "$WORK/lat.py" proxy lat.test "$p_up" 500)
    echo "bench_proxy: connect+1 byte round trip, median of 500: direct $lat_direct ms, through the proxy $lat_proxy ms (added $(awk -v a="$lat_proxy" -v b="$lat_direct" 'BEGIN{printf "%.3f", a-b}') ms)"
    echo "bench_proxy: sequential connections per second: direct $rate_direct/s, through the proxy $rate_proxy/s"
}

# ------------------------------------------------------------------ bench_inject
# HTTPS through the cell's proxy: a host a secret is injected for (TLS intercepted,
# placeholder swapped in every request) against an unbound host (opaque CONNECT tunnel),
# same origin server (Python, HTTP/1.1 keep-alive, its own test CA). From inside the
# cell: requests per second on one keep-alive connection (INJECT_REQS, default 2000) and
# the median time of a fresh connection + TLS handshake + one request (INJECT_CONNS, 200).
bench_inject() {
    local TASKCELL="${TC:-}"
    [ -n "$TASKCELL" ] || TASKCELL=$(release_bin)
    command -v openssl >/dev/null || { echo "bench_inject needs openssl" >&2; return 1; }
    WORK="$(mktemp -d /tmp/taskcell-bench.XXXXXX)"
    chmod 755 "$WORK"
    PIDS=()
    trap proxy_cleanup EXIT
    local reqs=${INJECT_REQS:-2000} conns=${INJECT_CONNS:-200}
    # A test CA and a certificate for both names.
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=taskcell bench CA" -keyout "$WORK/ca.key" -out "$WORK/ca.pem" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=inj.test" \
        -keyout "$WORK/srv.key" -out "$WORK/srv.csr" 2>/dev/null
    printf 'subjectAltName=DNS:inj.test,DNS:plain.test\n' > "$WORK/ext"
    openssl x509 -req -in "$WORK/srv.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" \
        -CAcreateserial -days 2 -extfile "$WORK/ext" -out "$WORK/srv.pem" 2>/dev/null
    chmod 644 "$WORK"/*
    cat > "$WORK/srv.py" <<'PY'
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.do_GET()
    def do_GET(self):
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[2], sys.argv[3])
s.socket = ctx.wrap_socket(s.socket, server_side=True)
s.serve_forever()
PY
    local port; port=$(free_port)
    python3 "$WORK/srv.py" "$port" "$WORK/srv.pem" "$WORK/srv.key" &
    PIDS+=($!)
    # Wait until it listens (a loaded machine starts Python slowly).
    for _ in $(seq 1 100); do
        python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' "$port" 2>/dev/null && break
        sleep 0.1
    done
    cat > "$WORK/client.py" <<'PY'
import http.client, os, ssl, statistics, sys, time
host, port, reqs, conns, cafile = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
ctx = ssl.create_default_context(cafile=None if cafile == "-" else cafile)
tok = os.environ["TOK"]
# INJECT_BODY=N: POST a JSON body of about N bytes (a model API request) instead of GET.
n = int(os.environ.get("INJECT_BODY", "0"))
payload = ('{"messages":[{"role":"user","content":"' + "x" * max(n - 48, 0) + '"}]}').encode() if n else None
def conn():
    c = http.client.HTTPSConnection("127.0.0.1", 3128, context=ctx)
    c.set_tunnel(host, port)
    return c
def get(c):
    if payload is None:
        c.request("GET", "/", headers={"Authorization": "Bearer " + tok})
    else:
        c.request("POST", "/", body=payload, headers={"Authorization": "Bearer " + tok, "Content-Type": "application/json"})
    r = c.getresponse(); r.read()
    assert r.status == 200, r.status
c = conn(); get(c)
t0 = time.perf_counter()
for _ in range(reqs):
    get(c)
rate = reqs / (time.perf_counter() - t0)
c.close()
lat = []
for _ in range(conns):
    t = time.perf_counter(); c = conn(); get(c); lat.append(time.perf_counter() - t); c.close()
print(f"{rate:.0f} {statistics.median(lat)*1000:.2f}")
PY
    # The token outside the workspace (an injected secret the cell could read is refused).
    mkdir -p "$WORK.vault"
    printf 'ghp_%s\n' "$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')" > "$WORK.vault/token"
    cat > "$WORK/inject.toml" <<TOML
extends = "build"
[network]
mode = "proxy"
allow = ["inj.test:$port", "plain.test:$port", "127.0.0.1:$port"]
resolve = { "inj.test" = "127.0.0.1", "plain.test" = "127.0.0.1" }
upstream_ca = "$WORK/ca.pem"
[secrets.TOK]
from = { file = "$WORK.vault/token" }
deliver = "inject"
hosts = ["inj.test"]
TOML
    # Watch-only secrets: the secret firewall searches every intercepted request for
    # them (and their encodings). INJECT_WATCHED=0 measures without the firewall.
    for i in $(seq 1 "${INJECT_WATCHED:-8}"); do
        printf '[secrets.WATCH%s]\nfrom = { generate = { bytes = 24 } }\ndeliver = "none"\n' "$i" >> "$WORK/inject.toml"
    done
    local r_inj l_inj r_plain l_plain
    read -r r_plain l_plain < <("$TASKCELL" run -q -p "$WORK/inject.toml" -w "$WORK" -e "INJECT_BODY=${INJECT_BODY:-0}" -- \
        /usr/bin/python3 "$WORK/client.py" plain.test "$port" "$reqs" "$conns" "$WORK/ca.pem")
    read -r r_inj l_inj < <("$TASKCELL" run -q -p "$WORK/inject.toml" -w "$WORK" -e "INJECT_BODY=${INJECT_BODY:-0}" -- \
        /usr/bin/python3 "$WORK/client.py" inj.test "$port" "$reqs" "$conns" -)
    # curl, $reqs GETs on one connection (HTTP/2 to the proxy where it intercepts).
    local c_inj c_plain
    c_plain=$("$TASKCELL" run -q -p "$WORK/inject.toml" -w "$WORK" -- /bin/sh -c \
        "t0=\$(date +%s.%N); curl -sf --cacert $WORK/ca.pem -o /dev/null -H \"Authorization: Bearer \$TOK\" 'https://plain.test:$port/[1-$reqs]'; t1=\$(date +%s.%N); echo \$t0 \$t1" |
        awk -v n="$reqs" '{printf "%.0f", n/($2-$1)}')
    c_inj=$("$TASKCELL" run -q -p "$WORK/inject.toml" -w "$WORK" -- /bin/sh -c \
        "t0=\$(date +%s.%N); curl -sf -o /dev/null -H \"Authorization: Bearer \$TOK\" 'https://inj.test:$port/[1-$reqs]'; t1=\$(date +%s.%N); echo \$t0 \$t1" |
        awk -v n="$reqs" '{printf "%.0f", n/($2-$1)}')
    echo "bench_inject: curl, $reqs GETs on one connection: plain tunnel (HTTP/1.1) $c_plain req/s, intercepted (HTTP/2 to the proxy, HTTP/1.1 to the origin) $c_inj req/s ($(awk -v a="$c_inj" -v b="$c_plain" 'BEGIN{printf "%.2f", a/b}')x)"
    echo "bench_inject: keep-alive GET, $reqs requests: plain tunnel $r_plain req/s, intercepted + injected $r_inj req/s ($(awk -v a="$r_inj" -v b="$r_plain" 'BEGIN{printf "%.2f", a/b}')x)"
    echo "bench_inject: new connection + TLS + 1 GET, median of $conns: plain tunnel $l_plain ms, intercepted $l_inj ms (added $(awk -v a="$l_inj" -v b="$l_plain" 'BEGIN{printf "%.2f", a-b}') ms)"
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
    proxy) bench_proxy ;;
    inject) bench_inject ;;
    all) bench_launch; bench_limits; bench_syscalls; bench_masking; bench_relay; bench_proxy; bench_inject ;;
    *) echo "unknown benchmark $w" >&2; exit 2 ;;
  esac
done
