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
use std::process::Command;
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

/// The CLIs installed (once per user) from the registry npm is configured with.
fn install() -> Result<PathBuf, String> {
    let home = std::env::var("HOME").map_err(|_| "no HOME".to_string())?;
    let dir = PathBuf::from(home).join(".cache/taskcell-test/agent-clis");
    if CLIS
        .iter()
        .all(|(_, _, c, _)| dir.join("node_modules/.bin").join(c).exists())
    {
        return Ok(dir);
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let mut c = Command::new("npm");
    c.args(["install", "--no-audit", "--no-fund", "--prefix"])
        .arg(&dir)
        .args(CLIS.iter().map(|(_, p, _, _)| *p));
    let o = c
        .output()
        .map_err(|e| format!("npm is not installed ({e})"))?;
    if !o.status.success() {
        return Err(format!(
            "npm install from the configured registry failed (unreachable?): {}",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or_default()
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
