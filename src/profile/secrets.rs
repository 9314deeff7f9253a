//! `[secrets.NAME]` tables and the `--secret` / `--secret-opt` command-line forms.
//!
//! Only declarations live here (where a value comes from, how it is delivered); a value
//! never does. Parsing is strict and every error names the file and line (or the flag).

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::spanned::Spanned;

use super::{parse_duration, Origin, ProfileError};

/// Where a secret's value comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Source {
    /// Run this argv (no shell); its stdout is the value.
    Command { argv: Vec<String> },
    /// The launcher's environment variable of this name.
    Env { var: String },
    /// The content of this file (variables such as `{home}` are expanded).
    File { path: String },
    /// `bytes` random bytes, hex-encoded (the value is 2×bytes characters).
    Generate { bytes: usize },
}

impl Source {
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Command { .. } => "command",
            Source::Env { .. } => "env",
            Source::File { .. } => "file",
            Source::Generate { .. } => "generate",
        }
    }
}

/// How the cell receives a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Deliver {
    File,
    Fd,
    Env,
    /// Watch-only: delivered nowhere; the value is only masked, scanned for and kept out
    /// of requests to intercepted hosts (the secret firewall).
    None,
}

impl Deliver {
    pub fn parse(s: &str) -> Option<Deliver> {
        match s {
            "file" => Some(Deliver::File),
            "fd" => Some(Deliver::Fd),
            "env" => Some(Deliver::Env),
            "none" => Some(Deliver::None),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Deliver::File => "file",
            Deliver::Fd => "fd",
            Deliver::Env => "env",
            Deliver::None => "none",
        }
    }
}

/// What happens when the leak scan finds a secret in a file the cell wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnLeak {
    #[default]
    Warn,
    Fail,
}

impl OnLeak {
    pub fn parse(s: &str) -> Option<OnLeak> {
        match s {
            "warn" => Some(OnLeak::Warn),
            "fail" => Some(OnLeak::Fail),
            _ => None,
        }
    }
}

/// One declared secret (no value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretDecl {
    pub from: Source,
    pub deliver: Deliver,
    /// For `fd`: the fd number in the command (default: the lowest free from 3).
    pub fd: Option<i32>,
    /// For `file`/`fd`: the variable that tells the command where (default NAME_FILE /
    /// NAME_FD); for `env`: the variable that holds the value (default NAME).
    pub var: Option<String>,
    /// Run when the cell ends, whatever way; `{session}` and `{name}` are replaced.
    pub revoke: Option<Vec<String>>,
    /// The revoke command reads the value on its stdin (the default). `false`: it gets
    /// none (stdin is /dev/null) and works from `{session}`/`{name}` alone, so a
    /// revocation a SIGKILL of taskcell prevented can run at a later start.
    pub revoke_needs_value: bool,
    pub ttl: Option<Duration>,
    /// Time limit for the provider command and for the revoke command.
    pub timeout: Option<Duration>,
    pub mask: bool,
    pub on_leak: OnLeak,
    /// `deliver = "inject"`: the cell gets a placeholder (through `deliver`, the channel
    /// chosen by `placeholder`); the proxy puts the value into requests to `hosts`.
    pub inject: Option<InjectDecl>,
    /// Skip the secret when its `env` variable is unset or its `file` does not exist.
    pub optional: bool,
    pub origin: Origin,
}

impl SecretDecl {
    /// A declaration with every option at its default: delivered as a file, masked,
    /// warn on a leak, required.
    pub fn new(from: Source, origin: Origin) -> SecretDecl {
        SecretDecl {
            from,
            deliver: Deliver::File,
            fd: None,
            var: None,
            revoke: None,
            revoke_needs_value: true,
            ttl: None,
            timeout: None,
            mask: true,
            on_leak: OnLeak::Warn,
            inject: None,
            optional: false,
            origin,
        }
    }
}

/// The hosts an injected secret is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InjectDecl {
    /// `api.example.com` or `*.example.org` (any subdomain).
    pub hosts: Vec<String>,
    /// Also replace the placeholder in request bodies (`inject_body = true`).
    pub body: bool,
}

