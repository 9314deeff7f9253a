//! The profile file format as serde sees it, and merging into a [`Profile`].

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use super::spanned::Spanned;

use super::NetMode;
use super::{parse_duration, Origin, PathEntry, Profile, ProfileError, Val};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawProfile {
    pub description: Option<Spanned<String>>,
    pub extends: Option<Spanned<String>>,
    pub hostname: Option<Spanned<String>>,
    pub strict: Option<Spanned<bool>>,
    #[serde(default)]
    pub filesystem: RawFilesystem,
    pub network: Option<RawNetwork>,
    pub env: Option<RawEnv>,
    pub limits: Option<RawLimits>,
    #[serde(default)]
    pub secrets: BTreeMap<String, Spanned<super::secrets::RawSecret>>,
    pub security: Option<RawSecurity>,
    pub terminal: Option<RawTerminal>,
    pub command: Option<RawCommand>,
}

/// `[command]`: what taskcell adds to the cell's command.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCommand {
    /// PROGRAM = [ARGS...]: when the cell's command is PROGRAM (by the last component of
    /// the name it is run as), ARGS are inserted right after it, e.g. a setting that tells
    /// an agent's own sandbox to stand down because the cell is the sandbox.
    #[serde(default)]
    pub insert_args: BTreeMap<String, Spanned<Vec<String>>>,
}

