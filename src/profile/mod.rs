//! Profiles: TOML files that declare what a cell may touch.
//!
//! Parsing is strict (`deny_unknown_fields`); every error names the file, the line and the
//! key. `extends = "NAME"` merges a parent first: lists are appended, scalars and tables
//! override. The result is a [`Profile`], pure data with the origin of every entry, which
//! `plan::resolve` turns into a Plan.

mod builtin;
mod raw;
mod schema;
pub mod secrets;
mod spanned;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use builtin::{BUILTIN, PARSED};
pub use schema::json_schema;

/// Where a value came from: a profile file and line, or the command line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub file: String,
    pub line: usize,
}

impl Origin {
    pub fn cli() -> Origin {
        Origin {
            file: String::new(),
            line: 0,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.file.is_empty() {
            write!(f, "command line")
        } else if self.line == 0 {
            write!(f, "profile {}", self.file)
        } else {
            write!(f, "profile {} line {}", self.file, self.line)
        }
    }
}

/// A value with the place it was declared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Val<T> {
    pub value: T,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathEntry {
    /// As written, variables not yet expanded.
    pub path: String,
    pub optional: bool,
    /// `create = "dir"` / `"file"`: made on the host (owned by the caller, 0700 / 0600)
    /// before the cell starts when it does not exist yet, so what the command writes
    /// there (an agent's sign-in, a package cache) outlives the cell.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub create: Option<Create>,
    pub origin: Origin,
}

/// What `create` makes when the path is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Create {
    Dir,
    File,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filesystem {
    pub read: Vec<PathEntry>,
    pub write: Vec<PathEntry>,
    pub tmpfs: Vec<PathEntry>,
    pub protect: Vec<PathEntry>,
    pub hide: Vec<PathEntry>,
}

/// The network a cell gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetMode {
    /// Own network namespace, `lo` down: no network at all.
    None,
    /// Own network namespace, `lo` up: the cell can talk to itself only.
    Loopback,
    /// Own network namespace, `lo` up, and the supervisor's egress proxy (host allowlist,
    /// approvals, port forwards) as the only way out.
    Proxy,
    /// No network namespace: the host's network. Unsafe; `explain` says so.
    Host,
}

