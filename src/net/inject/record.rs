//! The audit records and messages of intercepted requests, shared by the HTTP/1.1
//! ([`super::h1`]) and HTTP/2 ([`super::h2`]) paths.

use std::collections::BTreeMap;

use serde_json::json;

use super::firewall::Found;
use super::subst::{Hit, Leak};
use crate::net::Shared;

/// Audit what the firewall found (per secret and place), and say what it did.
pub fn record_firewall(
    shared: &Shared,
    host: &str,
    port: u16,
    found: &[Found],
    blocked: bool,
) -> String {
    let mut by: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for f in found {
        *by.entry((&f.secret, &f.place)).or_default() += f.count;
    }
    let action = if blocked { "blocked" } else { "redacted" };
    let mut names: Vec<&str> = Vec::new();
    for ((name, place), count) in by {
        shared.audit.record(
            "secret_firewall",
            json!({ "name": name, "host": host, "port": port, "where": place, "count": count, "action": action }),
        );
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let msg = if blocked {
        format!(
            "blocked by the secret firewall: secret {} was on its way to {host}:{port} ([network] firewall = \"block\")",
            names.join(", ")
        )
    } else {
        format!(
            "secret firewall: removed secret {} from a request to {host}:{port}",
            names.join(", ")
        )
    };
    tracing::warn!("network: {msg}");
    msg
}

/// Refuse a request whose destination is not the CONNECT host (audited).
pub fn record_misdirected(
    shared: &Shared,
    host: &str,
    port: u16,
    what: &str,
    named: &str,
) -> String {
    let named: String = named
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    let msg = format!(
        "refused: the {what} names {named:?}, but this tunnel goes to {host}:{port} (an intercepted request must stay on its CONNECT host)"
    );
    tracing::warn!("network: {msg}");
    shared.audit.record(
        "request_misdirected",
        json!({ "host": host, "port": port, "where": what, "named": named }),
    );
    msg
}

/// Audit each substitution (counted per secret and place).
pub fn record_hits(shared: &Shared, host: &str, port: u16, hits: &[Hit]) {
    let mut by: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for h in hits {
        *by.entry((&h.secret, &h.place)).or_default() += 1;
    }
    for ((name, place), count) in by {
        shared.audit.record(
            "secret_injected",
            json!({ "name": name, "host": host, "port": port, "where": place, "count": count }),
        );
    }
}

/// Report an interception failure (log and audit).
pub fn report(shared: &Shared, host: &str, port: u16, what: &str, e: &dyn std::fmt::Display) {
    tracing::warn!("network: intercepting {host}:{port}: {what}: {e}");
    shared.audit.record(
        "tls_intercept_error",
        json!({ "host": host, "port": port, "error": format!("{what}: {e}") }),
    );
}

pub fn record_leak(shared: &Shared, host: &str, port: u16, l: &Leak) -> String {
    let msg = format!(
        "blocked: the placeholder of secret {} was on its way to {host}:{port} ({}), a host it is not bound to",
        l.secret, l.place
    );
    tracing::warn!("network: {msg}");
    shared.audit.record(
        "secret_leak_blocked",
        json!({ "name": l.secret, "host": host, "port": port, "where": l.place, "via": "intercepted" }),
    );
    msg
}
