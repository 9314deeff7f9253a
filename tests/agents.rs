//! The built-in profiles for real coding agents: each gets its own config directory
//! read-write and nothing else of the home directory, its API key (when set) injected by
//! the proxy (a placeholder in the cell) or, for codex, as a masked secret, and the
//! network only through the proxy.

mod common;
use common::*;

/// (profile, config path below home, key variables)
const AGENTS: &[(&str, &str, &[&str])] = &[
    ("codex", ".codex", &["OPENAI_API_KEY"]),
    ("claude", ".claude", &["ANTHROPIC_API_KEY"]),
    ("aider", ".aider", &["OPENAI_API_KEY", "ANTHROPIC_API_KEY"]),
    ("gemini", ".gemini", &["GEMINI_API_KEY"]),
];

fn home_with(config: &str) -> Ws {
    let home = Ws::new();
    std::fs::create_dir_all(home.join(config)).unwrap();
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::fs::write(home.join(".ssh/id_ed25519"), "PRIVATE KEY").unwrap();
    std::fs::write(home.join(".bash_history"), "history").unwrap();
    home
}

#[test]
fn each_agent_gets_its_config_dir_and_nothing_else_of_home() {
    for (profile, config, _) in AGENTS {
        let ws = Ws::new();
        let home = home_with(config);
        let o = taskcell(
            ws.path(),
            &[
                "run",
                "-p",
                profile,
                "--",
                "/bin/sh",
                "-c",
                &format!(
                    "echo state > ~/{config}/state && echo config-written; ls -A ~ | tr '\\n' ' '; echo; \
                     cat ~/.ssh/id_ed25519 2>/dev/null || echo no-ssh-key; \
                     echo hook > .git/hooks/x 2>/dev/null || echo no-hooks-dir-or-refused; echo ws > in-ws && echo ws-ok"
                ),
            ],
        )
        .env("HOME", home.path())
        .output()
        .unwrap();
        let out = ok(&o);
        assert!(out.contains("config-written"), "{profile}: {out}");
        assert!(out.contains("no-ssh-key"), "{profile}: {out}");
        assert!(out.contains("ws-ok"), "{profile}: {out}");
        let listing = out.lines().nth(1).unwrap_or_default();
        assert!(
            !listing.contains(".ssh") && !listing.contains(".bash_history"),
            "{profile}: {out}"
        );
        assert_eq!(
            std::fs::read_to_string(home.join(config).join("state")).unwrap(),
            "state\n",
            "{profile}"
        );
    }
}

#[test]
fn api_keys_are_delivered_masked_and_optional() {
    for (profile, config, keys) in AGENTS {
        let ws = Ws::new();
        let home = home_with(config);
        let script = keys
            .iter()
            .map(|k| format!("echo {k}=${{{k}:-unset}}"))
            .collect::<Vec<_>>()
            .join("; ");
        // With the keys set: the agent can use them, and the real value never shows.
        let mut c = taskcell(
            ws.path(),
            &["run", "-p", profile, "--", "/bin/sh", "-c", &script],
        );
        c.env("HOME", home.path());
        for k in *keys {
            c.env(k, format!("sk-test-{k}-0123456789abcdef"));
        }
        let o = c.output().unwrap();
        let out = ok(&o);
        for k in *keys {
            let real = format!("sk-test-{k}-0123456789abcdef");
            assert!(!out.contains("0123456789abcdef"), "{profile}: {out}");
            let seen = out
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .unwrap_or_default();
            if *profile == "codex" {
                // Delivered in the environment: every print of it is masked.
                assert_eq!(seen, format!("[taskcell:{k}]"), "{profile}: {out}");
            } else {
                // Injected by the proxy: the cell holds a placeholder of the same shape.
                assert_eq!(seen.len(), real.len(), "{profile}: {out}");
                assert!(seen.starts_with("sk-") && seen != real, "{profile}: {out}");
            }
        }
        // Without them (e.g. signed in with an account instead): the cell starts anyway.
        let o = taskcell(
            ws.path(),
            &["run", "-p", profile, "--", "/bin/sh", "-c", &script],
        )
        .env("HOME", home.path())
        .output()
        .unwrap();
        let out = ok(&o);
        for k in *keys {
            assert!(out.contains(&format!("{k}=unset")), "{profile}: {out}");
        }
    }
}

