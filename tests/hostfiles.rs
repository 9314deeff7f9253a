//! taskcell's own files are never the cell's (the audit log, `file:` secret sources) and
//! its control socket is out of every cell's reach: each test is the attack of a cell
//! that left something behind for the next run.

mod common;

use common::*;

#[test]
fn a_planted_audit_log_symlink_is_refused_and_nothing_is_appended() {
    let ws = Ws::new();
    // Outside the workspace: the file an earlier cell wants taskcell to append to.
    let target = ws.outside("bashrc");
    std::fs::write(&target, "original\n").unwrap();
    // In the workspace (where the cell wrote it) and outside it (a link is never taken).
    let inside = ws.join("audit.jsonl");
    std::os::unix::fs::symlink(&target, &inside).unwrap();
    let outside = ws.outside("audit.jsonl");
    std::os::unix::fs::symlink(&target, &outside).unwrap();
    for (log, why) in [
        (&inside, "which the cell can write"),
        (&outside, "symbolic link"),
    ] {
        let o = taskcell(
            ws.path(),
            &[
                "run",
                "--audit-log",
                log.to_str().unwrap(),
                "--",
                "/bin/true",
            ],
        )
        .output()
        .expect("run");
        assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
        assert!(stderr(&o).contains(why), "{}", stderr(&o));
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "original\n");
    }
    // A plain file in the workspace is refused too (a cell could swap it for a link).
    let o = taskcell(
        ws.path(),
        &[
            "run",
            "--audit-log",
            ws.join("a.log").to_str().unwrap(),
            "--",
            "/bin/true",
        ],
    )
    .output()
    .expect("run");
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(!ws.join("a.log").exists());
    // A FIFO would hang or feed anything: not a regular file.
    let fifo = ws.outside("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let o = taskcell(
        ws.path(),
        &[
            "run",
            "--audit-log",
            fifo.to_str().unwrap(),
            "--",
            "/bin/true",
        ],
    )
    .output()
    .expect("run");
    // (Refused without blocking: ENXIO without a reader, "not a regular file" with one.)
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
}

