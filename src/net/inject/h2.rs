//! HTTP/2 from the cell on an intercepted tunnel (ALPN `h2`), with `hyper`: each stream's
//! request is substituted like an HTTP/1.1 one ([`super::subst::head`] over its head
//! written out as HTTP/1.1 text, streamed bodies) and sent to the origin over HTTP/1.1
//! (one upstream connection per tunnel, requests in turn); responses come back with
//! values turned into placeholders. Clients that offer only `http/1.1` are handed back
//! to the blocking [`super::h1`] path after the handshake.

use std::convert::Infallible;
use std::net::TcpStream as StdTcp;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ServerConnection;
use zeroize::Zeroizing;

use super::firewall::{self, Wall};
use super::subst::{self, Hit, Leak, Matcher, Part, Stream};
use super::Injector;
use crate::net::{Shared, HALF_OPEN_TIMEOUT, HANDSHAKE_TIMEOUT};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type RespBody = BoxBody<Bytes, BoxError>;

/// After the TLS handshake with the cell.
pub enum Accepted {
    /// HTTP/1.1: the handshaken connection and the client socket (blocking again).
    H1(Box<ServerConnection>, StdTcp),
    /// Served as HTTP/2 here: bytes up and down.
    Done(u64, u64),
    /// The handshake failed (reported).
    Failed,
}

/// A body with placeholders/values substituted as it streams.
struct SubstBody {
    inner: Incoming,
    st: Stream<Arc<Matcher>>,
    hits: Arc<Mutex<Vec<Hit>>>,
    leak: Arc<Mutex<Option<Leak>>>,
    count: Arc<AtomicU64>,
    done: bool,
}

impl Body for SubstBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    // Trailers are dropped (data frames only).
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    let mut out = Vec::new();
                    let mut hits = Vec::new();
                    if let Err(l) = this.st.feed(&data, &mut out, &mut hits) {
                        if let Ok(mut g) = this.leak.lock() {
                            *g = Some(l);
                        }
                        this.done = true;
                        return Poll::Ready(Some(Err(
                            "blocked: a placeholder on its way to a host it is not bound to".into(),
                        )));
                    }
                    if let Ok(mut g) = this.hits.lock() {
                        g.extend(hits);
                    }
                    if out.is_empty() {
                        continue;
                    }
                    this.count.fetch_add(out.len() as u64, Ordering::Relaxed);
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(Box::new(e)))),
                Poll::Ready(None) => {
                    this.done = true;
                    let mut out = Vec::new();
                    this.st.finish(&mut out);
                    if out.is_empty() {
                        return Poll::Ready(None);
                    }
                    this.count.fetch_add(out.len() as u64, Ordering::Relaxed);
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        // Not while bytes are held back: they still have to be sent.
        self.done || (self.inner.is_end_stream() && !self.st.holds())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        // Placeholders and values have the same length.
        self.inner.size_hint()
    }
}

fn text(code: u16, msg: &str) -> hyper::Response<RespBody> {
    let mut r = hyper::Response::new(
        Full::new(Bytes::from(format!("taskcell: {msg}\n")))
            .map_err(|e| match e {})
            .boxed(),
    );
    *r.status_mut() = hyper::StatusCode::from_u16(code).unwrap_or(hyper::StatusCode::BAD_GATEWAY);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

const HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
];

type Sender = hyper::client::conn::http1::SendRequest<RespBody>;

struct Ctx {
    shared: Arc<Shared>,
    inj: Arc<Injector>,
    host: String,
    port: u16,
    req_head: Matcher,
    req_body: Arc<Matcher>,
    resp: Arc<Matcher>,
    /// The secret firewall for this destination, if anything is watched.
    wall: Option<Wall>,
    /// Why every request on this connection is refused (a TLS server name that is not
    /// the CONNECT host; a firewall that could not be built).
    refused: Option<(u16, String)>,
    /// The origin connection; None once it has ended (a new one is opened, through
    /// the gate again, for the next request).
    sender: tokio::sync::Mutex<Option<Sender>>,
    upstream_error: Option<String>,
    up: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
}

