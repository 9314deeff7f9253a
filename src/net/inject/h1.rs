//! One intercepted tunnel: TLS to the cell (leaf of the cell CA), TLS to the origin
//! (verified against the system roots + `upstream_ca`), and HTTP/1.1 requests relayed
//! one at a time with [`super::subst`] applied: request heads (and bodies where allowed)
//! get values for placeholders, a placeholder of a secret not bound to this host blocks
//! the request (403), responses get placeholders for values. Keep-alive is kept; an
//! `Upgrade` is not offered to the origin (no WebSocket through an injecting tunnel).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, ServerConnection, StreamOwned};

use super::firewall::{self, Found};
use super::h2::Accepted;
use super::record::{record_firewall, record_hits, record_leak, record_misdirected, report};
use super::subst::{self, Hit, Leak, Matcher, Part, Stream};
use super::Injector;
use crate::net::Shared;
use crate::secrets::redact::Masker;

/// Largest head (request or response) relayed.
const MAX_HEAD: usize = 64 * 1024;
/// Most headers parsed.
const MAX_HEADERS: usize = 128;

/// The client socket with bytes the proxy already read in front (a pipelined
/// ClientHello after the CONNECT head).
struct Prefixed {
    early: Vec<u8>,
    at: usize,
    s: TcpStream,
}

impl Read for Prefixed {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        if self.at < self.early.len() {
            let n = (self.early.len() - self.at).min(b.len());
            b[..n].copy_from_slice(&self.early[self.at..self.at + n]);
            self.at += n;
            return Ok(n);
        }
        self.s.read(b)
    }
}

impl Write for Prefixed {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.s.write(b)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.s.flush()
    }
}

/// A reader with a buffer, for heads, chunk lines and bodies.
struct Buffered<S> {
    s: S,
    buf: Vec<u8>,
    start: usize,
    eof: bool,
}

/// A TLS peer that closed without close_notify has still ended its side.
fn eof_ok(r: io::Result<usize>) -> io::Result<usize> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
        r => r,
    }
}

impl<S: Read + Write> Buffered<S> {
    fn new(s: S) -> Self {
        Buffered {
            s,
            buf: Vec::new(),
            start: 0,
            eof: false,
        }
    }
    fn avail(&self) -> &[u8] {
        &self.buf[self.start..]
    }
    fn fill(&mut self) -> io::Result<usize> {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = eof_ok(self.s.read(&mut chunk))?;
        if n == 0 {
            self.eof = true;
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }
    fn consume(&mut self, n: usize) {
        self.start += n;
    }
    /// A head through its blank line; None at a clean end before any byte.
    fn head(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(i) = find(self.avail(), b"\r\n\r\n") {
                let h = self.avail()[..i + 4].to_vec();
                self.consume(i + 4);
                return Ok(Some(h));
            }
            if self.avail().len() > MAX_HEAD {
                return Err(io::Error::other("head too large"));
            }
            if self.fill()? == 0 {
                if self.avail().is_empty() {
                    return Ok(None);
                }
                return Err(io::Error::other("connection ended inside a head"));
            }
        }
    }
    fn line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(i) = find(self.avail(), b"\r\n") {
                let l = self.avail()[..i].to_vec();
                self.consume(i + 2);
                return Ok(l);
            }
            if self.avail().len() > 4096 || self.fill()? == 0 {
                return Err(io::Error::other("bad chunk line"));
            }
        }
    }
    /// Up to `max` bytes (at least one unless at the end).
    fn some(&mut self, max: usize) -> io::Result<Vec<u8>> {
        if self.avail().is_empty() && self.fill()? == 0 {
            return Ok(Vec::new());
        }
        let n = self.avail().len().min(max);
        let v = self.avail()[..n].to_vec();
        self.consume(n);
        Ok(v)
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    Close,
}