#[test]
fn a_file_secret_source_swapped_for_a_symlink_is_refused() {
    let ws = Ws::new();
    let private = ws.outside("id_ed25519");
    std::fs::write(&private, "PRIVATE KEY MATERIAL").unwrap();
    let source = ws.outside("token");
    std::fs::write(&source, "token-value-123").unwrap();
    let run = |ws: &Ws| {
        taskcell(
            ws.path(),
            &[
                "run",
                "--secret",
                &format!("T=file:{}", source.display()),
                "--",
                "/bin/sh",
                "-c",
                "cat \"$T_FILE\"",
            ],
        )
        .output()
        .expect("run")
    };
    let o = run(&ws);
    assert!(o.status.success(), "{}", stderr(&o));
    // The swap.
    std::fs::remove_file(&source).unwrap();
    std::os::unix::fs::symlink(&private, &source).unwrap();
    let o = run(&ws);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(stderr(&o).contains("symbolic link"), "{}", stderr(&o));
    assert!(!stdout(&o).contains("PRIVATE"), "{}", stdout(&o));
    // A source inside what the cell can write is refused before anything runs.
    let planted = ws.join("token");
    std::fs::write(&planted, "token-value-123").unwrap();
    let o = taskcell(
        ws.path(),
        &[
            "run",
            "--secret",
            &format!("T=file:{}", planted.display()),
            "--",
            "/bin/true",
        ],
    )
    .output()
    .expect("run");
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("which the cell can write"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_revoke_script_in_the_workspace_is_refused_before_anything_runs() {
    // The attack: the cell rewrites the revoke script taskcell runs on the host after it.
    let ws = Ws::new();
    let script = ws.join("revoke.sh");
    std::fs::write(&script, "echo revoked\n").unwrap();
    let marker = ws.outside("ran");
    let o = taskcell(
        ws.path(),
        &[
            "run",
            "--secret",
            "T=generate:16",
            "--secret-opt",
            &format!("T.revoke=/bin/sh {}", script.display()),
            "--",
            "/bin/sh",
            "-c",
            &format!("echo 'touch {}' > {}", marker.display(), script.display()),
        ],
    )
    .output()
    .expect("run");
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(stderr(&o).contains("the cell can write"), "{}", stderr(&o));
    assert!(!marker.exists());
}

fn proxy_ask_profile(ws: &Ws) -> String {
    let p = ws.outside("ask.toml");
    std::fs::write(
        &p,
        "extends = \"build\"\n[network]\nmode = \"proxy\"\nallow = []\n\
         resolve = { \"evil.test\" = \"127.0.0.1\" }\nask = true\nask_timeout = \"8s\"\n",
    )
    .unwrap();
    p.display().to_string()
}

#[test]
fn a_cell_whose_workspace_is_tmp_cannot_reach_a_control_socket() {
    let ws = Ws::new();
    let prof = proxy_ask_profile(&ws);
    // Without XDG_RUNTIME_DIR the socket would be in /tmp/taskcell-UID, inside the
    // cell's workspace: refused, with the reason.
    let o = taskcell(
        ws.path(),
        &["run", "-p", &prof, "-w", "/tmp", "--", "/bin/true"],
    )
    .env_remove("XDG_RUNTIME_DIR")
    .output()
    .expect("run");
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("reachable from inside it"),
        "{}",
        stderr(&o)
    );

    // Session A (no XDG_RUNTIME_DIR, workspace elsewhere) waits for an approval; its
    // socket is in /tmp/taskcell-UID. Cell B (workspace /tmp, its own socket in a private
    // runtime dir) sees A's socket and tries to approve A's request through it.
    let a = taskcell(
        ws.path(),
        &[
            "run",
            "-p",
            &prof,
            "--",
            "/bin/sh",
            "-c",
            "curl -s -o /dev/null -w 'code=%{http_code}' http://evil.test:9/",
        ],
    )
    .env_remove("XDG_RUNTIME_DIR")
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("session A");
    let start = std::time::Instant::now();
    let a_id = loop {
        let o = taskcell(ws.path(), &["sessions"])
            .env_remove("XDG_RUNTIME_DIR")
            .output()
            .expect("sessions");
        let mut current = None;
        let mut found = None;
        for line in stdout(&o).lines() {
            if let Some(rest) = line.strip_prefix("session ") {
                current = rest.split('\t').next().map(str::to_string);
            } else if line.starts_with("pending evil.test:9\t") {
                found = current.clone();
            }
        }
        if let Some(id) = found {
            break id;
        }
        assert!(
            start.elapsed().as_secs() < 6,
            "A never asked: {}",
            stdout(&o)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    // A runtime dir outside /tmp (the cell's workspace).
    let rt_dir = tempfile::Builder::new()
        .prefix("taskcell-test-rt-")
        .tempdir_in("/var/tmp")
        .expect("a directory in /var/tmp");
    let rt = rt_dir.path().to_path_buf();
    let attack = "import glob, os, socket\n\
        n = 0\n\
        for p in glob.glob('/tmp/taskcell-%d*/SESSION.sock' % os.getuid()):\n\
        \x20   s = socket.socket(socket.AF_UNIX)\n\
        \x20   try:\n\
        \x20       s.connect(p); n += 1\n\
        \x20   except OSError as e:\n\
        \x20       print(p, e); continue\n\
        \x20   try:\n\
        \x20       s.sendall(b'approve evil.test\\n'); s.shutdown(socket.SHUT_WR)\n\
        \x20   except OSError:\n\
        \x20       pass\n\
        \x20   print(p, s.recv(100))\n\
        print('tried', n)\n"
        .replace("SESSION", &a_id);
    let b = taskcell(
        ws.path(),
        &[
            "run",
            "-p",
            &prof,
            "-w",
            "/tmp",
            "--",
            "/usr/bin/python3",
            "-c",
            &attack,
        ],
    )
    .env("XDG_RUNTIME_DIR", &rt)
    .output()
    .expect("cell B");
    let b_out = stdout(&b);
    assert!(b.status.success(), "{b_out} {}", stderr(&b));
    // B did reach A's socket (the namespace check is what refuses it)...
    assert!(!b_out.contains("tried 0"), "{b_out}");
    assert!(!b_out.contains("ok "), "{b_out}");
    assert!(b_out.contains("not your session"), "{b_out}");
    // ...and A's request was not approved.
    let a = a.wait_with_output().expect("A");
    assert!(
        stdout(&a).contains("code=403"),
        "{} {}",
        stdout(&a),
        stderr(&a)
    );
    // B's own socket is not in /tmp.
    assert!(std::fs::read_dir(&rt).is_ok());
}

/// `taskcell` with the pin store in `state` (outside every cell).
fn pinned(ws: &Ws, state: &std::path::Path, args: &[&str]) -> std::process::Output {
    taskcell(ws.path(), args)
        .env("XDG_STATE_HOME", state)
        .output()
        .expect("running taskcell")
}

#[test]
fn a_cell_cannot_rewrite_the_profile_that_configures_its_next_run() {
    let ws = Ws::new();
    // The pin store, apart from the directory the attacker's policy would open.
    let state_dir = tempfile::tempdir_in("/tmp").unwrap();
    let state = state_dir.path().to_path_buf();
    let marker = ws.outside("wide-ran");
    std::fs::create_dir(ws.join("ci")).unwrap();
    // ./deploy.toml extends ./ci/base.toml: both in the workspace, both policy.
    let base = ws.join("ci/base.toml");
    std::fs::write(&base, "extends = \"build\"\n").unwrap();
    let deploy = ws.join("deploy.toml");
    let text = format!("extends = \"{}\"\n", base.display());
    std::fs::write(&deploy, &text).unwrap();
    // What the attacker wants the next run to get: the outside directory writable and
    // the host's network.
    let wide = format!(
        "extends = \"build\"\n[network]\nmode = \"host\"\n[filesystem]\nwrite = [\"{}\"]\n",
        ws.out.path().display()
    );
    let escape = format!("touch {}", marker.display());

    // 1. The cell configured by the profiles tries to rewrite them in place, to replace
    //    them, and to move their directory away and put its own in its place.
    let attack = format!(
        "printf '%s' '{wide}' > deploy.toml; printf '%s' '{wide}' > ci/base.toml; \
         mv deploy.toml gone.toml; rm -f deploy.toml; \
         mv ci ci.old && mkdir ci && printf '%s' '{wide}' > ci/base.toml; true"
    );
    let o = pinned(
        &ws,
        &state,
        &["run", "-p", "./deploy.toml", "--", "/bin/sh", "-c", &attack],
    );
    ok(&o);
    assert!(stderr(&o).contains("pinned its content"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(&deploy).unwrap(),
        text,
        "rewritten by its cell"
    );
    // Whatever the rename left at ci/base.toml, the next run does not take it.
    let o = pinned(
        &ws,
        &state,
        &["run", "-p", "./deploy.toml", "--", "/bin/sh", "-c", &escape],
    );
    if std::fs::read_to_string(&base).unwrap() != "extends = \"build\"\n" {
        assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
        assert!(stderr(&o).contains("changed since"), "{}", stderr(&o));
        assert!(
            !marker.exists(),
            "the command ran with the policy its cell wrote"
        );
        // Put the user's own file back (what `git checkout` would do).
        let _ = std::fs::remove_dir_all(ws.join("ci"));
        std::fs::rename(ws.join("ci.old"), ws.join("ci")).unwrap();
    }

    // 2. Another cell of the same workspace (another profile: an agent, a build) rewrites
    //    ./deploy.toml; the next run of ./deploy.toml is refused before anything runs.
    let rewrite = format!("printf '%s' '{wide}' > deploy.toml");
    ok(&pinned(
        &ws,
        &state,
        &["run", "-p", "build", "--", "/bin/sh", "-c", &rewrite],
    ));
    assert_eq!(std::fs::read_to_string(&deploy).unwrap(), wide);
    for _ in 0..2 {
        let o = pinned(
            &ws,
            &state,
            &["run", "-p", "./deploy.toml", "--", "/bin/sh", "-c", &escape],
        );
        assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("changed since") && stderr(&o).contains("taskcell trust"),
            "{}",
            stderr(&o)
        );
        assert!(
            !marker.exists(),
            "the command ran with the policy a cell wrote"
        );
    }
    // `explain` (and `run --dry-run`) say so before anything runs.
    let o = pinned(&ws, &state, &["explain", "-p", "./deploy.toml"]);
    assert!(
        ok(&o).contains("CHANGED since it was pinned"),
        "{}",
        stdout(&o)
    );
    // A link planted in its place is a change too (the pin is the name's).
    let outside = ws.outside("wide.toml");
    std::fs::write(&outside, &wide).unwrap();
    std::fs::remove_file(&deploy).unwrap();
    std::os::unix::fs::symlink(&outside, &deploy).unwrap();
    let o = pinned(
        &ws,
        &state,
        &["run", "-p", "./deploy.toml", "--", "/bin/sh", "-c", &escape],
    );
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(!marker.exists());

    // 3. The user read the change and trusts it: then it runs as written.
    std::fs::remove_file(&deploy).unwrap();
    std::fs::write(&deploy, &text).unwrap();
    std::fs::write(
        &base,
        "extends = \"build\"\n[network]\nmode = \"loopback\"\n",
    )
    .unwrap();
    let o = pinned(
        &ws,
        &state,
        &["run", "-p", "./deploy.toml", "--", "/bin/true"],
    );
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    let o = pinned(&ws, &state, &["trust", "./deploy.toml"]);
    assert!(ok(&o).contains("ci/base.toml"), "{}", stdout(&o));
    ok(&pinned(
        &ws,
        &state,
        &["run", "-p", "./deploy.toml", "--", "/bin/true"],
    ));
}

#[test]
fn a_profile_outside_the_cells_paths_is_not_pinned() {
    let ws = Ws::new();
    let state = ws.outside("state");
    let p = ws.outside("p.toml");
    std::fs::write(&p, "extends = \"build\"\n").unwrap();
    let ps = p.to_str().unwrap();
    let o = pinned(&ws, &state, &["run", "-p", ps, "--", "/bin/true"]);
    ok(&o);
    assert!(!stderr(&o).contains("pinned"), "{}", stderr(&o));
    std::fs::write(&p, "extends = \"build\"\n[network]\nmode = \"loopback\"\n").unwrap();
    ok(&pinned(&ws, &state, &["run", "-p", ps, "--", "/bin/true"]));
    assert!(!state.exists(), "nothing to pin, no store");
}
