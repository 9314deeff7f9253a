//! Port forwards: 127.0.0.1:`listen` inside the cell → one declared service on the host
//! (TCP address or unix socket). Nothing else on the host is reachable.

use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use serde_json::json;

use super::{relay, Shared, CONNECT_TIMEOUT, HALF_OPEN_TIMEOUT};
use crate::plan::net::{Forward, ForwardTo};

pub fn serve(shared: &Shared, f: &Forward, conn: TcpStream) {
    let started = Instant::now();
    let result = match &f.to {
        ForwardTo::Tcp(a) => TcpStream::connect_timeout(a, CONNECT_TIMEOUT).map(|s| {
            let _ = s.set_nodelay(true);
            relay::relay(&conn, &s, shared.plan.idle_timeout, HALF_OPEN_TIMEOUT)
        }),
        ForwardTo::Unix(p) => UnixStream::connect(p)
            .map(|s| relay::relay(&conn, &s, shared.plan.idle_timeout, HALF_OPEN_TIMEOUT)),
    };
    let mut fields = json!({
        "via": "forward",
        "listen": f.listen,
        "to": f.to.describe(),
        "decision": format!("forward declared at {}", f.origin),
        "duration_ms": started.elapsed().as_millis() as u64,
    });
    match result {
        Ok(Ok(m)) => {
            fields["bytes_up"] = m.up.into();
            fields["bytes_down"] = m.down.into();
        }
        Ok(Err(e)) | Err(e) => {
            tracing::warn!("network: forward {} -> {}: {e}", f.listen, f.to.describe());
            fields["error"] = e.to_string().into();
        }
    }
    shared.audit.record("net_connection", fields);
}
