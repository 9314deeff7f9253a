//! The HTTP proxy: `CONNECT host:port` tunnels and absolute-form plain HTTP requests
//! (one request per connection: the origin gets `Connection: close`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Instant;

use super::gate::{self, Refusal};
use super::http::{self, ParseError, Target};
use super::{Shared, HANDSHAKE_TIMEOUT};

/// Read a request head: the parsed request and every byte read so far.
fn read_head(conn: &mut TcpStream) -> Result<(http::Request, Vec<u8>), Option<ParseError>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return Err(None),
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        match http::parse(&buf) {
            Ok(r) => return Ok((r, buf)),
            Err(ParseError::Incomplete) if buf.len() < http::MAX_HEAD => continue,
            Err(ParseError::Incomplete) => return Err(Some(ParseError::TooLarge)),
            Err(e) => return Err(Some(e)),
        }
    }
}

fn refuse(conn: &mut TcpStream, r: &Refusal) {
    let (code, reason) = match r {
        Refusal::Denied(_) | Refusal::TimedOut(_) => (403, "Forbidden"),
        Refusal::Unresolvable(_) | Refusal::Unreachable(_) => (502, "Bad Gateway"),
    };
    let _ = conn.write_all(&http::response(code, reason, r.message()));
}

/// Serve one client connection. Never panics on input; errors close the connection.
pub fn serve(shared: &Arc<Shared>, mut conn: TcpStream) {
    let hs = HANDSHAKE_TIMEOUT.min(shared.plan.idle_timeout);
    let _ = conn.set_read_timeout(Some(hs));
    let _ = conn.set_write_timeout(Some(hs));
    let (req, buf) = match read_head(&mut conn) {
        Ok(x) => x,
        Err(Some(e)) => {
            let (code, reason) = e.status();
            let msg = match &e {
                ParseError::Malformed(m) => m.clone(),
                ParseError::TooLarge => {
                    format!("request head larger than {} bytes", http::MAX_HEAD)
                }
                ParseError::TooManyHeaders => format!("more than {} headers", http::MAX_HEADERS),
                ParseError::Incomplete => "incomplete request".into(),
            };
            let _ = conn.write_all(&http::response(code, reason, &msg));
            return;
        }
        Err(None) => return,
    };
    let rest = &buf[req.head_len..];
    let started = Instant::now();
    let (host, port, via) = match &req.target {
        Target::Connect { host, port } => (host.clone(), *port, "connect"),
        Target::Absolute { host, port, .. } => (host.clone(), *port, "http"),
    };
    let inject = shared.inject.as_ref();
    if let (Some(inj), Target::Absolute { .. }) = (inject, &req.target) {
        // Plain HTTP never gets a value, and a placeholder does not leave the cell.
        if let Some(l) = super::inject::subst::find_placeholder(inj.secrets(), &buf) {
            let msg = format!(
                "blocked: the placeholder of secret {} was on its way to {host}:{port} in plain HTTP ({}); values are only put into HTTPS requests to the hosts a secret is bound to",
                l.secret, l.place
            );
            tracing::warn!("network: {msg}");
            shared.audit.record(
                "secret_leak_blocked",
                serde_json::json!({ "name": l.secret, "host": host, "port": port, "where": l.place, "via": "http" }),
            );
            let _ = conn.write_all(&http::response(403, "Forbidden", &msg));
            return;
        }
        // The secret firewall reads HTTPS requests to intercepted hosts; plain HTTP to
        // them would pass it by.
        if inj.intercepts(&host, port) && !matches!(inj.wall(&inj.bound(&host, port)), Ok(None)) {
            let msg = format!(
                "refused: {host}:{port} is an intercepted host and the secret firewall only passes HTTPS requests to it"
            );
            tracing::warn!("network: {msg}");
            shared.audit.record(
                "secret_firewall",
                serde_json::json!({ "host": host, "port": port, "action": "blocked", "where": "plain HTTP" }),
            );
            let _ = conn.write_all(&http::response(403, "Forbidden", &msg));
            return;
        }
    }
    let intercept = matches!(req.target, Target::Connect { .. })
        && inject.is_some_and(|i| i.intercepts(&host, port));
    let via = if intercept { "connect-inject" } else { via };
    let mut opened = match gate::open(shared, &host, port, via) {
        Ok(o) => o,
        Err(r) => {
            refuse(&mut conn, &r);
            return;
        }
    };
    if let (true, Some(inj)) = (intercept, inject) {
        if conn
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .is_err()
        {
            return;
        }
        let Ok(client) = conn.try_clone() else { return };
        let Ok(up) = opened.stream.try_clone() else {
            return;
        };
        let (u, d) = super::inject::h1::serve(shared, inj, client, up, &host, port, rest.to_vec());
        gate::record_done(shared, via, &host, port, &opened, u, d, started);
        return;
    }
    let mut sent = rest.len() as u64;
    let setup = match &req.target {
        Target::Connect { .. } => conn
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .and_then(|_| opened.stream.write_all(rest)),
        Target::Absolute { .. } => {
            let mut head = http::origin_head(&req);
            sent += head.len() as u64;
            head.extend_from_slice(rest);
            opened.stream.write_all(&head)
        }
    };
    if setup.is_err() {
        gate::record_done(shared, via, &host, port, &opened, 0, 0, started);
        return;
    }
    gate::relay_and_record(shared, via, &host, port, &conn, &opened, sent, started);
}
