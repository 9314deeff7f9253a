//! Profile parsing, merging and error messages.

use super::*;
use crate::plan::{self, Access, Context, NetMode, Overrides};
use std::collections::BTreeMap;
use std::path::PathBuf;

fn loader_with(dir: &std::path::Path) -> Loader {
    Loader {
        user_dir: Some(dir.to_path_buf()),
    }
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn err_of(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = write(dir, name, text);
    // What the format cannot know (names, units, rules) is checked by the plan.
    match loader_with(dir).load(&p) {
        Ok(prof) => plan::check::check(&prof).unwrap_err().to_string(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn every_builtin_profile_parses() {
    let l = Loader { user_dir: None };
    for (name, _) in BUILTIN {
        let p = l.parse(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!p.description.is_empty(), "{name} has no description");
        // What starts use: the profile parsed when taskcell was built.
        assert_eq!(l.parsed_builtin(name), Some(p), "{name}");
    }
}

#[test]
fn extends_appends_lists_and_overrides_scalars() {
    let l = Loader { user_dir: None };
    let build = l.load("build").unwrap();
    // From base: /usr read; from build: the workspace written.
    assert!(build.filesystem.read.iter().any(|e| e.path == "/usr"));
    assert!(build
        .filesystem
        .write
        .iter()
        .any(|e| e.path == "{workspace}"));
    assert_eq!(build.network.mode, NetMode::None);
    assert_eq!(
        build.sources,
        vec!["base.toml (built-in)", "build.toml (built-in)"]
    );
    let agent = l.load("agent").unwrap();
    assert_eq!(agent.network.mode, NetMode::Proxy);
    // An agent-specific profile adds its config dir and API host to the agent's.
    let codex = l.load("codex").unwrap();
    assert_eq!(codex.network.mode, NetMode::Proxy);
    assert!(codex
        .filesystem
        .write
        .iter()
        .any(|e| e.path == "{workspace}"));
    assert!(codex
        .filesystem
        .write
        .iter()
        .any(|e| e.path == "{home}/.codex"));
    assert!(!agent
        .filesystem
        .write
        .iter()
        .any(|e| e.path == "{home}/.codex"));
    assert_eq!(
        codex.sources,
        vec![
            "base.toml (built-in)",
            "agent.toml (built-in)",
            "codex.toml (built-in)"
        ]
    );
}

#[test]
fn unknown_key_names_file_and_line() {
    let d = tempfile::tempdir().unwrap();
    let e = err_of(
        d.path(),
        "x.toml",
        "description = \"d\"\n[filesystem]\nread = []\nwrit = []\n",
    );
    assert!(e.contains("x.toml line 4"), "{e}");
    assert!(e.contains("unknown field `writ`"), "{e}");
}

#[test]
fn wrong_type_names_line() {
    let d = tempfile::tempdir().unwrap();
    let e = err_of(d.path(), "x.toml", "hostname = 5\n");
    assert!(e.contains("x.toml line 1"), "{e}");
    assert!(e.contains("invalid type"), "{e}");
}

#[test]
fn bad_path_entry_shape() {
    let d = tempfile::tempdir().unwrap();
    let e = err_of(
        d.path(),
        "x.toml",
        "[filesystem]\nread = [\n  { pth = \"/usr\" },\n]\n",
    );
    assert!(e.contains("line 2"), "{e}");
    assert!(
        e.contains("a path entry must be a string or a table"),
        "{e}"
    );
}

#[test]
fn bad_values_are_explained() {
    let d = tempfile::tempdir().unwrap();
    let e = err_of(d.path(), "m.toml", "[network]\nmode = \"wifi\"\n");
    assert!(
        e.contains("line 2") && e.contains("\"none\", \"loopback\", \"proxy\" or \"host\""),
        "{e}"
    );
    let e = err_of(d.path(), "h.toml", "hostname = \"bad host\"\n");
    assert!(
        e.contains("line 1") && e.contains("not a valid host name"),
        "{e}"
    );
    let e = err_of(d.path(), "r.toml", "[limits.rlimits]\nnofiles = 5\n");
    assert!(
        e.contains("line 2") && e.contains("unknown rlimit `nofiles`"),
        "{e}"
    );
    let e = err_of(d.path(), "e.toml", "[env]\nset = { \"1X\" = \"v\" }\n");
    assert!(e.contains("not a valid variable name"), "{e}");
}

#[test]
fn extends_cycle_detected() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "a.toml", "extends = \"b\"\n");
    write(d.path(), "b.toml", "extends = \"a\"\n");
    let e = loader_with(d.path()).load("a").unwrap_err().to_string();
    assert!(e.contains("`extends` makes a cycle"), "{e}");
    assert!(e.contains("a.toml -> ") && e.contains("b.toml -> "), "{e}");
}

#[test]
fn self_extends_is_a_cycle() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "a.toml", "extends = \"a\"\n");
    assert!(matches!(
        loader_with(d.path()).load("a"),
        Err(ProfileError::Cycle { .. })
    ));
}

