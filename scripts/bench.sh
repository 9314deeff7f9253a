#!/bin/bash
# taskcell benchmarks. Usage: scripts/bench.sh [BENCH...]   (default: all)
# The taskcell binary is $TASKCELL, else target/release/taskcell (built when missing).
# Results are printed as "name: value"; nothing here is asserted (see the README table).
set -euo pipefail
cd "$(dirname "$0")/.."
TASKCELL="${TASKCELL:-$PWD/target/release/taskcell}"
if [ ! -x "$TASKCELL" ]; then
    cargo build --release >&2
fi
WORK="$(mktemp -d /tmp/taskcell-bench.XXXXXX)"
chmod 755 "$WORK"
PIDS=()
cleanup() {
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

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

ALL=(bench_proxy)
if [ $# -eq 0 ]; then set -- "${ALL[@]}"; fi
for b in "$@"; do
    "$b"
done
