//! The real agent CLIs in their profiles: `@openai/codex`, `@anthropic-ai/claude-code`
//! and `@google/gemini-cli`, installed from the npm registry (`npm config get registry`)
//! into a per-user cache (~/.cache/taskcell-test/agent-clis, reused between runs), each
//! driven through a pty at 80x24: it starts, draws its UI, takes keys, is resized, exits,
//! the terminal is restored, and its config dir is on the host afterwards. Without API
//! access each stops at its sign-in or first screen, which is enough. Skipped with a
//! notice when npm is missing or the registry cannot be reached.

mod common;

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::pty::Term;
use common::*;
use nix::sys::termios::LocalFlags;

/// (profile, npm package, command, config path below home)
const CLIS: &[(&str, &str, &str, &str)] = &[
    ("codex", "@openai/codex", "codex", ".codex"),
    (
        "claude",
        "@anthropic-ai/claude-code",
        "claude",
        ".claude.json",
    ),
    ("gemini", "@google/gemini-cli", "gemini", ".gemini"),
];

/// The CLIs installed (once per user) from the registry npm is configured with: once per
/// test binary too (the tests run in parallel; two `npm install`s into one prefix hang).
fn install() -> Result<PathBuf, String> {
    static ONCE: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    ONCE.get_or_init(install_now).clone()
}

/// At most this long for the first install (a fresh home downloads every CLI).
const INSTALL_LIMIT: Duration = Duration::from_secs(900);