#[test]
fn unknown_profile_lists_builtins() {
    let e = Loader { user_dir: None }
        .load("nope")
        .unwrap_err()
        .to_string();
    assert!(e.contains("base, build, review, agent"), "{e}");
}

#[test]
fn user_profile_shadows_builtin() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "build.toml", "description = \"mine\"\n");
    let p = loader_with(d.path()).load("build").unwrap();
    assert_eq!(p.description, "mine");
}

/// The built-in profiles parsed at build time stand only for a chain no user profile
/// shadows: a user's `base.toml` is what `build` extends, and `agent` (not shadowed) is
/// still the built-in one.
#[test]
fn user_profile_shadows_a_builtin_parent() {
    let d = tempfile::tempdir().unwrap();
    let mine = write(
        d.path(),
        "base.toml",
        "description = \"my base\"\nhostname = \"mine\"\n",
    );
    let l = loader_with(d.path());
    let build = l.load("build").unwrap();
    assert_eq!(build.hostname, "mine");
    assert_eq!(
        build.sources,
        vec![mine.clone(), "build.toml (built-in)".into()]
    );
    assert_eq!(build.files.len(), 1, "{:?}", build.files);
    assert_eq!(build, l.parse("build").unwrap());
    // `review` extends `base` too.
    assert_eq!(l.load("review").unwrap().hostname, "mine");
    // Without the user's file, the compiled-in profile.
    std::fs::remove_file(&mine).unwrap();
    let builtin = l.load("build").unwrap();
    assert_eq!(builtin.hostname, "taskcell");
    assert_eq!(builtin, Loader { user_dir: None }.parse("build").unwrap());
}

#[test]
fn durations() {
    assert_eq!(parse_duration("90").unwrap().as_secs(), 90);
    assert_eq!(parse_duration("10m").unwrap().as_secs(), 600);
    assert_eq!(parse_duration("1h30m").unwrap().as_secs(), 5400);
    assert_eq!(parse_duration("500ms").unwrap().as_millis(), 500);
    assert!(parse_duration("").is_err());
    assert!(parse_duration("0s").is_err());
    assert!(parse_duration("5 parsecs").is_err());
    assert!(parse_duration("m").is_err());
    // The documented maximum, and one-line errors past it (these panicked).
    assert_eq!(parse_duration("365d").unwrap(), super::MAX_DURATION);
    for s in [
        "99999999999999999999d",
        "200000000000000d",
        "366d",
        "364d2d",
        "1e309",
        &"9".repeat(500),
    ] {
        let e = parse_duration(s).unwrap_err();
        assert!(!e.contains('\n'), "{s}: {e}");
    }
}

// ---- plan resolution (pure apart from stat) ----

fn ctx(dir: &std::path::Path) -> Context {
    let mut env = BTreeMap::new();
    env.insert("PATH".into(), "/usr/bin:/bin".into());
    env.insert("LC_ALL".into(), "C".into());
    env.insert("SECRET_TOKEN".into(), "x".into());
    env.insert("DATA".into(), dir.display().to_string());
    Context {
        cwd: dir.to_path_buf(),
        home: PathBuf::from("/home/someone"),
        tmp: PathBuf::from("/tmp"),
        uid: 1000,
        gid: 1000,
        env,
        terminal: false,
    }
}

fn plan_for(text: &str, dir: &std::path::Path, ov: &Overrides) -> Result<plan::Plan, String> {
    let p = write(dir, "p.toml", text);
    let prof = loader_with(dir).load(&p).map_err(|e| e.to_string())?;
    plan::resolve(&prof, ov, &ctx(dir), &["true".into()]).map_err(|e| e.to_string())
}

