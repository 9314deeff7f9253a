//! The container tier's network (issue 17.2), written as the attack: without user
//! namespaces there is no network namespace, so the cell shares the container's
//! loopback. It must reach nothing but the proxy: no other server on 127.0.0.1, no UDP,
//! no netlink, and rewriting the sockaddr while connect() waits for the supervisor's
//! check must not reach another server.
//!
//! CI runs these (with --ignored) inside `unshare -Ur sh -c 'echo 0 >
//! /proc/sys/user/max_user_namespaces; ...'` (.ci/run); elsewhere they are ignored.
mod common;
use common::*;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const EPERM: i32 = 1;

/// An HTTP server on 127.0.0.1 answering `body`, counting the connections it accepted.
fn server(body: &'static str) -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind(("127.0.0.1", 0)).expect("bind");
    let port = l.local_addr().expect("addr").port();
    let n = Arc::new(AtomicUsize::new(0));
    let count = n.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                let _ = c.read(&mut buf);
                let _ = write!(
                    c,
                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    (port, n)
}

fn run(ws: &Ws, extra: &[&str], script: &str) -> std::process::Output {
    run_in(ws, false, extra, script)
}

/// The arguments of `taskcell run` in the container tier (`proxy` network, the probe's
/// directory readable) with `extra` options, running `script` with /bin/sh.
fn container_args<'a>(pd: &'a str, extra: &[&'a str], script: &'a str) -> Vec<&'a str> {
    let mut args = vec![
        "run",
        "-p",
        "build",
        "--net",
        "proxy",
        "--require",
        "container",
        "--read",
        pd,
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "/bin/sh", "-c", script]);
    args
}

/// `taskcell run` in the container tier; `without_getfd`: under a seccomp filter that
/// refuses pidfd_getfd, as Docker's default profile does without CAP_SYS_PTRACE (the
/// supervisor's way is the same: it makes the cell's TCP sockets and connects them).
fn run_in(ws: &Ws, without_getfd: bool, extra: &[&str], script: &str) -> std::process::Output {
    let pd = probe_dir();
    let args = container_args(&pd, extra, script);
    if !without_getfd {
        return taskcell(ws.path(), &args).output().expect("taskcell");
    }
    let plain = taskcell(ws.path(), &[]);
    let mut wrapped = vec!["without-getfd", bin(), "-vv"];
    wrapped.extend_from_slice(&args);
    let mut w = std::process::Command::new(probe());
    w.current_dir(ws.path()).env_clear();
    for (k, v) in plain.get_envs() {
        if let Some(v) = v {
            w.env(k, v);
        }
    }
    w.args(&wrapped)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("taskcell under without-getfd")
}

#[test]
#[ignore = "run by .ci/run with user.max_user_namespaces=0"]
fn container_tier_reaches_the_proxy_and_no_other_local_server() {
    reaches_the_proxy_only(false);
}

#[test]
#[ignore = "run by .ci/run with user.max_user_namespaces=0"]
fn container_tier_without_pidfd_getfd_reaches_the_proxy_and_no_other_local_server() {
    reaches_the_proxy_only(true);
}

fn reaches_the_proxy_only(without_getfd: bool) {
    require_no_userns();
    let ws = Ws::new();
    let (allowed, _) = server("through-the-proxy");
    let (other, other_hits) = server("SHOULD-NOT-BE-REACHED");
    let log = ws.outside("audit.jsonl");
    let allow = format!("127.0.0.1:{allowed}");
    let script = format!(
        r#"curl -sS -m 5 --noproxy '' http://127.0.0.1:{allowed}/; echo " curl-proxy=$?"
curl -sS -m 5 --noproxy '' -x http://127.0.0.1:3128 http://127.0.0.1:{allowed}/; echo " curl-3128=$?"
curl -sS -m 5 --noproxy '*' http://127.0.0.1:{other}/ 2>/dev/null; echo "curl-direct=$?"
curl -sS -m 5 --noproxy '*' http://[::1]:{other}/ 2>/dev/null; echo "curl-v6=$?"
python3 -c 'import socket
for port in ({allowed}, {other}):
    s = socket.socket()
    print("python", s.connect_ex(("127.0.0.1", port)))'
{probe} connect {other}"#,
        probe = probe(),
    );
    let o = run_in(
        &ws,
        without_getfd,
        &["--allow", &allow, "--audit-log", &log.display().to_string()],
        &script,
    );
    assert_eq!(
        ok(&o),
        "through-the-proxy curl-proxy=0\nthrough-the-proxy curl-3128=0\ncurl-direct=7\ncurl-v6=7\npython 111\npython 111\n111\n",
        "{}",
        stderr(&o)
    );
    assert_eq!(
        other_hits.load(Ordering::SeqCst),
        0,
        "the other server was reached"
    );
    let audit = std::fs::read_to_string(&log).expect("audit log");
    let refused: Vec<&str> = audit
        .lines()
        .filter(|l| l.contains("\"connect_refused\""))
        .collect();
    assert!(
        refused
            .iter()
            .any(|l| l.contains(&format!("127.0.0.1:{other}"))),
        "{audit}"
    );
    assert!(audit.contains("\"tier\":\"container\""), "{audit}");
}