async fn handle(c: Arc<Ctx>, req: hyper::Request<Incoming>) -> hyper::Response<RespBody> {
    let (host, port) = (c.host.as_str(), c.port);
    if let Some((code, msg)) = &c.refused {
        return text(*code, msg);
    }
    if let Some(e) = &c.upstream_error {
        return text(502, &format!("TLS to {host}:{port} failed: {e} (the origin is verified against the system roots and [network] upstream_ca)"));
    }
    let (parts, body) = req.into_parts();
    // The request must name the CONNECT host (and port): :authority and Host.
    let named = parts
        .uri
        .authority()
        .map(|a| (":authority", a.as_str().as_bytes().to_vec()))
        .into_iter()
        .chain(
            parts
                .headers
                .get_all(hyper::header::HOST)
                .iter()
                .map(|v| ("Host header", v.as_bytes().to_vec())),
        )
        .find(|(_, a)| !firewall::authority_matches(a, host, port));
    if let Some((what, a)) = named {
        let msg = super::record::record_misdirected(
            &c.shared,
            host,
            port,
            what,
            &String::from_utf8_lossy(&a),
        );
        return text(403, &msg);
    }
    let pq = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let authority = parts
        .uri
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_else(|| format!("{host}:{port}"));
    // The head as HTTP/1.1 text: substituted exactly like an HTTP/1.1 request.
    let mut fake = Zeroizing::new(format!("{} {} HTTP/1.1\r\n", parts.method, pq).into_bytes());
    let mut has_host = false;
    for (k, v) in parts.headers.iter() {
        if HOP.contains(&k.as_str()) {
            continue;
        }
        has_host |= k == hyper::header::HOST;
        fake.extend_from_slice(k.as_str().as_bytes());
        fake.extend_from_slice(b": ");
        fake.extend_from_slice(v.as_bytes());
        fake.extend_from_slice(b"\r\n");
    }
    if !has_host {
        fake.extend_from_slice(format!("host: {authority}\r\n").as_bytes());
    }
    fake.extend_from_slice(b"\r\n");
    let mut hits = Vec::new();
    let mut head = match subst::head(&c.req_head, &fake, &mut hits) {
        Ok(h) => Zeroizing::new(h),
        Err(l) => {
            let msg = super::record::record_leak(&c.shared, host, port, &l);
            return text(403, &msg);
        }
    };
    let mut found = Vec::new();
    if let Some(w) = &c.wall {
        head = Zeroizing::new(firewall::clean_head(&w.r, &head, &mut found));
        if w.block && !found.is_empty() {
            let msg = super::record::record_firewall(&c.shared, host, port, &found, true);
            return text(403, &msg);
        }
    }
    let mut hdrs = [httparse::EMPTY_HEADER; 128];
    let mut p = httparse::Request::new(&mut hdrs);
    if !matches!(p.parse(&head), Ok(httparse::Status::Complete(_))) {
        return text(400, "request head not representable in HTTP/1.1");
    }
    let mut b = hyper::Request::builder()
        .method(parts.method.clone())
        .uri(p.path.unwrap_or("/"))
        .version(hyper::Version::HTTP_11);
    let buffered = c.wall.is_some();
    for h in p.headers.iter() {
        if buffered && h.name.eq_ignore_ascii_case("content-length") {
            continue;
        }
        b = b.header(h.name, h.value);
    }
    let body_hits = Arc::new(Mutex::new(Vec::new()));
    let leak = Arc::new(Mutex::new(None));
    let body = SubstBody {
        inner: body,
        st: Stream::new(c.req_body.clone(), "body"),
        hits: body_hits.clone(),
        leak: leak.clone(),
        // With the firewall the cleaned body is counted instead.
        count: match c.wall {
            None => c.up.clone(),
            Some(_) => Arc::new(AtomicU64::new(0)),
        },
        done: false,
    };
    let body: RespBody = match &c.wall {
        None => body.boxed(),
        Some(w) => {
            // The firewall changes lengths: the body is read whole (bounded), then
            // cleaned, and sent with its new length.
            let limited = http_body_util::Limited::new(body, firewall::MAX_BUFFERED as usize);
            let whole = match limited.collect().await {
                Ok(b) => Zeroizing::new(b.to_bytes().to_vec()),
                Err(e) => {
                    if let Some(l) = leak.lock().ok().and_then(|mut g| g.take()) {
                        let msg = super::record::record_leak(&c.shared, host, port, &l);
                        return text(403, &msg);
                    }
                    if e.is::<http_body_util::LengthLimitError>() {
                        return text(413, &format!("request body larger than {} bytes: the secret firewall does not pass it to {host}:{port}", firewall::MAX_BUFFERED));
                    }
                    return text(400, &format!("request body: {e}"));
                }
            };
            let mut clean = Vec::with_capacity(whole.len());
            let f = firewall::clean(&w.r, &whole, "body", &mut clean);
            if w.block && !f.is_empty() {
                let msg = super::record::record_firewall(&c.shared, host, port, &f, true);
                return text(403, &msg);
            }
            found.extend(f);
            b = b.header(hyper::header::CONTENT_LENGTH, clean.len());
            c.up.fetch_add(clean.len() as u64, Ordering::Relaxed);
            Full::new(Bytes::from(clean))
                .map_err(|e| match e {})
                .boxed()
        }
    };
    if !found.is_empty() {
        super::record::record_firewall(&c.shared, host, port, &found, false);
    }
    let Ok(upreq) = b.body(body) else {
        return text(400, "request not representable in HTTP/1.1");
    };
    c.up.fetch_add(head.len() as u64, Ordering::Relaxed);
    let resp = {
        let mut g = c.sender.lock().await;
        let alive = match g.as_mut() {
            Some(s) => s.ready().await.is_ok(),
            None => false,
        };
        if !alive {
            // The origin ended the connection (e.g. after a response delimited by its
            // close): open another one, checked by the gate like the first.
            *g = None;
            match reconnect(&c).await {
                Ok(s) => *g = Some(s),
                Err(e) => return text(502, &format!("{host}:{port}: {e}")),
            }
        }
        let Some(s) = g.as_mut() else {
            return text(502, &format!("{host}:{port} closed the connection"));
        };
        s.send_request(upreq).await
    };
    let leaked = leak.lock().ok().and_then(|mut g| g.take());
    if let Some(l) = leaked {
        let msg = super::record::record_leak(&c.shared, host, port, &l);
        return text(403, &msg);
    }
    if let Ok(g) = body_hits.lock() {
        hits.extend(g.iter().cloned());
    }
    super::record::record_hits(&c.shared, host, port, &hits);
    let resp = match resp {
        Ok(r) => r,
        Err(e) => return text(502, &format!("{host}:{port}: {e}")),
    };
    let (rparts, rbody) = resp.into_parts();
    // Response headers: values back to placeholders.
    let mut out = hyper::Response::builder().status(rparts.status);
    for (k, v) in rparts.headers.iter() {
        if HOP.contains(&k.as_str()) {
            continue;
        }
        let mut hv = Vec::new();
        let mut none = Vec::new();
        let _ = c
            .resp
            .apply(v.as_bytes(), "response head", &mut hv, &mut none);
        out = out.header(k, hv);
    }
    let body = SubstBody {
        inner: rbody,
        st: Stream::new(c.resp.clone(), "response body"),
        hits: Arc::new(Mutex::new(Vec::new())),
        leak: Arc::new(Mutex::new(None)),
        count: c.down.clone(),
        done: false,
    };
    out.body(body.boxed())
        .unwrap_or_else(|_| text(502, "response not representable"))
}

