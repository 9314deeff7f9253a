//! Credentials the cell never sees (`deliver = "inject"`).
//!
//! The cell holds a placeholder; the proxy terminates TLS only for `CONNECT` tunnels to
//! a host some injected secret is bound to ([`Injector::intercepts`]), with a leaf
//! certificate signed by a per-cell CA whose private key lives only in this process
//! ([`Injector::new`]), and speaks HTTP/1.1 to both sides ([`h1`]): placeholders become
//! values on their way to bound hosts, a placeholder on its way anywhere else blocks
//! the request, and values in responses become placeholders again ([`subst`]). Upstream
//! TLS is verified against the system roots (plus `upstream_ca`), never weaker.
//! The cell trusts the CA through a bundle (system roots + the CA) bound over the
//! system bundle and at [`crate::plan::net::CA_BUNDLE_IN_CELL`].

pub mod firewall;
pub mod h1;
pub mod h2;
pub mod record;
pub mod subst;

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use zeroize::Zeroizing;

use crate::plan::net::{InjectRule, ProxyPlan, SYSTEM_BUNDLE};

pub use crate::secrets::injected::Secret;

/// The per-cell interception state.
pub struct Injector {
    rules: Vec<InjectRule>,
    /// `[network] intercept` host patterns.
    intercept: Vec<String>,
    /// Every declared secret the firewall keeps out of intercepted requests: (name,
    /// value). Zeroized on drop, never in Debug.
    watched: Vec<(String, Zeroizing<Vec<u8>>)>,
    block: bool,
    /// The firewall per set of excluded secrets (those injected for the destination).
    walls: Mutex<HashMap<Vec<bool>, Option<firewall::Wall>>>,
    /// In `rules` order.
    secrets: Vec<Secret>,
    ca_cert: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
    /// One key for every leaf of this cell (generating one per host costs time for
    /// nothing: they all live and die with the cell).
    leaf_key: rcgen::KeyPair,
    /// Per (host, offers h2).
    leaves: Mutex<HashMap<(String, bool), Arc<ServerConfig>>>,
    client: Arc<ClientConfig>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    /// The trust bundle file bound into the cell (removed once the cell has it, see
    /// [`Injector::remove_bundle`], or on drop).
    bundle: Mutex<Option<tempfile::NamedTempFile>>,
    bundle_path: PathBuf,
}

impl std::fmt::Debug for Injector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Injector")
            .field("secrets", &self.secrets)
            .finish_non_exhaustive()
    }
}

fn err(what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("{what}: {e}"))
}

/// Read every certificate of a PEM file.
fn pem_certs(path: &Path) -> io::Result<Vec<CertificateDer<'static>>> {
    let it = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(&format!("reading certificates from {}", path.display()), e))?;
    let mut v = Vec::new();
    for c in it {
        v.push(c.map_err(|e| err(&format!("parsing {}", path.display()), e))?);
    }
    Ok(v)
}

/// The fetched secrets in the order of `plan.inject` (one per rule, matched by name).
fn in_rule_order(plan: &ProxyPlan, mut secrets: Vec<Secret>) -> io::Result<Vec<Secret>> {
    let mut ordered = Vec::new();
    for r in &plan.inject {
        let i = secrets
            .iter()
            .position(|s| s.name == r.secret)
            .ok_or_else(|| io::Error::other(format!("secret {} was not fetched", r.secret)))?;
        let mut s = secrets.swap_remove(i);
        s.body = r.body;
        ordered.push(s);
    }
    Ok(ordered)
}

