//! The HTTP proxy's request parser (httparse) and the responses it sends. Pure.

/// Largest request head (request line + headers) accepted.
pub const MAX_HEAD: usize = 16 * 1024;
/// Most headers accepted.
pub const MAX_HEADERS: usize = 64;

/// What the client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `CONNECT host:port`: a tunnel.
    Connect { host: String, port: u16 },
    /// `GET http://host[:port]/path`: one plain HTTP request.
    Absolute {
        host: String,
        port: u16,
        /// Origin-form path and query (`/x?y`).
        path: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub target: Target,
    /// HTTP/1.x minor version.
    pub version: u8,
    pub headers: Vec<(String, Vec<u8>)>,
    /// Length of the head in the buffer; bytes after it belong to the body or tunnel.
    pub head_len: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// More bytes needed.
    Incomplete,
    /// 431: the head is larger than [`MAX_HEAD`].
    TooLarge,
    /// 431: more than [`MAX_HEADERS`] headers.
    TooManyHeaders,
    /// 400, with the reason.
    Malformed(String),
}

impl ParseError {
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            ParseError::TooLarge | ParseError::TooManyHeaders => {
                (431, "Request Header Fields Too Large")
            }
            _ => (400, "Bad Request"),
        }
    }
}

fn split_host_port(s: &str, default_port: Option<u16>) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{s:?}: missing `]`"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(format!("{s:?}: junk after `]`")),
        };
        (format!("[{h}]"), port)
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (s.to_string(), None),
        }
    };
    let port = match port {
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("bad port in {s:?}")),
        },
        None => {
            default_port.ok_or_else(|| format!("{s:?} has no port (CONNECT needs host:port)"))?
        }
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let ok = !bare.is_empty()
        && bare.len() <= 253
        && bare
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':'));
    if !ok {
        return Err(format!("{host:?} is not a host name or address"));
    }
    Ok((host, port))
}

/// Parse a request head from the start of `buf`.
pub fn parse(buf: &[u8]) -> Result<Request, ParseError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let n = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() >= MAX_HEAD {
                return Err(ParseError::TooLarge);
            }
            return Err(ParseError::Incomplete);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(ParseError::TooManyHeaders),
        Err(e) => return Err(ParseError::Malformed(format!("malformed request: {e}"))),
    };
    if n > MAX_HEAD {
        return Err(ParseError::TooLarge);
    }
    let method = req.method.unwrap_or("").to_string();
    let uri = req.path.unwrap_or("");
    let version = req.version.unwrap_or(1);
    let target = if method == "CONNECT" {
        let (host, port) = split_host_port(uri, None).map_err(ParseError::Malformed)?;
        Target::Connect { host, port }
    } else {
        let Some(rest) = uri
            .strip_prefix("http://")
            .or_else(|| uri.strip_prefix("HTTP://"))
        else {
            return Err(ParseError::Malformed(if uri.starts_with("https://") {
                "an https:// URL must be tunnelled with CONNECT".into()
            } else {
                format!("{uri:?} is not an absolute http:// URL (this is a proxy: send absolute-form requests or CONNECT)")
            }));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err(ParseError::Malformed(
                "credentials in the URL are not forwarded".into(),
            ));
        }
        let (host, port) = split_host_port(authority, Some(80)).map_err(ParseError::Malformed)?;
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        };
        Target::Absolute { host, port, path }
    };
    let headers = req
        .headers
        .iter()
        .map(|h| (h.name.to_string(), h.value.to_vec()))
        .collect();
    Ok(Request {
        method,
        target,
        version,
        headers,
        head_len: n,
    })
}

/// The head sent to the origin for an absolute-form request: origin-form request line,
/// the client's headers without hop-by-hop and `Proxy-*` ones, `Connection: close`.
pub fn origin_head(req: &Request) -> Vec<u8> {
    let Target::Absolute { host, port, path } = &req.target else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(format!("{} {} HTTP/1.{}\r\n", req.method, path, req.version).as_bytes());
    let mut has_host = false;
    for (name, value) in &req.headers {
        let lower = name.to_ascii_lowercase();
        if lower.starts_with("proxy-")
            || matches!(
                lower.as_str(),
                "connection" | "keep-alive" | "te" | "trailer" | "upgrade"
            )
        {
            continue;
        }
        has_host |= lower == "host";
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if !has_host {
        let h = if *port == 80 {
            host.clone()
        } else {
            format!("{host}:{port}")
        };
        out.extend_from_slice(format!("Host: {h}\r\n").as_bytes());
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out
}

/// A complete response with a plain-text body, closing the connection.
pub fn response(code: u16, reason: &str, body: &str) -> Vec<u8> {
    let body = format!("taskcell: {body}\n");
    format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\nX-Taskcell: refused\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect() {
        let r = parse(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\nrest")
            .unwrap();
        assert_eq!(
            r.target,
            Target::Connect {
                host: "example.com".into(),
                port: 443
            }
        );
        assert_eq!(r.head_len, 59);
        let r = parse(b"CONNECT [::1]:22 HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(
            r.target,
            Target::Connect {
                host: "[::1]".into(),
                port: 22
            }
        );
    }

    #[test]
    fn absolute() {
        let r = parse(b"GET http://example.test:8080/a/b?c=d HTTP/1.1\r\nHost: example.test:8080\r\nProxy-Connection: keep-alive\r\nAccept: */*\r\n\r\n").unwrap();
        assert_eq!(
            r.target,
            Target::Absolute {
                host: "example.test".into(),
                port: 8080,
                path: "/a/b?c=d".into()
            }
        );
        let head = String::from_utf8(origin_head(&r)).unwrap();
        assert!(head.starts_with("GET /a/b?c=d HTTP/1.1\r\n"), "{head}");
        assert!(!head.to_lowercase().contains("proxy-connection"));
        assert!(head.ends_with("Connection: close\r\n\r\n"));
        let r = parse(b"GET http://example.test HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(
            r.target,
            Target::Absolute {
                host: "example.test".into(),
                port: 80,
                path: "/".into()
            }
        );
        assert!(String::from_utf8(origin_head(&r))
            .unwrap()
            .contains("Host: example.test\r\n"));
    }

    #[test]
    fn refusals() {
        assert_eq!(parse(b"GET / HTT"), Err(ParseError::Incomplete));
        for bad in [
            &b"GET /relative HTTP/1.1\r\n\r\n"[..],
            b"GET https://x/ HTTP/1.1\r\n\r\n",
            b"CONNECT example.com HTTP/1.1\r\n\r\n",
            b"CONNECT example.com:0 HTTP/1.1\r\n\r\n",
            b"CONNECT exa mple.com:1 HTTP/1.1\r\n\r\n",
            b"GET http://u:p@x/ HTTP/1.1\r\n\r\n",
            b"\x00\x01\x02\r\n\r\n",
            b"GET http://x/ HTTP/1.1\r\nBad Header\r\n\r\n",
        ] {
            assert!(
                matches!(parse(bad), Err(ParseError::Malformed(_))),
                "{:?} -> {:?}",
                String::from_utf8_lossy(bad),
                parse(bad)
            );
        }
        let mut many = b"GET http://x/ HTTP/1.1\r\n".to_vec();
        for i in 0..100 {
            many.extend_from_slice(format!("H{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse(&many), Err(ParseError::TooManyHeaders));
        let mut big = b"GET http://x/ HTTP/1.1\r\nA: ".to_vec();
        big.resize(MAX_HEAD + 10, b'a');
        assert_eq!(parse(&big), Err(ParseError::TooLarge));
    }
}
