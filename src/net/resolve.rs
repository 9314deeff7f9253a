//! The supervisor's own name resolution (the cell has no DNS at all).

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, ToSocketAddrs};

use crate::plan::allowlist::{host_as_addr, normalize_host};

/// Addresses for `host`: an address literal as is, a fixed answer from the plan
/// (`[network] resolve`, `--resolve`), else getaddrinfo (/etc/hosts and DNS only: see
/// `crate::names`).
pub fn lookup(host: &str, port: u16, fixed: &BTreeMap<String, IpAddr>) -> io::Result<Vec<IpAddr>> {
    if let Some(a) = host_as_addr(host) {
        return Ok(vec![a]);
    }
    let name = normalize_host(host);
    if let Some(a) = fixed.get(&name) {
        return Ok(vec![*a]);
    }
    let mut out: Vec<IpAddr> = Vec::new();
    for sa in (name.as_str(), port).to_socket_addrs()? {
        let ip = crate::plan::allowlist::canonical(sa.ip());
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    if out.is_empty() {
        return Err(io::Error::new(io::ErrorKind::NotFound, "no address"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_fixed_answers() {
        let mut fixed = BTreeMap::new();
        fixed.insert("example.test".to_string(), "127.0.0.1".parse().unwrap());
        assert_eq!(
            lookup("Example.Test.", 80, &fixed).unwrap(),
            vec!["127.0.0.1".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            lookup("[::1]", 80, &fixed).unwrap(),
            vec!["::1".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            lookup("10.0.0.1", 80, &fixed).unwrap(),
            vec!["10.0.0.1".parse::<IpAddr>().unwrap()]
        );
    }
}