/// What a machine lets taskcell enforce, weakest first (see `plan::tier`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Neither namespaces nor the container tier's layers: whatever exists, best effort.
    None,
    /// No user namespaces: Landlock, seccomp and no_new_privs, egress only through the
    /// proxy (seccomp and a supervisor-made `connect`).
    Container,
    /// User, mount, pid, net, ipc, uts and cgroup namespaces, Landlock and seccomp.
    Full,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::None => "none",
            Tier::Container => "container",
            Tier::Full => "full",
        }
    }
    pub fn parse(s: &str) -> Option<Tier> {
        match s {
            "none" => Some(Tier::None),
            "container" => Some(Tier::Container),
            "full" => Some(Tier::Full),
            _ => None,
        }
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl NetMode {
    pub fn as_str(self) -> &'static str {
        match self {
            NetMode::None => "none",
            NetMode::Loopback => "loopback",
            NetMode::Proxy => "proxy",
            NetMode::Host => "host",
        }
    }
    pub fn parse(s: &str) -> Option<NetMode> {
        match s {
            "none" => Some(NetMode::None),
            "loopback" => Some(NetMode::Loopback),
            "proxy" => Some(NetMode::Proxy),
            "host" => Some(NetMode::Host),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub mode: NetMode,
    /// `proxy` mode: host rules (see `net::allowlist`), kept as written with their origin.
    pub allow: Vec<Val<String>>,
    pub deny: Vec<Val<String>>,
    pub ask: Option<bool>,
    pub ask_timeout: Option<Duration>,
    pub approval_command: Option<Val<Vec<String>>>,
    pub idle_timeout: Option<Duration>,
    /// Extra CA certificates (PEM) the proxy trusts for upstream TLS when it intercepts
    /// (`deliver = "inject"`), in addition to the system roots.
    pub upstream_ca: Option<Val<String>>,
    /// Fixed name → address answers (a test hook like curl's `--resolve`).
    pub resolve: BTreeMap<String, Val<String>>,
    pub forward: Vec<ForwardDecl>,
    /// Hosts (`HOST`, `*.DOMAIN`, optionally `:PORT`) whose TLS the proxy intercepts even
    /// when no secret is injected there, so that the secret firewall sees the requests.
    pub intercept: Vec<Val<String>>,
    /// What the secret firewall does (default: redact).
    pub firewall: Option<Firewall>,
}

/// The secret firewall's action on a declared secret in a request to an intercepted host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Firewall {
    /// Replace it by `[secret NAME removed]` (lengths fixed up) and send the request.
    #[default]
    Redact,
    /// Refuse the request (403).
    Block,
}

impl Firewall {
    pub fn parse(s: &str) -> Option<Firewall> {
        match s {
            "redact" => Some(Firewall::Redact),
            "block" => Some(Firewall::Block),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Firewall::Redact => "redact",
            Firewall::Block => "block",
        }
    }
}

impl Default for Network {
    fn default() -> Self {
        Network {
            mode: NetMode::None,
            allow: Vec::new(),
            deny: Vec::new(),
            ask: None,
            ask_timeout: None,
            approval_command: None,
            idle_timeout: None,
            upstream_ca: None,
            resolve: BTreeMap::new(),
            forward: Vec::new(),
            intercept: Vec::new(),
            firewall: None,
        }
    }
}

/// `[[network.forward]] listen = PORT, to = "ADDR:PORT" | "/path/to.sock"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardDecl {
    pub listen: u16,
    pub to: String,
    pub origin: Origin,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Env {
    /// Names (or `PREFIX*`) passed from the launcher's environment.
    pub pass: Vec<Val<String>>,
    /// Variables set to a value (variables such as `{home}` are expanded).
    pub set: BTreeMap<String, Val<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub timeout: Option<Duration>,
    pub grace: Option<Duration>,
    pub rlimits: BTreeMap<String, Val<u64>>,
    /// The human keys (`processes`, `memory`, ...) as written, validated; see `limits`.
    pub resources: BTreeMap<String, Val<String>>,
}

/// `[security]`: the layers under the namespaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Security {
    /// Apply Landlock (default true).
    pub landlock: bool,
    /// Extra syscalls refused with EPERM.
    pub seccomp_deny: Vec<Val<String>>,
    /// Syscalls of the default deny list given back.
    pub seccomp_allow: Vec<Val<String>>,
    /// Let the command create nested user namespaces (for tools that sandbox themselves).
    pub allow_userns: bool,
    /// TCP ports the command may bind and connect to (Landlock) in none/loopback mode.
    pub tcp_ports: Vec<Val<u16>>,
    /// Landlock does not restrict TCP ports (the network namespace still does).
    pub tcp_any_port: bool,
    /// The lowest tier the cell may run in (`require`); None: `strict` decides (`full`
    /// when strict, any tier when not).
    pub require: Option<Val<Tier>>,
}

impl Default for Security {
    fn default() -> Self {
        Security {
            landlock: true,
            seccomp_deny: Vec::new(),
            seccomp_allow: Vec::new(),
            allow_userns: false,
            tcp_ports: Vec::new(),
            tcp_any_port: false,
            require: None,
        }
    }
}

/// A profile with its `extends` chain merged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub name: String,
    pub description: String,
    /// Files merged into this profile, the root parent first.
    pub sources: Vec<String>,
    /// The files of `sources` read from disk (not built-in), root parent first, with the
    /// digest of the text that was parsed: a profile inside a path a cell can write is
    /// pinned by it (`crate::pins`).
    pub files: Vec<SourceFile>,
    pub hostname: String,
    pub strict: bool,
    pub filesystem: Filesystem,
    pub network: Network,
    pub env: Env,
    pub limits: Limits,
    /// `[secrets.NAME]` declarations (no values).
    pub secrets: BTreeMap<String, secrets::SecretDecl>,
    pub security: Security,
    pub terminal: Terminal,
    pub command: CommandArgs,
}

