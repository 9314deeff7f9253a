//! The refusing resolver of a `proxy` cell: UDP 127.0.0.1:53 inside the cell (bound by
//! init, served here from outside). A `proxy` cell has no DNS: tools reach hosts through
//! the proxy, which resolves names itself. A tool that ignores the proxy variables
//! (Node's built-in `fetch`, some installers) looks the name up itself and would fail
//! with a bare DNS error; this resolver answers every query with REFUSED at once and
//! says which host was looked up and which variable the tool should honour — one line on
//! taskcell's stderr (the overlay's bottom line in an interactive cell) and an audit record.

use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::sync::Arc;

use serde_json::json;

use super::Shared;

/// Hosts reported per cell at most (each once); later ones are still refused.
const MAX_REPORTED: usize = 256;

/// Serve until the socket fails (the cell's network namespace is gone).
pub fn serve(shared: Arc<Shared>, sock: UdpSocket) {
    let mut reported: BTreeSet<String> = BTreeSet::new();
    let mut buf = [0u8; 512];
    loop {
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        let Some((name, end)) = question(&buf[..n]) else {
            continue;
        };
        let _ = sock.send_to(&refusal(&buf[..n], end), from);
        let shown = if crate::plan::allowlist::valid_name(&name) {
            name
        } else {
            "(a name that is not a valid host name)".to_string()
        };
        if reported.len() >= MAX_REPORTED || !reported.insert(shown.clone()) {
            continue;
        }
        let msg = message(&shown, shared.plan.http_port);
        shared.approvals.note(&msg);
        shared.audit.record(
            "dns_refused",
            json!({
                "host": shown,
                "reason": "the tool looked the host up itself instead of using the proxy",
                "hint": hint(shared.plan.http_port),
            }),
        );
    }
}

fn hint(port: u16) -> String {
    format!("the cell has no DNS: make the tool use the proxy, HTTPS_PROXY=http://127.0.0.1:{port} (set in the cell; for Node's built-in fetch also NODE_USE_ENV_PROXY=1, Node 24+)")
}

/// The line shown to the user.
pub fn message(host: &str, port: u16) -> String {
    format!(
        "taskcell: a tool looked up {host} itself (DNS) instead of using the proxy: refused; {}",
        hint(port)
    )
}

/// The first question's name (lowercase, dotted) and the offset just past it (after
/// QTYPE and QCLASS). None for anything that is not one plain query.
pub fn question(q: &[u8]) -> Option<(String, usize)> {
    if q.len() < 12 || q[2] & 0x80 != 0 || u16::from_be_bytes([q[4], q[5]]) == 0 {
        return None;
    }
    let mut i = 12;
    let mut name = String::new();
    loop {
        let len = *q.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        if len > 63 || name.len() + len > 253 {
            return None; // compression pointers and oversized labels are no question
        }
        let label = q.get(i..i + len)?;
        if !name.is_empty() {
            name.push('.');
        }
        name.extend(label.iter().map(|b| b.to_ascii_lowercase() as char));
        i += len;
    }
    let end = i + 4;
    if q.len() < end {
        return None;
    }
    Some((name, end))
}

/// A REFUSED answer to the query `q` whose question ends at `end`.
pub fn refusal(q: &[u8], end: usize) -> Vec<u8> {
    let mut r = Vec::with_capacity(end);
    r.extend_from_slice(&q[..2]); // id
    r.push(0x80 | (q[2] & 0x79)); // QR, the opcode, RD
    r.push(0x05); // RA=0, RCODE=REFUSED
    r.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    r.extend_from_slice(&q[12..end]);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.split('.') {
            q.push(l.len() as u8);
            q.extend_from_slice(l.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        q
    }

    #[test]
    fn a_query_is_answered_refused_with_its_id_and_question() {
        let q = query("Registry.Example");
        let (name, end) = question(&q).unwrap();
        assert_eq!(name, "registry.example");
        assert_eq!(end, q.len());
        let r = refusal(&q, end);
        assert_eq!(&r[..2], &[0x12, 0x34]);
        assert_eq!(r[2], 0x81);
        assert_eq!(r[3] & 0x0f, 5);
        assert_eq!(&r[12..], &q[12..]);
    }

    #[test]
    fn hostile_queries_are_dropped_or_shown_as_invalid() {
        assert!(question(&[0u8; 5]).is_none());
        let mut resp = query("a.example");
        resp[2] |= 0x80; // a response, not a query
        assert!(question(&resp).is_none());
        let mut ptr = query("a.example");
        ptr[12] = 0xc0;
        assert!(question(&ptr).is_none());
        let mut truncated = query("a.example");
        truncated.truncate(truncated.len() - 2);
        assert!(question(&truncated).is_none());
        // Terminal escapes in a label parse, but are no valid host name: never shown.
        let esc = query("\x1b]0;x\x07.example");
        let (name, _) = question(&esc).unwrap();
        assert!(!crate::plan::allowlist::valid_name(&name));
    }
}