#[test]
fn agents_reach_the_network_only_through_the_proxy() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    for (profile, config, _) in AGENTS {
        let ws = Ws::new();
        let home = home_with(config);
        let o = taskcell(
            ws.path(),
            &[
                "run",
                "-p",
                profile,
                "--",
                "/bin/sh",
                "-c",
                &format!(
                    "echo proxy=$HTTPS_PROXY; curl -s -m 5 --noproxy '*' http://127.0.0.1:{port}/ >/dev/null; echo direct=$?; \
                     getent hosts api.openai.com >/dev/null; echo dns=$?"
                ),
            ],
        )
        .env("HOME", home.path())
        .output()
        .unwrap();
        let out = ok(&o);
        assert!(
            out.contains("proxy=http://127.0.0.1:3128"),
            "{profile}: {out}"
        );
        assert!(out.contains("direct=7"), "{profile}: {out}");
        assert!(out.contains("dns=2"), "{profile}: {out}");
    }
}

/// A fresh home directory with nothing in it (the first run of an agent).
fn empty_home() -> Ws {
    Ws::new()
}

#[test]
fn first_run_creates_the_agent_config_paths_so_sign_in_survives() {
    // (profile, paths the profile creates: (below home, is a directory))
    let created: &[(&str, &[(&str, bool)])] = &[
        ("codex", &[(".codex", true)]),
        ("claude", &[(".claude", true), (".claude.json", false)]),
        ("gemini", &[(".gemini", true)]),
        ("aider", &[(".aider", true)]),
    ];
    for (profile, paths) in created {
        let ws = Ws::new();
        let home = empty_home();
        // explain says what will be created.
        let o = taskcell(ws.path(), &["explain", "-p", profile])
            .env("HOME", home.path())
            .output()
            .unwrap();
        let text = ok(&o);
        for (p, _) in *paths {
            let line = text
                .lines()
                .find(|l| l.ends_with("owned by you)") && l.contains(&format!("/{p} ")))
                .unwrap_or_else(|| panic!("{profile}: no created line for {p}:\n{text}"));
            assert!(line.contains("created before the cell starts"), "{line}");
        }
        assert!(!home.join(paths[0].0).exists(), "explain created something");
        // The agent signs in on its first run: the state is on the host afterwards.
        let script = paths
            .iter()
            .map(|(p, dir)| {
                if *dir {
                    format!("echo token > ~/{p}/auth.json")
                } else {
                    format!("echo '{{\"signed\":1}}' > ~/{p}")
                }
            })
            .collect::<Vec<_>>()
            .join(" && ");
        let o = taskcell(
            ws.path(),
            &["run", "-p", profile, "--", "/bin/sh", "-c", &script],
        )
        .env("HOME", home.path())
        .output()
        .unwrap();
        ok(&o);
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        for (p, dir) in *paths {
            let path = home.join(p);
            let meta = std::fs::symlink_metadata(&path).unwrap();
            assert_eq!(meta.uid(), nix::unistd::getuid().as_raw(), "{p}");
            if *dir {
                assert_eq!(meta.permissions().mode() & 0o777, 0o700, "{p}");
                assert_eq!(
                    std::fs::read_to_string(path.join("auth.json")).unwrap(),
                    "token\n"
                );
            } else {
                assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{p}");
                assert!(std::fs::read_to_string(&path).unwrap().contains("signed"));
            }
        }
        // Only the declared paths: nothing else of the cell's home reached the host.
        let mut names: Vec<String> = std::fs::read_dir(home.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut want: Vec<String> = paths.iter().map(|(p, _)| p.to_string()).collect();
        want.push(".cache".into());
        want.sort();
        assert_eq!(names, want, "{profile}");
    }
}

#[test]
fn a_symlink_planted_where_a_config_path_is_created_is_not_followed() {
    let ws = Ws::new();
    let home = empty_home();
    let elsewhere = Ws::new();
    std::os::unix::fs::symlink(elsewhere.join("gone"), home.join(".claude.json")).unwrap();
    let o = taskcell(ws.path(), &["run", "-p", "claude", "--", "true"])
        .env("HOME", home.path())
        .output()
        .unwrap();
    // A dangling link is not a path to create: refused before the cell starts, nothing
    // made at the link's target.
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(stderr(&o).contains(".claude.json"), "{}", stderr(&o));
    assert!(!elsewhere.join("gone").exists());
}

#[test]
fn allow_ask_and_resolve_imply_proxy_mode_and_conflict_with_another() {
    let ws = Ws::new();
    for flags in [
        &["--allow", "example.org"][..],
        &["--ask"][..],
        &["--resolve", "example.org:127.0.0.1"][..],
    ] {
        // `build` is a `none` profile: the flag turns the proxy on, and explain says so.
        let mut args = vec!["explain", "-p", "build"];
        args.extend_from_slice(flags);
        let text = ok(&taskcell(ws.path(), &args).output().unwrap());
        let net = text
            .lines()
            .skip_while(|l| !l.starts_with("network:"))
            .take(2)
            .collect::<Vec<_>>()
            .join("\n");
        assert!(net.starts_with("network:   proxy"), "{net}");
        assert!(net.contains(&format!("implied by {}", flags[0])), "{net}");
        // The cell really is in proxy mode.
        let o = sh(ws.path(), "build", flags, "echo proxy=$HTTPS_PROXY");
        assert!(
            ok(&o).contains("proxy=http://127.0.0.1:3128"),
            "{flags:?}: {}",
            stdout(&o)
        );
        // An explicit other mode is a contradiction: refused before anything runs.
        for mode in ["none", "loopback", "host"] {
            let mut a = vec!["--net", mode];
            a.extend_from_slice(flags);
            let o = sh(ws.path(), "build", &a, "echo RAN");
            assert_eq!(o.status.code(), Some(125), "{mode} {flags:?}");
            assert!(!stdout(&o).contains("RAN"));
            let e = stderr(&o);
            assert!(
                e.contains(flags[0]) && e.contains(&format!("--net {mode}")),
                "{e}"
            );
        }
        // --net proxy with the flag is what it says.
        let mut a = vec!["--net", "proxy"];
        a.extend_from_slice(flags);
        ok(&sh(ws.path(), "build", &a, "true"));
    }
}

#[test]
fn from_a_subdirectory_of_a_repository_the_workspace_is_the_repository() {
    let ws = Ws::new();
    std::fs::create_dir_all(ws.join(".git/hooks")).unwrap();
    std::fs::write(ws.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
    std::fs::create_dir_all(ws.join("crates/a")).unwrap();
    let sub = ws.join("crates/a");
    let o = sh(
        &sub,
        "build",
        &[],
        "pwd; echo root > ../../at-root && echo root-writable; ls -d ../../.git",
    );
    let out = ok(&o);
    assert!(out.starts_with(&format!("{}\n", sub.display())), "{out}");
    assert!(out.contains("root-writable"), "{out}");
    assert!(ws.join("at-root").exists());
    // The repository's hooks stay protected from the subdirectory too.
    let o = sh(
        &sub,
        "build",
        &[],
        "echo x > ../../.git/hooks/post-checkout",
    );
    assert!(!o.status.success());
    assert!(!ws.join(".git/hooks/post-checkout").exists());
    // -w wins.
    let o = sh(
        &sub,
        "build",
        &["-w", "."],
        "ls ../../.git >/dev/null 2>&1 || echo repo-not-visible; echo x > ../../w-flag",
    );
    let out = ok(&o);
    assert!(out.contains("repo-not-visible"), "{out}");
    assert!(!ws.join("w-flag").exists());
    let text = ok(&taskcell(&sub, &["explain", "-p", "build"])
        .output()
        .unwrap());
    assert!(
        text.contains(&format!(
            "workspace: {} (the root of the git repository",
            ws.path().display()
        )),
        "{text}"
    );
}

#[test]
fn a_repository_in_the_home_directory_does_not_make_home_the_workspace() {
    // A dotfiles repository at ~: the workspace stays the current directory.
    let home = Ws::new();
    std::fs::create_dir_all(home.join(".git")).unwrap();
    std::fs::create_dir_all(home.join("notes")).unwrap();
    std::fs::write(home.join("secret.txt"), "s").unwrap();
    let o = taskcell(
        &home.join("notes"),
        &[
            "run",
            "-p",
            "build",
            "--",
            "/bin/sh",
            "-c",
            "cat ../secret.txt || echo not-visible",
        ],
    )
    .env("HOME", home.path())
    .output()
    .unwrap();
    assert!(ok(&o).contains("not-visible"), "{}", stdout(&o));
}

#[test]
fn package_caches_are_taskcells_own_and_persist_between_cells_of_a_profile() {
    let ws = Ws::new();
    let home = empty_home();
    // The host's own caches exist and must stay out of reach.
    std::fs::create_dir_all(home.join(".npm")).unwrap();
    std::fs::create_dir_all(home.join(".cache/pip")).unwrap();
    let script = "for v in CARGO_HOME npm_config_cache PIP_CACHE_DIR YARN_CACHE_FOLDER; do \
                    d=$(printenv $v); test -d \"$d\" || echo missing $v; done; \
                  cat $npm_config_cache/seen 2>/dev/null || echo first; echo cached > $npm_config_cache/seen; \
                  echo x > ~/.npm/poison 2>/dev/null || echo host-npm-out-of-reach; \
                  echo x > ~/.cache/pip/poison 2>/dev/null || echo host-pip-out-of-reach";
    let run = |profile: &str| {
        let o = taskcell(
            ws.path(),
            &["run", "-p", profile, "--", "/bin/sh", "-c", script],
        )
        .env("HOME", home.path())
        .output()
        .unwrap();
        ok(&o)
    };
    let first = run("build");
    assert!(!first.contains("missing"), "{first}");
    assert!(first.contains("first"), "{first}");
    assert!(first.contains("host-npm-out-of-reach"), "{first}");
    assert!(first.contains("host-pip-out-of-reach"), "{first}");
    assert!(run("build").contains("cached"));
    // Another profile has its own cache.
    assert!(run("codex").contains("first"));
    assert!(home.join(".cache/taskcell/build/npm/seen").exists());
    assert!(!home.join(".npm/poison").exists());
    assert!(!home.join(".cache/pip/poison").exists());
}

/// Claude Code's native install: `~/.local/bin/claude` links into
/// `~/.local/share/claude/versions/`, which no profile binds.
#[test]
fn a_command_that_is_a_symlink_out_of_the_bound_paths_runs_like_on_the_host() {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let ws = Ws::new();
    let home = empty_home();
    let versions = home.join(".local/share/tool/versions");
    std::fs::create_dir_all(&versions).unwrap();
    std::fs::create_dir_all(home.join(".local/bin")).unwrap();
    let target = versions.join("2.0.1");
    std::fs::write(&target, "#!/bin/sh\necho tool-ran \"$@\"\n").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(versions.join("other"), "x").unwrap();
    symlink(&target, home.join(".local/bin/tool")).unwrap();
    // Another secret-ish file next to it in ~/.local/share stays out.
    std::fs::write(home.join(".local/share/notes"), "private").unwrap();
    let path = format!("{}:/usr/bin:/bin", home.join(".local/bin").display());
    let o = taskcell(
        ws.path(),
        &["run", "--dry-run", "-p", "codex", "--", "tool"],
    )
    .env("HOME", home.path())
    .env("PATH", &path)
    .output()
    .unwrap();
    let text = ok(&o);
    let line = text
        .lines()
        .find(|l| l.contains(&format!("read     {}", versions.display())))
        .unwrap_or_else(|| panic!("no bind of the target's directory:\n{text}"));
    assert!(line.contains("is a symlink to"), "{line}");
    let o = taskcell(ws.path(), &["run", "-p", "codex", "--", "tool", "a1"])
        .env("HOME", home.path())
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(ok(&o).contains("tool-ran a1"), "{}", stdout(&o));
    // Only that directory, read-only: its neighbours stay out, the target cannot change.
    std::fs::write(
        versions.join("writer"),
        format!(
            "#!/bin/sh\ncat {} || echo notes-hidden\necho x >> {} || echo target-read-only\n",
            home.join(".local/share/notes").display(),
            target.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        versions.join("writer"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    symlink(versions.join("writer"), home.join(".local/bin/writer")).unwrap();
    let o = taskcell(ws.path(), &["run", "-p", "codex", "--", "writer"])
        .env("HOME", home.path())
        .env("PATH", &path)
        .output()
        .unwrap();
    let out = ok(&o);
    assert!(out.contains("target-read-only"), "{out}");
    assert!(out.contains("notes-hidden"), "{out}");
    assert!(!std::fs::read_to_string(&target).unwrap().contains("\nx"));
}

#[test]
fn a_command_linking_into_the_home_directory_itself_is_refused_naming_the_target() {
    let ws = Ws::new();
    let home = empty_home();
    std::fs::create_dir_all(home.join(".local/bin")).unwrap();
    std::fs::write(home.join("loose-tool"), "#!/bin/sh\n").unwrap();
    std::os::unix::fs::symlink(home.join("loose-tool"), home.join(".local/bin/lt")).unwrap();
    let path = format!("{}:/usr/bin:/bin", home.join(".local/bin").display());
    let o = taskcell(ws.path(), &["run", "-p", "codex", "--", "lt"])
        .env("HOME", home.path())
        .env("PATH", &path)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(125));
    let e = stderr(&o);
    assert!(
        e.contains(&home.join("loose-tool").display().to_string()),
        "the message names the target: {e}"
    );
}
