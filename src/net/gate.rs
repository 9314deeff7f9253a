//! The gate every outgoing connection passes: allowlist → approvals → DNS → address
//! classes → connect. Returns the connected stream or a refusal that says which rule
//! refused and how to allow the destination.

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Instant;

use serde_json::json;

use super::approve::Answer;
use super::{resolve, Shared, CONNECT_TIMEOUT};
use crate::plan::allowlist::HostVerdict;

/// Why a destination is not reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The policy refused it (HTTP 403, SOCKS 0x02). The message names the rule.
    Denied(String),
    /// Asked, and nobody answered in time (HTTP 403, SOCKS 0x02).
    TimedOut(String),
    /// The name does not resolve (HTTP 502, SOCKS 0x04).
    Unresolvable(String),
    /// Connecting failed (HTTP 502, SOCKS 0x05).
    Unreachable(String),
}

impl Refusal {
    pub fn message(&self) -> &str {
        match self {
            Refusal::Denied(m)
            | Refusal::TimedOut(m)
            | Refusal::Unresolvable(m)
            | Refusal::Unreachable(m) => m,
        }
    }
}

/// An open connection to an allowed destination, with what the audit line needs.
pub struct Opened {
    pub stream: TcpStream,
    pub addr: SocketAddr,
    pub decision: String,
}

/// Check and connect. `via` is "http", "connect" or "socks" (for the audit line).
pub fn open(shared: &Shared, host: &str, port: u16, via: &str) -> Result<Opened, Refusal> {
    let started = Instant::now();
    let r = decide_and_connect(shared, host, port);
    if let Err(refusal) = &r {
        let (decision, reason) = match refusal {
            Refusal::Denied(m) => ("denied", m),
            Refusal::TimedOut(m) => ("timed out", m),
            Refusal::Unresolvable(m) => ("unresolvable", m),
            Refusal::Unreachable(m) => ("unreachable", m),
        };
        // The host and the reason are the cell's words: cleaned by the diagnostics writer
        // (and by the audit sink).
        tracing::warn!("network: {via} to {host}:{port} refused: {reason}");
        shared.audit.record(
            "net_connection",
            json!({
                "via": via,
                "host": host,
                "port": port,
                "decision": decision,
                "reason": reason,
                "duration_ms": started.elapsed().as_millis() as u64,
            }),
        );
    }
    r
}

fn decide_and_connect(shared: &Shared, host: &str, port: u16) -> Result<Opened, Refusal> {
    let plan = &shared.plan;
    let decision = match plan.allowlist.check_host(host, port) {
        HostVerdict::Denied(m) => return Err(Refusal::Denied(m)),
        HostVerdict::Allowed(rule) => format!("allowed by rule {rule}"),
        HostVerdict::Unlisted if plan.learn => "allowed by --learn".to_string(),
        HostVerdict::Unlisted => match shared.approvals.approved(host, port) {
            Some(by) => format!("approved by {by}"),
            None if plan.ask => match shared.approvals.ask(shared, host, port) {
                Answer::Approved(by) => format!("approved by {by}"),
                Answer::Denied(by) => {
                    return Err(Refusal::Denied(format!(
                        "{host}:{port} is not on the allowlist and was denied by {by}"
                    )))
                }
                Answer::TimedOut => {
                    return Err(Refusal::TimedOut(format!(
                        "{host}:{port} is not on the allowlist and nobody approved it within {}s (approve it with `taskcell approve {} {host}:{port}`, or add it to [network] allow)",
                        plan.ask_timeout.as_secs(),
                        shared.session
                    )))
                }
            },
            None => {
                return Err(Refusal::Denied(format!(
                    "{host}:{port} is not on the allowlist: no allow rule matches it (add `{host}:{port}` to [network] allow in the profile, pass --allow {host}:{port}, or set ask = true)"
                )))
            }
        },
    };
    let addrs = resolve::lookup(host, port, &plan.resolve)
        .map_err(|e| Refusal::Unresolvable(format!("{host} does not resolve: {e}")))?;
    let mut first_refusal = None;
    let mut allowed: Vec<(IpAddr, String)> = Vec::new();
    for a in addrs {
        match plan.allowlist.check_addr(host, a, port) {
            Ok(Some(rule)) => {
                allowed.push((a, format!("{decision}; address {a} allowed by rule {rule}")))
            }
            Ok(None) => allowed.push((a, decision.clone())),
            Err(m) => {
                first_refusal.get_or_insert(m);
            }
        }
    }
    if allowed.is_empty() {
        return Err(Refusal::Denied(
            first_refusal.unwrap_or_else(|| format!("{host} has no usable address")),
        ));
    }
    let mut last = String::new();
    for (a, decision) in allowed {
        let sa = SocketAddr::new(a, port);
        match TcpStream::connect_timeout(&sa, CONNECT_TIMEOUT) {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                if plan.learn {
                    shared.learned.note(host, port);
                }
                return Ok(Opened {
                    stream,
                    addr: sa,
                    decision,
                });
            }
            Err(e) => last = format!("connecting to {host}:{port} ({sa}): {e}"),
        }
    }
    Err(Refusal::Unreachable(last))
}

/// Relay an opened connection both ways until it ends, then write its audit line;
/// `sent` counts bytes already forwarded upstream (a plain HTTP request's head).
#[allow(clippy::too_many_arguments)]
pub fn relay_and_record(
    shared: &Shared,
    via: &str,
    host: &str,
    port: u16,
    conn: &std::net::TcpStream,
    opened: &Opened,
    sent: u64,
    started: Instant,
) {
    let _ = conn.set_read_timeout(None);
    let _ = conn.set_write_timeout(None);
    let moved = super::relay::relay(
        conn,
        &opened.stream,
        shared.plan.idle_timeout,
        super::HALF_OPEN_TIMEOUT,
    )
    .unwrap_or_default();
    record_done(
        shared,
        via,
        host,
        port,
        opened,
        moved.up + sent,
        moved.down,
        started,
    );
}

/// The audit line for a finished connection.
#[allow(clippy::too_many_arguments)]
pub fn record_done(
    shared: &Shared,
    via: &str,
    host: &str,
    port: u16,
    o: &Opened,
    up: u64,
    down: u64,
    started: Instant,
) {
    shared.audit.record(
        "net_connection",
        json!({
            "via": via,
            "host": host,
            "port": port,
            "address": o.addr.to_string(),
            "decision": o.decision,
            "bytes_up": up,
            "bytes_down": down,
            "duration_ms": started.elapsed().as_millis() as u64,
        }),
    );
}
