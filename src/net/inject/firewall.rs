//! The secret firewall and the host binding of intercepted requests. Pure: bytes in,
//! bytes out.
//!
//! Every request to an intercepted host (a host a secret is injected for, or one of
//! `[network] intercept`) is searched for the value of every declared secret and its
//! encodings (the masker's patterns, [`crate::secrets::redact`]), except the secrets
//! injected for that very host: a hit is replaced by `[secret NAME removed]` (and the
//! body's length fixed up by the caller) or refuses the request, as the plan says.
//!
//! [`authority_matches`] and [`sni_matches`] keep an injected value on the host (and
//! port) of the `CONNECT`: a request whose `Host`, `:authority` or absolute-form target
//! names another host, or a TLS handshake whose server name does, is refused.

use std::sync::Arc;

use crate::secrets::redact::Redactor;

/// Largest request body the firewall holds in memory to fix up its `Content-Length`;
/// longer bodies are streamed (HTTP/1.1: re-framed as chunked) or refused (HTTP/2).
pub const MAX_BUFFERED: u64 = 16 << 20;

/// What a matched secret becomes.
pub fn replacement(name: &str) -> String {
    format!("[secret {name} removed]")
}

/// One secret found on its way out (name and count, never the value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub secret: String,
    pub place: String,
    pub count: u64,
}

/// The firewall for one destination: the patterns and the action.
#[derive(Clone)]
pub struct Wall {
    pub r: Arc<Redactor>,
    /// Refuse the request instead of redacting.
    pub block: bool,
}

impl std::fmt::Debug for Wall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wall")
            .field("secrets", &self.r.names())
            .field("block", &self.block)
            .finish()
    }
}

/// Redact `data` (complete) into `out`; the secrets found, per name.
pub fn clean(r: &Redactor, data: &[u8], place: &str, out: &mut Vec<u8>) -> Vec<Found> {
    let mut m = r.stream();
    m.push(data, out);
    m.flush(out);
    found(&m.counts(), place)
}

/// The non-zero counts of a masker as [`Found`]s.
pub fn found(counts: &[(String, u64)], place: &str) -> Vec<Found> {
    counts
        .iter()
        .filter(|(_, c)| *c > 0)
        .map(|(n, c)| Found {
            secret: n.clone(),
            place: place.to_string(),
            count: *c,
        })
        .collect()
}

/// Redact a request head (HTTP/1.1 text, through its blank line), line by line. In
/// the request line the replacement is percent-encoded (it holds spaces and brackets).
pub fn clean_head(r: &Redactor, head: &[u8], hits: &mut Vec<Found>) -> Vec<u8> {
    let mut out = Vec::with_capacity(head.len() + 64);
    for (i, line) in head.split_inclusive(|b| *b == b'\n').enumerate() {
        if i == 0 {
            let mut l = Vec::with_capacity(line.len());
            let f = clean(r, line, "request line", &mut l);
            if f.is_empty() {
                out.extend_from_slice(line);
                continue;
            }
            hits.extend(f);
            // METHOD SP TARGET SP VERSION: encode inside the target only.
            let first = l.iter().position(|b| *b == b' ').unwrap_or(0);
            let last = l.iter().rposition(|b| *b == b' ').unwrap_or(l.len());
            out.extend_from_slice(&l[..=first.min(l.len().saturating_sub(1))]);
            for &b in l.get(first + 1..last).unwrap_or(&[]) {
                match b {
                    b' ' => out.extend_from_slice(b"%20"),
                    b'[' => out.extend_from_slice(b"%5B"),
                    b']' => out.extend_from_slice(b"%5D"),
                    _ => out.push(b),
                }
            }
            out.extend_from_slice(l.get(last..).unwrap_or(&[]));
            continue;
        }
        let name = line.split(|b| *b == b':').next().unwrap_or(b"");
        let place = format!(
            "header {}",
            String::from_utf8_lossy(name).trim().to_ascii_lowercase()
        );
        hits.extend(clean(r, line, &place, &mut out));
    }
    out
}

/// `host` and optional port of an authority (`host`, `host:port`, `[v6]:port`);
/// userinfo is not allowed.
fn split_authority(a: &str) -> Option<(String, Option<u16>)> {
    if a.contains('@') {
        return None;
    }
    let (h, p) = if let Some(rest) = a.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        (h, after.strip_prefix(':'))
    } else {
        match a.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (a, None),
        }
    };
    let port = match p {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    Some((h.trim_end_matches('.').to_ascii_lowercase(), port))
}