/// Check a host pattern of `hosts` or `network.intercept`: a host name or `*.` followed
/// by one, optionally with `:PORT` (then only that port is bound).
pub fn check_inject_host(h: &str) -> Result<String, String> {
    let (name, port) = match h.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (h, None),
    };
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
    let bare = name.strip_prefix("*.").unwrap_or(name);
    let ok = port_ok
        && !bare.is_empty()
        && bare.len() <= 253
        && !bare.starts_with('.')
        && !bare.ends_with('.')
        && bare
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if ok {
        Ok(h.to_ascii_lowercase())
    } else {
        Err(format!(
            "{h:?} is not a host name or `*.` pattern with an optional port (e.g. \"api.example.com\", \"api.example.com:443\" or \"*.example.org\"; no scheme, no path)"
        ))
    }
}

/// Secret names: `[A-Z_][A-Z0-9_]*`.
pub fn valid_name(n: &str) -> bool {
    let mut c = n.chars();
    matches!(c.next(), Some(x) if x.is_ascii_uppercase() || x == '_')
        && c.all(|x| x.is_ascii_uppercase() || x.is_ascii_digit() || x == '_')
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSecret {
    pub from: Spanned<RawFrom>,
    /// "file" (default), "fd", "env", "inject" (the cell gets a placeholder; the proxy
    /// puts the value into requests to `hosts`) or "none" (watch-only: delivered nowhere;
    /// masked, scanned for, kept out of requests to intercepted hosts).
    pub deliver: Option<Spanned<String>>,
    pub fd: Option<Spanned<i64>>,
    pub var: Option<Spanned<String>>,
    pub revoke: Option<Spanned<Vec<String>>>,
    /// false: the revoke command gets no value (stdin is /dev/null) and works from
    /// `{session}` and `{name}` alone, e.g. revoking a credential the provider labelled
    /// with `{session}`; then a revocation a SIGKILL of taskcell prevented runs at the
    /// next start of a cell with the same secret and revoke command.
    pub revoke_needs_value: Option<Spanned<bool>>,
    pub ttl: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub mask: Option<Spanned<bool>>,
    pub on_leak: Option<Spanned<String>>,
    /// `deliver = "inject"`: the hosts the value may go to (`HOST`, `*.DOMAIN`, either
    /// with an optional `:PORT`, which binds that port only).
    pub hosts: Option<Spanned<Vec<String>>>,
    pub placeholder: Option<Spanned<String>>,
    pub inject_body: Option<Spanned<bool>>,
    /// An `env` or `file` source that is absent skips the secret instead of failing.
    pub optional: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawFrom {
    pub command: Option<Vec<String>>,
    pub env: Option<String>,
    pub file: Option<String>,
    pub generate: Option<RawGenerate>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawGenerate {
    pub bytes: i64,
}

/// Largest `generate.bytes`.
pub const MAX_GENERATE: usize = 4096;

/// What turns a byte offset of the file into an error at its line.
type Invalid<'a> = &'a dyn Fn(usize, String) -> ProfileError;

/// Merge `[secrets.*]` of one file into `out` (a later file's table replaces a parent's).
pub fn merge(
    out: &mut BTreeMap<String, SecretDecl>,
    raw: &BTreeMap<String, Spanned<RawSecret>>,
    origin: &dyn Fn(usize) -> Origin,
) -> Result<(), ProfileError> {
    for (name, s) in raw {
        let inv = |at: usize, msg: String| ProfileError::Invalid {
            origin: origin(at),
            msg,
        };
        if !valid_name(name) {
            return Err(inv(
                s.span().start,
                format!(
                    "secret name {name:?} is not valid (use [A-Z_][A-Z0-9_]*, e.g. GITHUB_TOKEN)"
                ),
            ));
        }
        let o = origin(s.span().start);
        let s = s.get_ref();
        let mut d = SecretDecl::new(source(name, &s.from, &inv)?, o);
        d.optional = s.optional.as_ref().is_some_and(|v| *v.get_ref());
        delivery(name, s, &mut d, &inv)?;
        options(name, s, &mut d, &inv)?;
        out.insert(name.clone(), d);
    }
    Ok(())
}

/// `from`: exactly one provider, checked.
fn source(name: &str, from: &Spanned<RawFrom>, inv: Invalid) -> Result<Source, ProfileError> {
    let f = from.get_ref();
    let fat = from.span().start;
    let given = [
        f.command.is_some(),
        f.env.is_some(),
        f.file.is_some(),
        f.generate.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if given != 1 {
        return Err(inv(fat, format!("`secrets.{name}.from` must name exactly one provider: {{ command = [...] }}, {{ env = \"VAR\" }}, {{ file = \"PATH\" }} or {{ generate = {{ bytes = N }} }}")));
    }
    Ok(if let Some(argv) = &f.command {
        if argv.is_empty() || argv[0].is_empty() {
            return Err(inv(
                fat,
                format!(
                    "`secrets.{name}.from.command` is empty (give the program and its arguments)"
                ),
            ));
        }
        Source::Command { argv: argv.clone() }
    } else if let Some(v) = &f.env {
        if !super::raw::valid_env_name(v) {
            return Err(inv(
                fat,
                format!("`secrets.{name}.from.env` {v:?} is not a variable name"),
            ));
        }
        Source::Env { var: v.clone() }
    } else if let Some(p) = &f.file {
        if p.is_empty() {
            return Err(inv(fat, format!("`secrets.{name}.from.file` is empty")));
        }
        Source::File { path: p.clone() }
    } else {
        let b = f.generate.as_ref().map(|g| g.bytes).unwrap_or(0);
        if b < 8 || b > MAX_GENERATE as i64 {
            return Err(inv(
                fat,
                format!("`secrets.{name}.from.generate.bytes` is {b}; use 8 to {MAX_GENERATE}"),
            ));
        }
        Source::Generate { bytes: b as usize }
    })
}

/// `deliver`, and with "inject" its `hosts`, `placeholder` and `inject_body` (which
/// only apply to it).
fn delivery(
    name: &str,
    s: &RawSecret,
    d: &mut SecretDecl,
    inv: Invalid,
) -> Result<(), ProfileError> {
    if let Some(v) = s.deliver.as_ref().filter(|v| v.get_ref() == "inject") {
        let hosts = s.hosts.as_ref().ok_or_else(|| {
            inv(
                v.span().start,
                format!("`secrets.{name}.deliver` is \"inject\" but no `hosts` are given (bind it to the hosts that need it, e.g. hosts = [\"api.example.com\"])"),
            )
        })?;
        if hosts.get_ref().is_empty() {
            return Err(inv(
                hosts.span().start,
                format!("`secrets.{name}.hosts` is empty"),
            ));
        }
        let mut hs = Vec::new();
        for h in hosts.get_ref() {
            hs.push(
                check_inject_host(h)
                    .map_err(|m| inv(hosts.span().start, format!("`secrets.{name}.hosts`: {m}")))?,
            );
        }
        d.inject = Some(InjectDecl {
            hosts: hs,
            body: s.inject_body.as_ref().is_some_and(|b| *b.get_ref()),
        });
        d.deliver = Deliver::Env;
        if let Some(p) = &s.placeholder {
            d.deliver = Deliver::parse(p.get_ref()).filter(|d| *d != Deliver::None).ok_or_else(|| {
                inv(
                    p.span().start,
                    format!(
                        "`secrets.{name}.placeholder` {:?} is not a channel (use \"env\", \"file\" or \"fd\")",
                        p.get_ref()
                    ),
                )
            })?;
        }
    } else {
        for (key, given) in [
            ("hosts", s.hosts.as_ref().map(|x| x.span().start)),
            (
                "placeholder",
                s.placeholder.as_ref().map(|x| x.span().start),
            ),
            (
                "inject_body",
                s.inject_body.as_ref().map(|x| x.span().start),
            ),
        ] {
            if let Some(at) = given {
                return Err(inv(
                    at,
                    format!("`secrets.{name}.{key}` only applies with deliver = \"inject\""),
                ));
            }
        }
    }
    if let Some(v) = s.deliver.as_ref().filter(|v| v.get_ref() != "inject") {
        d.deliver = Deliver::parse(v.get_ref()).ok_or_else(|| {
            inv(
                v.span().start,
                format!(
                    "`secrets.{name}.deliver` {:?} is not a delivery (use \"file\", \"fd\", \"env\" or \"inject\")",
                    v.get_ref()
                ),
            )
        })?;
    }
    Ok(())
}

/// `fd`, `var`, `revoke`, `ttl`, `timeout`, `mask`, `on_leak`.
fn options(
    name: &str,
    s: &RawSecret,
    d: &mut SecretDecl,
    inv: Invalid,
) -> Result<(), ProfileError> {
    if let Some(v) = &s.fd {
        d.fd = Some(
            check_fd(*v.get_ref())
                .map_err(|m| inv(v.span().start, format!("`secrets.{name}.fd`: {m}")))?,
        );
    }
    if let Some(v) = &s.var {
        if !super::raw::valid_env_name(v.get_ref()) {
            return Err(inv(
                v.span().start,
                format!(
                    "`secrets.{name}.var` {:?} is not a variable name",
                    v.get_ref()
                ),
            ));
        }
        d.var = Some(v.get_ref().clone());
    }
    if let Some(v) = &s.revoke {
        if v.get_ref().is_empty() || v.get_ref()[0].is_empty() {
            return Err(inv(
                v.span().start,
                format!("`secrets.{name}.revoke` is empty (give the program and its arguments)"),
            ));
        }
        d.revoke = Some(v.get_ref().clone());
    }
    if let Some(v) = &s.revoke_needs_value {
        d.revoke_needs_value = *v.get_ref();
    }
    for (key, slot) in [("ttl", &s.ttl), ("timeout", &s.timeout)] {
        if let Some(t) = slot {
            let dur = parse_duration(t.get_ref())
                .map_err(|m| inv(t.span().start, format!("`secrets.{name}.{key}`: {m}")))?;
            if key == "ttl" {
                d.ttl = Some(dur);
            } else {
                d.timeout = Some(dur);
            }
        }
    }
    if let Some(m) = &s.mask {
        d.mask = *m.get_ref();
    }
    if let Some(v) = &s.on_leak {
        d.on_leak = OnLeak::parse(v.get_ref()).ok_or_else(|| {
            inv(
                v.span().start,
                format!(
                    "`secrets.{name}.on_leak` {:?} is not valid (use \"warn\" or \"fail\")",
                    v.get_ref()
                ),
            )
        })?;
    }
    Ok(())
}

fn check_fd(n: i64) -> Result<i32, String> {
    if (3..=1023).contains(&n) {
        Ok(n as i32)
    } else {
        Err(format!(
            "fd {n} cannot be used (use 3 to 1023; 0, 1 and 2 are stdio)"
        ))
    }
}

/// Parse `NAME=env:VAR`, `NAME=file:PATH`, `NAME=cmd:ARGV...` (shell-like quoting) or
/// `NAME=generate:BYTES` from `--secret`.
pub fn parse_cli(spec: &str) -> Result<(String, SecretDecl), String> {
    let Some((name, rest)) = spec.split_once('=') else {
        return Err(format!(
            "--secret {spec:?}: expected NAME=env:VAR, NAME=file:PATH, NAME=cmd:COMMAND or NAME=generate:BYTES"
        ));
    };
    if !valid_name(name) {
        return Err(format!(
            "--secret: name {name:?} is not valid (use [A-Z_][A-Z0-9_]*, e.g. GITHUB_TOKEN)"
        ));
    }
    let (kind, arg) = rest.split_once(':').ok_or_else(|| {
        format!("--secret {name}=...: expected a provider prefix env:, file:, cmd: or generate:")
    })?;
    let from = match kind {
        "env" => {
            if !super::raw::valid_env_name(arg) {
                return Err(format!(
                    "--secret {name}=env:{arg}: {arg:?} is not a variable name"
                ));
            }
            Source::Env { var: arg.into() }
        }
        "file" => {
            if arg.is_empty() {
                return Err(format!("--secret {name}=file: needs a path"));
            }
            Source::File { path: arg.into() }
        }
        "cmd" | "command" => {
            let argv = split_words(arg).map_err(|e| format!("--secret {name}=cmd:...: {e}"))?;
            if argv.is_empty() {
                return Err(format!("--secret {name}=cmd: needs a command"));
            }
            Source::Command { argv }
        }
        "generate" => {
            let b: usize = arg.parse().map_err(|_| {
                format!("--secret {name}=generate:{arg}: expected a number of bytes")
            })?;
            if !(8..=MAX_GENERATE).contains(&b) {
                return Err(format!(
                    "--secret {name}=generate:{b}: use 8 to {MAX_GENERATE} bytes"
                ));
            }
            Source::Generate { bytes: b }
        }
        _ => {
            return Err(format!(
                "--secret {name}={kind}:...: unknown provider {kind:?} (env, file, cmd, generate)"
            ))
        }
    };
    Ok((name.to_string(), SecretDecl::new(from, Origin::cli())))
}

/// Apply `--secret-opt NAME.KEY=VALUE` (keys: deliver, fd, var, revoke, revoke_needs_value, ttl, timeout,
/// mask, on_leak) to a declared secret.
pub fn apply_cli_opt(secrets: &mut BTreeMap<String, SecretDecl>, opt: &str) -> Result<(), String> {
    let bad = || {
        format!("--secret-opt {opt:?}: expected NAME.KEY=VALUE with KEY one of deliver, fd, var, revoke, revoke_needs_value, ttl, timeout, mask, on_leak, optional, hosts, placeholder, inject_body")
    };
    let (lhs, val) = opt.split_once('=').ok_or_else(bad)?;
    let (name, key) = lhs.split_once('.').ok_or_else(bad)?;
    let d = secrets.get_mut(name).ok_or_else(|| {
        format!("--secret-opt {opt:?}: no secret {name:?} is declared (declare it with --secret or in the profile)")
    })?;
    let e = |m: String| format!("--secret-opt {name}.{key}: {m}");
    match key {
        "deliver" if val == "inject" => {
            let inj = d.inject.get_or_insert(InjectDecl {
                hosts: Vec::new(),
                body: false,
            });
            let _ = inj;
            d.deliver = Deliver::Env;
        }
        "deliver" => {
            d.inject = None;
            d.deliver = Deliver::parse(val)
                .ok_or_else(|| e(format!("{val:?} is not file, fd, env, inject or none")))?
        }
        "hosts" => {
            let inj = d
                .inject
                .as_mut()
                .ok_or_else(|| e("set NAME.deliver=inject first".into()))?;
            inj.hosts.clear();
            for h in val.split(',').filter(|h| !h.is_empty()) {
                inj.hosts.push(check_inject_host(h).map_err(e)?);
            }
        }
        "placeholder" => {
            if d.inject.is_none() {
                return Err(e("set NAME.deliver=inject first".into()));
            }
            d.deliver = Deliver::parse(val)
                .filter(|d| *d != Deliver::None)
                .ok_or_else(|| e(format!("{val:?} is not file, fd or env")))?
        }
        "inject_body" => {
            let inj = d
                .inject
                .as_mut()
                .ok_or_else(|| e("set NAME.deliver=inject first".into()))?;
            inj.body = match val {
                "true" => true,
                "false" => false,
                _ => return Err(e(format!("{val:?} is not true or false"))),
            }
        }
        "fd" => {
            let n: i64 = val
                .parse()
                .map_err(|_| e(format!("{val:?} is not a number")))?;
            d.fd = Some(check_fd(n).map_err(e)?);
        }
        "var" => {
            if !super::raw::valid_env_name(val) {
                return Err(e(format!("{val:?} is not a variable name")));
            }
            d.var = Some(val.into());
        }
        "revoke" => {
            let argv = split_words(val).map_err(e)?;
            if argv.is_empty() {
                return Err(e("needs a command".into()));
            }
            d.revoke = Some(argv);
        }
        "revoke_needs_value" => {
            d.revoke_needs_value = match val {
                "true" => true,
                "false" => false,
                _ => return Err(e(format!("{val:?} is not true or false"))),
            }
        }
        "ttl" => d.ttl = Some(parse_duration(val).map_err(e)?),
        "timeout" => d.timeout = Some(parse_duration(val).map_err(e)?),
        "optional" => {
            d.optional = match val {
                "true" => true,
                "false" => false,
                _ => return Err(e(format!("{val:?} is not true or false"))),
            }
        }
        "mask" => {
            d.mask = match val {
                "true" => true,
                "false" => false,
                _ => return Err(e(format!("{val:?} is not true or false"))),
            }
        }
        "on_leak" => {
            d.on_leak =
                OnLeak::parse(val).ok_or_else(|| e(format!("{val:?} is not warn or fail")))?
        }
        _ => return Err(bad()),
    }
    Ok(())
}

/// Split a command line into words like a POSIX shell does for quoting only: whitespace
/// separates words; `'...'` is literal; `"..."` allows `\"`, `\\`, `\$`, `` \` ``;
/// a backslash outside quotes escapes the next character. No expansion of any kind.
pub fn split_words(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut it = s.chars();
    while let Some(c) = it.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match it.next() {
                        Some('\'') => break,
                        Some(x) => cur.push(x),
                        None => return Err("unterminated ' quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match it.next() {
                        Some('"') => break,
                        Some('\\') => match it.next() {
                            Some(x @ ('"' | '\\' | '$' | '`')) => cur.push(x),
                            Some('\n') => {}
                            Some(x) => {
                                cur.push('\\');
                                cur.push(x);
                            }
                            None => return Err("unterminated \" quote".into()),
                        },
                        Some(x) => cur.push(x),
                        None => return Err("unterminated \" quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match it.next() {
                    Some('\n') => {}
                    Some(x) => cur.push(x),
                    None => return Err("trailing backslash".into()),
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("GITHUB_TOKEN"));
        assert!(valid_name("_X1"));
        assert!(!valid_name("1X"));
        assert!(!valid_name("lower"));
        assert!(!valid_name(""));
        assert!(!valid_name("A-B"));
    }

    #[test]
    fn words() {
        assert_eq!(
            split_words(r#"gh auth  token"#).unwrap(),
            vec!["gh", "auth", "token"]
        );
        assert_eq!(
            split_words(r#"sh -c 'echo "$X" a' "b c\" d" e\ f ''"#).unwrap(),
            vec!["sh", "-c", "echo \"$X\" a", "b c\" d", "e f", ""]
        );
        assert!(split_words("'open").is_err());
        assert!(split_words("\"open").is_err());
        assert!(split_words("x\\").is_err());
    }

    #[test]
    fn cli_forms() {
        let (n, d) = parse_cli("TOKEN=cmd:pass show 'a b'").unwrap();
        assert_eq!(n, "TOKEN");
        assert_eq!(
            d.from,
            Source::Command {
                argv: vec!["pass".into(), "show".into(), "a b".into()]
            }
        );
        assert_eq!(d.deliver, Deliver::File);
        assert_eq!(
            parse_cli("T=env:GH_TOKEN").unwrap().1.from,
            Source::Env {
                var: "GH_TOKEN".into()
            }
        );
        assert_eq!(
            parse_cli("T=generate:16").unwrap().1.from,
            Source::Generate { bytes: 16 }
        );
        assert!(parse_cli("t=env:X").is_err());
        assert!(parse_cli("T=env:").is_err());
        assert!(parse_cli("T=ftp:x").is_err());
        assert!(parse_cli("T=generate:2").is_err());
        assert!(parse_cli("T").is_err());
    }

    #[test]
    fn cli_opts() {
        let mut m = BTreeMap::new();
        let (n, d) = parse_cli("T=env:X").unwrap();
        m.insert(n, d);
        apply_cli_opt(&mut m, "T.deliver=fd").unwrap();
        apply_cli_opt(&mut m, "T.fd=7").unwrap();
        apply_cli_opt(&mut m, "T.revoke=tool --id '{session}'").unwrap();
        apply_cli_opt(&mut m, "T.on_leak=fail").unwrap();
        apply_cli_opt(&mut m, "T.mask=false").unwrap();
        apply_cli_opt(&mut m, "T.ttl=10m").unwrap();
        let d = &m["T"];
        assert_eq!(d.deliver, Deliver::Fd);
        assert_eq!(d.fd, Some(7));
        assert_eq!(
            d.revoke.as_deref(),
            Some(&["tool".to_string(), "--id".into(), "{session}".into()][..])
        );
        assert_eq!(d.on_leak, OnLeak::Fail);
        assert!(!d.mask);
        assert_eq!(d.ttl, Some(Duration::from_secs(600)));
        assert!(apply_cli_opt(&mut m, "T.fd=2").is_err());
        assert!(apply_cli_opt(&mut m, "U.fd=4").is_err());
        assert!(apply_cli_opt(&mut m, "T.colour=red").is_err());
    }

    #[test]
    fn inject_cli_opts() {
        let mut m = BTreeMap::new();
        let (n, d) = parse_cli("T=env:X").unwrap();
        m.insert(n, d);
        assert!(apply_cli_opt(&mut m, "T.hosts=a.test").is_err());
        apply_cli_opt(&mut m, "T.deliver=inject").unwrap();
        apply_cli_opt(&mut m, "T.hosts=API.test,*.example.org").unwrap();
        apply_cli_opt(&mut m, "T.placeholder=file").unwrap();
        apply_cli_opt(&mut m, "T.inject_body=true").unwrap();
        let d = &m["T"];
        assert_eq!(d.deliver, Deliver::File);
        let i = d.inject.as_ref().unwrap();
        assert_eq!(i.hosts, vec!["api.test", "*.example.org"]);
        assert!(i.body);
        assert!(apply_cli_opt(&mut m, "T.hosts=https://x.test/").is_err());
        // A port binds that port only.
        apply_cli_opt(&mut m, "T.hosts=x.test:443").unwrap();
        assert_eq!(m["T"].inject.as_ref().unwrap().hosts, vec!["x.test:443"]);
        assert!(apply_cli_opt(&mut m, "T.hosts=x.test:0").is_err());
        assert!(apply_cli_opt(&mut m, "T.hosts=x.test:99999").is_err());
        assert!(apply_cli_opt(&mut m, "T.placeholder=none").is_err());
        apply_cli_opt(&mut m, "T.deliver=none").unwrap();
        assert_eq!(m["T"].deliver, Deliver::None);
        apply_cli_opt(&mut m, "T.deliver=env").unwrap();
        assert!(m["T"].inject.is_none());
    }

    #[derive(Deserialize)]
    struct Doc {
        secrets: BTreeMap<String, Spanned<RawSecret>>,
    }

    fn parse(text: &str) -> Result<BTreeMap<String, SecretDecl>, ProfileError> {
        let doc: Doc = toml::from_str(text).unwrap();
        let mut out = BTreeMap::new();
        let origin = |_at: usize| Origin {
            file: "t.toml".into(),
            line: 1,
        };
        merge(&mut out, &doc.secrets, &origin).map(|_| out)
    }

    #[test]
    fn inject_in_profiles() {
        let m = parse(
            "[secrets.T]\nfrom = { env = \"X\" }\ndeliver = \"inject\"\nhosts = [\"api.test\"]\n",
        )
        .unwrap();
        // The placeholder goes by env unless `placeholder` says otherwise.
        assert_eq!(m["T"].deliver, Deliver::Env);
        assert_eq!(m["T"].inject.as_ref().unwrap().hosts, vec!["api.test"]);
        assert!(!m["T"].inject.as_ref().unwrap().body);
        let m = parse(
            "[secrets.T]\nfrom = { env = \"X\" }\ndeliver = \"inject\"\nplaceholder = \"fd\"\ninject_body = true\nhosts = [\"*.api.test\"]\n",
        )
        .unwrap();
        assert_eq!(m["T"].deliver, Deliver::Fd);
        assert!(m["T"].inject.as_ref().unwrap().body);
        for bad in [
            "[secrets.T]\nfrom = { env = \"X\" }\ndeliver = \"inject\"\n",
            "[secrets.T]\nfrom = { env = \"X\" }\ndeliver = \"inject\"\nhosts = []\n",
            "[secrets.T]\nfrom = { env = \"X\" }\ndeliver = \"inject\"\nhosts = [\"a b\"]\n",
            "[secrets.T]\nfrom = { env = \"X\" }\ndeliver = \"inject\"\nhosts = [\"a.test\"]\nplaceholder = \"inject\"\n",
            "[secrets.T]\nfrom = { env = \"X\" }\nhosts = [\"a.test\"]\n",
            "[secrets.T]\nfrom = { env = \"X\" }\ndeliver = \"file\"\ninject_body = true\n",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
