//! The workspace is hostile: what a cell leaves behind must not reach outside it later
//! (issue 11). Each test is the attack, run as root and as a plain user.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn home() -> PathBuf {
    PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/nonexistent".into()))
}

fn run(ws: &Path, args: &[&str]) -> std::process::Output {
    taskcell(ws, args).output().expect("running taskcell")
}

#[track_caller]
fn refused_125(o: &std::process::Output, needles: &[&str]) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(125), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
    for n in needles {
        assert!(e.contains(n), "{n:?} not in: {e}");
    }
}

#[test]
fn home_its_ancestors_root_and_system_trees_are_refused_as_workspace() {
    let ws = Ws::new();
    let home = home();
    if !home.is_dir() {
        return;
    }
    let mut cases: Vec<PathBuf> = vec![
        home.clone(),
        PathBuf::from("/"),
        PathBuf::from("/etc"),
        PathBuf::from("/usr"),
        PathBuf::from("/proc/sys/kernel"),
        PathBuf::from("/run"),
        PathBuf::from("/dev"),
        PathBuf::from("/sys"),
        PathBuf::from("/var"),
        PathBuf::from("/boot"),
    ];
    if let Some(p) = home.parent() {
        cases.push(p.to_path_buf());
    }
    for w in &cases {
        if !w.is_dir() {
            continue;
        }
        let ws_s = w.display().to_string();
        let o = run(ws.path(), &["run", "-w", &ws_s, "--", "true"]);
        refused_125(&o, &["cannot be a workspace"]);
    }
    // Started from the home directory without -w: the same refusal.
    let o = run(&home, &["run", "--", "true"]);
    refused_125(&o, &["cannot be a workspace"]);
}

#[test]
fn a_project_directory_is_accepted() {
    let ws = Ws::new();
    ok(&sh(ws.path(), "build", &[], "true"));
}

#[test]
fn workspace_write_and_protect_paths_through_a_symlink_are_refused() {
    let base = Ws::new();
    let real = base.join("real");
    std::fs::create_dir_all(real.join("sub")).unwrap();
    std::os::unix::fs::symlink("real", base.join("link")).unwrap();
    let link_sub = base.join("link/sub").display().to_string();
    // The workspace.
    let o = run(
        base.path(),
        &["run", "-p", "build", "-w", &link_sub, "--", "true"],
    );
    refused_125(&o, &["link", "real"]);
    // A write path.
    let o = run(
        &real,
        &[
            "run", "-p", "build", "-w", ".", "--write", &link_sub, "--", "true",
        ],
    );
    refused_125(&o, &["link", "symlink"]);
}

#[test]
fn dotgit_symlink_to_another_directory_is_refused() {
    // An earlier cell replaced .git with a link to ../.kube: a later cell's protect
    // rules must not bind (and so show) what the link points to.
    let base = Ws::new();
    let kube = base.join("kube");
    std::fs::create_dir_all(kube.join("hooks")).unwrap();
    std::fs::write(
        kube.join("config"),
        "apiVersion: v1\nsecret-token: KUBECANARY\n",
    )
    .unwrap();
    let ws = base.join("ws");
    std::fs::create_dir(&ws).unwrap();
    std::os::unix::fs::symlink("../kube", ws.join(".git")).unwrap();
    let o = sh(&ws, "build", &[], "cat .git/config; echo ran");
    assert!(!stdout(&o).contains("KUBECANARY"), "{}", stdout(&o));
    refused_125(&o, &[".git", "../kube"]);
}

#[test]
fn protected_path_replaced_by_a_symlink_is_refused() {
    let base = Ws::new();
    let secret = base.join("secret");
    std::fs::create_dir(&secret).unwrap();
    std::fs::write(secret.join("config"), "SECRETCANARY\n").unwrap();
    let ws = base.join("ws");
    std::fs::create_dir_all(ws.join(".git")).unwrap();
    std::os::unix::fs::symlink("../../secret/config", ws.join(".git/config")).unwrap();
    let o = sh(&ws, "build", &[], "cat .git/config; echo ran");
    assert!(!stdout(&o).contains("SECRETCANARY"));
    refused_125(&o, &[".git/config", "secret/config"]);
}