fn install_now() -> Result<PathBuf, String> {
    let home = std::env::var("HOME").map_err(|_| "no HOME".to_string())?;
    let dir = PathBuf::from(home).join(".cache/taskcell-test/agent-clis");
    if CLIS
        .iter()
        .all(|(_, _, c, _)| dir.join("node_modules/.bin").join(c).exists())
    {
        return Ok(dir);
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let log = dir.join("npm-install.log");
    let err =
        std::fs::File::create(&log).map_err(|e| format!("creating {}: {e}", log.display()))?;
    let child = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--prefix"])
        .arg(&dir)
        .args(CLIS.iter().map(|(_, p, _, _)| *p))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .map_err(|e| format!("npm is not installed ({e})"))?;
    let o = wait_limited(child, INSTALL_LIMIT);
    if !o.status.success() {
        let why = std::fs::read_to_string(&log).unwrap_or_default();
        return Err(format!(
            "npm install from the configured registry failed or took over {} s (unreachable?): {}",
            INSTALL_LIMIT.as_secs(),
            why.lines().last().unwrap_or_default()
        ));
    }
    Ok(dir)
}

#[test]
fn each_agent_cli_starts_draws_takes_keys_resizes_and_exits_in_its_profile() {
    let clis = match install() {
        Ok(d) => d,
        Err(why) => {
            eprintln!("SKIPPED the real agent CLIs: {why}");
            return;
        }
    };
    let bin = clis.join("node_modules/.bin");
    for (profile, _, cmd, config) in CLIS {
        let ws = Ws::new();
        std::fs::create_dir(ws.join(".git")).unwrap();
        let home = Ws::new();
        // Nobody answers network questions here: the agent's profile with ask = false
        // (unlisted hosts refused at once instead of asked for on the overlay).
        let prof = home.join("p.toml");
        std::fs::write(
            &prof,
            format!("extends = \"{profile}\"\n[network]\nask = false\n"),
        )
        .unwrap();
        let path = format!("{}:/usr/local/bin:/usr/bin:/bin", bin.display());
        let mut t = Term::spawn(
            ws.path(),
            &[
                "run",
                "-p",
                prof.to_str().unwrap(),
                "--read",
                clis.to_str().unwrap(),
                "--",
                cmd,
            ],
            &[("HOME", home.path().to_str().unwrap()), ("PATH", &path)],
        );
        // It draws: escape sequences and some text on the screen.
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) && t.screen.lock().unwrap().len() < 200 {
            std::thread::sleep(Duration::from_millis(100));
        }
        let drawn = t.text();
        assert!(
            drawn.len() >= 200 && drawn.contains("\x1b["),
            "{profile}: no UI drawn: {drawn:?}"
        );
        // Without API access some CLIs end by themselves at their first check (Claude
        // Code cannot reach its API here): then only what follows is checked.
        if t.child.try_wait().unwrap().is_none() {
            // Resized: it keeps running (and redraws).
            let size = libc::winsize {
                ws_row: 30,
                ws_col: 100,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            // SAFETY: TIOCSWINSZ on our master: the kernel sends SIGWINCH to taskcell.
            unsafe { libc::ioctl(t.master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
            std::thread::sleep(Duration::from_secs(2));
            // Keys: Escape, then Ctrl-C until it exits (each CLI quits on a second one).
            t.type_bytes(b"\x1b");
            let start = Instant::now();
            loop {
                if t.child.try_wait().unwrap().is_some() {
                    break;
                }
                if start.elapsed() > Duration::from_secs(30) {
                    let _ = t.child.kill();
                    panic!("{profile}: did not exit on Ctrl-C: {}", t.text());
                }
                t.type_bytes(b"\x03");
                std::thread::sleep(Duration::from_millis(700));
            }
        } else {
            eprintln!("NOTE {profile} ended by itself before keys and a resize could be sent (no API access?)");
        }
        // The terminal is restored.
        let after = t.local_flags();
        assert!(
            after.contains(LocalFlags::ICANON) && after.contains(LocalFlags::ECHO),
            "{profile}: terminal left raw: {after:?}"
        );
        // The config path was created before the cell started and is on the host.
        assert!(
            home.join(config).exists(),
            "{profile}: {config} is not on the host"
        );
    }
}

/// Codex's default mode runs the agent's commands in the cell: its own sandbox
/// (bubblewrap, which needs nested user namespaces) cannot start there, so the codex
/// profile tells it to stand down (`-c sandbox_mode="danger-full-access"`, inserted after
/// `codex` by the profile's `[command] insert_args`). `codex sandbox -- CMD` runs CMD under
/// the sandbox policy the agent's commands get from the same configuration; the control run
/// without the profile's arguments shows the failure they avoid.
#[test]
fn codex_default_mode_runs_commands_in_the_cell() {
    let clis = match install() {
        Ok(d) => d,
        Err(why) => {
            eprintln!("SKIPPED codex's default mode: {why}");
            return;
        }
    };
    let path = format!(
        "{}:/usr/local/bin:/usr/bin:/bin",
        clis.join("node_modules/.bin").display()
    );
    let run = |extra: &str, marker: &str| {
        let ws = Ws::new();
        std::fs::create_dir(ws.join(".git")).unwrap();
        let home = Ws::new();
        let prof = home.join("p.toml");
        std::fs::write(
            &prof,
            format!("extends = \"codex\"\n[network]\nask = false\n{extra}"),
        )
        .unwrap();
        let o = taskcell(
            ws.path(),
            &[
                "run",
                "-p",
                prof.to_str().unwrap(),
                "--read",
                clis.to_str().unwrap(),
                "--",
                "codex",
                "sandbox",
                "--",
                "/bin/sh",
                "-c",
                &format!("echo ran > {marker}"),
            ],
        )
        .env("HOME", home.path())
        .env("PATH", &path)
        .output()
        .expect("taskcell");
        let made = std::fs::read_to_string(ws.join(marker)).ok();
        (o, made)
    };
    let (o, made) = run("", "marker");
    assert!(
        o.status.success(),
        "codex could not run a command in its profile: {}",
        stderr(&o)
    );
    assert_eq!(made.as_deref(), Some("ran\n"), "{}", stderr(&o));
    // The control: Codex's own sandbox in the cell, as without the profile's arguments.
    let (o, made) = run("[command]\ninsert_args = { codex = [] }\n", "control");
    assert!(
        !o.status.success() && made.is_none(),
        "Codex's own sandbox ran a command in the cell after all (then the profile need not turn it off): {}",
        stderr(&o)
    );
}

/// A model for Codex: a Responses API server on 127.0.0.1 that answers a request without
/// tool output with calls that run `cmd` (under every shell tool name Codex has used:
/// unknown ones get "unsupported call"), and one with tool output with a final message.
/// Returns its port; it serves until the test process ends.
fn mock_model(cmd: &str) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the model");
    let port = l.local_addr().unwrap().port();
    let cmd = cmd.to_string();
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            let mut r = BufReader::new(conn);
            let mut len = 0usize;
            let mut line = String::new();
            while r.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0u8; len];
            let _ = std::io::Read::read_exact(&mut r, &mut body);
            let usage = serde_json::json!({"input_tokens": 0, "input_tokens_details": null,
                "output_tokens": 0, "output_tokens_details": null, "total_tokens": 0});
            let call = |id: &str, name: &str, args: serde_json::Value| {
                serde_json::json!({"type": "response.output_item.done", "item": {
                    "type": "function_call", "call_id": id, "name": name,
                    "arguments": args.to_string()}})
            };
            let events = if String::from_utf8_lossy(&body).contains("function_call_output") {
                vec![
                    serde_json::json!({"type": "response.output_item.done", "item": {
                    "type": "message", "role": "assistant", "id": "m1",
                    "content": [{"type": "output_text", "text": "done"}]}}),
                ]
            } else {
                vec![
                    call("c1", "exec_command", serde_json::json!({ "cmd": cmd })),
                    call("c2", "shell_command", serde_json::json!({ "command": cmd })),
                    call(
                        "c3",
                        "shell",
                        serde_json::json!({ "command": ["sh", "-c", cmd] }),
                    ),
                ]
            };
            let mut out = String::new();
            for e in std::iter::once(serde_json::json!({"type": "response.created", "response": {"id": "r"}}))
                .chain(events)
                .chain(std::iter::once(serde_json::json!({"type": "response.completed", "response": {"id": "r", "usage": usage}})))
            {
                out.push_str(&format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()));
            }
            let mut conn = r.into_inner();
            let status = if len > 0 { "200 OK" } else { "404 Not Found" };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{out}",
                out.len()
            );
        }
    });
    port
}

