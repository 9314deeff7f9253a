//! The host allowlist: rule syntax, matching, and the address classes that need a rule
//! naming them. Pure: no I/O, no DNS (the resolver's answers are an input).
//!
//! Syntax of one entry (in `allow`, `deny` or `--allow`):
//! - `host` — exactly that name, ports 80 and 443;
//! - `*.domain` — any name below `domain` (not `domain` itself), ports 80 and 443;
//! - `host:PORT`, `*.domain:PORT`, `host:*` — one port, or any port;
//! - `1.2.3.4`, `1.2.3.4:PORT`, `[::1]:PORT`, `::1` — one address;
//! - `10.0.0.0/8`, `10.0.0.0/8:PORT`, `[fd00::/8]:PORT` — an address range.
//!
//! A `deny` entry wins over every `allow` entry. A name rule allows a name, but the
//! addresses it resolves to must not be loopback, private, link-local (cloud metadata),
//! CGNAT, multicast, unspecified or otherwise reserved unless an address rule names them.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

/// What a rule's host part matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "lowercase")]
pub enum HostMatch {
    /// Exactly this name (lowercase, no trailing dot).
    Name(String),
    /// Any name ending in `.SUFFIX` (the suffix itself does not match).
    Suffix(String),
    /// An address range (a single address is a /32 or /128).
    Net { addr: IpAddr, prefix: u8 },
}

/// Which ports a rule allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Ports {
    /// No port written: 80 and 443.
    Web,
    One(u16),
    Any,
}

impl Ports {
    pub fn contains(&self, port: u16) -> bool {
        match self {
            Ports::Web => port == 80 || port == 443,
            Ports::One(p) => *p == port,
            Ports::Any => true,
        }
    }
}

