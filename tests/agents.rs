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