fn header<'a>(headers: &'a [httparse::Header<'a>], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

fn has_token(v: Option<&[u8]>, token: &str) -> bool {
    v.is_some_and(|v| {
        String::from_utf8_lossy(v)
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    })
}

fn framing(headers: &[httparse::Header<'_>], otherwise: Framing) -> Result<Framing, String> {
    if let Some(te) = header(headers, "transfer-encoding") {
        if has_token(Some(te), "chunked") {
            return Ok(Framing::Chunked);
        }
        return Ok(Framing::Close);
    }
    match header(headers, "content-length") {
        Some(v) => std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Framing::Length)
            .ok_or_else(|| "bad Content-Length".to_string()),
        None => Ok(otherwise),
    }
}

enum BodyError {
    Io(io::Error),
    Leak(Leak),
    /// A declared secret on its way out, with the firewall set to block.
    Firewall(Vec<Found>),
}

impl From<io::Error> for BodyError {
    fn from(e: io::Error) -> Self {
        BodyError::Io(e)
    }
}

/// The secret firewall as a stage of a streamed body.
struct FwStage<'a> {
    m: Masker<'a>,
    block: bool,
    scratch: Vec<u8>,
}

impl FwStage<'_> {
    /// Redact `out` in place (bytes that could start a match are held back).
    fn pass(&mut self, out: &mut Vec<u8>, last: bool) -> Result<(), BodyError> {
        self.scratch.clear();
        self.m.push(out, &mut self.scratch);
        if last {
            self.m.flush(&mut self.scratch);
        }
        out.clear();
        if self.block {
            let f = firewall::found(&self.m.counts(), "body");
            if !f.is_empty() {
                return Err(BodyError::Firewall(f));
            }
        }
        out.extend_from_slice(&self.scratch);
        self.scratch.clear();
        Ok(())
    }
}

/// Copy one body with substitution (and the firewall, when given); returns the bytes
/// written. `out_chunked`: write it chunked (whatever the source's framing).
fn copy_body<A: Read + Write, B: Write>(
    src: &mut Buffered<A>,
    dst: &mut B,
    f: Framing,
    st: &mut Stream<&Matcher>,
    hits: &mut Vec<Hit>,
    mut fw: Option<&mut FwStage<'_>>,
    out_chunked: bool,
) -> Result<u64, BodyError> {
    let mut out = zeroize::Zeroizing::new(Vec::with_capacity(32 * 1024));
    let mut sent = 0u64;
    let mut emit = |dst: &mut B,
                    out: &mut Vec<u8>,
                    fw: &mut Option<&mut FwStage<'_>>,
                    last: bool|
     -> Result<(), BodyError> {
        if let Some(fw) = fw.as_mut() {
            fw.pass(out, last)?;
        }
        if !out.is_empty() {
            if out_chunked {
                dst.write_all(format!("{:x}\r\n", out.len()).as_bytes())?;
                dst.write_all(out)?;
                dst.write_all(b"\r\n")?;
            } else {
                dst.write_all(out)?;
            }
            sent += out.len() as u64;
            out.clear();
        }
        if last && out_chunked && f != Framing::None {
            dst.write_all(b"0\r\n\r\n")?;
        }
        Ok(())
    };
    match f {
        Framing::None => {}
        Framing::Length(mut left) => {
            while left > 0 {
                let piece = src.some(left.min(64 * 1024) as usize)?;
                if piece.is_empty() {
                    return Err(io::Error::other("body ended early").into());
                }
                left -= piece.len() as u64;
                st.feed(&piece, &mut out, hits).map_err(BodyError::Leak)?;
                emit(dst, &mut out, &mut fw, false)?;
            }
            st.finish(&mut out);
            emit(dst, &mut out, &mut fw, true)?;
        }
        Framing::Close => loop {
            let piece = src.some(64 * 1024)?;
            if piece.is_empty() {
                st.finish(&mut out);
                emit(dst, &mut out, &mut fw, true)?;
                break;
            }
            st.feed(&piece, &mut out, hits).map_err(BodyError::Leak)?;
            emit(dst, &mut out, &mut fw, false)?;
        },
        Framing::Chunked => loop {
            let line = src.line()?;
            let size = String::from_utf8_lossy(&line);
            let size = size.split(';').next().unwrap_or("").trim();
            let mut left =
                u64::from_str_radix(size, 16).map_err(|_| io::Error::other("bad chunk size"))?;
            if left == 0 {
                // Trailers (dropped), then the blank line.
                while !src.line()?.is_empty() {}
                st.finish(&mut out);
                emit(dst, &mut out, &mut fw, true)?;
                break;
            }
            while left > 0 {
                let piece = src.some(left.min(64 * 1024) as usize)?;
                if piece.is_empty() {
                    return Err(io::Error::other("chunk ended early").into());
                }
                left -= piece.len() as u64;
                st.feed(&piece, &mut out, hits).map_err(BodyError::Leak)?;
                emit(dst, &mut out, &mut fw, false)?;
            }
            if !src.line()?.is_empty() {
                return Err(io::Error::other("chunk without CRLF").into());
            }
        },
    }
    dst.flush()?;
    Ok(sent)
}