#[test]
#[ignore = "run by .ci/run with user.max_user_namespaces=0"]
fn container_tier_refuses_udp_netlink_raw_and_binding() {
    require_no_userns();
    let ws = Ws::new();
    let (other, _) = server("x");
    let script = format!(
        r#"{probe} udp {other}
{probe} sys socket-packet
python3 -c 'import socket
for fam, typ in ((socket.AF_INET, socket.SOCK_DGRAM), (socket.AF_INET6, socket.SOCK_DGRAM), (socket.AF_INET, socket.SOCK_RAW), (socket.AF_NETLINK, socket.SOCK_RAW)):
    try:
        socket.socket(fam, typ); print("created")
    except PermissionError as e:
        print(e.errno)'
{probe} tcp-ephemeral"#,
        probe = probe(),
    );
    let o = run(&ws, &[], &script);
    // bind: Landlock refuses (EACCES); no connect is tried after a failed bind.
    assert_eq!(
        ok(&o),
        format!("{EPERM}\nsocket-packet {EPERM}\n1\n1\n1\n1\nbind 13 connect -1\n")
    );
}

#[test]
#[ignore = "run by .ci/run with user.max_user_namespaces=0"]
fn container_tier_rewriting_the_sockaddr_during_connect_cannot_reach_another_server() {
    sockaddr_race(false);
}

#[test]
#[ignore = "run by .ci/run with user.max_user_namespaces=0"]
fn container_tier_without_pidfd_getfd_sockaddr_rewrite_cannot_reach_another_server() {
    sockaddr_race(true);
}

fn sockaddr_race(without_getfd: bool) {
    require_no_userns();
    let ws = Ws::new();
    let (other, other_hits) = server("SHOULD-NOT-BE-REACHED");
    // The proxy's port is only known inside (the supervisor picks it): read it there.
    let script = format!(
        r#"good=${{HTTP_PROXY##*:}}; echo "good $good"; {probe} connect-race "$good" {other} 1000"#,
        probe = probe(),
    );
    let o = run_in(&ws, without_getfd, &[], &script);
    let out = ok(&o);
    let mut lines = out.lines();
    let good = lines
        .next()
        .and_then(|l| l.strip_prefix("good "))
        .expect("proxy port")
        .to_string();
    let race = lines.next().expect("race result");
    // Some connects went through (to the proxy), none anywhere else.
    let peers = race.split(" peers ").nth(1).unwrap_or_default();
    assert_eq!(peers, good, "{race}");
    let oks: u32 = race
        .strip_prefix("ok ")
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(oks > 0, "{race}");
    assert_eq!(
        other_hits.load(Ordering::SeqCst),
        0,
        "the other server was reached"
    );
}

#[test]
#[ignore = "run by .ci/run with user.max_user_namespaces=0"]
fn container_tier_nonblocking_connect_gets_einprogress_and_completes() {
    nonblocking(false);
}

#[test]
#[ignore = "run by .ci/run with user.max_user_namespaces=0"]
fn container_tier_without_pidfd_getfd_nonblocking_connect_completes() {
    nonblocking(true);
}