/// A cell swaps a workspace subdirectory for a symlink to a directory outside, over and
/// over, while other cells start with that subdirectory as their workspace. None of them
/// may see the link's target.
#[test]
fn symlink_swap_race_never_gives_a_cell_the_links_target() {
    let base = Ws::new();
    let secret = base.join("secret");
    std::fs::create_dir(&secret).unwrap();
    std::fs::write(secret.join("canary"), "RACECANARY\n").unwrap();
    let outer = base.join("outer");
    std::fs::create_dir_all(outer.join("sub")).unwrap();
    std::fs::set_permissions(&outer, std::fs::Permissions::from_mode(0o755)).unwrap();
    // The attacker: a cell on `outer`, swapping `sub` as fast as it can (bounded).
    let swapper = taskcell(
        &outer,
        &[
            "run",
            "-p",
            "build",
            "--timeout",
            "60s",
            "--",
            "/bin/sh",
            "-c",
            "i=0; while [ $i -lt 200000 ] && [ ! -e stop ]; do \
               mv sub s2 && ln -s ../secret sub && rm sub && mv s2 sub; i=$((i+1)); done",
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("starting the swapping cell");
    let mut child = swapper;
    let sub = outer.join("sub").display().to_string();
    let mut successes = 0;
    let mut refused = 0;
    let mut ran = 0;
    let start = Instant::now();
    for _ in 0..60 {
        if start.elapsed() > Duration::from_secs(45) {
            break;
        }
        let o = run(
            &outer,
            &[
                "run",
                "-p",
                "build",
                "-w",
                &sub,
                "--",
                "/bin/sh",
                "-c",
                "cat canary 2>/dev/null; cat */canary 2>/dev/null; true",
            ],
        );
        if stdout(&o).contains("RACECANARY") {
            successes += 1;
        }
        match o.status.code() {
            Some(0) => ran += 1,
            Some(125) => {
                refused += 1;
                if refused < 4 {
                    eprintln!("refused: {}", stderr(&o).trim());
                }
            }
            _ => {}
        }
    }
    std::fs::write(outer.join("stop"), "").ok();
    let _ = child.wait();
    eprintln!("race: {ran} cells ran in the real directory, {refused} were refused");
    assert_eq!(
        successes, 0,
        "a cell saw the symlink's target ({ran} ran, {refused} refused)"
    );
    assert!(ran + refused > 0);
    // The host directory is intact.
    assert_eq!(
        std::fs::read_to_string(secret.join("canary")).unwrap(),
        "RACECANARY\n"
    );
}

// ---- git ----

fn git(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new("git")
        .current_dir(dir)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", "/nonexistent")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .args(["-c", "user.name=t", "-c", "user.email=t@e"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running git")
}

#[track_caller]
fn git_ok(dir: &Path, args: &[&str]) -> String {
    let o = git(dir, args);
    assert!(o.status.success(), "git {args:?}: {}", stderr(&o));
    stdout(&o)
}

/// A repository with one commit at `dir`.
fn repo(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    git_ok(dir, &["init", "-q", "-b", "main", "."]);
    std::fs::write(dir.join("a"), "a\n").unwrap();
    git_ok(dir, &["add", "a"]);
    git_ok(dir, &["commit", "-qm", "one"]);
}

/// Every way the cell's script may try to make git run `touch MARKER` outside; after
/// the cell, `git status` and `git commit` outside must not create MARKER.
fn git_route(name: &str, script: &str) {
    let base = Ws::new();
    let ws = base.join("ws");
    repo(&ws);
    let marker = base.join("MARKER");
    let payload = format!("#!/bin/sh\ntouch {}\nexit 0\n", marker.display());
    std::fs::write(base.join("payload"), &payload).unwrap();
    let script = script.replace("PAYLOAD", &payload.replace('\n', "\\n"));
    let o = sh(
        &ws,
        "build",
        &[],
        &format!("export GIT_CONFIG_NOSYSTEM=1; {script}; true"),
    );
    let code = o.status.code();
    assert!(
        code == Some(0) || code == Some(122),
        "{name}: {code:?} {}",
        stderr(&o)
    );
    if code == Some(122) {
        assert!(stderr(&o).contains("taskcell-quarantine"), "{}", stderr(&o));
    }
    let _ = git(&ws, &["status"]);
    let _ = git(&ws, &["commit", "-qam", "outside", "--allow-empty"]);
    let _ = git(&ws, &["submodule", "status"]);
    assert!(
        !marker.exists(),
        "{name}: git outside ran what the cell left (taskcell said: {})",
        stderr(&o)
    );
}

#[test]
fn git_hook_planted_in_cell_does_not_run_outside() {
    git_route(
        "hook",
        "printf 'PAYLOAD' > .git/hooks/pre-commit; chmod +x .git/hooks/pre-commit",
    );
}

#[test]
fn git_config_fsmonitor_planted_in_cell_does_not_run_outside() {
    git_route(
        "fsmonitor",
        "printf 'PAYLOAD' > fsm; chmod +x fsm; git config core.fsmonitor \"$PWD/fsm\"; \
         printf '[core]\\n\\tfsmonitor = %s/fsm\\n' \"$PWD\" >> .git/config",
    );
}

#[test]
fn git_commondir_planted_in_cell_does_not_run_outside() {
    git_route(
        "commondir",
        "printf 'PAYLOAD' > fsm; chmod +x fsm; cp -r .git evil; \
         printf '[core]\\n\\trepositoryformatversion = 0\\n\\tfsmonitor = %s/fsm\\n' \"$PWD\" > evil/config; \
         printf '../evil\\n' > .git/commondir",
    );
}

#[test]
fn git_config_worktree_planted_in_cell_does_not_run_outside() {
    git_route(
        "config.worktree",
        "printf 'PAYLOAD' > fsm; chmod +x fsm; \
         printf '[core]\\n\\tfsmonitor = %s/fsm\\n' \"$PWD\" > .git/config.worktree",
    );
}

#[test]
fn git_submodule_planted_in_cell_does_not_run_outside() {
    // A submodule that did not exist: its git dir under .git/modules (with a config that
    // names a program and a hook), its .git file, .gitmodules and the gitlink.
    git_route(
        "submodule",
        "printf 'PAYLOAD' > fsm; chmod +x fsm; \
         git init -q sub && git -C sub -c user.name=t -c user.email=t@e commit -q --allow-empty -m s && \
         mkdir -p .git/modules && mv sub/.git .git/modules/sub && \
         printf 'gitdir: ../.git/modules/sub\\n' > sub/.git && \
         printf '[core]\\n\\trepositoryformatversion = 0\\n\\tworktree = ../../../sub\\n\\tfsmonitor = %s/fsm\\n' \"$PWD\" > .git/modules/sub/config && \
         printf 'PAYLOAD' > .git/modules/sub/hooks/post-checkout && chmod +x .git/modules/sub/hooks/post-checkout && \
         printf '[submodule \"sub\"]\\n\\tpath = sub\\n\\turl = ./sub\\n' > .gitmodules && \
         git update-index --add --cacheinfo 160000,$(git -C sub rev-parse HEAD),sub",
    );
}

#[test]
fn git_nested_repository_planted_in_cell_does_not_run_outside() {
    git_route(
        "nested",
        "printf 'PAYLOAD' > fsm; chmod +x fsm; \
         git init -q vendored && git -C vendored -c user.name=t -c user.email=t@e commit -q --allow-empty -m s && \
         git -C vendored config core.fsmonitor \"$PWD/fsm\" && \
         git update-index --add --cacheinfo 160000,$(git -C vendored rev-parse HEAD),vendored",
    );
}

#[test]
fn git_hooks_path_inside_the_repository_is_protected() {
    // The user's repository uses an in-tree hooks directory (husky style).
    let base = Ws::new();
    let ws = base.join("ws");
    repo(&ws);
    std::fs::create_dir(ws.join(".githooks")).unwrap();
    std::fs::write(ws.join(".githooks/README"), "hooks\n").unwrap();
    git_ok(&ws, &["config", "core.hooksPath", ".githooks"]);
    let marker = base.join("MARKER");
    let o = sh(
        &ws,
        "build",
        &[],
        &format!(
            "printf '#!/bin/sh\\ntouch {}\\n' > .githooks/pre-commit; chmod +x .githooks/pre-commit; true",
            marker.display()
        ),
    );
    assert!(
        matches!(o.status.code(), Some(0) | Some(122)),
        "{}",
        stderr(&o)
    );
    let _ = git(&ws, &["commit", "-q", "--allow-empty", "-m", "outside"]);
    assert!(!marker.exists(), "{}", stderr(&o));
}

#[test]
fn git_init_and_commit_inside_are_not_quarantined() {
    // What git itself writes in a new repository names no program: left alone, exit 0.
    let ws = Ws::new();
    let o = sh(
        ws.path(),
        "build",
        &[],
        "git init -q . && echo hi > a && git add a && \
         git -c user.name=t -c user.email=t@e commit -qm one && \
         git remote add origin /nonexistent && git log --oneline | wc -l",
    );
    assert_eq!(ok(&o).trim(), "1", "{}", stderr(&o));
    assert!(!stderr(&o).contains("quarantine"));
}

#[test]
fn linked_worktree_can_commit_and_stays_protected() {
    let base = Ws::new();
    let main = base.join("main");
    repo(&main);
    let wt = base.join("wt");
    git_ok(
        &main,
        &[
            "worktree",
            "add",
            "-q",
            "-b",
            "feature",
            wt.to_str().unwrap(),
        ],
    );
    let marker = base.join("MARKER");
    let o = sh(
        &wt,
        "build",
        &[],
        &format!(
            "echo b > b && git add b && git -c user.name=t -c user.email=t@e commit -qm in-cell && \
             echo committed; \
             printf '#!/bin/sh\\ntouch {m}\\n' > {main}/.git/hooks/pre-commit 2>/dev/null && echo hook-written; \
             printf '[core]\\n\\tfsmonitor = /bin/false\\n' >> {main}/.git/config 2>/dev/null && echo config-written; \
             echo 'gitdir: /tmp' > .git 2>/dev/null && echo dotgit-written; true",
            m = marker.display(),
            main = main.display()
        ),
    );
    let out = stdout(&o);
    assert!(out.contains("committed"), "{out}\n{}", stderr(&o));
    for w in ["hook-written", "config-written", "dotgit-written"] {
        assert!(!out.contains(w), "{w}: {out}");
    }
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let log = git_ok(&main, &["log", "--oneline", "feature"]);
    assert!(log.contains("in-cell"), "{log}");
    let _ = git(&wt, &["commit", "-q", "--allow-empty", "-m", "outside"]);
    assert!(!marker.exists());
}

#[test]
fn read_path_through_the_users_own_symlink_still_works() {
    // A stow-managed dotfile: the link is outside every writable path, so it is followed
    // once and its target bound read-only.
    let base = Ws::new();
    let dots = base.join("dotfiles");
    std::fs::create_dir(&dots).unwrap();
    std::fs::write(dots.join("gitconfig"), "[user]\n\tname = stow\n").unwrap();
    let link = base.join("gitconfig");
    std::os::unix::fs::symlink("dotfiles/gitconfig", &link).unwrap();
    let ws = base.join("ws");
    std::fs::create_dir(&ws).unwrap();
    let l = link.display().to_string();
    let o = sh(&ws, "build", &["--read", &l], &format!("cat {l}"));
    assert!(ok(&o).contains("name = stow"));
}

#[test]
fn read_path_through_a_symlink_inside_the_workspace_is_refused() {
    // The same link planted by a cell inside its workspace is not followed.
    let base = Ws::new();
    let secret = base.join("secret");
    std::fs::create_dir(&secret).unwrap();
    std::fs::write(secret.join("key"), "READCANARY\n").unwrap();
    let ws = base.join("ws");
    std::fs::create_dir(&ws).unwrap();
    std::os::unix::fs::symlink("../secret", ws.join("docs")).unwrap();
    let p = ws.join("docs").display().to_string();
    let o = sh(&ws, "review", &["--read", &p], "cat docs/key");
    assert!(!stdout(&o).contains("READCANARY"));
    refused_125(&o, &["docs", "../secret"]);
}

#[test]
fn git_include_path_created_in_cell_does_not_run_outside() {
    // The user's config includes an in-repository file that does not exist yet; the cell
    // creates it with a core.fsmonitor.
    let base = Ws::new();
    let ws = base.join("ws");
    repo(&ws);
    git_ok(&ws, &["config", "include.path", "../local.gitconfig"]);
    let marker = base.join("MARKER");
    std::fs::write(
        base.join("payload"),
        format!("#!/bin/sh\ntouch {}\n", marker.display()),
    )
    .unwrap();
    let o = sh(
        &ws,
        "build",
        &[],
        &format!(
            "printf '#!/bin/sh\\ntouch {}\\n' > fsm; chmod +x fsm; \
             printf '[core]\\n\\tfsmonitor = %s/fsm\\n' \"$PWD\" > local.gitconfig",
            marker.display()
        ),
    );
    assert_eq!(o.status.code(), Some(122), "{}", stderr(&o));
    assert!(stderr(&o).contains("local.gitconfig"), "{}", stderr(&o));
    let _ = git(&ws, &["status"]);
    let _ = git(&ws, &["commit", "-q", "--allow-empty", "-m", "outside"]);
    assert!(!marker.exists());
}
