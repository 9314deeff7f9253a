//! The Plan: everything a cell will be, resolved and checked, as plain data.
//!
//! `resolve` turns a merged [`Profile`](crate::profile::Profile), the command-line overrides
//! and the launcher's environment into a [`Plan`]. It reads the filesystem (to check that
//! paths exist and to find symlinks) but changes nothing. The mechanism modules (`cell/`,
//! `net/`, `secrets/`) each take their part of the Plan and enforce exactly that; `explain`
//! prints it and the tests assert on it.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};

pub use crate::profile::NetMode;
use crate::profile::{Origin, PathEntry, Profile};

pub mod allowlist;
pub mod check;
pub mod command;
pub mod git;
pub mod limits;
pub mod net;
pub mod paths;
pub mod profiles;
pub mod secrets;
pub mod syscalls;
pub mod tier;

/// How a path is made visible inside the cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Bound read-only (`MS_RDONLY`, plus nosuid,nodev).
    Read,
    /// Bound read-write (nosuid,nodev).
    Write,
    /// A fresh, empty tmpfs private to the cell.
    Tmpfs,
    /// Bound read-only again on top of a `write` parent (e.g. `.git/hooks`).
    Protect,
    /// Replaced by an empty read-only file or directory (e.g. `/etc/shadow`).
    Hide,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::Tmpfs => "tmpfs",
            Access::Protect => "protect",
            Access::Hide => "hide",
        }
    }
}

/// One path of the cell's filesystem, absolute and checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathRule {
    /// Where the path appears inside the cell (the same place as outside).
    pub path: PathBuf,
    pub access: Access,
    /// For a host path that is a symlink: the link's target (as written), which is
    /// recreated inside the cell instead of a bind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symlink: Option<PathBuf>,
    /// Whether the host path is a directory (bind targets are created to match).
    pub is_dir: bool,
    /// Declared `optional = true` (kept for `explain`).
    pub optional: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetPlan {
    pub mode: NetMode,
    /// The flag that turned `proxy` mode on when neither `--net` nor the profile asked for
    /// it (`--allow`, `--ask`, `--resolve`, `--learn`); `explain` says so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub implied_by: Option<String>,
    /// `proxy` mode only: what the egress proxy enforces.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<crate::plan::net::ProxyPlan>,
}

/// One resource limit applied with `setrlimit` in the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rlimit {
    /// The limit's name as in the profile (`nofile`, `nproc`, ...).
    pub name: &'static str,
    pub soft: u64,
    pub hard: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Wall-clock limit; SIGTERM when it fires, SIGKILL after `grace`.
    #[serde(with = "opt_duration_secs")]
    pub timeout: Option<Duration>,
    #[serde(with = "duration_secs")]
    pub grace: Duration,
    pub rlimits: Vec<Rlimit>,
    /// processes, memory, cpu, open files, file size, core (see `crate::plan::limits`).
    pub resources: crate::plan::limits::Resources,
}

/// The process the worker becomes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessPlan {
    pub argv: Vec<String>,
    /// The complete environment of the command, sorted by name.
    pub env: Vec<(String, String)>,
    /// Working directory inside the cell.
    pub cwd: PathBuf,
    pub hostname: String,
    /// uid and gid the caller has outside; mapped 1:1 inside (started as root: to one
    /// unprivileged host id when the machine offers them, `spec::ids`).
    pub uid: u32,
    pub gid: u32,
    /// The command gets its own pseudo-terminal (interactive use).
    pub pty: bool,
    /// The command may set the user's clipboard (OSC 52 passes the output relay).
    pub clipboard: bool,
}

/// The layers under the namespaces (Landlock, seccomp), from `[security]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecurityPlan {
    /// Apply Landlock.
    pub landlock: bool,
    /// Extra syscalls refused with EPERM (sorted, unique).
    pub seccomp_deny: Vec<String>,
    /// Syscalls of the default deny list given back (sorted, unique).
    pub seccomp_allow: Vec<String>,
    /// Nested user namespaces allowed (unshare, setns, clone with namespace flags).
    pub allow_userns: bool,
    /// TCP ports bind/connect may use in none/loopback mode (sorted, unique).
    pub tcp_ports: Vec<u16>,
    /// Landlock leaves TCP ports alone (only the network namespace confines them).
    pub tcp_any_port: bool,
    /// The lowest tier the cell may run in: `--require`, else `--best-effort` (`none`),
    /// else the profile's `require`, else `full` when strict and `none` when not.
    pub require: tier::Tier,
}

