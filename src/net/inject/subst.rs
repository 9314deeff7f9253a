//! Substitution and leak detection for injected secrets. Pure: bytes in, bytes out.
//!
//! A [`Matcher`] knows, for one destination host, every injected secret's placeholder
//! and value: placeholders of secrets bound to the host are replaced by the value (in
//! the request line and headers; in the body only where the secret allows it), a
//! placeholder of any other secret is a leak (the request is blocked), and in responses
//! the values are turned back into placeholders. Placeholders and values have the same
//! length, so a body keeps its length and can be streamed ([`Stream`]).

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine;
use zeroize::Zeroizing;

use super::Secret;

/// What happens to a match.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Act {
    /// Replace by the secret's value (request to a bound host).
    Inject,
    /// Leave it (a placeholder to a bound host in a body that is not substituted).
    Keep,
    /// Refuse: a placeholder on its way to a host the secret is not bound to.
    Block,
    /// Replace a value by its placeholder (responses).
    Hide,
}

/// A placeholder (or value) found where it may not go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leak {
    pub secret: String,
    pub place: String,
}

/// One substitution made (for the audit: secret name and where).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub secret: String,
    pub place: String,
}

/// Patterns for one direction and part of a message.
pub struct Matcher {
    ac: Option<AhoCorasick>,
    /// Per pattern: secret index, action.
    acts: Vec<(usize, Act)>,
    /// Per pattern: the replacement (same length as the pattern).
    to: Vec<Zeroizing<Vec<u8>>>,
    names: Vec<String>,
    longest: usize,
}

impl std::fmt::Debug for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Matcher")
            .field("secrets", &self.names)
            .finish_non_exhaustive()
    }
}

/// Which part of a message a matcher is for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Part {
    RequestHead,
    RequestBody,
    Response,
}

impl Matcher {
    /// `bound[i]` says whether secret i is bound to the destination host; `body[i]`
    /// whether it may be substituted in bodies.
    pub fn new(secrets: &[Secret], bound: &[bool], part: Part) -> Matcher {
        let mut pats: Vec<&[u8]> = Vec::new();
        let mut acts = Vec::new();
        let mut to = Vec::new();
        for (i, s) in secrets.iter().enumerate() {
            match part {
                Part::Response => {
                    pats.push(&s.value);
                    acts.push((i, Act::Hide));
                    to.push(Zeroizing::new(s.placeholder.clone()));
                }
                Part::RequestHead | Part::RequestBody => {
                    let act = if !bound[i] {
                        Act::Block
                    } else if part == Part::RequestHead || s.body {
                        Act::Inject
                    } else {
                        Act::Keep
                    };
                    pats.push(&s.placeholder);
                    acts.push((i, act));
                    to.push(Zeroizing::new(if act == Act::Inject {
                        s.value.to_vec()
                    } else {
                        s.placeholder.clone()
                    }));
                }
            }
        }
        let longest = pats.iter().map(|p| p.len()).max().unwrap_or(0);
        let ac = if pats.is_empty() {
            None
        } else {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&pats)
                .ok()
        };
        Matcher {
            ac,
            acts,
            to,
            names: secrets.iter().map(|s| s.name.clone()).collect(),
            longest,
        }
    }

    /// Substitute in `input` (complete), appending to `out`; `place` names where (for
    /// hits and leaks).
    pub fn apply(
        &self,
        input: &[u8],
        place: &str,
        out: &mut Vec<u8>,
        hits: &mut Vec<Hit>,
    ) -> Result<(), Leak> {
        let Some(ac) = &self.ac else {
            out.extend_from_slice(input);
            return Ok(());
        };
        let mut last = 0;
        for m in ac.find_iter(input) {
            let (i, act) = self.acts[m.pattern().as_usize()];
            if act == Act::Block {
                return Err(Leak {
                    secret: self.names[i].clone(),
                    place: place.to_string(),
                });
            }
            out.extend_from_slice(&input[last..m.start()]);
            out.extend_from_slice(&self.to[m.pattern().as_usize()]);
            if act != Act::Keep {
                hits.push(Hit {
                    secret: self.names[i].clone(),
                    place: place.to_string(),
                });
            }
            last = m.end();
        }
        out.extend_from_slice(&input[last..]);
        Ok(())
    }
}

/// Streaming substitution over a body: matches that span reads are found because the
/// last `longest - 1` bytes are held back until more arrive (or [`Stream::finish`]).
pub struct Stream<M: std::ops::Deref<Target = Matcher>> {
    m: M,
    carry: Zeroizing<Vec<u8>>,
    place: &'static str,
}