#[test]
fn plan_expands_variables_and_orders_parents_first() {
    let d = tempfile::tempdir().unwrap();
    let ws = std::fs::canonicalize(d.path()).unwrap();
    std::fs::create_dir_all(ws.join(".git/hooks")).unwrap();
    let plan = plan_for(
        "extends = \"build\"\n[filesystem]\nread = [\"{env:DATA}\"]\n",
        &ws,
        &Overrides::default(),
    )
    .unwrap();
    let paths: Vec<(String, Access)> = plan
        .paths
        .iter()
        .map(|r| (r.path.display().to_string(), r.access))
        .collect();
    let pos = |p: &str| paths.iter().position(|(x, _)| x == p).unwrap_or(usize::MAX);
    let w = ws.display().to_string();
    let hooks = format!("{w}/.git/hooks");
    // The workspace is declared read by {env:DATA} and write by build: write wins.
    assert!(paths.contains(&(w.clone(), Access::Write)), "{paths:?}");
    assert!(
        paths.contains(&(hooks.clone(), Access::Protect)),
        "{paths:?}"
    );
    assert!(pos(&w) < pos(&hooks));
    assert!(paths.contains(&("/home/someone".into(), Access::Tmpfs)));
    // Optional missing paths vanish; /tmp, /proc, /dev are never in the list.
    assert!(!paths.iter().any(|(p, _)| p == "/tmp" || p == "/proc"));
    assert!(!paths.iter().any(|(p, _)| p.ends_with(".git/config")));
}

#[test]
fn plan_environment_is_an_allowlist() {
    let d = tempfile::tempdir().unwrap();
    let ov = Overrides {
        env: vec!["EXTRA=1".into(), "SECRET_TOKEN".into()],
        ..Default::default()
    };
    let plan = plan_for("extends = \"build\"\n", d.path(), &ov).unwrap();
    let env: BTreeMap<_, _> = plan.process.env.iter().cloned().collect();
    assert_eq!(env.get("PATH").map(String::as_str), Some("/usr/bin:/bin"));
    assert_eq!(env.get("LC_ALL").map(String::as_str), Some("C"));
    assert_eq!(env.get("HOME").map(String::as_str), Some("/home/someone"));
    assert_eq!(env.get("EXTRA").map(String::as_str), Some("1"));
    // Passed explicitly on the command line.
    assert_eq!(env.get("SECRET_TOKEN").map(String::as_str), Some("x"));
    let plan = plan_for("extends = \"build\"\n", d.path(), &Overrides::default()).unwrap();
    assert!(!plan.process.env.iter().any(|(k, _)| k == "SECRET_TOKEN"));
}

#[test]
fn plan_errors_name_file_line_and_fix() {
    let d = tempfile::tempdir().unwrap();
    let e = plan_for(
        "[filesystem]\nwrite = [\"/does/not/exist\"]\n",
        d.path(),
        &Overrides::default(),
    )
    .unwrap_err();
    assert!(e.ends_with("p.toml line 2: `write` path /does/not/exist does not exist (mark it optional = true or create it)"), "{e}");
    let e = plan_for(
        "[filesystem]\nread = [\"relative/x\"]\n",
        d.path(),
        &Overrides::default(),
    )
    .unwrap_err();
    assert!(e.contains("line 2") && e.contains("not absolute"), "{e}");
    let e = plan_for(
        "[filesystem]\nread = [\"{nope}/x\"]\n",
        d.path(),
        &Overrides::default(),
    )
    .unwrap_err();
    assert!(e.contains("unknown variable {nope}"), "{e}");
    let e = plan_for(
        "[filesystem]\nread = [\"{env:UNSET_VAR}\"]\n",
        d.path(),
        &Overrides::default(),
    )
    .unwrap_err();
    assert!(e.contains("UNSET_VAR is not set"), "{e}");
}

#[test]
fn plan_overrides_win() {
    let d = tempfile::tempdir().unwrap();
    let ws = std::fs::canonicalize(d.path()).unwrap();
    let ov = Overrides {
        net: Some(NetMode::Loopback),
        timeout: Some(std::time::Duration::from_secs(7)),
        read: vec![ws.clone()],
        ..Default::default()
    };
    let plan = plan_for("extends = \"build\"\n", &ws, &ov).unwrap();
    assert_eq!(plan.net.mode, NetMode::Loopback);
    assert_eq!(plan.limits.timeout.map(|t| t.as_secs()), Some(7));
    assert!(plan
        .paths
        .iter()
        .any(|r| r.path == ws && r.access == Access::Read));
}

#[test]
fn plan_symlinks_are_recreated_and_their_targets_bound() {
    let d = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let ws = std::fs::canonicalize(other.path()).unwrap();
    std::fs::create_dir(ws.join("real")).unwrap();
    std::os::unix::fs::symlink("real", ws.join("link")).unwrap();
    let plan = plan_for(
        &format!("[filesystem]\nread = [\"{}/link\"]\n", ws.display()),
        d.path(),
        &Overrides::default(),
    )
    .unwrap();
    let link = plan
        .paths
        .iter()
        .find(|r| r.path == ws.join("link"))
        .unwrap();
    assert_eq!(link.symlink.as_deref(), Some(std::path::Path::new("real")));
    assert!(plan
        .paths
        .iter()
        .any(|r| r.path == ws.join("real") && r.symlink.is_none()));
}