/// A TLS stream whose peer may close without `close_notify`: that ends the stream
/// (as the HTTP/1.1 path does), so a response delimited by the origin closing the
/// connection (HTTP/1.0 style, no length) ends cleanly instead of as an error.
struct EofOk<S>(S);

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for EofOk<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.0).poll_read(cx, buf) {
            Poll::Ready(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                Poll::Ready(Ok(()))
            }
            r => r,
        }
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for EofOk<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// TLS and HTTP/1.1 to the origin over a connected socket, verified like every
/// intercepted origin.
async fn connect_origin(inj: &Injector, host: &str, upstream: StdTcp) -> std::io::Result<Sender> {
    upstream.set_nonblocking(true)?;
    let tcp = tokio::net::TcpStream::from_std(upstream)?;
    let name = rustls::pki_types::ServerName::try_from(
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
    )
    .map_err(|e| std::io::Error::other(e.to_string()))?;
    let conn = tokio_rustls::TlsConnector::from(inj.client_config())
        .connect(name, tcp)
        .await?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(EofOk(conn)))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(connection);
    Ok(sender)
}

/// Another origin connection for this tunnel, through the gate (allowlist, DNS,
/// address checks) like the first.
async fn reconnect(c: &Arc<Ctx>) -> std::io::Result<Sender> {
    let (shared, host, port) = (c.shared.clone(), c.host.clone(), c.port);
    let opened = tokio::task::spawn_blocking(move || {
        crate::net::gate::open(&shared, &host, port, "connect-inject")
    })
    .await
    .map_err(std::io::Error::other)?
    .map_err(|r| std::io::Error::other(r.message().to_string()))?;
    connect_origin(&c.inj, &c.host, opened.stream).await
}