impl<M: std::ops::Deref<Target = Matcher>> Stream<M> {
    pub fn new(m: M, place: &'static str) -> Stream<M> {
        Stream {
            m,
            carry: Zeroizing::new(Vec::new()),
            place,
        }
    }

    /// Substitute `input`; appends what is final to `out`.
    pub fn feed(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        hits: &mut Vec<Hit>,
    ) -> Result<(), Leak> {
        let Some(ac) = &self.m.ac else {
            out.extend_from_slice(input);
            return Ok(());
        };
        let mut buf = Zeroizing::new(std::mem::take(&mut *self.carry));
        buf.extend_from_slice(input);
        let mut last = 0;
        for m in ac.find_iter(&buf[..]) {
            let (i, act) = self.m.acts[m.pattern().as_usize()];
            if act == Act::Block {
                out.extend_from_slice(&buf[last..m.start()]);
                return Err(Leak {
                    secret: self.m.names[i].clone(),
                    place: self.place.to_string(),
                });
            }
            out.extend_from_slice(&buf[last..m.start()]);
            out.extend_from_slice(&self.m.to[m.pattern().as_usize()]);
            if act != Act::Keep {
                hits.push(Hit {
                    secret: self.m.names[i].clone(),
                    place: self.place.to_string(),
                });
            }
            last = m.end();
        }
        let safe = last.max(buf.len().saturating_sub(self.m.longest.saturating_sub(1)));
        out.extend_from_slice(&buf[last..safe]);
        self.carry.extend_from_slice(&buf[safe..]);
        Ok(())
    }

    /// Are bytes held back?
    pub fn holds(&self) -> bool {
        !self.carry.is_empty()
    }

    /// The bytes held back (no match can complete any more).
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.carry);
        self.carry.clear();
    }
}

/// Substitute in a request or response head: line by line, with `Authorization: Basic`
/// and `Proxy-Authorization: Basic` decoded, substituted and encoded again.
pub fn head(m: &Matcher, head: &[u8], hits: &mut Vec<Hit>) -> Result<Vec<u8>, Leak> {
    let mut out = Vec::with_capacity(head.len() + 64);
    let mut first = true;
    for line in head.split_inclusive(|b| *b == b'\n') {
        let place = if first {
            first = false;
            "request line".to_string()
        } else {
            let name = line.split(|b| *b == b':').next().unwrap_or(b"");
            format!(
                "header {}",
                String::from_utf8_lossy(name).trim().to_ascii_lowercase()
            )
        };
        if let Some(rewritten) = basic(m, line, &place, hits)? {
            out.extend_from_slice(&rewritten);
            continue;
        }
        m.apply(line, &place, &mut out, hits)?;
    }
    Ok(out)
}

/// An `Authorization: Basic B64` line, substituted inside the base64; None if the line
/// is not one (or the credentials do not decode).
fn basic(
    m: &Matcher,
    line: &[u8],
    place: &str,
    hits: &mut Vec<Hit>,
) -> Result<Option<Vec<u8>>, Leak> {
    let lower = line.to_ascii_lowercase();
    let name_end = match lower.iter().position(|b| *b == b':') {
        Some(i) => i,
        None => return Ok(None),
    };
    let name = lower[..name_end].trim_ascii();
    if name != b"authorization" && name != b"proxy-authorization" {
        return Ok(None);
    }
    let value = line[name_end + 1..].trim_ascii();
    let Some(b64) = value
        .strip_prefix(b"Basic ")
        .or_else(|| value.strip_prefix(b"basic "))
    else {
        return Ok(None);
    };
    let eng = base64::engine::general_purpose::STANDARD;
    let Ok(decoded) = eng.decode(b64.trim_ascii()).map(Zeroizing::new) else {
        return Ok(None);
    };
    let mut sub = Zeroizing::new(Vec::new());
    let before = hits.len();
    m.apply(&decoded, &format!("{place} (basic)"), &mut sub, hits)?;
    if hits.len() == before && sub[..] == decoded[..] {
        return Ok(None);
    }
    let mut out = line[..name_end + 1].to_vec();
    out.extend_from_slice(b" Basic ");
    out.extend_from_slice(eng.encode(&*sub).as_bytes());
    out.extend_from_slice(b"\r\n");
    Ok(Some(out))
}