/// `[terminal]`: what the cell may do to the user's terminal.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTerminal {
    /// Let the cell write the clipboard (OSC 52).
    pub clipboard: Option<Spanned<bool>>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawFilesystem {
    #[serde(default)]
    pub read: Vec<Spanned<RawPath>>,
    #[serde(default)]
    pub write: Vec<Spanned<RawPath>>,
    #[serde(default)]
    pub tmpfs: Vec<Spanned<RawPath>>,
    #[serde(default)]
    pub protect: Vec<Spanned<RawPath>>,
    #[serde(default)]
    pub hide: Vec<Spanned<RawPath>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RawPath {
    Plain(String),
    Full(RawPathTable),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPathTable {
    pub path: String,
    #[serde(default)]
    pub optional: bool,
    /// "dir" or "file": create it on the host when missing (read and write only).
    pub create: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawNetwork {
    pub mode: Option<Spanned<String>>,
    #[serde(default)]
    pub allow: Vec<Spanned<String>>,
    #[serde(default)]
    pub deny: Vec<Spanned<String>>,
    pub ask: Option<Spanned<bool>>,
    pub ask_timeout: Option<Spanned<String>>,
    pub approval_command: Option<Spanned<Vec<String>>>,
    pub idle_timeout: Option<Spanned<String>>,
    pub upstream_ca: Option<Spanned<String>>,
    #[serde(default)]
    pub resolve: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pub forward: Vec<Spanned<RawForward>>,
    /// Hosts whose TLS is intercepted even with no secret injected (the secret firewall).
    #[serde(default)]
    pub intercept: Vec<Spanned<String>>,
    /// `"redact"` or `"block"`: what the secret firewall does with a secret on its way
    /// to an intercepted host.
    pub firewall: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawForward {
    pub listen: u16,
    pub to: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawEnv {
    #[serde(default)]
    pub pass: Vec<Spanned<String>>,
    #[serde(default)]
    pub set: BTreeMap<String, Spanned<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub timeout: Option<Spanned<String>>,
    pub grace: Option<Spanned<String>>,
    pub processes: Option<Spanned<RawQty>>,
    pub memory: Option<Spanned<RawQty>>,
    pub cpu: Option<Spanned<RawQty>>,
    pub open_files: Option<Spanned<RawQty>>,
    pub file_size: Option<Spanned<RawQty>>,
    pub core: Option<Spanned<RawQty>>,
    #[serde(default)]
    pub rlimits: BTreeMap<String, Spanned<u64>>,
}

/// `[security]`: the layers under the namespaces (Landlock, seccomp).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSecurity {
    pub landlock: Option<Spanned<bool>>,
    pub seccomp: Option<RawSeccomp>,
    pub allow_userns: Option<Spanned<bool>>,
    #[serde(default)]
    pub tcp_ports: Vec<Spanned<i64>>,
    pub tcp_any_port: Option<Spanned<bool>>,
    /// The lowest tier the cell may run in: "full" (namespaces, Landlock, seccomp; the
    /// default when strict) or "container" (no user namespaces: Landlock, seccomp,
    /// no_new_privs, egress only through the proxy); "none" accepts any machine.
    pub require: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSeccomp {
    #[serde(default)]
    pub deny: Vec<Spanned<String>>,
    #[serde(default)]
    pub allow: Vec<Spanned<String>>,
}

/// A limit as written: `4096`, `1.5` or `"4G"`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RawQty {
    Int(i64),
    Float(f64),
    Str(String),
}

impl RawQty {
    fn text(&self) -> String {
        match self {
            RawQty::Int(i) => i.to_string(),
            RawQty::Float(f) => f.to_string(),
            RawQty::Str(s) => s.clone(),
        }
    }
}

/// The offsets of a text's newlines, to find the line of many offsets in log time each.
pub struct Lines(Vec<usize>);

impl Lines {
    pub fn new(text: &str) -> Lines {
        Lines(
            text.bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| i)
                .collect(),
        )
    }

    /// 1-based line of a byte offset (the newlines before it, plus one).
    pub fn line_of(&self, offset: usize) -> usize {
        self.0.partition_point(|&nl| nl < offset) + 1
    }
}

/// 1-based line of a byte offset.
pub fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

pub fn parse(file: &str, text: &str) -> Result<RawProfile, ProfileError> {
    toml::from_str::<RawProfile>(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
        let mut msg = e.message().trim().to_string();
        if msg.starts_with("data did not match any variant") && msg.contains("RawQty") {
            msg = "a limit is a number or a string such as \"4G\" or \"unlimited\"".into();
        } else if msg.starts_with("data did not match any variant") {
            msg = "a path entry must be a string or a table { path = \"...\", optional = true }"
                .into();
        }
        if msg.starts_with("unknown field") {
            msg.push_str(" (see the profile reference in docs/profile.md)");
        }
        ProfileError::Invalid {
            origin: Origin {
                file: file.to_string(),
                line,
            },
            msg,
        }
    })
}

pub fn merge_into(
    p: &mut Profile,
    file: &str,
    text: &str,
    raw: &RawProfile,
) -> Result<(), ProfileError> {
    // Line numbers from one index of the newlines: linear in the file, not per entry.
    let lines = Lines::new(text);
    let origin = |start: usize| Origin {
        file: file.to_string(),
        line: lines.line_of(start),
    };
    p.sources.push(file.to_string());
    if let Some(d) = &raw.description {
        p.description = d.get_ref().clone();
    }
    if let Some(h) = &raw.hostname {
        p.hostname = hostname(h, &origin)?;
    }
    if let Some(s) = &raw.strict {
        p.strict = *s.get_ref();
    }
    if let Some(c) = raw.terminal.as_ref().and_then(|t| t.clipboard.as_ref()) {
        p.terminal.clipboard = *c.get_ref();
    }
    for (prog, args) in raw.command.iter().flat_map(|c| &c.insert_args) {
        if prog.is_empty() || prog.contains('/') || prog.contains('\0') {
            return Err(ProfileError::Invalid {
                origin: origin(args.span().start),
                msg: format!(
                    "`command.insert_args`: {prog:?} is not a program name (no '/'; the last component of the command's name)"
                ),
            });
        }
        p.command
            .insert_args
            .insert(prog.clone(), args.get_ref().clone());
    }
    merge_filesystem(p, &raw.filesystem, &origin)?;
    if let Some(n) = &raw.network {
        if let Some(m) = &n.mode {
            p.network.mode = NetMode::parse(m.get_ref()).ok_or_else(|| ProfileError::Invalid {
                origin: origin(m.span().start),
                msg: format!(
                    "`network.mode` {:?} is not a mode (use \"none\", \"loopback\", \"proxy\" or \"host\")",
                    m.get_ref()
                ),
            })?;
        }
        merge_network(&mut p.network, n, &origin)?;
    }
    if let Some(env) = &raw.env {
        merge_env(p, env, &origin)?;
    }
    if let Some(l) = &raw.limits {
        merge_limits(p, l, &origin)?;
    }
    super::secrets::merge(&mut p.secrets, &raw.secrets, &origin)?;
    if let Some(sec) = &raw.security {
        merge_security(p, sec, &origin)?;
    }
    Ok(())
}

/// `hostname`: letters, digits, '-', '.', at most 64.
fn hostname(h: &Spanned<String>, origin: &dyn Fn(usize) -> Origin) -> Result<String, ProfileError> {
    let v = h.get_ref();
    if v.is_empty()
        || v.len() > 64
        || !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        return Err(ProfileError::Invalid {
            origin: origin(h.span().start),
            msg: format!(
                "`hostname` {v:?} is not a valid host name (letters, digits, '-', '.'; at most 64)"
            ),
        });
    }
    Ok(v.clone())
}

/// `[filesystem]`: each list appended, with its origin; `create` only on read/write.
fn merge_filesystem(
    p: &mut Profile,
    fs: &RawFilesystem,
    origin: &dyn Fn(usize) -> Origin,
) -> Result<(), ProfileError> {
    for (src, dst, key) in [
        (&fs.read, &mut p.filesystem.read, "read"),
        (&fs.write, &mut p.filesystem.write, "write"),
        (&fs.tmpfs, &mut p.filesystem.tmpfs, "tmpfs"),
        (&fs.protect, &mut p.filesystem.protect, "protect"),
        (&fs.hide, &mut p.filesystem.hide, "hide"),
    ] {
        for e in src {
            let (path, optional, create) = match e.get_ref() {
                super::raw::RawPath::Plain(s) => (s.clone(), false, None),
                super::raw::RawPath::Full(t) => (t.path.clone(), t.optional, t.create.clone()),
            };
            let create = match create.as_deref() {
            None => None,
            Some(c) if !matches!(key, "read" | "write") => {
                return Err(ProfileError::Invalid {
                    origin: origin(e.span().start),
                    msg: format!(
                        "`create = {c:?}` on a `{key}` path: only `read` and `write` paths can be created"
                    ),
                })
            }
            Some("dir") => Some(super::Create::Dir),
            Some("file") => Some(super::Create::File),
            Some(c) => {
                return Err(ProfileError::Invalid {
                    origin: origin(e.span().start),
                    msg: format!("`create = {c:?}` is not \"dir\" or \"file\""),
                })
            }
        };
            if path.is_empty() {
                return Err(ProfileError::Invalid {
                    origin: origin(e.span().start),
                    msg: "empty path".into(),
                });
            }
            dst.push(PathEntry {
                path,
                optional,
                create,
                origin: origin(e.span().start),
            });
        }
    }
    Ok(())
}

/// `[env]`: `pass` appended, `set` overriding.
fn merge_env(
    p: &mut Profile,
    env: &RawEnv,
    origin: &dyn Fn(usize) -> Origin,
) -> Result<(), ProfileError> {
    for v in &env.pass {
        p.env.pass.push(Val {
            value: v.get_ref().clone(),
            origin: origin(v.span().start),
        });
    }
    for (k, v) in &env.set {
        if !valid_env_name(k) {
            return Err(ProfileError::Invalid {
                origin: origin(v.span().start),
                msg: format!("`env.set` name {k:?} is not a valid variable name"),
            });
        }
        p.env.set.insert(
            k.clone(),
            Val {
                value: v.get_ref().clone(),
                origin: origin(v.span().start),
            },
        );
    }
    Ok(())
}

/// `[limits]`: durations parsed, resource values kept as written (checked in plan).
fn merge_limits(
    p: &mut Profile,
    l: &RawLimits,
    origin: &dyn Fn(usize) -> Origin,
) -> Result<(), ProfileError> {
    for (key, slot) in [("timeout", &l.timeout), ("grace", &l.grace)] {
        if let Some(t) = slot {
            let d = parse_duration(t.get_ref()).map_err(|msg| ProfileError::Invalid {
                origin: origin(t.span().start),
                msg: format!("`limits.{key}`: {msg}"),
            })?;
            match key {
                "timeout" => p.limits.timeout = Some(d),
                _ => p.limits.grace = Some(d),
            }
        }
    }
    for (key, slot) in [
        ("processes", &l.processes),
        ("memory", &l.memory),
        ("cpu", &l.cpu),
        ("open_files", &l.open_files),
        ("file_size", &l.file_size),
        ("core", &l.core),
    ] {
        if let Some(v) = slot {
            let text = v.get_ref().text();
            p.limits.resources.insert(
                key.to_string(),
                Val {
                    value: text,
                    origin: origin(v.span().start),
                },
            );
        }
    }
    for (k, v) in &l.rlimits {
        p.limits.rlimits.insert(
            k.clone(),
            Val {
                value: *v.get_ref(),
                origin: origin(v.span().start),
            },
        );
    }
    Ok(())
}

fn merge_security(
    p: &mut Profile,
    sec: &RawSecurity,
    origin: &dyn Fn(usize) -> Origin,
) -> Result<(), ProfileError> {
    if let Some(l) = &sec.landlock {
        p.security.landlock = *l.get_ref();
    }
    if let Some(u) = &sec.allow_userns {
        p.security.allow_userns = *u.get_ref();
    }
    if let Some(t) = &sec.tcp_any_port {
        p.security.tcp_any_port = *t.get_ref();
    }
    if let Some(r) = &sec.require {
        let tier = super::Tier::parse(r.get_ref()).ok_or_else(|| ProfileError::Invalid {
            origin: origin(r.span().start),
            msg: format!(
                "`security.require`: {:?} is not a tier (\"full\", \"container\" or \"none\")",
                r.get_ref()
            ),
        })?;
        p.security.require = Some(Val {
            value: tier,
            origin: origin(r.span().start),
        });
    }
    for port in &sec.tcp_ports {
        let v = *port.get_ref();
        if !(0..=65535).contains(&v) {
            return Err(ProfileError::Invalid {
                origin: origin(port.span().start),
                msg: format!("`security.tcp_ports`: {v} is not a TCP port (1 to 65535, or 0 to allow binding an ephemeral port)"),
            });
        }
        p.security.tcp_ports.push(Val {
            value: v as u16,
            origin: origin(port.span().start),
        });
    }
    if let Some(sc) = &sec.seccomp {
        // Names are checked by the plan (`plan::check`), with this origin.
        for (list, dst) in [
            (&sc.deny, &mut p.security.seccomp_deny),
            (&sc.allow, &mut p.security.seccomp_allow),
        ] {
            for name in list {
                dst.push(Val {
                    value: name.get_ref().clone(),
                    origin: origin(name.span().start),
                });
            }
        }
    }
    Ok(())
}

pub fn valid_env_name(k: &str) -> bool {
    let mut chars = k.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The `proxy`-mode keys of `[network]`: lists are appended, scalars override. Every
/// entry keeps its origin, so an error (here or in `plan::check`) points at its line.
fn merge_network(
    net: &mut super::Network,
    n: &RawNetwork,
    origin: &dyn Fn(usize) -> Origin,
) -> Result<(), ProfileError> {
    let invalid = |start: usize, msg: String| ProfileError::Invalid {
        origin: origin(start),
        msg,
    };
    // Rules are checked by the plan (`plan::check`), with this origin.
    for (src, dst) in [(&n.allow, &mut net.allow), (&n.deny, &mut net.deny)] {
        for v in src {
            dst.push(Val {
                value: v.get_ref().clone(),
                origin: origin(v.span().start),
            });
        }
    }
    if let Some(a) = &n.ask {
        net.ask = Some(*a.get_ref());
    }
    for (key, src, dst) in [
        ("ask_timeout", &n.ask_timeout, &mut net.ask_timeout),
        ("idle_timeout", &n.idle_timeout, &mut net.idle_timeout),
    ] {
        if let Some(t) = src {
            *dst = Some(
                parse_duration(t.get_ref())
                    .map_err(|e| invalid(t.span().start, format!("`network.{key}`: {e}")))?,
            );
        }
    }
    if let Some(c) = &n.upstream_ca {
        if !c.get_ref().starts_with('/') {
            return Err(invalid(
                c.span().start,
                format!(
                    "`network.upstream_ca` {:?} is not an absolute path (a PEM file of CA certificates)",
                    c.get_ref()
                ),
            ));
        }
        net.upstream_ca = Some(Val {
            value: c.get_ref().clone(),
            origin: origin(c.span().start),
        });
    }
    if let Some(c) = &n.approval_command {
        if c.get_ref().is_empty() || c.get_ref()[0].is_empty() {
            return Err(invalid(
                c.span().start,
                "`network.approval_command` is empty (write an argv list, e.g. [\"/usr/local/bin/approve\"])".into(),
            ));
        }
        net.approval_command = Some(Val {
            value: c.get_ref().clone(),
            origin: origin(c.span().start),
        });
    }
    for (k, v) in &n.resolve {
        if v.get_ref().parse::<std::net::IpAddr>().is_err() {
            return Err(invalid(
                v.span().start,
                format!(
                    "`network.resolve.{k}`: {:?} is not an IP address",
                    v.get_ref()
                ),
            ));
        }
        net.resolve.insert(
            k.clone(),
            Val {
                value: v.get_ref().clone(),
                origin: origin(v.span().start),
            },
        );
    }
    for h in &n.intercept {
        let v = super::secrets::check_inject_host(h.get_ref())
            .map_err(|m| invalid(h.span().start, format!("`network.intercept`: {m}")))?;
        net.intercept.push(Val {
            value: v,
            origin: origin(h.span().start),
        });
    }
    if let Some(f) = &n.firewall {
        net.firewall = Some(super::Firewall::parse(f.get_ref()).ok_or_else(|| {
            invalid(
                f.span().start,
                format!(
                    "`network.firewall` {:?} is not valid (use \"redact\" or \"block\")",
                    f.get_ref()
                ),
            )
        })?);
    }
    for f in &n.forward {
        let r = f.get_ref();
        if r.listen == 0 {
            return Err(invalid(
                f.span().start,
                "`network.forward.listen` must be a port 1-65535".into(),
            ));
        }
        net.forward.push(super::ForwardDecl {
            listen: r.listen,
            to: r.to.clone(),
            origin: origin(f.span().start),
        });
    }
    Ok(())
}
