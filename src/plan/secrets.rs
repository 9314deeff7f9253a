//! The secrets part of the Plan: which secrets, from where, delivered how. Never a value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::{expand_str, Access, PathRule, PlanError, Vars};
pub use crate::profile::secrets::OnLeak;
use crate::profile::secrets::{apply_cli_opt, parse_cli, Deliver, InjectDecl, SecretDecl, Source};

/// Where file-delivered secrets appear inside the cell.
pub const SECRETS_DIR: &str = "/run/secrets";
/// Default time limit for a provider or revoke command.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a secret's value comes from (the file path expanded, argv as written).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Provider {
    Command { argv: Vec<String> },
    Env { var: String },
    File { path: PathBuf },
    Generate { bytes: usize },
}

impl Provider {
    pub fn kind(&self) -> &'static str {
        match self {
            Provider::Command { .. } => "command",
            Provider::Env { .. } => "env",
            Provider::File { .. } => "file",
            Provider::Generate { .. } => "generate",
        }
    }
    /// Short human description (never a value).
    pub fn describe(&self) -> String {
        match self {
            Provider::Command { argv } => format!("command {argv:?}"),
            Provider::Env { var } => format!("launcher's ${var}"),
            Provider::File { path } => format!("file {}", path.display()),
            Provider::Generate { bytes } => format!("{bytes} random bytes (hex)"),
        }
    }
}

/// How the command receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Delivery {
    /// A read-only file in the cell's private tmpfs; `var` holds its path.
    File { path: PathBuf, var: String },
    /// A sealed memfd at fd `fd`; `var` holds the number.
    Fd { fd: i32, var: String },
    /// The value itself in the variable `var` (weakest).
    Env { var: String },
    /// Watch-only (`deliver = "none"`): not delivered; masked, scanned for, firewalled.
    None,
}

impl Delivery {
    pub fn kind(&self) -> &'static str {
        match self {
            Delivery::File { .. } => "file",
            Delivery::Fd { .. } => "fd",
            Delivery::Env { .. } => "env",
            Delivery::None => "none",
        }
    }
}

fn is_true(b: &bool) -> bool {
    *b
}

/// Largest secret value, in bytes (also sizes the /run/secrets tmpfs).
pub const MAX_VALUE: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretPlan {
    pub name: String,
    pub provider: Provider,
    pub delivery: Delivery,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoke: Option<Vec<String>>,
    /// The revoke command gets the value on its stdin (else /dev/null; then it can also
    /// run at a later start after a SIGKILL of taskcell).
    #[serde(skip_serializing_if = "is_true")]
    pub revoke_needs_value: bool,
    #[serde(with = "super::opt_duration_secs")]
    pub ttl: Option<Duration>,
    #[serde(with = "super::duration_secs")]
    pub timeout: Duration,
    pub mask: bool,
    pub on_leak: OnLeak,
    /// `deliver = "inject"`: `delivery` carries a placeholder; the proxy substitutes the
    /// value in requests to these hosts only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inject: Option<InjectDecl>,
}

/// Merge the command line's `--secret` and `--secret-opt` into the profile's declarations.
pub fn declarations(
    profile: &BTreeMap<String, SecretDecl>,
    cli: &[String],
    cli_opts: &[String],
) -> Result<BTreeMap<String, SecretDecl>, PlanError> {
    let mut out = profile.clone();
    for s in cli {
        let (n, d) = parse_cli(s).map_err(|msg| PlanError::Other { msg })?;
        out.insert(n, d);
    }
    for o in cli_opts {
        apply_cli_opt(&mut out, o).map_err(|msg| PlanError::Other { msg })?;
    }
    Ok(out)
}