/// The TLS client toward origins: the system roots plus the configured `upstream_ca`.
fn upstream_client(
    plan: &ProxyPlan,
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> io::Result<ClientConfig> {
    let mut roots = RootCertStore::empty();
    if Path::new(SYSTEM_BUNDLE).exists() {
        let (_ok, _bad) = roots.add_parsable_certificates(pem_certs(Path::new(SYSTEM_BUNDLE))?);
    }
    if let Some(extra) = &plan.upstream_ca {
        let certs = pem_certs(extra)?;
        if certs.is_empty() {
            return Err(io::Error::other(format!(
                "upstream_ca {}: no PEM certificate in it",
                extra.display()
            )));
        }
        for c in certs {
            roots.add(c).map_err(|e| {
                err(
                    &format!(
                        "upstream_ca {}: a certificate is not usable",
                        extra.display()
                    ),
                    e,
                )
            })?;
        }
    }
    let mut client = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| err("TLS client configuration", e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(client)
}

/// The cell's CA: valid for the hosts secrets are bound to (and intercepted ones) only
/// (name constraints), for 30 days.
fn cell_ca(plan: &ProxyPlan, session: &str) -> io::Result<(rcgen::Certificate, rcgen::KeyPair)> {
    let now = time::OffsetDateTime::now_utc();
    let mut params =
        rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| err("CA parameters", e))?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("taskcell cell {session} (injected credentials)"),
    );
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let mut permitted: Vec<String> = plan
        .inject
        .iter()
        .flat_map(|r| r.hosts.iter())
        .chain(plan.intercept.iter())
        .map(|h| crate::plan::net::pattern_host(h).to_string())
        .collect();
    permitted.sort();
    permitted.dedup();
    params.name_constraints = Some(rcgen::NameConstraints {
        permitted_subtrees: permitted
            .into_iter()
            .map(rcgen::GeneralSubtree::DnsName)
            .collect(),
        excluded_subtrees: Vec::new(),
    });
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(30);
    let ca_key = rcgen::KeyPair::generate().map_err(|e| err("generating the CA key", e))?;
    let ca_cert = params
        .self_signed(&ca_key)
        .map_err(|e| err("signing the CA certificate", e))?;
    Ok((ca_cert, ca_key))
}

/// The trust bundle the cell reads: the system roots and the cell's CA (0644).
fn trust_bundle(ca_cert: &rcgen::Certificate) -> io::Result<tempfile::NamedTempFile> {
    let mut bundle = tempfile::Builder::new()
        .prefix("taskcell-ca-")
        .suffix(".crt")
        .tempfile()
        .map_err(|e| err("creating the cell's CA bundle file", e))?;
    if let Ok(sys) = std::fs::read(SYSTEM_BUNDLE) {
        bundle.write_all(&sys)?;
        if !sys.ends_with(b"\n") {
            bundle.write_all(b"\n")?;
        }
    }
    bundle.write_all(ca_cert.pem().as_bytes())?;
    bundle.flush()?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(bundle.path(), std::fs::Permissions::from_mode(0o644))?;
    Ok(bundle)
}

impl Injector {
    /// Generate the cell's CA, load the upstream roots and write the cell's trust
    /// bundle. `secrets` must hold one entry per `plan.inject` rule (matched by name).
    /// `watched` are the values the secret firewall keeps out of requests to
    /// intercepted hosts (every masked secret, watch-only ones included).
    pub fn new(
        plan: &ProxyPlan,
        secrets: Vec<Secret>,
        watched: Vec<(String, Zeroizing<Vec<u8>>)>,
        session: &str,
    ) -> io::Result<Injector> {
        let ordered = in_rule_order(plan, secrets)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = upstream_client(plan, &provider)?;
        let (ca_cert, ca_key) = cell_ca(plan, session)?;
        let leaf_key = rcgen::KeyPair::generate().map_err(|e| err("generating a leaf key", e))?;
        let bundle = trust_bundle(&ca_cert)?;
        Ok(Injector {
            rules: plan.inject.clone(),
            intercept: plan.intercept.clone(),
            watched,
            block: plan.firewall == crate::plan::net::Firewall::Block,
            walls: Mutex::new(HashMap::new()),
            secrets: ordered,
            ca_cert,
            ca_key,
            leaf_key,
            leaves: Mutex::new(HashMap::new()),
            client: Arc::new(client),
            provider,
            bundle_path: bundle.path().to_path_buf(),
            bundle: Mutex::new(Some(bundle)),
        })
    }

    /// The CA certificate (PEM), as the cell sees it.
    pub fn ca_pem(&self) -> String {
        self.ca_cert.pem()
    }

    /// Is a CONNECT to `host`:`port` terminated here (some secret is bound to it, or
    /// `[network] intercept` names it)?
    pub fn intercepts(&self, host: &str, port: u16) -> bool {
        self.rules.iter().any(|r| r.binds(host, port))
            || self
                .intercept
                .iter()
                .any(|p| crate::plan::net::host_matches(p, host, port))
    }

    /// Per secret: is it bound to `host`:`port`?
    pub fn bound(&self, host: &str, port: u16) -> Vec<bool> {
        self.rules.iter().map(|r| r.binds(host, port)).collect()
    }

