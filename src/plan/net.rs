//! Policy for `proxy` network mode: the profile's `[network]` table and the command-line
//! overrides → a [`ProxyPlan`] (part of the Plan). Pure: no sockets, no DNS.
//!
//! The mechanism (`net/`) gets only the ProxyPlan.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::plan::allowlist::{Allowlist, Rule};
pub use crate::profile::Firewall;
use crate::profile::Network;

/// The HTTP proxy's port on 127.0.0.1 inside the cell.
pub const HTTP_PORT: u16 = 3128;
/// The SOCKS5 proxy's port on 127.0.0.1 inside the cell.
pub const SOCKS_PORT: u16 = 1080;
/// Most listeners a cell passes out (the proxy's two and the forwards), in one message.
pub const MAX_LISTENERS: usize = 64;
/// Where the taskcell binary is visible (read-only) inside a `proxy` cell, for
/// `taskcell connect HOST PORT` (an ssh ProxyCommand).
pub const BINARY_IN_CELL: &str = "/run/taskcell/taskcell";
/// The trust bundle (system roots + the cell's own CA) inside a cell whose proxy
/// intercepts TLS for injected secrets; also bound over [`SYSTEM_BUNDLE`].
pub const CA_BUNDLE_IN_CELL: &str = "/run/taskcell/ca-certificates.crt";
/// The resolver configuration; in a `proxy` cell it names 127.0.0.1, where nothing but
/// taskcell's refusing resolver answers (tools must use the proxy).
pub const RESOLV_CONF: &str = "/etc/resolv.conf";
/// The resolver configuration bound over [`RESOLV_CONF`] in a `proxy` cell.
pub const RESOLV_CONF_TEXT: &str = "# taskcell: no DNS in this cell; connect through the proxy (HTTPS_PROXY)\nnameserver 127.0.0.1\noptions attempts:1 timeout:1\n";
/// The system's CA bundle (read by the supervisor; replaced inside the cell).
pub const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Variables that point TLS clients at [`CA_BUNDLE_IN_CELL`].
pub const CA_VARS: [&str; 7] = [
    "SSL_CERT_FILE",
    "NODE_EXTRA_CA_CERTS",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    "CARGO_HTTP_CAINFO",
    "PIP_CERT",
];
/// Default time an `ask` request waits for an answer.
pub const DEFAULT_ASK_TIMEOUT: Duration = Duration::from_secs(60);
/// Default time a connection may stay idle (no byte either way).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// Where a forward leads on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardTo {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl ForwardTo {
    /// `HOST:PORT` with an address literal, or an absolute unix socket path.
    pub fn parse(s: &str) -> Result<ForwardTo, String> {
        if s.starts_with('/') {
            return Ok(ForwardTo::Unix(PathBuf::from(s)));
        }
        s.parse::<SocketAddr>().map(ForwardTo::Tcp).map_err(|_| {
            format!("forward target {s:?} is not ADDRESS:PORT (e.g. \"127.0.0.1:5432\") or an absolute unix socket path")
        })
    }
    pub fn describe(&self) -> String {
        match self {
            ForwardTo::Tcp(a) => a.to_string(),
            ForwardTo::Unix(p) => format!("unix:{}", p.display()),
        }
    }
}

/// One declared port forward: 127.0.0.1:`listen` inside the cell → `to` on the host.
/// A secret delivered as a placeholder and the hosts its value may go to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InjectRule {
    pub secret: String,
    /// Lowercase host names, or `*.domain` (any subdomain of domain).
    pub hosts: Vec<String>,
    /// Substitute in request bodies too.
    pub body: bool,
}

impl InjectRule {
    /// Is `host` (any case) on `port` one this secret is bound to?
    pub fn binds(&self, host: &str, port: u16) -> bool {
        self.hosts.iter().any(|p| host_matches(p, host, port))
    }
}

/// Does a host pattern (`HOST`, `*.DOMAIN`, either with an optional `:PORT`) match
/// `host` (any case, a trailing dot ignored) on `port`? Without a port in the pattern,
/// every port matches.
pub fn host_matches(pattern: &str, host: &str, port: u16) -> bool {
    let (name, want) = match pattern.rsplit_once(':') {
        Some((n, p)) => (n, p.parse::<u16>().ok()),
        None => (pattern, None),
    };
    if want.is_some_and(|w| w != port) {
        return false;
    }
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    match name.strip_prefix("*.") {
        Some(dom) => {
            host.len() > dom.len() + 1
                && host.ends_with(dom)
                && host.as_bytes()[host.len() - dom.len() - 1] == b'.'
        }
        None => name == host,
    }
}