/// One allow/deny entry, with the place it was declared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// As written.
    pub text: String,
    /// Where it was declared ("profile build.toml line 12", "command line", "approved by ...").
    pub origin: String,
    pub host: HostMatch,
    pub ports: Ports,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` ({})", self.text, self.origin)
    }
}

/// Normalise a host name: lowercase, no trailing dot.
pub fn normalize_host(h: &str) -> String {
    h.trim_end_matches('.').to_ascii_lowercase()
}

/// A syntactically valid DNS name (letters, digits, '-', '_', '.'; labels 1..=63; ≤ 253).
pub fn valid_name(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn parse_port(s: &str) -> Result<Ports, String> {
    if s == "*" {
        return Ok(Ports::Any);
    }
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(Ports::One(p)),
        _ => Err(format!(
            "bad port {s:?} (a number 1-65535, or * for any port)"
        )),
    }
}

fn parse_net(s: &str) -> Option<Result<HostMatch, String>> {
    let (a, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr: IpAddr = a.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match len {
        None => max,
        Some(l) => match l.parse::<u8>() {
            Ok(p) if p <= max => p,
            _ => return Some(Err(format!("bad prefix length {l:?} (0-{max})"))),
        },
    };
    Some(Ok(HostMatch::Net {
        addr: mask(addr, prefix),
        prefix,
    }))
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - prefix)
            };
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - prefix)
            };
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    }
}

impl Rule {
    /// Parse one entry. `origin` says where it was declared (for messages).
    pub fn parse(text: &str, origin: &str) -> Result<Rule, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("empty host entry".into());
        }
        // Bracketed IPv6 (optionally with a prefix): [::1], [::1]:443, [fd00::/8]:*.
        let (host_part, ports) = if let Some(rest) = t.strip_prefix('[') {
            let Some((inside, after)) = rest.split_once(']') else {
                return Err(format!("{t:?}: missing `]`"));
            };
            let ports = match after {
                "" => Ports::Web,
                _ => match after.strip_prefix(':') {
                    Some(p) => parse_port(p)?,
                    None => return Err(format!("{t:?}: expected `:PORT` after `]`")),
                },
            };
            (inside.to_string(), ports)
        } else if t.matches(':').count() >= 2 {
            // A bare IPv6 address or range: no port possible.
            (t.to_string(), Ports::Web)
        } else {
            match t.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), parse_port(p)?),
                None => (t.to_string(), Ports::Web),
            }
        };
        let host = if let Some(net) = parse_net(&host_part) {
            net?
        } else if let Some(suffix) = host_part.strip_prefix("*.") {
            let s = normalize_host(suffix);
            if !valid_name(&s) {
                return Err(format!("{t:?}: `{suffix}` is not a host name"));
            }
            HostMatch::Suffix(s)
        } else {
            let s = normalize_host(&host_part);
            if !valid_name(&s) {
                return Err(format!(
                    "{t:?} is not a host, *.domain, IP address or CIDR range (optionally with :PORT or :*)"
                ));
            }
            HostMatch::Name(s)
        };
        Ok(Rule {
            text: t.to_string(),
            origin: origin.to_string(),
            host,
            ports,
        })
    }

    /// A deny entry without a port denies every port.
    fn for_deny(&self) -> Rule {
        let mut r = self.clone();
        if r.ports == Ports::Web {
            r.ports = Ports::Any;
        }
        r
    }

    /// Does this rule match the requested name (a name rule) and port?
    pub fn matches_name(&self, name: &str, port: u16) -> bool {
        self.ports.contains(port)
            && match &self.host {
                HostMatch::Name(n) => n == name,
                HostMatch::Suffix(s) => {
                    name.len() > s.len() + 1
                        && name.ends_with(s.as_str())
                        && name.as_bytes()[name.len() - s.len() - 1] == b'.'
                }
                HostMatch::Net { .. } => false,
            }
    }

    /// Does this rule name this address (an address rule) and port?
    pub fn matches_addr(&self, addr: IpAddr, port: u16) -> bool {
        self.ports.contains(port)
            && match &self.host {
                HostMatch::Net { addr: net, prefix } => {
                    let addr = canonical(addr);
                    net.is_ipv4() == addr.is_ipv4() && mask(addr, *prefix) == *net
                }
                _ => false,
            }
    }
}

/// IPv4-mapped IPv6 addresses are treated as the IPv4 address they carry.
pub fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => addr,
        },
        v4 => v4,
    }
}

/// Why an address needs an explicit rule, or None for an ordinary public address.
pub fn special_class(addr: IpAddr) -> Option<&'static str> {
    match canonical(addr) {
        IpAddr::V4(a) => {
            let o = a.octets();
            if a.is_unspecified() || o[0] == 0 {
                Some("unspecified (0.0.0.0/8)")
            } else if a.is_loopback() {
                Some("loopback")
            } else if o == [169, 254, 169, 254] {
                Some("the cloud metadata address")
            } else if a.is_link_local() {
                Some("link-local")
            } else if a.is_private() {
                Some("private")
            } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
                Some("CGNAT (100.64.0.0/10)")
            } else if a.is_multicast() {
                Some("multicast")
            } else if a.is_broadcast() || o[0] >= 240 {
                Some("reserved (240.0.0.0/4)")
            } else if o[0] == 192 && o[1] == 0 && o[2] == 0 {
                Some("IETF protocol assignments (192.0.0.0/24)")
            } else if (o[0] == 198 && (o[1] & 0xfe) == 18)
                || (o[0] == 192 && o[1] == 0 && o[2] == 2)
                || (o[0] == 198 && o[1] == 51 && o[2] == 100)
                || (o[0] == 203 && o[1] == 0 && o[2] == 113)
            {
                Some("reserved for benchmarking or documentation")
            } else {
                None
            }
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            if a.is_unspecified() {
                Some("unspecified (::)")
            } else if a.is_loopback() {
                Some("loopback")
            } else if (s[0] & 0xffc0) == 0xfe80 {
                Some("link-local")
            } else if (s[0] & 0xfe00) == 0xfc00 {
                Some("private (unique local fc00::/7)")
            } else if (s[0] & 0xff00) == 0xff00 {
                Some("multicast")
            } else if s[0] == 0xfd00 && s[1..7] == [0, 0, 0, 0, 0, 0] && s[7] == 0x0254 {
                Some("the cloud metadata address")
            } else if s[0] == 0x64 && s[1] == 0xff9b {
                Some("NAT64 (64:ff9b::/96)")
            } else if s[0] == 0x2001 && s[1] == 0x0db8 {
                Some("documentation (2001:db8::/32)")
            } else if s[0] == 0 && s[1..6] == [0, 0, 0, 0, 0] {
                Some("reserved (::/80)")
            } else {
                None
            }
        }
    }
}

/// The allow/deny lists of one cell, plus what was approved while it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Allowlist {
    pub allow: Vec<Rule>,
    pub deny: Vec<Rule>,
}

/// The answer for a name (before resolving) or an address literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostVerdict {
    /// Allowed by this rule; the resolved addresses must still pass [`Allowlist::check_addr`].
    Allowed(Rule),
    /// Refused; the message says which rule and how to allow it.
    Denied(String),
    /// No rule mentions it.
    Unlisted,
}

/// Is `host` an address literal (v4, v6, or [v6])?
pub fn host_as_addr(host: &str) -> Option<IpAddr> {
    let h = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    h.parse::<IpAddr>().ok().map(canonical)
}

impl Allowlist {
    /// Check a requested host (a name or an address literal) and port.
    pub fn check_host(&self, host: &str, port: u16) -> HostVerdict {
        let addr = host_as_addr(host);
        let name = normalize_host(host);
        let hit = |r: &&Rule| match addr {
            Some(a) => r.matches_addr(a, port),
            None => r.matches_name(&name, port),
        };
        if let Some(r) = self.deny.iter().find(|r| {
            let any = r.for_deny();
            match addr {
                Some(a) => any.matches_addr(a, port),
                None => any.matches_name(&name, port),
            }
        }) {
            return HostVerdict::Denied(format!(
                "{host}:{port} is refused by the deny rule {r} (a deny rule wins over every allow rule; remove it to allow this host)"
            ));
        }
        match self.allow.iter().find(hit) {
            Some(r) => HostVerdict::Allowed(r.clone()),
            None => HostVerdict::Unlisted,
        }
    }

    /// Check one address a name resolved to (or an address literal). Ok(Some(rule)) when
    /// an address rule names it, Ok(None) for an ordinary public address, Err(message)
    /// when it is refused.
    pub fn check_addr(&self, host: &str, addr: IpAddr, port: u16) -> Result<Option<Rule>, String> {
        let addr = canonical(addr);
        if let Some(r) = self
            .deny
            .iter()
            .find(|r| r.for_deny().matches_addr(addr, port))
        {
            return Err(format!(
                "{host}:{port} resolves to {addr}, which the deny rule {r} refuses"
            ));
        }
        let named = self.allow.iter().find(|r| r.matches_addr(addr, port));
        if let Some(r) = named {
            return Ok(Some(r.clone()));
        }
        match special_class(addr) {
            Some(class) => Err(format!(
                "{host}:{port} resolves to {addr}, a {class} address, which no rule names (to allow it, add `{}` to [network] allow)",
                addr_rule_text(addr, port)
            )),
            None => Ok(None),
        }
    }
}

/// How to write an allow rule for one address and port.
pub fn addr_rule_text(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(allow: &[&str], deny: &[&str]) -> Allowlist {
        Allowlist {
            allow: allow
                .iter()
                .map(|t| Rule::parse(t, "test").unwrap())
                .collect(),
            deny: deny
                .iter()
                .map(|t| Rule::parse(t, "test").unwrap())
                .collect(),
        }
    }

    #[test]
    fn parse_forms() {
        let r = Rule::parse("Example.COM.", "t").unwrap();
        assert_eq!(r.host, HostMatch::Name("example.com".into()));
        assert_eq!(r.ports, Ports::Web);
        let r = Rule::parse("*.example.com:8443", "t").unwrap();
        assert_eq!(r.host, HostMatch::Suffix("example.com".into()));
        assert_eq!(r.ports, Ports::One(8443));
        let r = Rule::parse("host:*", "t").unwrap();
        assert_eq!(r.ports, Ports::Any);
        let r = Rule::parse("10.1.2.3/8:5432", "t").unwrap();
        assert_eq!(
            r.host,
            HostMatch::Net {
                addr: "10.0.0.0".parse().unwrap(),
                prefix: 8
            }
        );
        let r = Rule::parse("[::1]:443", "t").unwrap();
        assert_eq!(r.ports, Ports::One(443));
        let r = Rule::parse("fd00::/8", "t").unwrap();
        assert!(matches!(r.host, HostMatch::Net { prefix: 8, .. }));
        for bad in [
            "",
            "a b",
            "host:0",
            "host:99999",
            "10.0.0.0/33",
            "[::1",
            "*.",
            "x..y",
        ] {
            assert!(Rule::parse(bad, "t").is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn default_ports_are_web_only() {
        let l = list(&["example.com"], &[]);
        assert!(matches!(
            l.check_host("example.com", 443),
            HostVerdict::Allowed(_)
        ));
        assert!(matches!(
            l.check_host("example.com", 80),
            HostVerdict::Allowed(_)
        ));
        assert_eq!(l.check_host("example.com", 22), HostVerdict::Unlisted);
    }

    #[test]
    fn wildcard_is_subdomains_only() {
        let l = list(&["*.example.com"], &[]);
        assert!(matches!(
            l.check_host("a.b.example.com", 443),
            HostVerdict::Allowed(_)
        ));
        assert_eq!(l.check_host("example.com", 443), HostVerdict::Unlisted);
        assert_eq!(l.check_host("badexample.com", 443), HostVerdict::Unlisted);
    }

    #[test]
    fn deny_wins() {
        let l = list(&["*.example.com:*"], &["evil.example.com"]);
        match l.check_host("evil.example.com", 8443) {
            HostVerdict::Denied(m) => assert!(m.contains("evil.example.com"), "{m}"),
            v => panic!("{v:?}"),
        }
        assert!(matches!(
            l.check_host("good.example.com", 443),
            HostVerdict::Allowed(_)
        ));
    }

    #[test]
    fn rebinding_to_loopback_is_refused_without_an_address_rule() {
        let l = list(&["example.test:8080"], &[]);
        assert!(matches!(
            l.check_host("example.test", 8080),
            HostVerdict::Allowed(_)
        ));
        let e = l
            .check_addr("example.test", "127.0.0.1".parse().unwrap(), 8080)
            .unwrap_err();
        assert!(
            e.contains("loopback") && e.contains("127.0.0.1:8080"),
            "{e}"
        );
        let l = list(&["example.test:8080", "127.0.0.1:8080"], &[]);
        assert!(l
            .check_addr("example.test", "127.0.0.1".parse().unwrap(), 8080)
            .unwrap()
            .is_some());
        // The address rule is for one port only.
        assert!(l
            .check_addr("example.test", "127.0.0.1".parse().unwrap(), 8081)
            .is_err());
    }

    #[test]
    fn special_addresses() {
        for a in [
            "127.0.0.1",
            "10.1.1.1",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.1.1",
            "100.64.0.1",
            "224.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "fd00:ec2::254",
        ] {
            assert!(
                special_class(a.parse().unwrap()).is_some(),
                "{a} should need a rule"
            );
        }
        for a in ["1.1.1.1", "8.8.4.4", "2606:4700::1111", "100.128.0.1"] {
            assert_eq!(special_class(a.parse().unwrap()), None, "{a}");
        }
    }

    #[test]
    fn address_literals_need_address_rules() {
        let l = list(&["10.0.0.0/8:5432"], &[]);
        assert!(matches!(
            l.check_host("10.2.3.4", 5432),
            HostVerdict::Allowed(_)
        ));
        assert_eq!(l.check_host("10.2.3.4", 5433), HostVerdict::Unlisted);
        assert_eq!(l.check_host("11.2.3.4", 5432), HostVerdict::Unlisted);
        // Mapped v6 is the v4 address.
        assert!(matches!(
            l.check_host("[::ffff:10.2.3.4]", 5432),
            HostVerdict::Allowed(_)
        ));
        // A name rule never matches an address literal.
        let l = list(&["127.0.0.1.example"], &[]);
        assert_eq!(l.check_host("127.0.0.1", 443), HostVerdict::Unlisted);
    }
}