#[test]
fn plan_digest_is_stable_and_sensitive() {
    let d = tempfile::tempdir().unwrap();
    let a = plan_for("extends = \"build\"\n", d.path(), &Overrides::default()).unwrap();
    let b = plan_for("extends = \"build\"\n", d.path(), &Overrides::default()).unwrap();
    assert_eq!(a.digest(), b.digest());
    let c = plan_for("extends = \"review\"\n", d.path(), &Overrides::default()).unwrap();
    assert_ne!(a.digest(), c.digest());
}

#[test]
fn plan_refuses_a_protected_symlink() {
    let d = tempfile::tempdir().unwrap();
    let ws = std::fs::canonicalize(d.path()).unwrap();
    std::fs::create_dir(ws.join(".git")).unwrap();
    std::os::unix::fs::symlink("/etc", ws.join(".git/hooks")).unwrap();
    let e = plan_for("extends = \"build\"\n", &ws, &Overrides::default()).unwrap_err();
    assert!(e.contains("build.toml (built-in) line"), "{e}");
    assert!(e.contains(".git/hooks is a symlink (to /etc)"), "{e}");
}

#[test]
fn limits_keys_parse_with_their_line() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "lim.toml",
        "[limits]\nprocesses = 64\nmemory = \"512M\"\ncpu = 1.5\nopen_files = 1024\nfile_size = \"1G\"\ncore = 0\n",
    );
    let prof = loader_with(d.path()).load(&p).expect("valid limits");
    let r = &prof.limits.resources;
    assert_eq!(r["processes"].value, "64");
    assert_eq!(r["memory"].value, "512M");
    assert_eq!(r["cpu"].value, "1.5");
    assert_eq!(r["core"].value, "0");
    assert_eq!(r["file_size"].origin.line, 6);
    let e = err_of(
        d.path(),
        "a.toml",
        "[limits]\nprocesses = 64\ncpu = \"fast\"\n",
    );
    assert!(e.contains("line 3") && e.contains("limits.cpu"), "{e}");
    let e = err_of(d.path(), "b.toml", "[limits]\nmemory = true\n");
    assert!(
        e.contains("line 2") && e.contains("a limit is a number"),
        "{e}"
    );
    let e = err_of(d.path(), "c.toml", "[limits]\nprocesses = 0\n");
    assert!(e.contains("line 2"), "{e}");
}

#[test]
fn create_is_dir_or_file_on_read_and_write_paths_only() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "c.toml",
        "[filesystem]\nwrite = [{ path = \"{home}/.x\", create = \"dir\" }, { path = \"{home}/.x.json\", create = \"file\" }]\n",
    );
    let prof = loader_with(d.path()).load(&p).unwrap();
    let kinds: Vec<_> = prof.filesystem.write.iter().map(|e| e.create).collect();
    assert_eq!(kinds, vec![Some(Create::Dir), Some(Create::File)]);
    for (text, want) in [
        (
            "[filesystem]\nhide = [{ path = \"/x\", create = \"dir\" }]\n",
            "only `read` and `write`",
        ),
        (
            "[filesystem]\nwrite = [{ path = \"/x\", create = \"fifo\" }]\n",
            "not \"dir\" or \"file\"",
        ),
    ] {
        let e = err_of(d.path(), "e.toml", text);
        assert!(e.contains(want) && e.contains("line 2"), "{e}");
    }
}

/// HOME=/ (a container's user without an entry in /etc/passwd) made the base profile's
/// `tmpfs = ["{home}"]` a tmpfs over the whole root, mounted after /dev and /proc: the cell
/// failed at "making /dev read-only: ENOENT". The plan now refuses it and says what to do.
#[test]
fn a_home_of_slash_is_refused_before_it_covers_the_root() {
    let d = tempfile::tempdir().unwrap();
    let mut c = ctx(d.path());
    c.home = PathBuf::from("/");
    let base = loader_with(d.path()).load("base").unwrap();
    let e = plan::resolve(&base, &Overrides::default(), &c, &["true".into()])
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(e.contains("tmpfs over the cell's whole root"), "{e}");
    assert!(e.contains("base.toml"), "{e}");
    assert!(e.contains("set HOME"), "{e}");
    // Any other home is planned as before.
    c.home = PathBuf::from("/home/someone");
    assert!(plan::resolve(&base, &Overrides::default(), &c, &["true".into()]).is_ok());
}