/// The host name of a pattern (for the CA's name constraints).
pub fn pattern_host(pattern: &str) -> &str {
    let name = pattern.rsplit_once(':').map_or(pattern, |(n, _)| n);
    name.trim_start_matches("*.")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Forward {
    pub listen: u16,
    pub to: ForwardTo,
    pub origin: String,
}

/// Everything the egress proxy enforces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProxyPlan {
    /// Where the session's control socket goes (`taskcell approve` talks to it):
    /// `$XDG_RUNTIME_DIR/taskcell`, else `/tmp/taskcell-UID`.
    pub control_dir: PathBuf,
    pub http_port: u16,
    pub socks_port: u16,
    pub allowlist: Allowlist,
    /// Ask about hosts no rule mentions (instead of refusing them).
    pub ask: bool,
    #[serde(serialize_with = "secs")]
    pub ask_timeout: Duration,
    /// argv run for each `ask` request; exit 0 allows the host for the cell's life.
    pub approval_command: Option<Vec<String>>,
    /// Fixed answers for names (like curl's `--resolve`); checked by the allowlist
    /// like any other answer.
    pub resolve: BTreeMap<String, IpAddr>,
    pub forwards: Vec<Forward>,
    #[serde(serialize_with = "secs")]
    pub idle_timeout: Duration,
    /// Secrets injected by the proxy (TLS is intercepted for their hosts only).
    pub inject: Vec<InjectRule>,
    /// Extra CA certificates (PEM) trusted for upstream TLS besides the system roots.
    pub upstream_ca: Option<PathBuf>,
    /// `--learn`: every host is allowed without asking (address rules and `deny` still
    /// hold), each connection audited, and the hosts used are printed at the end as a
    /// `[network] allow = [...]` block.
    pub learn: bool,
    /// Hosts whose TLS is intercepted without an injected secret (`[network] intercept`),
    /// so that the secret firewall sees their requests.
    pub intercept: Vec<String>,
    /// What the secret firewall does with a declared secret in a request to an
    /// intercepted host.
    pub firewall: Firewall,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl ProxyPlan {
    /// Does the proxy terminate TLS for some host (an injected secret or `intercept`)?
    pub fn intercepts_any(&self) -> bool {
        !self.inject.is_empty() || !self.intercept.is_empty()
    }

    /// The ports bound on 127.0.0.1 inside the cell, in the order the listeners are
    /// passed to the supervisor: HTTP, SOCKS5, then each forward. These are the only
    /// ports a cell may `connect` to (Landlock TCP rules use this list).
    pub fn listen_ports(&self) -> Vec<u16> {
        let mut v = vec![self.http_port, self.socks_port];
        v.extend(self.forwards.iter().map(|f| f.listen));
        v
    }

    /// Environment variables that point common tools at the proxy.
    pub fn env(&self) -> Vec<(String, String)> {
        let http = format!("http://127.0.0.1:{}", self.http_port);
        let socks = format!("socks5h://127.0.0.1:{}", self.socks_port);
        let no_proxy = "localhost,127.0.0.1,::1".to_string();
        let mut v: Vec<(String, String)> = Vec::new();
        for k in ["http_proxy", "https_proxy"] {
            v.push((k.into(), http.clone()));
            v.push((k.to_ascii_uppercase(), http.clone()));
        }
        v.push(("all_proxy".into(), socks.clone()));
        v.push(("ALL_PROXY".into(), socks));
        v.push(("no_proxy".into(), no_proxy.clone()));
        v.push(("NO_PROXY".into(), no_proxy));
        // npm and yarn (classic reads npm_config_*; berry reads YARN_*), pip, cargo.
        for k in [
            "npm_config_proxy",
            "npm_config_https_proxy",
            "YARN_HTTP_PROXY",
            "YARN_HTTPS_PROXY",
            "PIP_PROXY",
            "CARGO_HTTP_PROXY",
        ] {
            v.push((k.into(), http.clone()));
        }
        v.push((
            "JAVA_TOOL_OPTIONS".into(),
            format!(
                "-Dhttp.proxyHost=127.0.0.1 -Dhttp.proxyPort={p} -Dhttps.proxyHost=127.0.0.1 -Dhttps.proxyPort={p} -Dhttp.nonProxyHosts=localhost|127.0.0.1",
                p = self.http_port
            ),
        ));
        // git over ssh goes through the proxy too.
        v.push((
            "GIT_SSH_COMMAND".into(),
            format!("ssh -o ProxyCommand='{BINARY_IN_CELL} connect %h %p'"),
        ));
        if self.intercepts_any() {
            for k in CA_VARS {
                v.push((k.into(), CA_BUNDLE_IN_CELL.into()));
            }
        }
        v.push((
            "TASKCELL_PROXY".into(),
            format!("127.0.0.1:{}", self.http_port),
        ));
        v
    }
}

/// Command-line additions for the network (`--allow`, `--ask`, `--resolve`).
#[derive(Debug, Clone, Default)]
pub struct NetOverrides {
    pub allow: Vec<String>,
    pub ask: bool,
    /// `HOST:ADDR` entries.
    pub resolve: Vec<String>,
    /// `--upstream-ca PATH`.
    pub upstream_ca: Option<PathBuf>,
    /// `--learn`.
    pub learn: bool,
}

impl NetOverrides {
    /// The first flag given that only means something in `proxy` mode.
    pub fn proxy_flag(&self) -> Option<&'static str> {
        if self.learn {
            Some("--learn")
        } else if !self.allow.is_empty() {
            Some("--allow")
        } else if self.ask {
            Some("--ask")
        } else if !self.resolve.is_empty() {
            Some("--resolve")
        } else {
            None
        }
    }
}

