use super::*;
use std::process::Command;

const SECRET: &[u8] = b"ghp_leakedTokenValue1234567890";

fn red() -> Redactor {
    let v: Vec<(String, &[u8])> = vec![
        ("GH_TOKEN".into(), SECRET),
        ("OTHER".into(), b"other-value-xyz"),
    ];
    Redactor::new(&v).expect("redactor")
}

fn long_ago() -> SystemTime {
    UNIX_EPOCH
}

fn scan_dir(dir: &Path) -> ScanReport {
    scan(
        &red(),
        &[dir.to_path_buf()],
        long_ago(),
        ScanLimits::default(),
    )
}

fn git(dir: &Path, args: &[&str]) {
    let st = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
        .args(["-c", "init.defaultBranch=main", "-c", "gc.auto=0"])
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdout(std::process::Stdio::null())
        .status()
        .expect("git runs");
    assert!(st.success(), "git {args:?}");
}

fn git_out(dir: &Path, args: &[&str]) -> String {
    let o = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("git runs");
    String::from_utf8(o.stdout)
        .expect("utf8")
        .trim()
        .to_string()
}

/// All files under `dir`, read raw: none may contain the value in the clear (so the
/// git tests really depend on decompression and delta resolution).
fn assert_not_in_clear(dir: &Path) {
    for e in walk_all(dir) {
        let data = fs::read(&e).expect("read");
        assert!(
            !data.windows(SECRET.len()).any(|w| w == SECRET),
            "{} holds the value in the clear",
            e.display()
        );
    }
}

fn walk_all(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).expect("dir") {
        let p = e.expect("entry").path();
        let md = fs::symlink_metadata(&p).expect("md");
        if md.is_dir() {
            out.extend(walk_all(&p));
        } else if md.is_file() {
            out.push(p);
        }
    }
    out
}

#[test]
fn finds_value_in_a_text_file_with_its_line() {
    let d = tempfile::tempdir().expect("tmp");
    let mut text = b"line one\nline two\ntoken=".to_vec();
    text.extend_from_slice(SECRET);
    text.extend_from_slice(b"\nlast\n");
    fs::write(d.path().join("config.txt"), &text).expect("write");
    fs::write(d.path().join("clean.txt"), b"nothing here\n").expect("write");
    let r = scan_dir(d.path());
    assert_eq!(r.files_scanned, 2);
    assert_eq!(r.truncated, None);
    assert_eq!(
        r.findings,
        vec![Finding {
            path: d.path().join("config.txt"),
            line: Some(3),
            secret: "GH_TOKEN".into(),
            encoding: "raw",
            in_git_object: None,
        }]
    );
}

#[test]
fn finds_encoded_value_and_binary_has_no_line() {
    let d = tempfile::tempdir().expect("tmp");
    let hex: String = SECRET.iter().map(|b| format!("{b:02X}")).collect();
    fs::write(d.path().join("dump.txt"), format!("a\nb\nc {hex}\n")).expect("write");
    let mut bin = vec![0u8, 1, 2, 3];
    bin.extend_from_slice(b"other-value-xyz");
    fs::write(d.path().join("blob.bin"), &bin).expect("write");
    let r = scan_dir(d.path());
    let mut got: Vec<(String, Option<u64>, &str)> = r
        .findings
        .iter()
        .map(|f| (f.secret.clone(), f.line, f.encoding))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("GH_TOKEN".into(), Some(3), "HEX"),
            ("OTHER".into(), None, "raw")
        ]
    );
}

#[test]
fn finding_never_holds_the_value() {
    let d = tempfile::tempdir().expect("tmp");
    fs::write(d.path().join("f"), SECRET).expect("write");
    let r = scan_dir(d.path());
    assert_eq!(r.findings.len(), 1);
    assert_eq!(
        r.findings[0].to_string(),
        format!("{}:1: secret GH_TOKEN (raw)", d.path().join("f").display())
    );
    let dbg = format!("{r:?}");
    assert!(
        !dbg.contains(std::str::from_utf8(SECRET).expect("utf8")),
        "{dbg}"
    );
}