/// Does `data` carry any placeholder (also inside `Basic` credentials)? For plain HTTP
/// requests, which never get a value.
pub fn find_placeholder(secrets: &[Secret], data: &[u8]) -> Option<Leak> {
    let none = vec![false; secrets.len()];
    let m = Matcher::new(secrets, &none, Part::RequestHead);
    let mut hits = Vec::new();
    head(&m, data, &mut hits).err()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> Vec<Secret> {
        vec![
            Secret::new(
                "GH",
                b"ghp_REALrealREAL0123456789".to_vec(),
                b"ghp_PLACplacPLAC9876543210".to_vec(),
                false,
            ),
            Secret::new(
                "OTHER",
                b"sk-VALUEvalue0123456789".to_vec(),
                b"sk-HOLDERhold9876543210".to_vec(),
                true,
            ),
        ]
    }

    #[test]
    fn head_injects_bound_and_blocks_unbound() {
        let s = secrets();
        let m = Matcher::new(&s, &[true, false], Part::RequestHead);
        let mut hits = Vec::new();
        let out = head(
            &m,
            b"GET /x?t=ghp_PLACplacPLAC9876543210 HTTP/1.1\r\nAuthorization: token ghp_PLACplacPLAC9876543210\r\n\r\n",
            &mut hits,
        )
        .unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(
            out,
            "GET /x?t=ghp_REALrealREAL0123456789 HTTP/1.1\r\nAuthorization: token ghp_REALrealREAL0123456789\r\n\r\n"
        );
        assert_eq!(hits.len(), 2);
        assert_eq!(hits[0].place, "request line");
        assert_eq!(hits[1].place, "header authorization");
        let e = head(
            &m,
            b"GET / HTTP/1.1\r\nX-Key: sk-HOLDERhold9876543210\r\n\r\n",
            &mut hits,
        )
        .unwrap_err();
        assert_eq!(e.secret, "OTHER");
        assert_eq!(e.place, "header x-key");
    }

    #[test]
    fn basic_auth_is_decoded() {
        let s = secrets();
        let eng = base64::engine::general_purpose::STANDARD;
        let cred = eng.encode(b"user:ghp_PLACplacPLAC9876543210");
        let req = format!("GET / HTTP/1.1\r\nAuthorization: Basic {cred}\r\n\r\n");
        let m = Matcher::new(&s, &[true, false], Part::RequestHead);
        let mut hits = Vec::new();
        let out = String::from_utf8(head(&m, req.as_bytes(), &mut hits).unwrap()).unwrap();
        let want = eng.encode(b"user:ghp_REALrealREAL0123456789");
        assert!(
            out.contains(&format!("Authorization: Basic {want}\r\n")),
            "{out}"
        );
        assert_eq!(hits[0].place, "header authorization (basic)");
        // To a host it is not bound to: blocked.
        let m = Matcher::new(&s, &[false, false], Part::RequestHead);
        assert!(head(&m, req.as_bytes(), &mut hits).is_err());
        assert!(find_placeholder(&s, req.as_bytes()).is_some());
        assert!(find_placeholder(&s, b"GET / HTTP/1.1\r\n\r\n").is_none());
    }

    #[test]
    fn streams_across_reads_and_respects_inject_body() {
        let s = secrets();
        // GH does not allow bodies: kept; OTHER bound and allows bodies: injected.
        let m = Matcher::new(&s, &[true, true], Part::RequestBody);
        let body = b"a=ghp_PLACplacPLAC9876543210&b=sk-HOLDERhold9876543210&c";
        for split in 1..body.len() {
            let mut st = Stream::new(&m, "body");
            let mut out = Vec::new();
            let mut hits = Vec::new();
            st.feed(&body[..split], &mut out, &mut hits).unwrap();
            st.feed(&body[split..], &mut out, &mut hits).unwrap();
            st.finish(&mut out);
            assert_eq!(
                out, b"a=ghp_PLACplacPLAC9876543210&b=sk-VALUEvalue0123456789&c",
                "split at {split}"
            );
            assert_eq!(hits.len(), 1);
        }
        // Unbound: blocked before the placeholder is emitted.
        let m = Matcher::new(&s, &[true, false], Part::RequestBody);
        let mut st = Stream::new(&m, "body");
        let mut out = Vec::new();
        let mut hits = Vec::new();
        st.feed(b"xx sk-HOLDERhold98", &mut out, &mut hits).unwrap();
        assert!(st.feed(b"76543210 yy", &mut out, &mut hits).is_err());
        assert!(!String::from_utf8_lossy(&out).contains("sk-HOLDER"));
    }

    #[test]
    fn responses_hide_values() {
        let s = secrets();
        let m = Matcher::new(&s, &[true, false], Part::Response);
        let mut st = Stream::new(&m, "response");
        let mut out = Vec::new();
        let mut hits = Vec::new();
        st.feed(b"echo: ghp_REALreal", &mut out, &mut hits).unwrap();
        st.feed(b"REAL0123456789!", &mut out, &mut hits).unwrap();
        st.finish(&mut out);
        assert_eq!(out, b"echo: ghp_PLACplacPLAC9876543210!");
    }
}