/// `[command]`: arguments inserted after a program's name when it is the cell's command
/// (a later profile replaces a program's list).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandArgs {
    pub insert_args: BTreeMap<String, Vec<String>>,
}

/// A profile file read from disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFile {
    /// Absolute, as named (the current directory joined to a relative name; symlinks not
    /// followed).
    pub path: PathBuf,
    /// sha256 (hex) of the text that was parsed.
    pub sha256: String,
}

impl SourceFile {
    fn new(path: &Path, text: &str) -> SourceFile {
        use sha2::{Digest, Sha256};
        let path = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir()
                .map(|d| d.join(path))
                .unwrap_or_else(|_| path.to_path_buf())
        };
        let sum = Sha256::digest(text.as_bytes());
        SourceFile {
            path,
            sha256: sum.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }
}

/// `[terminal]`: what the cell may do to the user's terminal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terminal {
    /// The cell may set the clipboard (OSC 52); filtered out otherwise.
    pub clipboard: bool,
}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            name: String::new(),
            description: String::new(),
            sources: Vec::new(),
            files: Vec::new(),
            hostname: "taskcell".into(),
            strict: true,
            filesystem: Filesystem::default(),
            network: Network::default(),
            env: Env::default(),
            limits: Limits::default(),
            secrets: BTreeMap::new(),
            security: Security::default(),
            terminal: Terminal::default(),
            command: CommandArgs::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("profile {name:?} not found (built-in: {builtin}; user profiles live in {userdir}/NAME.toml; or pass a path ending in .toml)")]
    NotFound {
        name: String,
        builtin: String,
        userdir: String,
    },
    #[error("profile {file}: cannot read: {err} (check the path and its permissions)")]
    Read { file: String, err: std::io::Error },
    #[error("{origin}: {msg}")]
    Invalid { origin: Origin, msg: String },
    #[error("profile {file}: `extends` makes a cycle: {chain} (remove one of the `extends`)")]
    Cycle { file: String, chain: String },
}

/// Where profiles are looked up.
#[derive(Debug, Clone)]
pub struct Loader {
    /// `$XDG_CONFIG_HOME/taskcell/profiles` (or `~/.config/...`).
    pub user_dir: Option<PathBuf>,
}