#[test]
fn match_across_a_chunk_boundary_is_found_with_line() {
    let d = tempfile::tempdir().expect("tmp");
    let mut data = vec![b'x'; CHUNK - 5];
    data[100] = b'\n';
    data.extend_from_slice(SECRET);
    data.extend_from_slice(b"\nmore\n");
    fs::write(d.path().join("big.log"), &data).expect("write");
    let r = scan_dir(d.path());
    assert_eq!(r.findings.len(), 1, "{:?}", r.findings);
    assert_eq!(r.findings[0].line, Some(2));
    assert_eq!(r.bytes_scanned, data.len() as u64);
}

#[test]
fn files_unchanged_since_the_start_are_skipped() {
    let d = tempfile::tempdir().expect("tmp");
    fs::write(d.path().join("old"), SECRET).expect("write");
    let later = SystemTime::now() + Duration::from_secs(5);
    let r = scan(
        &red(),
        &[d.path().to_path_buf()],
        later,
        ScanLimits::default(),
    );
    assert_eq!(r.files_scanned, 0);
    assert!(r.findings.is_empty());
}

#[test]
fn symlinks_are_not_followed() {
    let outside = tempfile::tempdir().expect("tmp");
    fs::write(outside.path().join("secret"), SECRET).expect("write");
    let d = tempfile::tempdir().expect("tmp");
    std::os::unix::fs::symlink(outside.path().join("secret"), d.path().join("link"))
        .expect("symlink");
    std::os::unix::fs::symlink(outside.path(), d.path().join("dirlink")).expect("symlink");
    let r = scan_dir(d.path());
    assert!(r.findings.is_empty(), "{:?}", r.findings);
}

#[test]
fn bounds_cut_the_scan_short_and_say_so() {
    let d = tempfile::tempdir().expect("tmp");
    for i in 0..5 {
        fs::write(d.path().join(format!("f{i}")), vec![b'a'; 1000]).expect("write");
    }
    let roots = [d.path().to_path_buf()];
    let lim = |b, f, ms| ScanLimits {
        max_bytes: b,
        max_files: f,
        deadline: Duration::from_millis(ms),
    };
    let r = scan(&red(), &roots, long_ago(), lim(2500, 100, 60_000));
    assert_eq!(r.bytes_scanned, 2500);
    assert!(
        r.truncated.as_deref().unwrap_or("").contains("byte limit"),
        "{r:?}"
    );
    let r = scan(&red(), &roots, long_ago(), lim(1 << 20, 2, 60_000));
    assert_eq!(r.files_scanned, 2);
    assert!(
        r.truncated.as_deref().unwrap_or("").contains("file limit"),
        "{r:?}"
    );
    let r = scan(&red(), &roots, long_ago(), lim(1 << 20, 100, 0));
    assert_eq!(r.files_scanned, 0);
    assert!(
        r.truncated.as_deref().unwrap_or("").contains("deadline"),
        "{r:?}"
    );
    let r = scan(&red(), &roots, long_ago(), lim(1 << 20, 100, 60_000));
    assert_eq!((r.files_scanned, r.truncated), (5, None));
}

fn git_available() -> bool {
    Command::new("git").arg("--version").output().is_ok()
}

#[test]
fn finds_value_committed_as_a_loose_object() {
    assert!(git_available(), "the tests need git to build repositories");
    let d = tempfile::tempdir().expect("tmp");
    let repo = d.path().join("repo");
    fs::create_dir(&repo).expect("mkdir");
    git(&repo, &["init", "-q"]);
    let mut content = b"# settings\ntoken = \"".to_vec();
    content.extend_from_slice(SECRET);
    content.extend_from_slice(b"\"\n");
    fs::write(repo.join("settings.toml"), &content).expect("write");
    git(&repo, &["add", "settings.toml"]);
    git(&repo, &["commit", "-q", "-m", "add settings"]);
    let blob = git_out(&repo, &["rev-parse", "HEAD:settings.toml"]);
    // The working copy is gone; only the object remains.
    fs::remove_file(repo.join("settings.toml")).expect("rm");
    assert_not_in_clear(d.path());
    let r = scan_dir(d.path());
    let f = r
        .findings
        .iter()
        .find(|f| f.in_git_object.as_deref() == Some(blob.as_str()))
        .unwrap_or_else(|| panic!("blob {blob} not found in {:?}", r.findings));
    assert_eq!(f.secret, "GH_TOKEN");
    assert_eq!(f.line, Some(2));
    assert!(
        f.path.starts_with(repo.join(".git/objects")),
        "{}",
        f.path.display()
    );
}