    /// The secret firewall for requests to a destination with these `bound` secrets
    /// (which it leaves alone: their values are meant for it). None when there is
    /// nothing to watch. Built once per set.
    pub fn wall(&self, bound: &[bool]) -> io::Result<Option<firewall::Wall>> {
        if let Ok(m) = self.walls.lock() {
            if let Some(w) = m.get(bound) {
                return Ok(w.clone());
            }
        }
        let own: Vec<&str> = self
            .secrets
            .iter()
            .zip(bound)
            .filter(|(_, b)| **b)
            .map(|(s, _)| s.name.as_str())
            .collect();
        let list: Vec<(String, &[u8])> = self
            .watched
            .iter()
            .filter(|(n, _)| !own.contains(&n.as_str()))
            .map(|(n, v)| (n.clone(), &v[..]))
            .collect();
        let wall = if list.is_empty() {
            None
        } else {
            let r = crate::secrets::redact::Redactor::with_options(&list, true)
                .map_err(|e| err("the secret firewall", e))?
                .with_replacement(firewall::replacement);
            Some(firewall::Wall {
                r: Arc::new(r),
                block: self.block,
            })
        };
        if let Ok(mut m) = self.walls.lock() {
            m.insert(bound.to_vec(), wall.clone());
        }
        Ok(wall)
    }

    pub fn secrets(&self) -> &[Secret] {
        &self.secrets
    }

    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.client.clone()
    }

    /// The TLS server configuration for `host` (a leaf signed by the cell CA, cached),
    /// offering `h2` and `http/1.1`, or `http/1.1` only.
    pub fn server_config(&self, host: &str, h2: bool) -> io::Result<Arc<ServerConfig>> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if let Ok(m) = self.leaves.lock() {
            if let Some(c) = m.get(&(host.clone(), h2)) {
                return Ok(c.clone());
            }
        }
        let now = time::OffsetDateTime::now_utc();
        let mut params = rcgen::CertificateParams::new(vec![host.clone()])
            .map_err(|e| err(&format!("leaf certificate for {host}"), e))?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, host.clone());
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(7);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let leaf = params
            .signed_by(&self.leaf_key, &self.ca_cert, &self.ca_key)
            .map_err(|e| err(&format!("signing the leaf certificate for {host}"), e))?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key.serialize_der()));
        let mut cfg = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| err("TLS server configuration", e))?
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone(), self.ca_cert.der().clone()], key)
            .map_err(|e| err("TLS server configuration", e))?;
        cfg.alpn_protocols = if h2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        let cfg = Arc::new(cfg);
        if let Ok(mut m) = self.leaves.lock() {
            m.insert((host, h2), cfg.clone());
        }
        Ok(cfg)
    }

    /// The bundle file on the host (bound into the cell).
    pub fn bundle_path(&self) -> PathBuf {
        self.bundle_path.clone()
    }

    /// Remove the bundle file from the host once the cell's mounts are made (the bind
    /// keeps the content; the proxy threads outlive the cell until taskcell exits).
    pub fn remove_bundle(&self) {
        if let Ok(mut b) = self.bundle.lock() {
            if let Some(f) = b.take() {
                if let Err(e) = f.close() {
                    tracing::warn!("removing the cell's CA bundle file: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_values_or_placeholders() {
        let s = Secret::new(
            "TOK",
            b"ghp_VALUEvalue0123456789".to_vec(),
            b"ghp_PLACEplace9876543210".to_vec(),
            true,
        );
        let d = format!("{s:?}");
        assert!(d.contains("TOK"), "{d}");
        assert!(!d.contains("VALUE") && !d.contains("PLACE"), "{d}");
        let m = subst::Matcher::new(std::slice::from_ref(&s), &[true], subst::Part::Response);
        let d = format!("{m:?}");
        assert!(!d.contains("VALUE") && !d.contains("PLACE"), "{d}");
        let plan = crate::plan::net::build(
            &crate::profile::Network::default(),
            &crate::plan::net::NetOverrides::default(),
        )
        .unwrap();
        let inj = Injector::new(
            &plan,
            Vec::new(),
            vec![("W".into(), Zeroizing::new(b"watchedVALUE123".to_vec()))],
            "t",
        )
        .unwrap();
        let d = format!("{inj:?} {:?}", inj.wall(&[]).unwrap());
        assert!(d.contains('W') && !d.contains("VALUE"), "{d}");
    }
}