/// The agent itself: `codex exec` in its default mode, in its profile, with a model that
/// asks it to run a command — which runs, in the cell (the workspace gets the file). The
/// control without the profile's arguments: Codex's own sandbox, and no file.
#[test]
fn codex_the_agent_runs_a_command_its_model_asks_for_in_the_cell() {
    let clis = match install() {
        Ok(d) => d,
        Err(why) => {
            eprintln!("SKIPPED codex exec with a model: {why}");
            return;
        }
    };
    let path = format!(
        "{}:/usr/local/bin:/usr/bin:/bin",
        clis.join("node_modules/.bin").display()
    );
    let port = mock_model("echo ran-by-the-agent > agent-marker");
    let run = |extra: &str| {
        let ws = Ws::new();
        std::fs::create_dir(ws.join(".git")).unwrap();
        let home = Ws::new();
        let prof = home.join("p.toml");
        // The model is reached through the proxy, by a name resolved to the test's
        // loopback (nothing else is allowed).
        std::fs::write(
            &prof,
            format!(
                "extends = \"codex\"\n[network]\nask = false\n\
                 allow = [\"model.test:{port}\", \"127.0.0.1:{port}\"]\n\
                 resolve = {{ \"model.test\" = \"127.0.0.1\" }}\n{extra}"
            ),
        )
        .unwrap();
        let provider = format!(
            "model_providers.test={{name=\"test\",base_url=\"http://model.test:{port}/v1\",wire_api=\"responses\"}}"
        );
        let mut c = taskcell(
            ws.path(),
            &[
                "run",
                "-p",
                prof.to_str().unwrap(),
                "--read",
                clis.to_str().unwrap(),
                "--",
                "codex",
                "exec",
                "--skip-git-repo-check",
                "-c",
                "model_provider=test",
                "-c",
                &provider,
                "-c",
                "model=gpt-5",
                "make the marker",
            ],
        );
        c.env("HOME", home.path())
            .env("PATH", &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = c.spawn().expect("taskcell");
        let o = wait_limited(child, Duration::from_secs(120));
        let made = std::fs::read_to_string(ws.join("agent-marker")).ok();
        (o, made)
    };
    let (o, made) = run("");
    let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(out.contains("sandbox: danger-full-access"), "{out}");
    assert_eq!(
        made.as_deref(),
        Some("ran-by-the-agent\n"),
        "the agent's command did not run in the cell: {out}"
    );
    let (o, made) = run("[command]\ninsert_args = { codex = [] }\n");
    let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(
        made.is_none(),
        "with its own sandbox Codex ran the command in the cell after all: {out}"
    );
}

/// Wait for `c` at most `limit` (killed after it), with its output.
fn wait_limited(mut c: Child, limit: Duration) -> std::process::Output {
    let t = Instant::now();
    while t.elapsed() < limit {
        if c.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = c.kill();
    c.wait_with_output().expect("output")
}