/// History: v1 holds the secret, v2 (newer, larger) removed it; after a full repack
/// git stores v1 as a delta against v2, so only delta resolution reveals the value.
fn packed_repo(ref_delta: bool) -> (tempfile::TempDir, PathBuf, String) {
    let d = tempfile::tempdir().expect("tmp");
    let repo = d.path().join("repo");
    fs::create_dir(&repo).expect("mkdir");
    git(&repo, &["init", "-q"]);
    let body: String = (0..400)
        .map(|i| format!("line {i}: some ordinary configuration text\n"))
        .collect();
    let mut v1 = body.clone().into_bytes();
    v1.extend_from_slice(b"api_key = ");
    v1.extend_from_slice(SECRET);
    v1.push(b'\n');
    fs::write(repo.join("app.conf"), &v1).expect("write");
    git(&repo, &["add", "app.conf"]);
    git(&repo, &["commit", "-q", "-m", "v1"]);
    let blob = git_out(&repo, &["rev-parse", "HEAD:app.conf"]);
    let v2 = format!(
        "{body}api_key = (from the environment)\n{}",
        "more text\n".repeat(20)
    );
    fs::write(repo.join("app.conf"), v2).expect("write");
    git(&repo, &["commit", "-q", "-a", "-m", "v2"]);
    let off = if ref_delta { "false" } else { "true" };
    git(
        &repo,
        &[
            "-c",
            &format!("repack.useDeltaBaseOffset={off}"),
            "repack",
            "-a",
            "-d",
            "-f",
            "-q",
        ],
    );
    git(&repo, &["prune-packed"]);
    (d, repo, blob)
}

fn assert_blob_found_in_pack(ref_delta: bool) {
    assert!(git_available(), "the tests need git to build repositories");
    let (d, repo, blob) = packed_repo(ref_delta);
    let loose: Vec<PathBuf> = walk_all(&repo.join(".git/objects"))
        .into_iter()
        .filter(|p| {
            !p.starts_with(repo.join(".git/objects/pack"))
                && !p.starts_with(repo.join(".git/objects/info"))
        })
        .collect();
    assert!(loose.is_empty(), "all objects packed: {loose:?}");
    // The old blob is a delta (git verify-pack reports its base).
    let idx = walk_all(&repo.join(".git/objects/pack"))
        .into_iter()
        .find(|p| p.extension() == Some("idx".as_ref()))
        .expect("an idx");
    // The old blob is stored as the expected kind of delta (6 OFS_DELTA, 7 REF_DELTA).
    let entries = parse_idx(&fs::read(&idx).expect("idx")).expect("parse idx");
    let pack = fs::read(idx.with_extension("pack")).expect("pack");
    let off = entries
        .iter()
        .find(|(id, _)| to_hex(id) == blob)
        .expect("blob in idx")
        .1;
    let kind = (pack[off as usize] >> 4) & 7;
    assert_eq!(
        kind,
        if ref_delta { 7 } else { 6 },
        "blob stored as a delta"
    );
    assert_not_in_clear(d.path());
    let r = scan_dir(d.path());
    assert!(r.unreadable.is_empty(), "{:?}", r.unreadable);
    let f = r
        .findings
        .iter()
        .find(|f| f.in_git_object.as_deref() == Some(blob.as_str()))
        .unwrap_or_else(|| panic!("blob {blob} not found in {:?}", r.findings));
    assert_eq!(f.secret, "GH_TOKEN");
    assert_eq!(f.line, Some(401));
    assert_eq!(f.path.extension(), Some("pack".as_ref()));
}

#[test]
fn finds_value_in_a_packed_ofs_delta() {
    assert_blob_found_in_pack(false);
}

#[test]
fn finds_value_in_a_packed_ref_delta() {
    assert_blob_found_in_pack(true);
}

#[test]
fn delta_application() {
    let base = b"hello world, this is the base";
    // base size 29, result size 11: copy 5 bytes at 0, insert " you!!"
    let mut delta = vec![29, 11, 0x80 | 0x10 | 0x01, 0, 5, 6];
    delta.extend_from_slice(b" you!!");
    assert_eq!(
        &*apply_delta(base, &delta, 1 << 20).expect("delta"),
        b"hello you!!"
    );
    // Copy past the end of the base is refused.
    let bad = vec![29, 40, 0x80 | 0x10 | 0x01, 0, 40];
    assert!(apply_delta(base, &bad, 1 << 20).is_err());
    // A result larger than the cap is refused before allocating it.
    let big = vec![29, 0xff, 0xff, 0xff, 0x7f];
    assert!(apply_delta(base, &big, 1 << 20).is_err());
}