fn nonblocking(without_getfd: bool) {
    require_no_userns();
    let ws = Ws::new();
    let script = r#"python3 -c 'import os, select, socket
port = int(os.environ["HTTP_PROXY"].rsplit(":", 1)[1])
s = socket.socket(); s.setblocking(False)
print(s.connect_ex(("127.0.0.1", port)))
select.select([], [s], [], 5)
print(s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR), s.getpeername()[1] == port)'"#;
    let o = run_in(&ws, without_getfd, &[], script);
    let out = ok(&o);
    // EINPROGRESS, or 0 when the loopback handshake finished within the call.
    assert!(out == "115\n0 True\n" || out == "0\n0 True\n", "{out}");
}

/// The supervisor in a container whose policy refuses pidfd_getfd, kcmp and ptrace
/// (Docker's default seccomp profile without CAP_SYS_PTRACE, the default Kubernetes pod):
/// the cell's TCP still reaches the proxy, a blocking, a non-blocking (curl) and an
/// asyncio connect alike, and still nothing else.
#[test]
#[ignore = "run by .ci/run with user.max_user_namespaces=0"]
fn container_tier_without_pidfd_getfd_asyncio_and_curl_reach_only_the_proxy() {
    require_no_userns();
    let ws = Ws::new();
    let (allowed, _) = server("through-the-proxy");
    let (other, other_hits) = server("SHOULD-NOT-BE-REACHED");
    let allow = format!("127.0.0.1:{allowed}");
    let script = format!(
        r#"curl -sS -m 5 --noproxy '' http://127.0.0.1:{allowed}/; echo " curl=$?"
curl -sS -m 5 --noproxy '*' http://127.0.0.1:{other}/ 2>/dev/null; echo "curl-direct=$?"
python3 -c 'import asyncio, os
port = int(os.environ["HTTP_PROXY"].rsplit(":", 1)[1])
async def get(p, path):
    r, w = await asyncio.open_connection("127.0.0.1", p)
    w.write(("GET " + path + " HTTP/1.0\r\n\r\n").encode()); await w.drain()
    return (await r.read()).split(b"\r\n\r\n", 1)[1].decode()
print("asyncio", asyncio.run(get(port, "http://127.0.0.1:{allowed}/")))
try:
    asyncio.run(get({other}, "/")); print("asyncio-direct reached")
except OSError as e:
    print("asyncio-direct", e.errno)'"#
    );
    let o = run_in(&ws, true, &["--allow", &allow], &script);
    assert_eq!(
        ok(&o),
        "through-the-proxy curl=0\ncurl-direct=7\nasyncio through-the-proxy\nasyncio-direct 111\n",
        "{}",
        stderr(&o)
    );
    assert_eq!(
        other_hits.load(Ordering::SeqCst),
        0,
        "the other server was reached"
    );
}

/// The fd-swap attack: connect() on a number that holds a unix socket when the
/// supervisor looks (CONTINUE) and a TCP socket of the cell's (unconnected, or
/// disconnected again with AF_UNSPEC) when the kernel acts. Landlock refuses that
/// connect (the tier needs its TCP rules): the other server is never reached.
#[test]
#[ignore = "run by .ci/run with user.max_user_namespaces=0"]
fn container_tier_swapping_fds_during_connect_cannot_reach_another_server() {
    require_no_userns();
    let ws = Ws::new();
    let (other, other_hits) = server("SHOULD-NOT-BE-REACHED");
    let script = format!("{probe} connect-swap {other} 300", probe = probe());
    let o = run_in(&ws, true, &[], &script);
    assert_eq!(ok(&o), "reached 0\n", "{}", stderr(&o));
    assert_eq!(
        other_hits.load(Ordering::SeqCst),
        0,
        "the other server was reached"
    );
}

/// socket()'s SOCK_NONBLOCK and SOCK_CLOEXEC reach the socket the supervisor made, the
/// cell's socket is a plain TCP socket of the family it asked for, and what the cell did
/// with it before connect (an option, a dup) holds after: the same socket is connected.
#[test]
#[ignore = "run by .ci/run with user.max_user_namespaces=0"]
fn container_tier_sockets_keep_their_flags_and_family() {
    require_no_userns();
    let ws = Ws::new();
    let script = r#"python3 -c 'import fcntl, os, socket
for fam in (socket.AF_INET, socket.AF_INET6):
    for extra in (0, socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC):
        s = socket.socket(fam, socket.SOCK_STREAM | extra)
        fl = fcntl.fcntl(s.fileno(), fcntl.F_GETFL); fd = fcntl.fcntl(s.fileno(), fcntl.F_GETFD)
        print(s.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN) == fam, s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) == socket.SOCK_STREAM, bool(fl & os.O_NONBLOCK), bool(fd & fcntl.FD_CLOEXEC))