/// Resolve declarations into plans; adds `NAME_FILE` / `NAME_FD` to `env`, removes any
/// variable the command must not see (an `env` provider's source, an `env` delivery's
/// name, which the worker adds itself). Returns the secrets and the ttl bound.
pub(super) fn resolve(
    decls: &BTreeMap<String, SecretDecl>,
    paths: &[PathRule],
    vars: &Vars,
    cwd: &Path,
    env: &mut BTreeMap<String, String>,
) -> Result<(Vec<SecretPlan>, Option<Duration>), PlanError> {
    let mut out = Vec::new();
    let mut ttl: Option<Duration> = None;
    let mut fds = Fds {
        taken: decls.values().filter_map(|d| d.fd).collect(),
        next: 3,
        used: BTreeMap::new(),
    };
    let mut used_vars: BTreeMap<String, String> = BTreeMap::new();
    for (name, d) in decls {
        // An optional secret whose source is absent is not part of the cell.
        if d.optional && absent(&d.from, vars) {
            continue;
        }
        let o = &d.origin;
        let err = |msg: String| PlanError::Other {
            msg: format!("{o}: secret {name}: {msg}"),
        };
        let provider = provider_of(&d.from, o, vars, cwd, &err)?;
        if let Some(i) = &d.inject {
            if i.hosts.is_empty() {
                return Err(err(
                    "`deliver` is \"inject\" but no `hosts` are given (bind it to the hosts that need it)".into(),
                ));
            }
        }
        if d.fd.is_some() && d.deliver != Deliver::Fd {
            return Err(err("`fd` is set but `deliver` is not \"fd\"".into()));
        }
        let delivery = delivery_of(name, d, &mut fds, &err)?;
        let var = match &delivery {
            Delivery::File { var, .. } | Delivery::Fd { var, .. } | Delivery::Env { var } => {
                Some(var)
            }
            Delivery::None => None,
        };
        if let Some(var) = var {
            if let Some(other) = used_vars.insert(var.clone(), name.clone()) {
                return Err(err(format!(
                    "variable {var} is also used by secret {other} (set `var` to tell them apart)"
                )));
            }
        }
        if let Some(t) = d.ttl {
            ttl = Some(ttl.map_or(t, |x| x.min(t)));
        }
        out.push(SecretPlan {
            name: name.clone(),
            provider,
            delivery,
            revoke: d.revoke.clone(),
            revoke_needs_value: d.revoke_needs_value,
            ttl: d.ttl,
            timeout: d.timeout.unwrap_or(DEFAULT_TIMEOUT),
            mask: d.mask,
            on_leak: d.on_leak,
            inject: d.inject.clone(),
        });
    }
    export(&out, env);
    check_secrets_dir(&out, paths)?;
    Ok((out, ttl))
}

/// The fds of `fd` deliveries: those declared, the next free one, and who has which.
struct Fds {
    taken: Vec<i32>,
    next: i32,
    used: BTreeMap<i32, String>,
}

/// Whether an optional secret's source is missing (an unset variable, a missing file).
fn absent(from: &Source, vars: &Vars) -> bool {
    match from {
        Source::Env { var } => !vars.env.contains_key(var),
        Source::File { path } => expand_str(path, vars)
            .map(|p| !Path::new(&p).exists())
            .unwrap_or(true),
        Source::Command { .. } | Source::Generate { .. } => false,
    }
}

/// Where the value comes from; a relative `from.file` only from the command line (the
/// current directory), never from a profile.
fn provider_of(
    from: &Source,
    o: &crate::profile::Origin,
    vars: &Vars,
    cwd: &Path,
    err: &dyn Fn(String) -> PlanError,
) -> Result<Provider, PlanError> {
    Ok(match from {
        Source::Command { argv } => Provider::Command { argv: argv.clone() },
        Source::Env { var } => Provider::Env { var: var.clone() },
        Source::Generate { bytes } => Provider::Generate { bytes: *bytes },
        Source::File { path } => {
            let p = expand_str(path, vars).map_err(|m| err(format!("`from.file`: {m}")))?;
            let p = PathBuf::from(p);
            let p = if p.is_absolute() {
                p
            } else if o.file.is_empty() {
                cwd.join(p)
            } else {
                return Err(err(format!(
                    "`from.file` {} is not absolute (start it with / or a variable such as {{home}})",
                    p.display()
                )));
            };
            Provider::File {
                path: super::normalize(&p),
            }
        }
    })
}