#[test]
fn corrupt_git_objects_are_reported_not_fatal() {
    let d = tempfile::tempdir().expect("tmp");
    let g = d.path().join(".git");
    fs::create_dir_all(g.join("objects/ab")).expect("mkdir");
    fs::create_dir_all(g.join("objects/pack")).expect("mkdir");
    fs::create_dir_all(g.join("refs")).expect("mkdir");
    fs::write(g.join("HEAD"), "ref: refs/heads/main\n").expect("write");
    fs::write(g.join("objects/ab/cdef"), b"not zlib").expect("write");
    fs::write(
        g.join("objects/pack/p.pack"),
        b"PACK\0\0\0\x02\0\0\0\x01garbage",
    )
    .expect("write");
    fs::write(g.join("objects/pack/p.idx"), b"short").expect("write");
    fs::write(d.path().join("leak.txt"), SECRET).expect("write");
    let r = scan_dir(d.path());
    // The loose object, the index (walked without it) and the pack.
    assert_eq!(r.unreadable.len(), 3, "{:?}", r.unreadable);
    assert_eq!(r.findings.len(), 1);
}

#[test]
fn pack_without_its_index_is_walked() {
    assert!(git_available(), "the tests need git to build repositories");
    let (d, repo, blob) = packed_repo(false);
    let idx = walk_all(&repo.join(".git/objects/pack"))
        .into_iter()
        .find(|p| p.extension() == Some("idx".as_ref()))
        .expect("an idx");
    let entries = parse_idx(&fs::read(&idx).expect("idx")).expect("parse idx");
    let off = entries
        .iter()
        .find(|(id, _)| to_hex(id) == blob)
        .expect("blob in idx")
        .1;
    let pack = fs::read(idx.with_extension("pack")).expect("pack");
    let mut walked = walk_pack(&pack).expect("walk");
    let mut listed: Vec<u64> = entries.iter().map(|e| e.1).collect();
    listed.sort();
    walked.sort();
    assert_eq!(walked, listed, "the walk finds every entry the index lists");
    // The cell removed the index: the value is still found, named by its offset.
    fs::remove_file(&idx).expect("rm idx");
    let r = scan_dir(d.path());
    let want = format!("pack offset {off}");
    let f = r
        .findings
        .iter()
        .find(|f| f.in_git_object.as_deref() == Some(want.as_str()))
        .unwrap_or_else(|| panic!("{want} not found in {:?}", r.findings));
    assert_eq!((f.secret.as_str(), f.line), ("GH_TOKEN", Some(401)));
    assert!(
        r.unreadable
            .iter()
            .any(|(p, why)| *p == idx && why.contains("without it")),
        "{:?}",
        r.unreadable
    );
}

#[test]
fn fifo_is_not_opened() {
    let d = tempfile::tempdir().expect("tmp");
    let fifo = d.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    fs::write(d.path().join("f"), SECRET).expect("write");
    let r = scan_dir(d.path());
    assert_eq!((r.files_scanned, r.findings.len()), (1, 1));
    let e = open_regular(&fifo).expect_err("a fifo is refused");
    assert!(e.to_string().contains("not a regular file"), "{e}");
}

#[test]
fn deep_nesting_is_walked_without_recursion() {
    let d = tempfile::tempdir().expect("tmp");
    // 1500 levels: deeper than a recursive walk should trust its stack with.
    let mut rel = PathBuf::new();
    for _ in 0..1500 {
        rel.push("d");
    }
    let mut cur = d.path().to_path_buf();
    for _ in 0..1500 {
        cur.push("d");
        fs::create_dir(&cur).expect("mkdir");
    }
    fs::write(cur.join("leak"), SECRET).expect("write");
    let r = scan_dir(d.path());
    assert_eq!(r.findings.len(), 1, "{:?}", r.unreadable);
    assert_eq!(r.findings[0].path, d.path().join(rel).join("leak"));
}
