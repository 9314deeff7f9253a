//! Root-started cells (issue 18): the cell's processes are one unprivileged host id of
//! taskcell's reserved range; the workspace and write paths are idmapped mounts, so files
//! keep their owners. Written as the attacker inside a cell started by root (a CI runner,
//! a container entrypoint). As a plain user these tests print why they skip.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Stdio;

use common::*;

fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    println!("{test}: skipped: needs root (plain users keep the identity map)");
    true
}

/// A root-only (0600) file under /etc that exists for the test only.
struct EtcSecret(std::path::PathBuf);

impl EtcSecret {
    fn new(content: &str) -> EtcSecret {
        let p = std::path::PathBuf::from(format!(
            "/etc/taskcell-test-secret-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::write(&p, content).expect("writing the test secret under /etc");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        EtcSecret(p)
    }
}

impl Drop for EtcSecret {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The host uid the cell's uid 0 maps to, from a line of /proc/self/uid_map.
fn host_uid(map_line: &str) -> u32 {
    let f: Vec<&str> = map_line.split_whitespace().collect();
    assert_eq!(f.len(), 3, "{map_line}");
    assert_eq!(f[0], "0", "{map_line}");
    f[1].parse().expect("a host uid")
}

#[test]
fn root_only_file_under_etc_is_unreadable_in_a_build_cell() {
    if skip_unless_root("root_only_file_under_etc_is_unreadable_in_a_build_cell") {
        return;
    }
    let secret = EtcSecret::new("root-only-canary-7f3a\n");
    let ws = Ws::new();
    let script = format!(
        "cat {0} 2>&1; echo rc=$?; cat /proc/vmallocinfo >/dev/null 2>&1; echo proc=$?; id -u",
        secret.0.display()
    );
    let out = ok(&sh(ws.path(), "build", &[], &script));
    assert!(!out.contains("root-only-canary"), "{out}");
    assert!(out.contains("Permission denied"), "{out}");
    assert!(out.contains("rc=1"), "{out}");
    // /proc files only host root may read stay closed.
    assert!(!out.contains("proc=0"), "{out}");
    // `id` inside still says what the caller is.
    assert!(out.trim_end().ends_with("\n0"), "{out}");
}

#[test]
fn cell_processes_run_as_an_unprivileged_host_uid() {
    if skip_unless_root("cell_processes_run_as_an_unprivileged_host_uid") {
        return;
    }
    let ws = Ws::new();
    let marker = format!("7.{}", rand_suffix() % 1_000_000);
    let mut child = taskcell(
        ws.path(),
        &[
            "run",
            "-p",
            "build",
            "--",
            "/bin/sh",
            "-c",
            &format!("echo ready; exec sleep {marker}"),
        ],
    )
    .stdout(Stdio::piped())
    .spawn()
    .expect("starting taskcell");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("reading from the cell");
    assert_eq!(line.trim(), "ready");
    // Seen from the host: the command's real, effective, saved and fs uids.
    // "ready" comes just before the exec: look until the sleep is there.
    let mut found = Vec::new();
    for _ in 0..500 {
        for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            if cmd == format!("sleep\0{marker}\0").as_bytes() {
                let st = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
                found.push(st);
            }
        }
        if !found.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(found.len(), 1, "the cell's sleep not found on the host");
    let uid_line = found[0]
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .expect("Uid line");
    let gid_line = found[0]
        .lines()
        .find(|l| l.starts_with("Gid:"))
        .expect("Gid line");
    for l in [uid_line, gid_line] {
        for id in l.split_whitespace().skip(1) {
            let id: u32 = id.parse().expect("an id");
            assert_ne!(id, 0, "{l}");
            assert_ne!(id, 65534, "{l}");
        }
    }
    let groups = found[0]
        .lines()
        .find(|l| l.starts_with("Groups:"))
        .expect("Groups line");
    assert_eq!(
        groups.trim(),
        "Groups:",
        "root's supplementary groups are gone"
    );
}

#[test]
fn files_created_in_the_workspace_keep_the_workspace_owner() {
    if skip_unless_root("files_created_in_the_workspace_keep_the_workspace_owner") {
        return;
    }
    let ws = Ws::new();
    std::fs::write(ws.join("theirs"), "x").expect("write");
    for p in [ws.path().to_path_buf(), ws.join("theirs")] {
        std::os::unix::fs::chown(&p, Some(1000), Some(1000)).expect("chown");
    }
    let out = ok(&sh(
        ws.path(),
        "build",
        &[],
        "echo new > made && mkdir dir && echo y > dir/f && echo more >> theirs && stat -c '%u:%g' theirs made",
    ));
    // Inside, the workspace's files are the caller's.
    assert_eq!(out.lines().collect::<Vec<_>>(), ["0:0", "0:0"], "{out}");
    for f in ["made", "dir", "dir/f", "theirs"] {
        let md = std::fs::metadata(ws.join(f)).expect("created");
        assert_eq!((md.uid(), md.gid()), (1000, 1000), "{f}");
    }
    // A root-owned workspace gets root-owned files, as before.
    let ws = Ws::new();
    ok(&sh(ws.path(), "build", &[], "echo new > made"));
    let md = std::fs::metadata(ws.join("made")).expect("created");
    assert_eq!((md.uid(), md.gid()), (0, 0));
}

#[test]
fn git_commit_in_the_workspace_works() {
    if skip_unless_root("git_commit_in_the_workspace_works") {
        return;
    }
    let ws = Ws::new();
    let git = |args: &[&str]| {
        let o = std::process::Command::new("git")
            .args(args)
            .current_dir(ws.path())
            .output()
            .expect("git");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    git(&["init", "-q", "."]);
    let out = ok(&sh(
        ws.path(),
        "build",
        &[],
        "echo hello > f && git add f && git -c user.name=cell -c user.email=cell@example.invalid commit -qm from-the-cell && echo done",
    ));
    assert!(out.contains("done"), "{out}");
    assert!(git(&["log", "--format=%s"]).contains("from-the-cell"));
    for e in walk(&ws.join(".git")) {
        let md = std::fs::symlink_metadata(&e).expect("stat");
        assert_eq!(md.uid(), 0, "{} is not root's", e.display());
    }
}

fn walk(p: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![p.to_path_buf()];
    if p.is_dir() {
        for e in std::fs::read_dir(p).expect("read_dir").flatten() {
            out.extend(walk(&e.path()));
        }
    }
    out
}

#[test]
fn two_concurrent_cells_get_different_host_ids() {
    if skip_unless_root("two_concurrent_cells_get_different_host_ids") {
        return;
    }
    let ws = Ws::new();
    let start = |ws: &Ws| {
        let mut c = taskcell(
            ws.path(),
            &[
                "run",
                "-p",
                "build",
                "--",
                "/bin/sh",
                "-c",
                "cat /proc/self/uid_map; exec sleep 30",
            ],
        )
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting taskcell");
        let mut line = String::new();
        BufReader::new(c.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("reading the map");
        (c, line)
    };
    let ws2 = Ws::new();
    let (mut a, la) = start(&ws);
    let (mut b, lb) = start(&ws2);
    for c in [&mut a, &mut b] {
        let _ = c.kill();
        let _ = c.wait();
    }
    let (ha, hb) = (host_uid(&la), host_uid(&lb));
    assert_ne!(ha, 0);
    assert_ne!(hb, 0);
    assert_ne!(ha, hb, "two running cells share host uid {ha}");
}

/// Lines appended to /etc/subuid and /etc/subgid for one test, removed (that line only)
/// when dropped, also when the test fails.
struct SubidEntry(String);

impl SubidEntry {
    fn add(line: &str) -> SubidEntry {
        for f in ["/etc/subuid", "/etc/subgid"] {
            let mut text = std::fs::read_to_string(f).unwrap_or_default();
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(line);
            text.push('\n');
            std::fs::write(f, text).expect("writing the test entry");
        }
        SubidEntry(line.to_string())
    }
}

impl Drop for SubidEntry {
    fn drop(&mut self) {
        for f in ["/etc/subuid", "/etc/subgid"] {
            if let Ok(text) = std::fs::read_to_string(f) {
                let kept: String = text
                    .lines()
                    .filter(|l| *l != self.0)
                    .map(|l| format!("{l}\n"))
                    .collect();
                let _ = std::fs::write(f, kept);
            }
        }
    }
}

#[test]
fn a_taskcell_entry_in_etc_subuid_is_the_range_root_started_cells_use() {
    if skip_unless_root("a_taskcell_entry_in_etc_subuid_is_the_range_root_started_cells_use") {
        return;
    }
    let initial = std::fs::read_to_string("/proc/self/uid_map")
        .is_ok_and(|m| m.split_whitespace().eq(["0", "0", "4294967295"]));
    if !initial {
        println!("skipped: root in a nested user namespace gets no host ids");
        return;
    }
    let start = 1_500_000_000 + (std::process::id() % 1000) * 100;
    let ws = Ws::new();
    let map = {
        let _entry = SubidEntry::add(&format!("taskcell:{start}:100"));
        let out = ok(&taskcell(ws.path(), &["explain", "-p", "build"])
            .output()
            .unwrap());
        assert!(
            out.contains(&format!("{start}..{} (/etc/subuid", start + 99)),
            "{out}"
        );
        ok(&sh(ws.path(), "build", &[], "cat /proc/self/uid_map"))
    };
    let host = host_uid(&map);
    assert!(
        (start..start + 100).contains(&host),
        "host uid {host} is not in the reserved {start}..{}",
        start + 99
    );
    for f in ["/etc/subuid", "/etc/subgid"] {
        let text = std::fs::read_to_string(f).unwrap();
        assert!(
            !text.contains(&start.to_string()),
            "{f} kept the test entry"
        );
    }
    // Without the entry: the default range again.
    let map = ok(&sh(ws.path(), "build", &[], "cat /proc/self/uid_map"));
    assert!(host_uid(&map) >= 0x6A5C_0000, "{map}");
}