/// The directory of the control sockets for a user with this `XDG_RUNTIME_DIR` and uid
/// (the supervisor serves there; `taskcell sessions/approve/deny` look there).
pub fn control_dir(xdg_runtime_dir: Option<&str>, uid: u32) -> PathBuf {
    match xdg_runtime_dir.filter(|d| d.starts_with('/')) {
        Some(d) => Path::new(d).join("taskcell"),
        None => PathBuf::from(format!("/tmp/taskcell-{uid}")),
    }
}

/// Every directory where a session's control socket may be (for `taskcell sessions`,
/// `approve`, `deny`): [`control_dir`], and, when that is `/tmp/taskcell-UID` and was
/// taken by someone else, the fresh `/tmp/taskcell-UID-*` directories used instead.
pub fn control_dirs(xdg_runtime_dir: Option<&str>, uid: u32) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(d) = xdg_runtime_dir.filter(|d| d.starts_with('/')) {
        v.push(Path::new(d).join("taskcell"));
    }
    v.push(PathBuf::from(format!("/tmp/taskcell-{uid}")));
    v
}

/// The plan path through which a cell of `paths` would see `dir` (read or write: a
/// unix socket there can be connected to), if any. A `tmpfs` or `hide` path over it
/// hides it.
pub fn visible_through(dir: &Path, paths: &[crate::plan::PathRule]) -> Option<PathBuf> {
    use crate::plan::Access;
    let shows = |a: Access| matches!(a, Access::Read | Access::Write | Access::Protect);
    let cover = paths
        .iter()
        .filter(|r| r.symlink.is_none() && dir.starts_with(&r.path))
        .max_by_key(|r| r.path.components().count());
    if let Some(r) = cover {
        if shows(r.access) {
            return Some(r.path.clone());
        }
    }
    paths
        .iter()
        .find(|r| r.symlink.is_none() && r.path.starts_with(dir) && shows(r.access))
        .map(|r| r.path.clone())
}

/// Where this cell's control socket goes: the first of [`control_dirs`] the cell cannot
/// see; an error naming the path that shows it when there is none.
pub fn choose_control_dir(
    xdg_runtime_dir: Option<&str>,
    uid: u32,
    paths: &[crate::plan::PathRule],
) -> Result<PathBuf, String> {
    let mut seen = Vec::new();
    for d in control_dirs(xdg_runtime_dir, uid) {
        // Compare real paths (the plan's are resolved).
        let real = match (d.parent(), d.file_name()) {
            (Some(p), Some(n)) => std::fs::canonicalize(p)
                .map(|p| p.join(n))
                .unwrap_or_else(|_| d.clone()),
            _ => d.clone(),
        };
        match visible_through(&real, paths) {
            None => return Ok(d),
            Some(through) => seen.push(format!(
                "{} (the cell sees it through {})",
                d.display(),
                through.display()
            )),
        }
    }
    Err(format!(
        "the control socket of this cell (`taskcell approve`, `taskcell sessions`) would be \
         reachable from inside it: {}; a cell could approve its own requests. Set \
         XDG_RUNTIME_DIR to a private directory outside the cell's paths",
        seen.join(", ")
    ))
}

