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