/// Read a whole `Content-Length` body (for the firewall, which fixes up the length).
fn read_body<A: Read + Write>(src: &mut Buffered<A>, mut left: u64) -> io::Result<Vec<u8>> {
    let mut v = Vec::with_capacity(left.min(firewall::MAX_BUFFERED) as usize);
    while left > 0 {
        let piece = src.some(left.min(64 * 1024) as usize)?;
        if piece.is_empty() {
            return Err(io::Error::other("body ended early"));
        }
        left -= piece.len() as u64;
        v.extend_from_slice(&piece);
    }
    Ok(v)
}

/// A head with its framing headers replaced: `Content-Length: n`, or chunked.
fn reframe(head: &[u8], length: Option<usize>) -> Vec<u8> {
    let mut out = Vec::with_capacity(head.len() + 32);
    let end = head.len().saturating_sub(2);
    for line in head[..end].split_inclusive(|b| *b == b'\n') {
        let l = line.to_ascii_lowercase();
        if l.starts_with(b"content-length:") || l.starts_with(b"transfer-encoding:") {
            continue;
        }
        out.extend_from_slice(line);
    }
    match length {
        Some(n) => out.extend_from_slice(format!("Content-Length: {n}\r\n").as_bytes()),
        None => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn respond<W: Write>(w: &mut W, code: u16, reason: &str, msg: &str) {
    let _ = w.write_all(&crate::net::http::response(code, reason, msg));
    let _ = w.flush();
}

/// The cell's side of an intercepted tunnel (we are its TLS server).
type CellSide = Buffered<StreamOwned<ServerConnection, Prefixed>>;
/// The origin's side (we are its TLS client).
type OriginSide = Buffered<StreamOwned<ClientConnection, TcpStream>>;

/// How a tunnel's TLS start ended.
enum Opened {
    /// HTTP/2: h2.rs served the whole tunnel (bytes up, bytes down).
    Done(u64, u64),
    /// Both TLS sessions are up, the server name checked.
    Tls(
        Box<StreamOwned<ServerConnection, Prefixed>>,
        Box<StreamOwned<ClientConnection, TcpStream>>,
    ),
    /// Said to the cell and reported; nothing was relayed.
    Failed,
}

/// How one request/response exchange ended.
enum Next {
    /// Keep the connection for the next request.
    Again,
    /// End the tunnel with close_notify on both sides.
    Close,
    /// End the tunnel at once.
    Done,
}

/// A request head the cell sent, checked and ready to be rewritten.
struct Request {
    method: String,
    /// The cell's connection ends after this exchange.
    close: bool,
    /// `Expect: 100-continue` (answered here).
    expect: bool,
    framing: Framing,
    /// The head without Expect and Upgrade.
    head: Vec<u8>,
}

/// What applies to every request of one intercepted tunnel.
struct Tunnel<'a> {
    shared: &'a Arc<Shared>,
    host: &'a str,
    port: u16,
    wall: Option<firewall::Wall>,
    req_head: Matcher,
    req_body: Matcher,
    resp: Matcher,
}

/// Serve one intercepted tunnel. Returns (bytes up, bytes down) of plaintext.
pub fn serve(
    shared: &Arc<Shared>,
    inj: &Arc<Injector>,
    client: TcpStream,
    upstream: TcpStream,
    host: &str,
    port: u16,
    early: Vec<u8>,
) -> (u64, u64) {
    let idle = Some(shared.plan.idle_timeout);
    let _ = client.set_read_timeout(idle);
    let _ = client.set_write_timeout(idle);
    let _ = upstream.set_read_timeout(idle);
    let _ = upstream.set_write_timeout(idle);
    let _ = upstream.set_nodelay(true);
    let (mut down, up) = match open(shared, inj, client, upstream, host, port, early) {
        Opened::Done(u, d) => return (u, d),
        Opened::Failed => return (0, 0),
        Opened::Tls(down, up) => (*down, *up),
    };
    let bound = inj.bound(host, port);
    let wall = match inj.wall(&bound) {
        Ok(w) => w,
        Err(e) => {
            // Fail closed: no request passes a firewall that could not be built.
            report(shared, host, port, "secret firewall", &e);
            respond(&mut down, 500, "Internal Server Error", &e.to_string());
            return (0, 0);
        }
    };
    let t = Tunnel {
        shared,
        host,
        port,
        wall,
        req_head: Matcher::new(inj.secrets(), &bound, Part::RequestHead),
        req_body: Matcher::new(inj.secrets(), &bound, Part::RequestBody),
        resp: Matcher::new(inj.secrets(), &bound, Part::Response),
    };
    let mut cell = Buffered::new(down);
    let mut origin = Buffered::new(up);
    let mut totals = (0u64, 0u64);
    loop {
        match t.exchange(&mut cell, &mut origin, &mut totals) {
            Next::Again => {}
            Next::Close => break,
            Next::Done => return totals,
        }
    }
    // Close both sides properly.
    cell.s.conn.send_close_notify();
    let _ = cell.s.flush();
    origin.s.conn.send_close_notify();
    let _ = origin.s.flush();
    totals
}

/// The TLS sessions of a tunnel: with the cell (after the HTTP/2 handshake attempt) and
/// with the origin (verified), the cell's server name checked against the CONNECT host.
fn open(
    shared: &Arc<Shared>,
    inj: &Arc<Injector>,
    client: TcpStream,
    upstream: TcpStream,
    host: &str,
    port: u16,
    early: Vec<u8>,
) -> Opened {
    let fail = |what: &str, e: &dyn std::fmt::Display| report(shared, host, port, what, e);
    // The handshake with the cell decides the protocol: HTTP/2 is served by h2.rs,
    // HTTP/1.1 comes back here. (Bytes pipelined after the CONNECT head are rare;
    // such a client gets HTTP/1.1 only.)
    let (handshaken, client, upstream) = if early.is_empty() {
        match super::h2::accept(shared, inj, client, upstream, host, port) {
            (Accepted::Done(u, d), _) => return Opened::Done(u, d),
            (Accepted::H1(conn, c), Some(up)) => (Some(conn), c, up),
            _ => return Opened::Failed,
        }
    } else {
        (None, client, upstream)
    };
    let sconn = match handshaken {
        Some(c) => *c,
        None => {
            let server_cfg = match inj.server_config(host, false) {
                Ok(c) => c,
                Err(e) => {
                    fail("certificate", &e);
                    return Opened::Failed;
                }
            };
            match ServerConnection::new(server_cfg) {
                Ok(c) => c,
                Err(e) => {
                    fail("TLS server", &e);
                    return Opened::Failed;
                }
            }
        }
    };
    let mut down = StreamOwned::new(
        sconn,
        Prefixed {
            early,
            at: 0,
            s: client,
        },
    );
    // The origin first: if it cannot be verified, the cell is told so in plain words.
    let name = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let up_result = ServerName::try_from(name)
        .map_err(|e| io::Error::other(e.to_string()))
        .and_then(|sn| {
            ClientConnection::new(inj.client_config(), sn)
                .map_err(|e| io::Error::other(e.to_string()))
        })
        .and_then(|c| {
            let mut s = StreamOwned::new(c, upstream);
            while s.conn.is_handshaking() {
                s.conn.complete_io(&mut s.sock)?;
            }
            Ok(s)
        });
    while down.conn.is_handshaking() {
        if let Err(e) = down.conn.complete_io(&mut down.sock) {
            fail("TLS handshake with the cell (does the client trust the cell CA? see SSL_CERT_FILE)", &e);
            return Opened::Failed;
        }
    }
    // The server name the cell asked for must be the CONNECT host: a client that
    // checks no certificate could otherwise talk to another virtual host through it.
    if !firewall::sni_matches(down.conn.server_name(), host) {
        let named = down.conn.server_name().unwrap_or("(none)").to_string();
        let msg = record_misdirected(shared, host, port, "TLS server name", &named);
        respond(&mut down, 403, "Forbidden", &msg);
        down.conn.send_close_notify();
        let _ = down.flush();
        return Opened::Failed;
    }
    match up_result {
        Ok(up) => Opened::Tls(Box::new(down), Box::new(up)),
        Err(e) => {
            fail("TLS to the origin", &e);
            respond(
                &mut down,
                502,
                "Bad Gateway",
                &format!("TLS to {host}:{port} failed: {e} (the origin is verified against the system roots and [network] upstream_ca)"),
            );
            Opened::Failed
        }
    }
}

impl Tunnel<'_> {
    /// One request of the cell to the origin and its response back.
    fn exchange(
        &self,
        cell: &mut CellSide,
        origin: &mut OriginSide,
        totals: &mut (u64, u64),
    ) -> Next {
        let Some(req) = self.read_request(cell) else {
            return Next::Close;
        };
        if !self.send_request(cell, origin, &req, &mut totals.0) {
            return Next::Close;
        }
        match self.relay_response(cell, origin, &req.method, totals) {
            None => Next::Done,
            Some(close) if close || req.close => Next::Close,
            Some(_) => Next::Again,
        }
    }

    /// 403 to the cell with `msg` (already recorded).
    fn refuse(&self, cell: &mut CellSide, msg: &str) {
        respond(&mut cell.s, 403, "Forbidden", msg);
    }

    /// The next request head of the cell, checked: well-formed, naming the CONNECT host
    /// (Host, an absolute target), a body framing we relay. None: the connection ends
    /// (the cell was told why).
    fn read_request(&self, cell: &mut CellSide) -> Option<Request> {
        let (host, port) = (self.host, self.port);
        let head = match cell.head() {
            Ok(Some(h)) => h,
            Ok(None) => return None,
            Err(e) => {
                respond(&mut cell.s, 400, "Bad Request", &e.to_string());
                return None;
            }
        };
        let mut hdrs = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut hdrs);
        if !matches!(req.parse(&head), Ok(httparse::Status::Complete(_))) {
            respond(&mut cell.s, 400, "Bad Request", "malformed request head");
            return None;
        }
        // The request must name the CONNECT host (and port): Host, absolute target.
        let target = req.path.unwrap_or("");
        let misdirected = firewall::absolute_authority(target)
            .filter(|a| !firewall::authority_matches(a.as_bytes(), host, port))
            .map(|a| ("request target", a.to_string()))
            .or_else(|| {
                req.headers
                    .iter()
                    .filter(|h| h.name.eq_ignore_ascii_case("host"))
                    .find(|h| !firewall::authority_matches(h.value, host, port))
                    .map(|h| ("Host header", String::from_utf8_lossy(h.value).to_string()))
            });
        if let Some((what, named)) = misdirected {
            let msg = record_misdirected(self.shared, host, port, what, &named);
            self.refuse(cell, &msg);
            return None;
        }
        let framing = match framing(req.headers, Framing::None) {
            Ok(Framing::Close) | Err(_) => {
                respond(
                    &mut cell.s,
                    400,
                    "Bad Request",
                    "unsupported request body framing",
                );
                return None;
            }
            Ok(f) => f,
        };
        // Drop Expect (answered here) and Upgrade (not relayed).
        let mut kept = Vec::with_capacity(head.len());
        for line in head.split_inclusive(|b| *b == b'\n') {
            let l = line.to_ascii_lowercase();
            if l.starts_with(b"expect:") || l.starts_with(b"upgrade:") {
                continue;
            }
            kept.extend_from_slice(line);
        }
        Some(Request {
            method: req.method.unwrap_or("").to_string(),
            close: req.version == Some(0) || has_token(header(req.headers, "connection"), "close"),
            expect: has_token(header(req.headers, "expect"), "100-continue"),
            framing,
            head: kept,
        })
    }

    /// The request to the origin: placeholders replaced in the head and body, the secret
    /// firewall applied. false: the connection ends (the cell was told why).
    fn send_request(
        &self,
        cell: &mut CellSide,
        origin: &mut OriginSide,
        req: &Request,
        total_up: &mut u64,
    ) -> bool {
        let (shared, host, port) = (self.shared, self.host, self.port);
        let mut hits = Vec::new();
        let mut out_head = match subst::head(&self.req_head, &req.head, &mut hits) {
            Ok(h) => zeroize::Zeroizing::new(h),
            Err(l) => {
                self.refuse(cell, &record_leak(shared, host, port, &l));
                return false;
            }
        };
        let mut found = Vec::new();
        if let Some(w) = &self.wall {
            out_head = zeroize::Zeroizing::new(firewall::clean_head(&w.r, &out_head, &mut found));
            if w.block && !found.is_empty() {
                self.refuse(cell, &record_firewall(shared, host, port, &found, true));
                return false;
            }
        }
        if req.expect && req.framing != Framing::None {
            let _ = cell.s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
            let _ = cell.s.flush();
        }
        // With the firewall, a body whose length is known and bounded is read whole
        // (its length changes when a secret is removed); a longer one or a chunked one
        // is streamed chunked.
        let mut whole: Option<zeroize::Zeroizing<Vec<u8>>> = None;
        let mut out_chunked = req.framing == Framing::Chunked;
        if let Some(w) = &self.wall {
            match req.framing {
                Framing::Length(n) if n <= firewall::MAX_BUFFERED => {
                    let Some(clean) = self.whole_body(cell, w, n, &mut hits, &mut found) else {
                        return false;
                    };
                    out_head = zeroize::Zeroizing::new(reframe(&out_head, Some(clean.len())));
                    whole = Some(clean);
                }
                Framing::Length(_) => {
                    out_head = zeroize::Zeroizing::new(reframe(&out_head, None));
                    out_chunked = true;
                }
                _ => {}
            }
        }
        let mut fw = match (&self.wall, &whole, req.framing) {
            (Some(w), None, f) if f != Framing::None => Some(FwStage {
                m: w.r.stream(),
                block: w.block,
                scratch: Vec::new(),
            }),
            _ => None,
        };
        if origin.s.write_all(&out_head).is_err() {
            respond(
                &mut cell.s,
                502,
                "Bad Gateway",
                &format!("{host}:{port} closed the connection"),
            );
            return false;
        }
        *total_up += out_head.len() as u64;
        if let Some(b) = &whole {
            if origin.s.write_all(b).is_err() {
                return false;
            }
            *total_up += b.len() as u64;
        } else {
            let mut st = Stream::new(&self.req_body, "body");
            match copy_body(
                cell,
                &mut origin.s,
                req.framing,
                &mut st,
                &mut hits,
                fw.as_mut(),
                out_chunked,
            ) {
                Ok(n) => *total_up += n,
                Err(BodyError::Leak(l)) => {
                    self.refuse(cell, &record_leak(shared, host, port, &l));
                    return false;
                }
                Err(BodyError::Firewall(f)) => {
                    // The origin got an unfinished body: it never completes the request.
                    self.refuse(cell, &record_firewall(shared, host, port, &f, true));
                    return false;
                }
                Err(BodyError::Io(e)) => {
                    tracing::debug!("network: {host}:{port}: request body: {e}");
                    return false;
                }
            }
        }
        if let Some(fw) = &fw {
            found.extend(firewall::found(&fw.m.counts(), "body"));
        }
        if !found.is_empty() {
            record_firewall(shared, host, port, &found, false);
        }
        let _ = origin.s.flush();
        record_hits(shared, host, port, &hits);
        true
    }

    /// A request body of known length `n`, read whole, placeholders replaced and the
    /// firewall applied. None: the connection ends (the cell was told why).
    fn whole_body(
        &self,
        cell: &mut CellSide,
        w: &firewall::Wall,
        n: u64,
        hits: &mut Vec<Hit>,
        found: &mut Vec<Found>,
    ) -> Option<zeroize::Zeroizing<Vec<u8>>> {
        let (shared, host, port) = (self.shared, self.host, self.port);
        let raw = match read_body(cell, n) {
            Ok(b) => zeroize::Zeroizing::new(b),
            Err(e) => {
                tracing::debug!("network: {host}:{port}: request body: {e}");
                return None;
            }
        };
        let mut st = Stream::new(&self.req_body, "body");
        let mut subbed = zeroize::Zeroizing::new(Vec::with_capacity(raw.len()));
        let done = st
            .feed(&raw, &mut subbed, hits)
            .map(|_| st.finish(&mut subbed));
        if let Err(l) = done {
            self.refuse(cell, &record_leak(shared, host, port, &l));
            return None;
        }
        let mut clean = zeroize::Zeroizing::new(Vec::with_capacity(subbed.len()));
        let f = firewall::clean(&w.r, &subbed, "body", &mut clean);
        if w.block && !f.is_empty() {
            self.refuse(cell, &record_firewall(shared, host, port, &f, true));
            return None;
        }
        found.extend(f);
        Some(clean)
    }

    /// The origin's response back to the cell, values replaced by placeholders (1xx heads
    /// are relayed and the real one awaited). Some(the response closes the connection);
    /// None: the tunnel ends at once.
    fn relay_response(
        &self,
        cell: &mut CellSide,
        origin: &mut OriginSide,
        method: &str,
        totals: &mut (u64, u64),
    ) -> Option<bool> {
        let (host, port) = (self.host, self.port);
        loop {
            let rhead = match origin.head() {
                Ok(Some(h)) => h,
                Ok(None) | Err(_) => {
                    respond(
                        &mut cell.s,
                        502,
                        "Bad Gateway",
                        &format!("{host}:{port} sent no response"),
                    );
                    return None;
                }
            };
            let mut rh = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut r = httparse::Response::new(&mut rh);
            if !matches!(r.parse(&rhead), Ok(httparse::Status::Complete(_))) {
                respond(
                    &mut cell.s,
                    502,
                    "Bad Gateway",
                    &format!("{host}:{port} sent a malformed response"),
                );
                return None;
            }
            let code = r.code.unwrap_or(0);
            let mut close =
                r.version == Some(0) || has_token(header(r.headers, "connection"), "close");
            let f = if method == "HEAD" || code == 204 || code == 304 || (100..200).contains(&code)
            {
                Framing::None
            } else {
                framing(r.headers, Framing::Close).unwrap_or(Framing::Close)
            };
            let mut rhits = Vec::new();
            let mut hidden = Vec::with_capacity(rhead.len());
            let _ = self
                .resp
                .apply(&rhead, "response head", &mut hidden, &mut rhits);
            if cell.s.write_all(&hidden).is_err() {
                return None;
            }
            totals.1 += hidden.len() as u64;
            if code == 101 {
                // Not offered (Upgrade is dropped); a server doing it anyway ends here.
                return None;
            }
            let mut st = Stream::new(&self.resp, "response body");
            let chunked = f == Framing::Chunked;
            match copy_body(origin, &mut cell.s, f, &mut st, &mut rhits, None, chunked) {
                Ok(n) => totals.1 += n,
                Err(_) => return None,
            }
            if f == Framing::Close {
                close = true;
            }
            if !(100..200).contains(&code) {
                return Some(close);
            }
        }
    }
}