/// Build the ProxyPlan from the profile's `[network]` table and the overrides.
pub fn build(net: &Network, ov: &NetOverrides) -> Result<ProxyPlan, String> {
    let mut allowlist = Allowlist::default();
    for v in &net.allow {
        allowlist.allow.push(
            Rule::parse(&v.value, &v.origin.to_string())
                .map_err(|e| format!("{}: `network.allow`: {e}", v.origin))?,
        );
    }
    for v in &net.deny {
        allowlist.deny.push(
            Rule::parse(&v.value, &v.origin.to_string())
                .map_err(|e| format!("{}: `network.deny`: {e}", v.origin))?,
        );
    }
    for a in &ov.allow {
        allowlist
            .allow
            .push(Rule::parse(a, "command line").map_err(|e| format!("--allow: {e}"))?);
    }
    let mut resolve = BTreeMap::new();
    for (k, v) in &net.resolve {
        let addr: IpAddr = v.value.parse().map_err(|_| {
            format!(
                "{}: `network.resolve.{k}`: {:?} is not an IP address",
                v.origin, v.value
            )
        })?;
        resolve.insert(crate::plan::allowlist::normalize_host(k), addr);
    }
    for r in &ov.resolve {
        let (h, a) = r
            .split_once(':')
            .ok_or_else(|| format!("--resolve {r:?}: write HOST:ADDRESS"))?;
        let addr: IpAddr = a
            .trim_matches(|c| c == '[' || c == ']')
            .parse()
            .map_err(|_| format!("--resolve {r:?}: {a:?} is not an IP address"))?;
        resolve.insert(crate::plan::allowlist::normalize_host(h), addr);
    }
    let mut forwards = Vec::new();
    if net.forward.len() + 2 > MAX_LISTENERS {
        return Err(format!(
            "{}: at most {} port forwards",
            net.forward[0].origin,
            MAX_LISTENERS - 2
        ));
    }
    for f in &net.forward {
        if f.listen == HTTP_PORT || f.listen == SOCKS_PORT {
            return Err(format!(
                "{}: forward listen port {} is the proxy's own port (choose another)",
                f.origin, f.listen
            ));
        }
        if forwards.iter().any(|x: &Forward| x.listen == f.listen) {
            return Err(format!(
                "{}: two forwards listen on port {}",
                f.origin, f.listen
            ));
        }
        forwards.push(Forward {
            listen: f.listen,
            to: ForwardTo::parse(&f.to).map_err(|e| format!("{}: {e}", f.origin))?,
            origin: f.origin.to_string(),
        });
    }
    Ok(ProxyPlan {
        control_dir: PathBuf::new(),
        http_port: HTTP_PORT,
        socks_port: SOCKS_PORT,
        allowlist,
        ask: ov.ask || net.ask.unwrap_or(false),
        ask_timeout: net.ask_timeout.unwrap_or(DEFAULT_ASK_TIMEOUT),
        approval_command: net.approval_command.as_ref().map(|v| v.value.clone()),
        resolve,
        forwards,
        idle_timeout: net.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT),
        inject: Vec::new(),
        upstream_ca: match &ov.upstream_ca {
            Some(p) => Some(p.clone()),
            None => net.upstream_ca.as_ref().map(|v| PathBuf::from(&v.value)),
        },
        learn: ov.learn,
        intercept: net.intercept.iter().map(|v| v.value.clone()).collect(),
        firewall: net.firewall.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{Origin, Val};

    fn val(s: &str) -> Val<String> {
        Val {
            value: s.into(),
            origin: Origin {
                file: "t.toml".into(),
                line: 3,
            },
        }
    }

    #[test]
    fn builds_rules_and_env() {
        let mut n = Network::default();
        n.allow.push(val("example.test:8080"));
        n.deny.push(val("bad.test"));
        n.resolve.insert("Example.Test".into(), val("127.0.0.1"));
        let p = build(
            &n,
            &NetOverrides {
                allow: vec!["127.0.0.1:8080".into()],
                ask: true,
                resolve: vec!["other.test:10.0.0.1".into()],
                upstream_ca: None,
                learn: false,
            },
        )
        .unwrap();
        assert_eq!(p.allowlist.allow.len(), 2);
        assert_eq!(p.allowlist.allow[0].origin, "profile t.toml line 3");
        assert_eq!(p.allowlist.allow[1].origin, "command line");
        assert!(p.ask);
        assert_eq!(
            p.resolve["example.test"],
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            p.resolve["other.test"],
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(p.listen_ports(), vec![3128, 1080]);
        let env = p.env();
        for k in [
            "HTTP_PROXY",
            "https_proxy",
            "ALL_PROXY",
            "no_proxy",
            "npm_config_proxy",
            "PIP_PROXY",
            "CARGO_HTTP_PROXY",
            "JAVA_TOOL_OPTIONS",
        ] {
            assert!(env.iter().any(|(n, _)| n == k), "{k} missing");
        }
    }

    #[test]
    fn inject_host_patterns() {
        let r = InjectRule {
            secret: "T".into(),
            hosts: vec![
                "api.example.com".into(),
                "*.example.org".into(),
                "api.github.com:443".into(),
            ],
            body: false,
        };
        assert!(r.binds("api.example.com", 443));
        assert!(r.binds("API.Example.com.", 8443));
        assert!(!r.binds("example.com", 443));
        assert!(!r.binds("xapi.example.com", 443));
        assert!(r.binds("a.example.org", 443));
        assert!(r.binds("a.b.example.org", 443));
        assert!(!r.binds("example.org", 443));
        assert!(!r.binds("badexample.org", 443));
        // A port in the binding binds that port only.
        assert!(r.binds("api.github.com", 443));
        assert!(!r.binds("api.github.com", 8443));
        assert_eq!(pattern_host("*.example.org:443"), "example.org");
        assert_eq!(pattern_host("api.github.com"), "api.github.com");
    }

    #[test]
    fn bad_entries_name_their_line() {
        let mut n = Network::default();
        n.allow.push(val("not a host"));
        let e = build(&n, &NetOverrides::default()).unwrap_err();
        assert!(e.contains("t.toml line 3"), "{e}");
        let mut n = Network::default();
        n.resolve.insert("x".into(), val("nope"));
        assert!(build(&n, &NetOverrides::default()).is_err());
    }

    #[test]
    fn forward_targets() {
        assert_eq!(
            ForwardTo::parse("127.0.0.1:5432").unwrap(),
            ForwardTo::Tcp("127.0.0.1:5432".parse().unwrap())
        );
        assert!(matches!(
            ForwardTo::parse("/run/pg.sock").unwrap(),
            ForwardTo::Unix(_)
        ));
        assert!(ForwardTo::parse("db:5432").is_err());
    }

    #[test]
    fn the_control_dir_is_never_visible_in_the_cell() {
        use crate::plan::{Access, PathRule};
        let r = |p: &str, access| PathRule {
            path: PathBuf::from(p),
            access,
            symlink: None,
            is_dir: true,
            optional: false,
        };
        let d = Path::new("/tmp/taskcell-7");
        assert_eq!(visible_through(d, &[r("/usr", Access::Read)]), None);
        assert_eq!(
            visible_through(d, &[r("/tmp", Access::Write)]),
            Some(PathBuf::from("/tmp"))
        );
        // A private tmpfs over /tmp hides it, even with a workspace below /tmp.
        assert_eq!(
            visible_through(d, &[r("/tmp", Access::Tmpfs), r("/tmp/ws", Access::Write)]),
            None
        );
        assert!(visible_through(d, &[r("/", Access::Read)]).is_some());
        assert!(visible_through(d, &[r("/tmp/taskcell-7/x", Access::Read)]).is_some());
        let e = choose_control_dir(None, 7, &[r("/tmp", Access::Write)]).unwrap_err();
        assert!(e.contains("reachable from inside it"), "{e}");
        assert_eq!(
            choose_control_dir(Some("/run/user/7"), 7, &[r("/tmp", Access::Write)]).unwrap(),
            PathBuf::from("/run/user/7/taskcell")
        );
    }
}