port = int(os.environ["HTTP_PROXY"].rsplit(":", 1)[1])
s = socket.socket(socket.AF_INET6)
print("v6", s.connect_ex(("::ffff:127.0.0.1", port)), s.connect_ex(("::1", port)))
s = socket.socket(); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
d = socket.socket(fileno=os.dup(s.fileno()))
print("kept", s.connect_ex(("127.0.0.1", port)), s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), d.getpeername()[1] == port)'"#;
    let o = run(&ws, &[], script);
    // Python makes its sockets close-on-exec itself (PEP 446).
    assert_eq!(
        ok(&o),
        "True True False True\nTrue True True True\nTrue True False True\nTrue True True True\nv6 0 106\nkept 0 1 True\n",
        "{}",
        stderr(&o)
    );
}

/// Once connected, the cell's socket is the cell's alone: its close() reaches the other
/// end through the proxy (the supervisor lets go of the sockets it connected). The server
/// counts the connections that ended (EOF); a later connection asks for that count.
#[test]
#[ignore = "run by .ci/run with user.max_user_namespaces=0"]
fn container_tier_close_in_the_cell_reaches_the_server() {
    require_no_userns();
    let ws = Ws::new();
    let l = TcpListener::bind(("127.0.0.1", 0)).expect("bind");
    let port = l.local_addr().expect("addr").port();
    let ended = Arc::new(AtomicUsize::new(0));
    let e2 = ended.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let ended = e2.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                let Ok(n) = c.read(&mut buf) else { return };
                if buf[..n].starts_with(b"Q") {
                    let _ = write!(c, "{}", ended.load(Ordering::SeqCst));
                    return;
                }
                while matches!(c.read(&mut buf), Ok(n) if n > 0) {}
                ended.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    let allow = format!("127.0.0.1:{port}");
    let script = format!(
        r#"python3 -c 'import os, socket, time
proxy = int(os.environ["HTTP_PROXY"].rsplit(":", 1)[1])
def tunnel():
    s = socket.create_connection(("127.0.0.1", proxy))
    s.sendall(b"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    return s
s = tunnel(); s.sendall(b"data"); s.close()
for _ in range(100):
    q = tunnel(); q.sendall(b"Q"); n = q.recv(16); q.close()
    if n == b"1":
        break
    time.sleep(0.05)
print("ended", n.decode())'"#
    );
    let o = run_in(&ws, true, &["--allow", &allow], &script);
    assert_eq!(ok(&o), "ended 1\n", "{}", stderr(&o));
}

/// The supervisor holds the sockets it made only while the cell may still connect them:
/// 2000 sockets made and closed unconnected leave it with few open fds (those no process
/// has open any more are let go), and a connect still works afterwards. The supervisor's
/// fds are counted as root (it is not dumpable).
#[test]
#[ignore = "run by .ci/run with user.max_user_namespaces=0"]
fn container_tier_sockets_closed_unconnected_are_let_go() {
    require_no_userns();
    if !is_root() {
        return;
    }
    use std::io::BufRead;
    let ws = Ws::new();
    let pd = probe_dir();
    let script = r#"python3 -c 'import os, socket, sys, time
for _ in range(2000):
    socket.socket().close()
port = int(os.environ["HTTP_PROXY"].rsplit(":", 1)[1])
print("done", socket.socket().connect_ex(("127.0.0.1", port)), flush=True)
sys.stdin.read(1)'"#;
    let mut child = taskcell(ws.path(), &container_args(&pd, &[], script))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("taskcell");
    let mut line = String::new();
    let out = child.stdout.take().expect("stdout");
    let _ = std::io::BufReader::new(out).read_line(&mut line);
    let fds = std::fs::read_dir(format!("/proc/{}/fd", child.id()))
        .map(|d| d.count())
        .unwrap_or(usize::MAX);
    drop(child.stdin.take());
    let _ = child.wait();
    assert_eq!(line, "done 0\n");
    assert!(fds < 600, "the supervisor holds {fds} fds");
}