/// Everything a cell will be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub profile: String,
    pub description: String,
    /// The files the profile was read from, parent first.
    pub sources: Vec<String>,
    /// The profile files read from disk, parent first: those inside a writable path are
    /// protected in the cell and pinned (`plan::profiles`, `crate::pins`).
    pub profile_files: Vec<profiles::ProfileFile>,
    pub workspace: PathBuf,
    /// Why the workspace is this directory: `-w`, the current directory, or the root of
    /// the git repository the current directory is in.
    pub workspace_from: WorkspaceFrom,
    pub home: PathBuf,
    /// taskcell's own cache of this profile (what `{cache}` expands to, [`cache_dir`]).
    pub cache: PathBuf,
    /// Paths, sorted so that a parent comes before anything below it.
    pub paths: Vec<PathRule>,
    pub net: NetPlan,
    pub limits: Limits,
    pub process: ProcessPlan,
    /// Refuse to run when a layer cannot be enforced (default); otherwise run with what exists.
    pub strict: bool,
    /// Secrets: where each comes from and how it is delivered (never a value).
    pub secrets: Vec<secrets::SecretPlan>,
    pub security: SecurityPlan,
    /// Declared `create` paths missing now: made on the host before the cell starts.
    pub create: Vec<CreatePath>,
    /// Directories bound read-only because the command's symlink chain leads there.
    pub command_binds: Vec<command::CommandBind>,
}

/// A path the launcher creates (as the caller, 0700 for a directory, 0600 for a file,
/// missing parents 0700) before the cell starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreatePath {
    pub path: PathBuf,
    pub kind: crate::profile::Create,
    /// Where it was declared.
    pub origin: String,
}

/// The directory `{cache}` expands to: taskcell's own cache for this profile,
/// `$XDG_CACHE_HOME/taskcell/PROFILE` (else `~/.cache/taskcell/PROFILE`). Never a tool's
/// own host cache: code outside the cell trusts those, and a cell must not poison them.
pub fn cache_dir(env: &BTreeMap<String, String>, home: &Path, profile: &str) -> PathBuf {
    let base = env
        .get("XDG_CACHE_HOME")
        .filter(|d| d.starts_with('/'))
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".cache"));
    let name: String = profile
        .trim_end_matches(".toml")
        .rsplit('/')
        .next()
        .unwrap_or("profile")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    base.join("taskcell").join(if name.is_empty() {
        "profile".to_string()
    } else {
        name
    })
}