impl Loader {
    pub fn from_env() -> Loader {
        let dir = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| {
                std::env::var_os("HOME")
                    .map(PathBuf::from)
                    .filter(|p| p.is_absolute())
                    .map(|h| h.join(".config"))
            })
            .map(|c| c.join("taskcell").join("profiles"));
        Loader { user_dir: dir }
    }

    fn user_dir_display(&self) -> String {
        self.user_dir
            .as_ref()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|| "$XDG_CONFIG_HOME/taskcell/profiles".into())
    }

    /// Find a profile's source text: a path (contains `/` or ends in `.toml`), a user
    /// profile, or a built-in one (user profiles shadow built-in ones of the same name).
    pub fn find(&self, name: &str) -> Result<(String, String), ProfileError> {
        self.locate(name).map(|(file, text, _)| (file, text))
    }

    /// [`find`](Self::find), with the path of a profile read from disk.
    fn locate(&self, name: &str) -> Result<(String, String, Option<PathBuf>), ProfileError> {
        if name.contains('/') || name.ends_with(".toml") {
            let text = read_profile_file(Path::new(name)).map_err(|err| ProfileError::Read {
                file: name.to_string(),
                err,
            })?;
            return Ok((name.to_string(), text, Some(PathBuf::from(name))));
        }
        if let Some(dir) = &self.user_dir {
            let p = dir.join(format!("{name}.toml"));
            if p.exists() {
                let file = p.display().to_string();
                let text = read_profile_file(&p).map_err(|err| ProfileError::Read {
                    file: file.clone(),
                    err,
                })?;
                return Ok((file, text, Some(p)));
            }
        }
        if let Some((_, text)) = BUILTIN.iter().find(|(n, _)| *n == name) {
            return Ok((format!("{name}.toml (built-in)"), (*text).to_string(), None));
        }
        Err(ProfileError::NotFound {
            name: name.to_string(),
            builtin: BUILTIN
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", "),
            userdir: self.user_dir_display(),
        })
    }

    /// Load a profile by name or path and merge its `extends` chain.
    pub fn load(&self, name: &str) -> Result<Profile, ProfileError> {
        match self.parsed_builtin(name) {
            Some(p) => Ok(p),
            None => self.parse(name),
        }
    }

    /// A built-in profile as it was parsed and merged when taskcell was built
    /// ([`builtin::PARSED`]), when no user profile shadows a name of its `extends` chain
    /// (else it is parsed from the files, as [`Loader::parse`] does).
    fn parsed_builtin(&self, name: &str) -> Option<Profile> {
        let (_, json) = builtin::PARSED.iter().find(|(n, _)| *n == name)?;
        let p: Profile = serde_json::from_str(json).ok()?;
        let shadowed = |file: &String| match file.strip_suffix(".toml (built-in)") {
            Some(n) => self
                .user_dir
                .as_ref()
                .is_some_and(|d| d.join(format!("{n}.toml")).exists()),
            None => true,
        };
        (!p.sources.iter().any(shadowed)).then_some(p)
    }

    /// [`Loader::load`] from the profiles' text: every file of the chain is parsed, and
    /// the chain merged, now.
    pub fn parse(&self, name: &str) -> Result<Profile, ProfileError> {
        let mut chain: Vec<(String, raw::RawProfile, String)> = Vec::new();
        let mut files: Vec<SourceFile> = Vec::new();
        let mut next = Some(name.to_string());
        let mut seen: Vec<String> = Vec::new();
        while let Some(n) = next.take() {
            let (file, text, path) = self.locate(&n)?;
            if let Some(path) = path {
                files.push(SourceFile::new(&path, &text));
            }
            if seen.contains(&file) {
                seen.push(file.clone());
                return Err(ProfileError::Cycle {
                    file: seen[0].clone(),
                    chain: seen.join(" -> "),
                });
            }
            seen.push(file.clone());
            let raw = raw::parse(&file, &text)?;
            next = raw.extends.clone().map(|s| s.into_inner());
            chain.push((file, raw, text));
        }
        files.reverse();
        let mut profile = Profile {
            name: display_name(name),
            files,
            ..Profile::default()
        };
        for (file, raw, text) in chain.iter().rev() {
            raw::merge_into(&mut profile, file, text, raw)?;
        }
        Ok(profile)
    }

    /// All profiles: built-in ones and the user's, with their descriptions.
    pub fn list(&self) -> Vec<ProfileSummary> {
        let mut out = Vec::new();
        for (name, text) in BUILTIN {
            let description = raw::parse(name, text)
                .ok()
                .and_then(|r| r.description.map(|d| d.into_inner()))
                .unwrap_or_default();
            out.push(ProfileSummary {
                name: name.to_string(),
                source: "built-in".into(),
                description,
            });
        }
        if let Some(dir) = &self.user_dir {
            if let Ok(rd) = std::fs::read_dir(dir) {
                let mut files: Vec<PathBuf> = rd
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                    .collect();
                files.sort();
                for p in files {
                    let name = display_name(&p.display().to_string());
                    let description = read_profile_file(&p)
                        .ok()
                        .and_then(|t| raw::parse(&name, &t).ok())
                        .and_then(|r| r.description.map(|d| d.into_inner()))
                        .unwrap_or_else(|| "(does not parse: run `taskcell check`)".into());
                    out.retain(|s: &ProfileSummary| s.name != name);
                    out.push(ProfileSummary {
                        name,
                        source: p.display().to_string(),
                        description,
                    });
                }
            }
        }
        out
    }

    /// Validate a profile file: parse it and merge its chain.
    pub fn check(&self, path: &Path) -> Result<Profile, ProfileError> {
        self.load(&path.display().to_string())
    }
}

