//! One cell's secrets from fetch to revocation, driven by the supervisor:
//! [`Session::prepare`] (before the clone: fetch, seal in memfds, build the masker, make
//! the relay pipes), [`Session::after_spawn`] (close the supervisor's copies), the relay
//! threads, then [`Session::finish`] (revoke, leak scan, audit).

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::SystemTime;

use serde_json::json;

use super::deliver;
use super::provider::{self, Value};
use super::redact::{Redactor, MIN_LEN};
use super::relay::Pipes;
use super::revoke;
use super::scan::{self, ScanLimits};
use crate::audit::Audit;
use crate::plan::secrets::{Delivery, OnLeak, SecretPlan};
use crate::spec::{CellSecret, How};
use crate::{EXIT_LEAK, EXIT_SCAN_INCOMPLETE};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SecretsError(pub String);

struct Held {
    plan: SecretPlan,
    value: Option<Value>,
    memfd: Option<OwnedFd>,
    /// It has a `revoke` command that has not run yet.
    revoke_pending: bool,
}

pub struct Session {
    held: Vec<Held>,
    /// `deliver = "inject"`: values and placeholders for the proxy (taken by
    /// [`Session::take_injected`]).
    injected: Vec<super::injected::Secret>,
    redactor: Option<std::sync::Arc<Redactor>>,
    pipes: Option<Pipes>,
    session_id: String,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field(
                "secrets",
                &self.held.iter().map(|h| &h.plan.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// What the leak scan concluded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Finish {
    /// A secret with `on_leak = "fail"` was found in a written file.
    pub leak_fail: bool,
    /// A secret is declared with `on_leak = "fail"` and the scan was not complete.
    pub scan_incomplete_fail: bool,
}

impl Session {
    /// Fetch every secret (just in time), seal it in a memfd and build the masker. On a
    /// failure nothing has started; the secrets fetched so far are revoked.
    /// `cell_writable`: host paths the cell can write (no `file:` source may lie there).
    pub fn prepare(
        plans: &[SecretPlan],
        env: &dyn Fn(&str) -> Option<OsString>,
        cell_writable: &[PathBuf],
        audit: &mut Audit,
    ) -> Result<Session, SecretsError> {
        let mut s = Session {
            held: Vec::new(),
            injected: Vec::new(),
            redactor: None,
            pipes: None,
            session_id: audit.session.clone(),
        };
        if let Err(e) = s.fill(plans, env, cell_writable) {
            audit.record("secret_error", json!({ "error": e.0 }));
            s.revoke_all(audit);
            return Err(e);
        }
        for h in &s.held {
            let (provider, delivery) = (h.plan.provider.kind(), h.plan.delivery.kind());
            audit.record(
                "secret_delivered",
                json!({
                    "name": h.plan.name,
                    "provider": provider,
                    "delivery": delivery,
                    "masked": h.plan.mask,
                    "inject_hosts": h.plan.inject.as_ref().map(|i| i.hosts.clone()),
                }),
            );
        }
        Ok(s)
    }

    fn fill(
        &mut self,
        plans: &[SecretPlan],
        env: &dyn Fn(&str) -> Option<OsString>,
        cell_writable: &[PathBuf],
    ) -> Result<(), SecretsError> {
        for p in plans {
            let what = format!("secret {}", p.name);
            if let crate::plan::secrets::Provider::Command { argv } = &p.provider {
                crate::hostfile::check_argv(argv, cell_writable, &what).map_err(SecretsError)?;
            }
            if let Some(argv) = &p.revoke {
                crate::hostfile::check_argv(argv, cell_writable, &format!("{what}'s revoke"))
                    .map_err(SecretsError)?;
            }
            // `{session}` and `{name}` in a provider's argv, as in its revoke's: a provider
            // can label what it makes with the session, for a revoke that needs no value.
            let mut with_ids = p.clone();
            if let crate::plan::secrets::Provider::Command { argv } = &mut with_ids.provider {
                *argv = revoke::substitute(argv, &self.session_id, &p.name);
            }
            let value = provider::fetch_in(&with_ids, env, cell_writable)
                .map_err(|e| SecretsError(e.to_string()))?;
            self.held.push(Held {
                plan: p.clone(),
                value: Some(value),
                memfd: None,
                revoke_pending: p.revoke.is_some(),
            });
            let h = self
                .held
                .last_mut()
                .ok_or_else(|| SecretsError("internal".into()))?;
            let Some(v) = h.value.as_ref() else { continue };
            if p.mask && v.bytes().len() < MIN_LEN {
                return Err(SecretsError(format!(
                    "secret {}: its value is shorter than {MIN_LEN} bytes, too short to mask in the output without hiding ordinary text; use a longer value, or turn masking off for it (mask = false, or --secret-opt {}.mask=false)",
                    p.name, p.name
                )));
            }
            if matches!(p.delivery, Delivery::Env { .. }) && v.bytes().contains(&0) {
                return Err(SecretsError(format!(
                    "secret {}: its value contains a NUL byte and cannot be delivered in the environment (deliver it as a file or fd)",
                    p.name
                )));
            }
            // An injected secret: the cell gets a placeholder of the same shape.
            let placeholder = match &p.inject {
                Some(i) => {
                    let ph = super::placeholder::generate(v.bytes()).map_err(|e| {
                        SecretsError(format!(
                            "secret {}: cannot make a placeholder for it: {e}",
                            p.name
                        ))
                    })?;
                    self.injected.push(super::injected::Secret::new(
                        &p.name,
                        v.bytes().to_vec(),
                        ph.clone(),
                        i.body,
                    ));
                    Some(zeroize::Zeroizing::new(ph))
                }
                None => None,
            };
            if matches!(p.delivery, Delivery::None) {
                // Watch-only: no memfd, nothing reaches the cell.
                continue;
            }
            let delivered = placeholder.as_ref().map_or(v.bytes(), |p| &p[..]);
            let fd = deliver::sealed_memfd(&p.name, delivered).map_err(|e| {
                SecretsError(format!(
                    "secret {}: cannot create a sealed memfd for it: {e}",
                    p.name
                ))
            })?;
            h.memfd = Some(fd);
        }
        let masked: Vec<(String, &[u8])> = self
            .held
            .iter()
            .filter(|h| h.plan.mask)
            .filter_map(|h| Some((h.plan.name.clone(), h.value.as_ref()?.bytes())))
            .collect();
        if !masked.is_empty() {
            let r = std::sync::Arc::new(
                Redactor::new(&masked).map_err(|e| SecretsError(e.to_string()))?,
            );
            // taskcell's own words about the cell are masked with the same patterns.
            crate::display::set_masker(r.clone());
            self.redactor = Some(r);
            self.pipes = Some(
                Pipes::new()
                    .map_err(|e| SecretsError(format!("creating the output relay pipes: {e}")))?,
            );
        }
        Ok(())
    }

    /// What the cell needs: each secret's memfd and delivery; the relay pipes' write ends.
    pub fn cell_parts(&self) -> (Vec<CellSecret>, Option<(i32, i32)>) {
        let secrets = self
            .held
            .iter()
            .filter_map(|h| {
                Some(CellSecret {
                    name: h.plan.name.clone(),
                    memfd: h.memfd.as_ref()?.as_raw_fd(),
                    how: How::of(&h.plan.delivery)?,
                })
            })
            .collect();
        let stdio = self
            .pipes
            .as_ref()
            .map(|p| (p.out_w.as_raw_fd(), p.err_w.as_raw_fd()));
        (secrets, stdio)
    }

    /// After the clone: close the memfds and the pipes' write ends here, and drop every
    /// value that is not needed any more (only those whose `revoke` command reads the
    /// value are kept; the masker keeps its own patterns).
    pub fn after_spawn(&mut self) -> Option<(OwnedFd, OwnedFd)> {
        for h in &mut self.held {
            h.memfd = None;
            if h.plan.revoke.is_none() || !h.plan.revoke_needs_value {
                h.value = None;
            }
        }
        self.pipes.take().map(|p| {
            drop(p.out_w);
            drop(p.err_w);
            (p.out_r, p.err_r)
        })
    }

    /// The values the proxy's secret firewall keeps out of requests to intercepted
    /// hosts: every masked secret (watch-only ones included) and every injected one.
    /// Call before [`Session::after_spawn`], which drops the values.
    pub fn watched_values(&self) -> Vec<(String, zeroize::Zeroizing<Vec<u8>>)> {
        self.held
            .iter()
            .filter(|h| h.plan.mask || h.plan.inject.is_some())
            .filter_map(|h| {
                let v = h.value.as_ref()?.bytes();
                (!v.is_empty()).then(|| (h.plan.name.clone(), zeroize::Zeroizing::new(v.to_vec())))
            })
            .collect()
    }

    /// The injected secrets (values and placeholders), for the proxy.
    pub fn take_injected(&mut self) -> Vec<super::injected::Secret> {
        std::mem::take(&mut self.injected)
    }

    /// The masker's patterns, shared with the output relay threads (which may outlive
    /// the supervisor's wait when taskcell's own output is stuck).
    pub fn redactor(&self) -> Option<std::sync::Arc<Redactor>> {
        self.redactor.clone()
    }

    /// After the cell ended: record masked counts, revoke, scan what the cell wrote.
    pub fn finish(
        &mut self,
        audit: &mut Audit,
        counts: &[(String, u64)],
        write_roots: &[PathBuf],
        since: SystemTime,
    ) -> Finish {
        let mut total: std::collections::BTreeMap<String, u64> = Default::default();
        for (n, c) in counts {
            *total.entry(n.clone()).or_default() += c;
        }
        for (name, count) in &total {
            audit.record("secret_masked", json!({ "name": name, "count": count }));
        }
        self.revoke_all(audit);
        let mut out = Finish::default();
        let Some(r) = &self.redactor else {
            return out;
        };
        if write_roots.is_empty() {
            return out;
        }
        let report = scan::scan(r, write_roots, since, ScanLimits::default());
        for f in &report.findings {
            let policy = self
                .held
                .iter()
                .find(|h| h.plan.name == f.secret)
                .map(|h| h.plan.on_leak)
                .unwrap_or_default();
            if policy == OnLeak::Fail {
                out.leak_fail = true;
            }
            // PATH[:LINE]: secret NAME (ENCODING)[ in git object ID]
            eprintln!("taskcell: leak: {}", crate::display::clean(f.to_string()));
            audit.record(
                "secret_leak",
                json!({
                    "name": f.secret,
                    "path": crate::display::clean_path(&f.path),
                    "line": f.line,
                    "encoding": f.encoding,
                    "git_object": f.in_git_object,
                    "on_leak": if policy == OnLeak::Fail { "fail" } else { "warn" },
                }),
            );
        }
        if let Some(t) = &report.truncated {
            eprintln!(
                "taskcell: warning: the leak scan was cut short: {}",
                crate::display::clean(t)
            );
        }
        for (path, why) in report.skipped.iter().take(10) {
            eprintln!(
                "taskcell: warning: the leak scan did not search {}: {why}",
                path.display()
            );
        }
        if report.skipped_count > 10 {
            eprintln!(
                "taskcell: warning: ... and {} more (the audit log lists the first {})",
                report.skipped_count - 10,
                scan::MAX_SKIPPED
            );
        }
        let skipped: Vec<serde_json::Value> = report
            .skipped
            .iter()
            .map(|(p, why)| json!({ "path": p, "why": why }))
            .collect();
        audit.record(
            "secret_scan",
            json!({
                "roots": write_roots,
                "files_scanned": report.files_scanned,
                "bytes_scanned": report.bytes_scanned,
                "findings": report.findings.len(),
                "complete": report.complete(),
                "truncated": report.truncated,
                "skipped_count": report.skipped_count,
                "skipped": skipped,
            }),
        );
        let fail_declared = self
            .held
            .iter()
            .any(|h| h.plan.mask && h.plan.on_leak == OnLeak::Fail);
        if !report.complete() && fail_declared {
            out.scan_incomplete_fail = true;
            eprintln!(
                "taskcell: the leak scan could not search everything the cell wrote (see above) and a secret is declared with on_leak = \"fail\": failing closed (exit {EXIT_SCAN_INCOMPLETE} if the command succeeded)"
            );
        }
        if out.leak_fail {
            eprintln!(
                "taskcell: a secret declared with on_leak = \"fail\" was found in what the cell wrote (exit {EXIT_LEAK} if the command succeeded)"
            );
        }
        out
    }

    /// Run each `revoke` once (values dropped afterwards).
    fn revoke_all(&mut self, audit: &mut Audit) {
        for h in &mut self.held {
            let Some(argv) = &h.plan.revoke else { continue };
            if !std::mem::take(&mut h.revoke_pending) {
                continue;
            }
            let value = h.value.take();
            if h.plan.revoke_needs_value && value.is_none() {
                continue;
            }
            let argv = revoke::substitute(argv, &self.session_id, &h.plan.name);
            let r = revoke::revoke(
                &h.plan.name,
                &argv,
                value
                    .as_ref()
                    .filter(|_| h.plan.revoke_needs_value)
                    .map(|v| v.bytes()),
                h.plan.timeout,
                self.redactor.as_deref(),
            );
            drop(value);
            if !r.ok {
                eprintln!(
                    "taskcell: revoking secret {} failed: {}",
                    r.name,
                    crate::display::clean(&r.detail)
                );
            }
            audit.record(
                "secret_revoked",
                json!({ "name": r.name, "ok": r.ok, "detail": r.detail }),
            );
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Values are Zeroizing; make sure nothing is revoked twice or left behind.
        self.held.clear();
    }
}