/// How the secret `name` reaches the command (its variable, its fd).
fn delivery_of(
    name: &str,
    d: &SecretDecl,
    fds: &mut Fds,
    err: &dyn Fn(String) -> PlanError,
) -> Result<Delivery, PlanError> {
    Ok(match d.deliver {
        Deliver::File => Delivery::File {
            path: Path::new(SECRETS_DIR).join(name),
            var: d.var.clone().unwrap_or_else(|| format!("{name}_FILE")),
        },
        Deliver::Fd => {
            let fd = match d.fd {
                Some(f) => f,
                None => {
                    while fds.taken.contains(&fds.next) || fds.used.contains_key(&fds.next) {
                        fds.next += 1;
                    }
                    fds.next
                }
            };
            if let Some(other) = fds.used.insert(fd, name.to_string()) {
                return Err(err(format!(
                    "fd {fd} is also used by secret {other} (give each its own `fd`)"
                )));
            }
            Delivery::Fd {
                fd,
                var: d.var.clone().unwrap_or_else(|| format!("{name}_FD")),
            }
        }
        Deliver::Env => Delivery::Env {
            var: d.var.clone().unwrap_or_else(|| name.to_string()),
        },
        Deliver::None => {
            if !d.mask {
                return Err(err(
                    "`deliver = \"none\"` (watch-only) with `mask = false` would do nothing: a watch-only secret is only masked, scanned for and firewalled".into(),
                ));
            }
            if d.var.is_some() {
                return Err(err(
                    "`var` is set but `deliver` is \"none\" (nothing is delivered)".into(),
                ));
            }
            Delivery::None
        }
    })
}

/// The environment: an env provider's source variable never reaches the command (it
/// would be the same value, unmasked by delivery rules); env deliveries are added by the
/// worker from the memfd; file/fd deliveries tell the command where to look.
fn export(out: &[SecretPlan], env: &mut BTreeMap<String, String>) {
    for s in out {
        if let Provider::Env { var } = &s.provider {
            env.remove(var);
        }
        match &s.delivery {
            Delivery::File { path, var } => {
                env.insert(var.clone(), path.display().to_string());
            }
            Delivery::Fd { fd, var } => {
                env.insert(var.clone(), fd.to_string());
            }
            Delivery::Env { var } => {
                env.remove(var);
            }
            Delivery::None => {}
        }
    }
}

/// File-delivered secrets need the secrets directory to be the cell's own tmpfs.
fn check_secrets_dir(out: &[SecretPlan], paths: &[PathRule]) -> Result<(), PlanError> {
    if !out
        .iter()
        .any(|s| matches!(s.delivery, Delivery::File { .. }))
    {
        return Ok(());
    }
    let dir = Path::new(SECRETS_DIR);
    if let Some(r) = paths.iter().find(|r| {
        dir.starts_with(&r.path) && matches!(r.access, Access::Read | Access::Write)
            || r.path.starts_with(dir)
    }) {
        return Err(PlanError::Other {
            msg: format!(
                "file-delivered secrets need {SECRETS_DIR} to be the cell's own, but the profile binds {} ({}); remove that path or deliver the secrets by fd",
                r.path.display(),
                r.access.as_str()
            ),
        });
    }
    Ok(())
}

/// Refuse an injected secret the cell could read anyway (the placeholder would protect
/// nothing): a `from.file` inside a path the cell sees, or the value of a `from.env`
/// variable copied into the cell's environment (`{env:NAME}`, `--env`, `pass`).
/// `host_env` is the launcher's environment, `env` the command's.
pub(super) fn check_unreachable(
    secrets: &[SecretPlan],
    paths: &[PathRule],
    host_env: &BTreeMap<String, String>,
    env: &BTreeMap<String, String>,
) -> Result<(), PlanError> {
    for s in secrets.iter().filter(|s| s.inject.is_some()) {
        let refuse = |why: String| {
            PlanError::Other {
            msg: format!(
                "secret {}: deliver = \"inject\" keeps the value out of the cell, but {why}; the cell could read the value and send it anywhere. Keep the source outside every path the cell sees, or deliver the secret another way",
                s.name
            ),
        }
        };
        match &s.provider {
            Provider::File { path } => {
                // Resolve symlinks where the file exists: the cell sees the target.
                let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
                for p in [path, &real] {
                    if let Some(r) = visible_in(paths, p) {
                        return Err(refuse(format!(
                            "its source {} is inside {} ({}), which the cell sees",
                            p.display(),
                            r.path.display(),
                            r.access.as_str()
                        )));
                    }
                }
            }
            Provider::Env { var } => {
                let Some(v) = host_env.get(var).filter(|v| !v.is_empty()) else {
                    continue;
                };
                // Short values only when equal (a digit is in many variables).
                let copied = |x: &String| x == v || v.len() >= 8 && x.contains(v.as_str());
                if let Some((k, _)) = env.iter().find(|(_, x)| copied(x)) {
                    return Err(refuse(format!(
                        "its source ${var} is copied into the cell's environment as ${k}"
                    )));
                }
            }
            Provider::Command { .. } | Provider::Generate { .. } => {}
        }
    }
    Ok(())
}

