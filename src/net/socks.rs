//! The SOCKS5 proxy (RFC 1928): no authentication, CONNECT only, with domain names
//! (resolved by the supervisor), IPv4 and IPv6 addresses.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, TcpStream};
use std::time::Instant;

use super::gate::{self, Refusal};
use super::{Shared, HANDSHAKE_TIMEOUT};

/// Reply codes.
const REP_OK: u8 = 0x00;
const REP_FAILURE: u8 = 0x01;
const REP_NOT_ALLOWED: u8 = 0x02;
const REP_HOST_UNREACHABLE: u8 = 0x04;
const REP_REFUSED: u8 = 0x05;
const REP_CMD_UNSUPPORTED: u8 = 0x07;
const REP_ATYP_UNSUPPORTED: u8 = 0x08;

/// What a client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Connect {
        host: String,
        port: u16,
    },
    /// A command other than CONNECT, or an unknown address type: the reply code.
    Unsupported(u8),
}

/// Parse a request (after the method negotiation): `VER CMD RSV ATYP ADDR PORT`.
/// Returns None on malformed input. Pure (reads from any reader).
pub fn read_request(r: &mut impl Read) -> Option<Parsed> {
    let mut h = [0u8; 4];
    r.read_exact(&mut h).ok()?;
    if h[0] != 5 {
        return None;
    }
    let host = match h[3] {
        1 => {
            let mut a = [0u8; 4];
            r.read_exact(&mut a).ok()?;
            Ipv4Addr::from(a).to_string()
        }
        3 => {
            let mut len = [0u8; 1];
            r.read_exact(&mut len).ok()?;
            let mut name = vec![0u8; len[0] as usize];
            r.read_exact(&mut name).ok()?;
            let name = String::from_utf8(name).ok()?;
            if !crate::plan::allowlist::valid_name(&crate::plan::allowlist::normalize_host(&name)) {
                return None;
            }
            name
        }
        4 => {
            let mut a = [0u8; 16];
            r.read_exact(&mut a).ok()?;
            format!("[{}]", Ipv6Addr::from(a))
        }
        _ => return Some(Parsed::Unsupported(REP_ATYP_UNSUPPORTED)),
    };
    let mut p = [0u8; 2];
    r.read_exact(&mut p).ok()?;
    let port = u16::from_be_bytes(p);
    if h[1] != 1 {
        return Some(Parsed::Unsupported(REP_CMD_UNSUPPORTED));
    }
    if port == 0 {
        return None;
    }
    Some(Parsed::Connect { host, port })
}

fn reply(conn: &mut TcpStream, code: u8) -> std::io::Result<()> {
    conn.write_all(&[5, code, 0, 1, 0, 0, 0, 0, 0, 0])
}

pub fn serve(shared: &Shared, mut conn: TcpStream) {
    let hs = HANDSHAKE_TIMEOUT.min(shared.plan.idle_timeout);
    let _ = conn.set_read_timeout(Some(hs));
    let _ = conn.set_write_timeout(Some(hs));
    // Method negotiation: VER NMETHODS METHODS...
    let mut h = [0u8; 2];
    if conn.read_exact(&mut h).is_err() || h[0] != 5 {
        return;
    }
    let mut methods = vec![0u8; h[1] as usize];
    if conn.read_exact(&mut methods).is_err() {
        return;
    }
    if !methods.contains(&0) {
        let _ = conn.write_all(&[5, 0xff]);
        return;
    }
    if conn.write_all(&[5, 0]).is_err() {
        return;
    }
    let (host, port) = match read_request(&mut conn) {
        Some(Parsed::Connect { host, port }) => (host, port),
        Some(Parsed::Unsupported(code)) => {
            let _ = reply(&mut conn, code);
            return;
        }
        None => {
            let _ = reply(&mut conn, REP_FAILURE);
            return;
        }
    };
    let started = Instant::now();
    let opened = match gate::open(shared, &host, port, "socks") {
        Ok(o) => o,
        Err(r) => {
            let code = match r {
                Refusal::Denied(_) | Refusal::TimedOut(_) => REP_NOT_ALLOWED,
                Refusal::Unresolvable(_) => REP_HOST_UNREACHABLE,
                Refusal::Unreachable(_) => REP_REFUSED,
            };
            let _ = reply(&mut conn, code);
            return;
        }
    };
    if reply(&mut conn, REP_OK).is_err() {
        gate::record_done(shared, "socks", &host, port, &opened, 0, 0, started);
        return;
    }
    gate::relay_and_record(shared, "socks", &host, port, &conn, &opened, 0, started);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests() {
        let mut r: &[u8] = &[
            5, 1, 0, 3, 11, b'e', b'x', b'a', b'm', b'p', b'l', b'e', b'.', b'c', b'o', b'm', 1,
            187,
        ];
        assert_eq!(
            read_request(&mut r),
            Some(Parsed::Connect {
                host: "example.com".into(),
                port: 443
            })
        );
        let mut r: &[u8] = &[5, 1, 0, 1, 127, 0, 0, 1, 0, 80];
        assert_eq!(
            read_request(&mut r),
            Some(Parsed::Connect {
                host: "127.0.0.1".into(),
                port: 80
            })
        );
        let mut r: &[u8] = &[5, 2, 0, 1, 127, 0, 0, 1, 0, 80];
        assert_eq!(
            read_request(&mut r),
            Some(Parsed::Unsupported(REP_CMD_UNSUPPORTED))
        );
        let mut r: &[u8] = &[5, 1, 0, 9];
        assert_eq!(
            read_request(&mut r),
            Some(Parsed::Unsupported(REP_ATYP_UNSUPPORTED))
        );
        let mut r: &[u8] = &[5, 1, 0, 3, 3, b'a', b' ', b'b', 0, 80];
        assert_eq!(read_request(&mut r), None);
        let mut r: &[u8] = &[4, 1];
        assert_eq!(read_request(&mut r), None);
    }
}