/// Is `authority` (a `Host` value, an `:authority`, or the authority of an
/// absolute-form target) the CONNECT destination `host`:`port`? A port, when given,
/// must be the CONNECT port.
pub fn authority_matches(authority: &[u8], host: &str, port: u16) -> bool {
    let Ok(a) = std::str::from_utf8(authority) else {
        return false;
    };
    let want = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    match split_authority(a.trim()) {
        Some((h, p)) => h == want && p.is_none_or(|p| p == port),
        None => false,
    }
}

/// The authority of an absolute-form request target (`https://host:port/path`), if
/// the target is one.
pub fn absolute_authority(target: &str) -> Option<&str> {
    let lower = target.get(..8)?.to_ascii_lowercase();
    let rest = if lower.starts_with("https://") {
        &target[8..]
    } else if lower.starts_with("http://") {
        &target[7..]
    } else {
        return None;
    };
    Some(rest.split(['/', '?', '#']).next().unwrap_or(""))
}

/// Is the TLS server name the cell sent (`sni`) the CONNECT host? A host given as an
/// address has none (clients send no SNI for addresses).
pub fn sni_matches(sni: Option<&str>, host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<std::net::IpAddr>().is_ok() {
        return sni.is_none_or(|s| s == bare);
    }
    sni.is_some_and(|s| {
        s.trim_end_matches('.')
            .eq_ignore_ascii_case(bare.trim_end_matches('.'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wall() -> Redactor {
        let v: Vec<(String, &[u8])> = vec![
            ("DB_PASSWORD".into(), b"hunter2-Correct-Horse"),
            ("API_KEY".into(), b"sk-live-0123456789abcdef"),
        ];
        Redactor::new(&v).unwrap().with_replacement(replacement)
    }

    #[test]
    fn redacts_head_and_body_with_names() {
        let r = wall();
        let mut hits = Vec::new();
        let head = b"POST /v1?k=sk-live-0123456789abcdef HTTP/1.1\r\nX-Pw: hunter2-Correct-Horse\r\nHost: a\r\n\r\n";
        let out = clean_head(&r, head, &mut hits);
        let out = String::from_utf8(out).unwrap();
        assert_eq!(
            out,
            "POST /v1?k=%5Bsecret%20API_KEY%20removed%5D HTTP/1.1\r\nX-Pw: [secret DB_PASSWORD removed]\r\nHost: a\r\n\r\n"
        );
        assert_eq!(hits.len(), 2);
        assert_eq!(hits[0].place, "request line");
        assert_eq!(hits[1].place, "header x-pw");
        let mut body = Vec::new();
        let f = clean(
            &r,
            br#"{"content":"DB_PASSWORD=hunter2-Correct-Horse\n"}"#,
            "body",
            &mut body,
        );
        assert_eq!(
            String::from_utf8(body).unwrap(),
            r#"{"content":"DB_PASSWORD=[secret DB_PASSWORD removed]\n"}"#
        );
        assert_eq!(f[0].secret, "DB_PASSWORD");
        let d = format!(
            "{:?}",
            Wall {
                r: Arc::new(r),
                block: false
            }
        );
        assert!(!d.contains("hunter2"), "{d}");
    }

    #[test]
    fn authorities() {
        assert!(authority_matches(b"api.test", "api.test", 443));
        assert!(authority_matches(b"API.test.:8443", "api.test", 8443));
        assert!(!authority_matches(b"api.test:443", "api.test", 8443));
        assert!(!authority_matches(b"evil.test", "api.test", 443));
        assert!(!authority_matches(b"api.test@evil.test", "api.test", 443));
        assert!(!authority_matches(b"api.test.evil.test", "api.test", 443));
        assert!(authority_matches(b"[::1]:443", "[::1]", 443));
        assert_eq!(
            absolute_authority("https://evil.test:1/x?y"),
            Some("evil.test:1")
        );
        assert_eq!(absolute_authority("/x"), None);
        assert!(sni_matches(Some("API.test"), "api.test"));
        assert!(!sni_matches(Some("evil.test"), "api.test"));
        assert!(!sni_matches(None, "api.test"));
        assert!(sni_matches(None, "127.0.0.1"));
    }
}