/// The rule that decides whether `p` is visible in the cell (the deepest rule above it),
/// if it makes it visible.
fn visible_in<'a>(paths: &'a [PathRule], p: &Path) -> Option<&'a PathRule> {
    let r = paths
        .iter()
        .filter(|r| p.starts_with(&r.path))
        .max_by_key(|r| r.path.components().count())?;
    matches!(r.access, Access::Read | Access::Write | Access::Protect).then_some(r)
}

/// The proxy's part of the injected secrets: names and hosts, never a value.
pub fn inject_rules(secrets: &[SecretPlan]) -> Vec<crate::plan::net::InjectRule> {
    secrets
        .iter()
        .filter_map(|s| {
            let i = s.inject.as_ref()?;
            Some(crate::plan::net::InjectRule {
                secret: s.name.clone(),
                hosts: i.hosts.clone(),
                body: i.body,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{resolve, Context, Overrides};
    use crate::profile::{Loader, Profile};

    fn ctx(ws: &Path) -> Context {
        Context {
            cwd: ws.to_path_buf(),
            home: "/nonexistent-home".into(),
            tmp: "/tmp".into(),
            uid: 1000,
            gid: 1000,
            env: [("GH_TOKEN".to_string(), "value-must-not-appear".to_string())]
                .into_iter()
                .collect(),
            terminal: false,
        }
    }

    fn ov(secrets: &[&str], opts: &[&str]) -> Overrides {
        Overrides {
            secrets: secrets.iter().map(|s| s.to_string()).collect(),
            secret_opts: opts.iter().map(|s| s.to_string()).collect(),
            env: vec!["GH_TOKEN".into()],
            ..Overrides::default()
        }
    }

    #[test]
    fn optional_secret_with_an_absent_source_is_left_out() {
        let ws = tempfile::tempdir().unwrap();
        let names = |secrets: &[&str], opts: &[&str]| -> Vec<String> {
            resolve(
                &Profile::default(),
                &ov(secrets, opts),
                &ctx(ws.path()),
                &["true".into()],
            )
            .unwrap()
            .secrets
            .iter()
            .map(|s| s.name.clone())
            .collect()
        };
        // GH_TOKEN is set in the context, NOPE_TOKEN is not.
        assert_eq!(
            names(
                &["A=env:GH_TOKEN", "B=env:NOPE_TOKEN"],
                &["A.optional=true", "B.optional=true"]
            ),
            vec!["A"]
        );
        assert_eq!(
            names(&["F=file:/nonexistent/token"], &["F.optional=true"]),
            Vec::<String>::new()
        );
        // Not optional: an absent variable is the provider's error when the cell starts,
        // so the plan keeps it.
        assert_eq!(names(&["B=env:NOPE_TOKEN"], &[]), vec!["B"]);
    }

    #[test]
    fn deliveries_env_vars_fds_and_no_values() {
        let ws = tempfile::tempdir().unwrap();
        let p = resolve(
            &Profile::default(),
            &ov(
                &["A=env:GH_TOKEN", "B=generate:16", "C=cmd:x", "D=file:tok"],
                &[
                    "B.deliver=fd",
                    "C.deliver=fd",
                    "C.fd=3",
                    "D.deliver=env",
                    "D.var=DV",
                ],
            ),
            &ctx(ws.path()),
            &["true".into()],
        )
        .unwrap();
        let env: BTreeMap<_, _> = p.process.env.iter().cloned().collect();
        assert_eq!(
            env.get("A_FILE").map(String::as_str),
            Some("/run/secrets/A")
        );
        // C asked for 3, so B gets the next free number.
        assert_eq!(env.get("C_FD").map(String::as_str), Some("3"));
        assert_eq!(env.get("B_FD").map(String::as_str), Some("4"));
        // The env provider's source variable is removed even though --env passed it;
        // the env delivery's variable is added by the worker, not the plan.
        assert!(!env.contains_key("GH_TOKEN"));
        assert!(!env.contains_key("DV"));
        assert_eq!(
            p.secrets[3].provider,
            Provider::File {
                path: ws
                    .path()
                    .canonicalize()
                    .unwrap_or(ws.path().into())
                    .join("tok")
            }
            .clone()
        );
        let json = serde_json::to_string(&p).unwrap();
        assert!(!json.contains("value-must-not-appear"));
        let s = crate::explain::text(&p);
        assert!(s.contains("WEAKEST"), "{s}");
    }

    #[test]
    fn ttl_bounds_the_timeout() {
        let ws = tempfile::tempdir().unwrap();
        let mut prof = Profile::default();
        prof.limits.timeout = Some(Duration::from_secs(3600));
        let p = resolve(
            &prof,
            &ov(
                &["A=generate:16", "B=generate:16"],
                &["A.ttl=15m", "B.ttl=20m"],
            ),
            &ctx(ws.path()),
            &["true".into()],
        )
        .unwrap();
        assert_eq!(p.limits.timeout, Some(Duration::from_secs(900)));
    }

    #[test]
    fn conflicts_are_errors() {
        let ws = tempfile::tempdir().unwrap();
        let c = ctx(ws.path());
        let argv = ["true".to_string()];
        let e = |o: Overrides| {
            resolve(&Profile::default(), &o, &c, &argv)
                .unwrap_err()
                .to_string()
        };
        assert!(e(ov(
            &["A=generate:16", "B=generate:16"],
            &["A.deliver=fd", "A.fd=5", "B.deliver=fd", "B.fd=5"]
        ))
        .contains("fd 5 is also used"));
        assert!(e(ov(&["A=generate:16"], &["A.fd=5"])).contains("`deliver` is not"));
        assert!(e(ov(
            &["A=generate:16", "B=generate:16"],
            &["A.deliver=env", "A.var=X", "B.deliver=env", "B.var=X"]
        ))
        .contains("variable X is also used"));
        let mut o = ov(&["A=generate:16"], &[]);
        o.read = vec!["/run".into()];
        if Path::new("/run").exists() {
            assert!(e(o).contains("/run/secrets"));
        }
    }

    #[test]
    fn profile_errors_carry_lines() {
        let dir = tempfile::tempdir().unwrap();
        let loader = Loader { user_dir: None };
        let cases = [
            ("[secrets.bad]\nfrom = { env = \"X\" }\n", 1, "not valid"),
            (
                "[secrets.A]\nfrom = { env = \"X\", file = \"/y\" }\n",
                2,
                "exactly one provider",
            ),
            (
                "[secrets.A]\nfrom = { env = \"X\" }\ndeliver = \"pigeon\"\n",
                3,
                "not a delivery",
            ),
            ("[secrets.A]\nfrom = { env = \"X\" }\nfd = 1\n", 3, "fd 1"),
            (
                "[secrets.A]\nfrom = { env = \"X\" }\n\nttl = \"soon\"\n",
                4,
                "ttl",
            ),
            (
                "[secrets.A]\nfrom = { env = \"X\" }\non_leak = \"panic\"\n",
                3,
                "on_leak",
            ),
            (
                "[secrets.A]\nfrom = { generate = { bytes = 2 } }\n",
                2,
                "8 to",
            ),
            (
                "[secrets.A]\nfrom = { env = \"X\" }\ncolour = 1\n",
                3,
                "unknown field",
            ),
        ];
        for (i, (text, line, want)) in cases.iter().enumerate() {
            let f = dir.path().join(format!("p{i}.toml"));
            std::fs::write(&f, text).unwrap();
            let e = loader.load(f.to_str().unwrap()).unwrap_err().to_string();
            assert!(e.contains(&format!("line {line}:")), "{text:?}: {e}");
            assert!(e.contains(want), "{text:?}: {e}");
        }
        let f = dir.path().join("ok.toml");
        std::fs::write(
            &f,
            "[secrets.GITHUB_TOKEN]\nfrom = { command = [\"gh\", \"auth\", \"token\"] }\ndeliver = \"fd\"\nfd = 5\nrevoke = [\"r\", \"{session}\"]\nttl = \"15m\"\nmask = false\non_leak = \"fail\"\n",
        )
        .unwrap();
        let p = loader.load(f.to_str().unwrap()).unwrap();
        let d = &p.secrets["GITHUB_TOKEN"];
        assert_eq!(d.fd, Some(5));
        assert_eq!(d.ttl, Some(Duration::from_secs(900)));
        assert!(!d.mask);
        assert_eq!(d.on_leak, OnLeak::Fail);
        assert_eq!(d.origin.line, 1);
    }
}