/// The largest profile file taskcell reads (1 MiB; the built-in ones are a few KiB).
pub const MAX_PROFILE_BYTES: u64 = 1 << 20;

/// Read a profile file: a regular file of at most [`MAX_PROFILE_BYTES`]. Opened without
/// blocking, so a FIFO or a device (`-p /dev/zero`, an `extends` to a FIFO) is an error
/// at once instead of a hang or an unbounded read.
pub fn read_profile_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)?;
    let meta = f.metadata()?;
    let ft = meta.file_type();
    if !ft.is_file() {
        let kind = if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_char_device() || ft.is_block_device() {
            "a device"
        } else if ft.is_dir() {
            "a directory"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(std::io::Error::other(format!(
            "it is {kind}; a profile is a regular file"
        )));
    }
    let too_big = || {
        std::io::Error::other(format!(
            "it is larger than {} KiB, the most a profile may be",
            MAX_PROFILE_BYTES >> 10
        ))
    };
    if meta.len() > MAX_PROFILE_BYTES {
        return Err(too_big());
    }
    let mut text = String::with_capacity(meta.len() as usize);
    // The file may grow while it is read: never more than the maximum.
    f.take(MAX_PROFILE_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_PROFILE_BYTES {
        return Err(too_big());
    }
    Ok(text)
}

/// Parse one profile's text and merge it onto the defaults, without following `extends`
/// (what `load` does for each file of a chain; the fuzz target's entry point).
pub fn from_text(file: &str, text: &str) -> Result<Profile, ProfileError> {
    let raw = raw::parse(file, text)?;
    let mut profile = Profile {
        name: display_name(file),
        ..Profile::default()
    };
    raw::merge_into(&mut profile, file, text, &raw)?;
    Ok(profile)
}

#[derive(Debug, Clone, Serialize)]
pub struct ProfileSummary {
    pub name: String,
    pub source: String,
    pub description: String,
}

fn display_name(name: &str) -> String {
    Path::new(name)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| name.to_string())
}

/// The longest duration anything takes (timeout, grace, ttl, a secret's timeout, the
/// network's timeouts): 365 days. Longer is a one-line error, never an overflow later.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 86400);

/// Parse durations the way people write them: `90`, `90s`, `10m`, `1h30m`, `500ms`; at
/// most [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration (write e.g. 30s, 10m, 1h)".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_end == 0 {
            return Err(format!("bad duration {s:?} (write e.g. 30s, 10m, 1h30m)"));
        }
        let n: f64 = rest[..num_end]
            .parse()
            .map_err(|_| format!("bad number in duration {s:?}"))?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        let secs = match unit {
            "" | "s" => n,
            "ms" => n / 1000.0,
            "m" | "min" => n * 60.0,
            "h" => n * 3600.0,
            "d" => n * 86400.0,
            _ => {
                return Err(format!(
                    "unknown unit {unit:?} in duration {s:?} (use ms, s, m, h or d)"
                ))
            }
        };
        let max = MAX_DURATION.as_secs_f64();
        if !secs.is_finite() || secs > max || total.as_secs_f64() + secs > max {
            return Err(format!(
                "duration {s:?} is longer than the maximum 365d (write at most 365d)"
            ));
        }
        total += Duration::from_secs_f64(secs);
    }
    if total.is_zero() {
        return Err(format!("duration {s:?} is zero"));
    }
    Ok(total)
}

#[cfg(test)]
mod tests;