impl Plan {
    /// sha256 of the plan's canonical JSON form, recorded in the audit log.
    pub fn digest(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        let mut h = Sha256::new();
        h.update(&json);
        let out = h.finalize();
        out.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Where the workspace came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkspaceFrom {
    /// `-w DIR`.
    Flag,
    /// The current directory (not inside a git repository).
    Cwd,
    /// The root of the git repository around the current directory.
    GitRoot,
}

/// The root of the git repository `dir` is in (the nearest ancestor holding `.git`, a
/// directory or a worktree's file), unless that root is `/` or the home directory or
/// above it: a dotfiles repository must not make the whole home the workspace.
pub fn git_root(dir: &Path, home: &Path) -> Option<PathBuf> {
    let root = dir
        .ancestors()
        .find(|d| std::fs::symlink_metadata(d.join(".git")).is_ok())?;
    if root == Path::new("/") || home.starts_with(root) {
        return None;
    }
    Some(root.to_path_buf())
}

/// Command-line overrides layered on the profile.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub workspace: Option<PathBuf>,
    pub read: Vec<PathBuf>,
    pub write: Vec<PathBuf>,
    pub net: Option<NetMode>,
    /// `K=V` sets, `K` passes the launcher's value.
    pub env: Vec<String>,
    pub timeout: Option<Duration>,
    pub strict: Option<bool>,
    /// `--require TIER`.
    pub require: Option<tier::Tier>,
    /// `--allow`, `--ask`, `--resolve`.
    pub netov: crate::plan::net::NetOverrides,
    /// `--secret NAME=PROVIDER:ARG`.
    pub secrets: Vec<String>,
    /// `--secret-opt NAME.KEY=VALUE`.
    pub secret_opts: Vec<String>,
    /// `--processes 64`, `--memory 4G`, ...: (key, value as written), checked by the CLI.
    pub limits: Vec<(String, String)>,
    /// `--pty` / `--no-pty` (default: a pty when stdin and stdout are terminals).
    pub pty: Option<bool>,
}

/// What `resolve` reads from the launcher's environment. Separate so tests can give their own.
#[derive(Debug, Clone)]
pub struct Context {
    pub cwd: PathBuf,
    pub home: PathBuf,
    pub tmp: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub env: BTreeMap<String, String>,
    /// taskcell's stdin and stdout are terminals.
    pub terminal: bool,
}

impl Context {
    /// The real launcher's context.
    pub fn from_process() -> Result<Context, PlanError> {
        let cwd = std::env::current_dir().map_err(|e| PlanError::Other {
            msg: format!("cannot read the current directory: {e} (cd into an existing directory)"),
        })?;
        let env: BTreeMap<String, String> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        let home = env
            .get("HOME")
            .filter(|h| h.starts_with('/'))
            .map(PathBuf::from)
            .or_else(|| {
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map(|u| u.dir)
            })
            .unwrap_or_else(|| PathBuf::from("/"));
        let tmp = env
            .get("TMPDIR")
            .filter(|t| t.starts_with('/'))
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        Ok(Context {
            cwd,
            home,
            tmp,
            uid,
            gid,
            env,
            terminal: crate::tty::stdio_is_terminal(),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{origin}: `{key}` path {path} does not exist (mark it optional = true or create it)")]
    Missing {
        origin: Origin,
        key: &'static str,
        path: String,
    },
    #[error("{origin}: `{key}` path {path:?} is not absolute after expanding variables (start it with / or a variable such as {{workspace}})")]
    Relative {
        origin: Origin,
        key: &'static str,
        path: String,
    },
    #[error("{origin}: `{key}` path / would be a tmpfs over the cell's whole root, hiding /dev, /proc and every path below it (is HOME set to /? `{{home}}` expands to it): set HOME to a directory of its own, e.g. HOME=/tmp/home, or remove the entry")]
    TmpfsOverRoot { origin: Origin, key: &'static str },
    #[error("{origin}: {msg}")]
    Variable { origin: Origin, msg: String },
    #[error("{msg}")]
    Other { msg: String },
}

/// Paths every cell gets whatever the profile says; the profile cannot remove them.
pub(crate) const FIXED: &[&str] = &["/proc", "/dev", "/tmp"];

/// Resolve a merged profile, the overrides and the context into a Plan.
pub fn resolve(
    profile: &Profile,
    ov: &Overrides,
    ctx: &Context,
    argv: &[String],
) -> Result<Plan, PlanError> {
    check::check(profile)?;
    let (workspace, workspace_from) = workspace_of(ov, ctx)?;
    let cache = cache_dir(&ctx.env, &ctx.home, &profile.name);
    let vars = Vars {
        workspace: &workspace,
        cache: &cache,
        home: &ctx.home,
        cwd: &ctx.cwd,
        tmp: &ctx.tmp,
        env: &ctx.env,
    };

    let raw = declared_paths(profile, ov, ctx, &vars)?;
    let (mut paths, create) = paths::rules(raw, &workspace, &ctx.home)?;
    // The workspace is always there: read-write unless the profile made it read-only.
    if !paths.iter().any(|r| r.path == workspace) {
        push_rule(&mut paths, read_dir_rule(workspace.clone()));
    }
    git::protect(&mut paths, &ctx.home)?;
    let profile_files = profiles::protect(&profile.files, &mut paths);
    sort_rules(&mut paths);

    let mut env = environment(profile, ov, ctx, &vars)?;
    // The command starts in the current directory when it is inside the workspace.
    let cwd = if ctx.cwd.starts_with(&workspace) {
        ctx.cwd.clone()
    } else {
        workspace.clone()
    };
    let command_binds = command_binds(argv, &env, &cwd, &mut paths, &ctx.home)?;

    let decls = secrets::declarations(&profile.secrets, &ov.secrets, &ov.secret_opts)?;
    let (secrets, ttl) = secrets::resolve(&decls, &paths, &vars, &ctx.cwd, &mut env)?;
    secrets::check_unreachable(&secrets, &paths, &ctx.env, &env)?;

    let net = network(profile, ov, ctx, &paths, &secrets, &mut env)?;
    let (security, strict) = security_of(profile, ov, &net);
    Ok(Plan {
        profile: profile.name.clone(),
        description: profile.description.clone(),
        sources: profile.sources.clone(),
        profile_files,
        workspace,
        workspace_from,
        home: ctx.home.clone(),
        cache: cache.clone(),
        paths,
        net,
        limits: Limits {
            // A secret's ttl bounds the cell's duration.
            timeout: match (ov.timeout.or(profile.limits.timeout), ttl) {
                (Some(t), Some(l)) => Some(t.min(l)),
                (t, l) => t.or(l),
            },
            grace: profile.limits.grace.unwrap_or(Duration::from_secs(5)),
            rlimits: rlimits(profile)?,
            resources: crate::plan::limits::resolve(
                &profile.limits.resources,
                &ov.limits,
                crate::plan::limits::mem_total(),
            )
            .map_err(|msg| PlanError::Other { msg })?,
        },
        process: ProcessPlan {
            argv: command::with_inserted_args(&profile.command.insert_args, argv),
            env: env.into_iter().collect(),
            cwd,
            hostname: profile.hostname.clone(),
            uid: ctx.uid,
            gid: ctx.gid,
            pty: ov.pty.unwrap_or(ctx.terminal),
            clipboard: profile.terminal.clipboard,
        },
        strict,
        secrets,
        security,
        create,
        command_binds,
    })
}

/// The workspace (`-w`, else the git repository around the current directory, else the
/// current directory), checked to be a task boundary.
fn workspace_of(ov: &Overrides, ctx: &Context) -> Result<(PathBuf, WorkspaceFrom), PlanError> {
    let (workspace_raw, workspace_from) = match &ov.workspace {
        Some(w) => (w.clone(), WorkspaceFrom::Flag),
        None => match git_root(&ctx.cwd, &ctx.home) {
            Some(r) => (r, WorkspaceFrom::GitRoot),
            None => (ctx.cwd.clone(), WorkspaceFrom::Cwd),
        },
    };
    let workspace_abs = abs_from(&ctx.cwd, &workspace_raw);
    let workspace = paths::workspace(&normalize(&workspace_abs), &ctx.home)?;
    Ok((workspace, workspace_from))
}

/// Every path the profile and the command line declare, expanded, with its access,
/// origin and key.
fn declared_paths(
    profile: &Profile,
    ov: &Overrides,
    ctx: &Context,
    vars: &Vars,
) -> Result<Vec<paths::Declared>, PlanError> {
    let mut raw: Vec<paths::Declared> = Vec::new();
    let fs = &profile.filesystem;
    // For one path declared twice, the later kind here wins: tmpfs < read < write <
    // protect < hide, and the command line's --read/--write win over the profile.
    for (list, access, key) in [
        (&fs.tmpfs, Access::Tmpfs, "tmpfs"),
        (&fs.read, Access::Read, "read"),
        (&fs.write, Access::Write, "write"),
        (&fs.protect, Access::Protect, "protect"),
        (&fs.hide, Access::Hide, "hide"),
    ] {
        for e in list {
            let p = expand_path(e, key, vars)?;
            raw.push((p, access, e.optional, e.origin.clone(), key, e.create));
        }
    }
    for (list, access, key) in [
        (&ov.read, Access::Read, "--read"),
        (&ov.write, Access::Write, "--write"),
    ] {
        for p in list {
            raw.push((
                abs_from(&ctx.cwd, p),
                access,
                false,
                Origin::cli(),
                key,
                None,
            ));
        }
    }
    Ok(raw)
}

/// A directory bound read-only.
fn read_dir_rule(path: PathBuf) -> PathRule {
    PathRule {
        path,
        access: Access::Read,
        symlink: None,
        is_dir: true,
        optional: false,
    }
}

/// The command's environment: the profile's `pass` and `set`, then `-e`, then HOME and
/// PATH when still missing.
fn environment(
    profile: &Profile,
    ov: &Overrides,
    ctx: &Context,
    vars: &Vars,
) -> Result<BTreeMap<String, String>, PlanError> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let pass_match = |name: &str, pat: &str| match pat.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == pat,
    };
    for (k, v) in &ctx.env {
        if profile.env.pass.iter().any(|p| pass_match(k, &p.value)) {
            env.insert(k.clone(), v.clone());
        }
    }
    for (k, v) in &profile.env.set {
        let val = expand_str(&v.value, vars).map_err(|msg| PlanError::Variable {
            origin: v.origin.clone(),
            msg: format!("`env.set.{k}`: {msg}"),
        })?;
        env.insert(k.clone(), val);
    }
    for kv in &ov.env {
        match kv.split_once('=') {
            Some((k, v)) => {
                env.insert(k.to_string(), v.to_string());
            }
            None => {
                if let Some(v) = ctx.env.get(kv) {
                    env.insert(kv.clone(), v.clone());
                }
            }
        }
    }
    env.entry("HOME".into())
        .or_insert_with(|| ctx.home.display().to_string());
    env.entry("PATH".into())
        .or_insert_with(|| "/usr/local/bin:/usr/bin:/bin".into());
    Ok(env)
}

/// The command resolves like on the host: the directories its symlink chain leads to
/// are bound read-only (added to `paths`).
fn command_binds(
    argv: &[String],
    env: &BTreeMap<String, String>,
    cwd: &Path,
    paths: &mut Vec<PathRule>,
    home: &Path,
) -> Result<Vec<command::CommandBind>, PlanError> {
    let Some(a0) = argv.first() else {
        return Ok(Vec::new());
    };
    let path = env.get("PATH").map(String::as_str).unwrap_or_default();
    let binds =
        command::binds(a0, path, cwd, paths, home).map_err(|msg| PlanError::Other { msg })?;
    if !binds.is_empty() {
        for b in &binds {
            push_rule(paths, read_dir_rule(b.dir.clone()));
        }
        sort_rules(paths);
    }
    Ok(binds)
}

/// `[limits.rlimits]`, soft = hard.
fn rlimits(profile: &Profile) -> Result<Vec<Rlimit>, PlanError> {
    let mut rlimits: Vec<Rlimit> = Vec::new();
    for (name, val) in &profile.limits.rlimits {
        let Some(stat) = RLIMIT_NAMES.iter().find(|n| *n == name) else {
            return Err(PlanError::Other {
                msg: format!(
                    "{}: unknown rlimit `{name}` (known: {})",
                    val.origin,
                    RLIMIT_NAMES.join(", ")
                ),
            });
        };
        rlimits.push(Rlimit {
            name: stat,
            soft: val.value,
            hard: val.value,
        });
    }
    Ok(rlimits)
}

/// The network: the mode (a flag only the proxy enforces implies `proxy`), and in
/// `proxy` mode what the proxy enforces (its variables added to `env`).
fn network(
    profile: &Profile,
    ov: &Overrides,
    ctx: &Context,
    paths: &[PathRule],
    secrets: &[secrets::SecretPlan],
    env: &mut BTreeMap<String, String>,
) -> Result<NetPlan, PlanError> {
    let implying = ov.netov.proxy_flag();
    let (mode, implied_by) = match (ov.net, implying) {
        (Some(m), Some(flag)) if m != NetMode::Proxy => {
            return Err(PlanError::Other {
                msg: format!(
                    "{flag} needs `--net proxy` (the proxy is what enforces it), but --net {} was given (drop one of them)",
                    m.as_str()
                ),
            })
        }
        (Some(m), _) => (m, None),
        (None, Some(flag)) if profile.network.mode != NetMode::Proxy => {
            (
                NetMode::Proxy,
                Some(format!(
                    "{flag}, which only the proxy can enforce; the profile's mode is {:?}",
                    profile.network.mode.as_str()
                )),
            )
        }
        (None, _) => (profile.network.mode, None),
    };
    let proxy = if mode == NetMode::Proxy {
        let mut p = crate::plan::net::build(&profile.network, &ov.netov)
            .map_err(|msg| PlanError::Other { msg })?;
        p.inject = secrets::inject_rules(secrets);
        // Never where the cell can see it (it could approve its own requests).
        p.control_dir = crate::plan::net::choose_control_dir(
            ctx.env.get("XDG_RUNTIME_DIR").map(String::as_str),
            ctx.uid,
            paths,
        )
        .map_err(|msg| PlanError::Other { msg })?;
        for (k, v) in p.env() {
            env.entry(k).or_insert(v);
        }
        Some(p)
    } else {
        if let Some(s) = secrets.iter().find(|s| s.inject.is_some()) {
            return Err(PlanError::Other {
                msg: format!(
                    "secret {}: deliver = \"inject\" needs `network.mode = \"proxy\"` (the proxy puts the value into requests; the mode is {:?})",
                    s.name,
                    mode.as_str()
                ),
            });
        }
        if !profile.network.forward.is_empty() {
            return Err(PlanError::Other {
                msg: format!(
                    "{}: port forwards need `network.mode = \"proxy\"` (the mode is {:?})",
                    profile.network.forward[0].origin,
                    mode.as_str()
                ),
            });
        }
        None
    };
    Ok(NetPlan {
        mode,
        implied_by,
        proxy,
    })
}

/// `[security]` with the tier required (`--require`, `--strict`/`--best-effort`, the
/// profile), and whether the plan is strict.
fn security_of(profile: &Profile, ov: &Overrides, net: &NetPlan) -> (SecurityPlan, bool) {
    let mut security = security_plan(&profile.security);
    let strict = ov.strict.unwrap_or(profile.strict);
    security.require = ov
        .require
        .or((ov.strict == Some(false)).then_some(tier::Tier::None))
        .or(profile.security.require.as_ref().map(|r| r.value))
        .unwrap_or(if strict {
            tier::Tier::Full
        } else {
            tier::Tier::None
        });
    if let Some(p) = &net.proxy {
        // `proxy` mode: the cell connects to the proxy and forward listeners only.
        security.tcp_ports.extend(p.listen_ports());
        security.tcp_ports.sort_unstable();
        security.tcp_ports.dedup();
    }
    (security, strict)
}

fn security_plan(sec: &crate::profile::Security) -> SecurityPlan {
    let names = |v: &[crate::profile::Val<String>]| -> Vec<String> {
        let mut n: Vec<String> = v.iter().map(|x| x.value.clone()).collect();
        n.sort();
        n.dedup();
        n
    };
    let mut tcp_ports: Vec<u16> = sec.tcp_ports.iter().map(|p| p.value).collect();
    tcp_ports.sort_unstable();
    tcp_ports.dedup();
    SecurityPlan {
        landlock: sec.landlock,
        seccomp_deny: names(&sec.seccomp_deny),
        seccomp_allow: names(&sec.seccomp_allow),
        allow_userns: sec.allow_userns,
        tcp_ports,
        tcp_any_port: sec.tcp_any_port,
        require: tier::Tier::Full,
    }
}

/// Whether a missing `create` path may be made: its nearest existing ancestor is the
/// home directory or the workspace, or below one of them. taskcell makes missing
/// directories inside the caller's own places, never a new tree elsewhere (e.g. a home
/// directory that does not exist).
pub(crate) fn creatable(path: &Path, home: &Path, workspace: &Path) -> bool {
    let Some(existing) = path
        .ancestors()
        .skip(1)
        .find(|a| std::fs::symlink_metadata(a).is_ok())
    else {
        return false;
    };
    existing.starts_with(home) || existing.starts_with(workspace)
}

/// Whether the caller may read `p` (access(2) with the real uid, as the cell will have).
pub(crate) fn readable(p: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) else {
        return true;
    };
    // SAFETY: access() reads a NUL-terminated path and has no other effect.
    unsafe { libc::access(c.as_ptr(), libc::R_OK) == 0 }
}

/// rlimits a profile may set (`[limits.rlimits]`).
pub const RLIMIT_NAMES: &[&str] = &[
    "as", "core", "cpu", "data", "fsize", "memlock", "nofile", "nproc", "stack",
];

pub(crate) fn push_rule(paths: &mut Vec<PathRule>, rule: PathRule) {
    // The last declaration of a path wins (CLI overrides come last).
    paths.retain(|r| r.path != rule.path);
    paths.push(rule);
}

/// Parents before children; among equal depth, by path (stable output for explain/tests).
/// A bind below a bind of the same access adds nothing and is dropped.
fn sort_rules(paths: &mut Vec<PathRule>) {
    paths.sort_by(|a, b| {
        let da = a.path.components().count();
        let db = b.path.components().count();
        da.cmp(&db).then_with(|| a.path.cmp(&b.path))
    });
    let mut kept: Vec<PathRule> = Vec::with_capacity(paths.len());
    for r in paths.drain(..) {
        let parent = kept
            .iter()
            .filter(|k| k.symlink.is_none() && r.path.starts_with(&k.path))
            .max_by_key(|k| k.path.components().count());
        let redundant = r.symlink.is_none()
            && matches!(r.access, Access::Read | Access::Write)
            && parent.is_some_and(|p| p.access == r.access);
        if !redundant {
            kept.push(r);
        }
    }
    *paths = kept;
}

fn abs_from(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Lexically normalise: drop `.`, resolve `..` against the path itself.
pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

struct Vars<'a> {
    workspace: &'a Path,
    cache: &'a Path,
    home: &'a Path,
    cwd: &'a Path,
    tmp: &'a Path,
    env: &'a BTreeMap<String, String>,
}

fn expand_path(e: &PathEntry, key: &'static str, vars: &Vars) -> Result<PathBuf, PlanError> {
    let s = expand_str(&e.path, vars).map_err(|msg| PlanError::Variable {
        origin: e.origin.clone(),
        msg: format!("`{key}` path {:?}: {msg}", e.path),
    })?;
    if !s.starts_with('/') {
        return Err(PlanError::Relative {
            origin: e.origin.clone(),
            key,
            path: s,
        });
    }
    Ok(PathBuf::from(s))
}

/// Expand `{workspace}`, `{home}`, `{cwd}`, `{tmp}`, `{cache}` and `{env:NAME}`.
fn expand_str(s: &str, vars: &Vars) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find('}') else {
            return Err("unclosed `{` (variables look like {workspace})".into());
        };
        let name = &after[..end];
        let val = match name {
            "workspace" => vars.workspace.display().to_string(),
            "cache" => vars.cache.display().to_string(),
            "home" => vars.home.display().to_string(),
            "cwd" => vars.cwd.display().to_string(),
            "tmp" => vars.tmp.display().to_string(),
            _ => match name.strip_prefix("env:") {
                Some(var) => match vars.env.get(var) {
                    Some(v) => v.clone(),
                    None => {
                        return Err(format!(
                            "environment variable {var} is not set (set it, or mark the entry optional = true)"
                        ))
                    }
                },
                None => {
                    return Err(format!(
                    "unknown variable {{{name}}} (known: {{workspace}}, {{home}}, {{cwd}}, {{tmp}}, {{cache}}, {{env:NAME}})"
                ))
                }
            },
        };
        out.push_str(&val);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

mod duration_secs {
    use serde::Serializer;
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

mod opt_duration_secs {
    use serde::Serializer;
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }
}