/// TLS with the cell (offering h2 and http/1.1); serve HTTP/2 here or hand HTTP/1.1 back.
pub fn accept(
    shared: &Arc<Shared>,
    inj: &Arc<Injector>,
    client: StdTcp,
    upstream: StdTcp,
    host: &str,
    port: u16,
) -> (Accepted, Option<StdTcp>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::warn!("network: intercepting {host}:{port}: runtime: {e}");
            return (Accepted::Failed, Some(upstream));
        }
    };
    let cfg = match inj.server_config(host, true) {
        Ok(c) => c,
        Err(e) => {
            super::record::report(shared, host, port, "certificate", &e);
            return (Accepted::Failed, Some(upstream));
        }
    };
    rt.block_on(async move {
        let tcp = match client
            .set_nonblocking(true)
            .and_then(|_| tokio::net::TcpStream::from_std(client))
        {
            Ok(t) => t,
            Err(e) => {
                super::record::report(shared, host, port, "socket", &e);
                return (Accepted::Failed, Some(upstream));
            }
        };
        let acc = tokio_rustls::TlsAcceptor::from(cfg);
        let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acc.accept(tcp)).await {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => {
                super::record::report(shared, host, port, "TLS handshake with the cell (does the client trust the cell CA? see SSL_CERT_FILE)", &e);
                return (Accepted::Failed, Some(upstream));
            }
            Err(_) => {
                super::record::report(shared, host, port, "TLS handshake with the cell", &"timed out");
                return (Accepted::Failed, Some(upstream));
            }
        };
        if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            let (tcp, conn) = tls.into_inner();
            return match tcp.into_std().and_then(|s| s.set_nonblocking(false).map(|_| s)) {
                Ok(s) => (Accepted::H1(Box::new(conn), s), Some(upstream)),
                Err(e) => {
                    super::record::report(shared, host, port, "socket", &e);
                    (Accepted::Failed, Some(upstream))
                }
            };
        }
        let sni = tls.get_ref().1.server_name().map(str::to_string);
        let refused = (!firewall::sni_matches(sni.as_deref(), host)).then(|| {
            let named = sni.as_deref().unwrap_or("(none)");
            (403, super::record::record_misdirected(shared, host, port, "TLS server name", named))
        });
        let (u, d) = serve_h2(shared.clone(), inj, tls, upstream, host, port, refused).await;
        (Accepted::Done(u, d), None)
    })
}

async fn serve_h2(
    shared: Arc<Shared>,
    inj: &Arc<Injector>,
    tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    upstream: StdTcp,
    host: &str,
    port: u16,
    mut refused: Option<(u16, String)>,
) -> (u64, u64) {
    let bound = inj.bound(host, port);
    let wall = match inj.wall(&bound) {
        Ok(w) => w,
        Err(e) => {
            // Fail closed: no request passes a firewall that could not be built.
            super::record::report(&shared, host, port, "secret firewall", &e);
            refused = refused.or(Some((500, e.to_string())));
            None
        }
    };
    let (sender, upstream_error) = if refused.is_some() {
        (None, None)
    } else {
        match connect_origin(inj, host, upstream).await {
            Ok(s) => (Some(s), None),
            Err(e) => {
                super::record::report(&shared, host, port, "TLS to the origin", &e);
                (None, Some(e.to_string()))
            }
        }
    };
    let ctx = Arc::new(Ctx {
        shared: shared.clone(),
        inj: inj.clone(),
        host: host.to_string(),
        port,
        req_head: Matcher::new(inj.secrets(), &bound, Part::RequestHead),
        req_body: Arc::new(Matcher::new(inj.secrets(), &bound, Part::RequestBody)),
        resp: Arc::new(Matcher::new(inj.secrets(), &bound, Part::Response)),
        wall,
        refused,
        sender: tokio::sync::Mutex::new(sender),
        upstream_error,
        up: Arc::new(AtomicU64::new(0)),
        down: Arc::new(AtomicU64::new(0)),
    });
    let c2 = ctx.clone();
    let svc = hyper::service::service_fn(move |req| {
        let c = c2.clone();
        async move { Ok::<_, Infallible>(handle(c, req).await) }
    });
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(tls), svc);
    // Like a tunnel: the connection ends after `idle_timeout` without a byte moved.
    let idle = shared.plan.idle_timeout;
    let mut conn = std::pin::pin!(conn);
    let mut last = 0;
    loop {
        match tokio::time::timeout(idle, conn.as_mut()).await {
            Ok(r) => {
                if let Err(e) = r {
                    tracing::debug!("network: {host}:{port}: HTTP/2: {e}");
                }
                break;
            }
            Err(_) => {
                let moved = ctx.up.load(Ordering::Relaxed) + ctx.down.load(Ordering::Relaxed);
                if moved == last {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(HALF_OPEN_TIMEOUT, conn.as_mut()).await;
                    break;
                }
                last = moved;
            }
        }
    }
    (
        ctx.up.load(Ordering::Relaxed),
        ctx.down.load(Ordering::Relaxed),
    )
}
