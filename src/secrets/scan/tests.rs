use super::*;
use std::fs;
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
            member: None,
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
            ("GH_TOKEN".into(), Some(3), "hex"),
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
        ..ScanLimits::default()
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
    assert!(r.skipped.is_empty(), "{:?}", r.skipped);
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
    // The index (walked without it) and the pack; the "loose object" that is no zlib
    // stream was searched as it is (and is not a skip).
    assert_eq!(r.skipped.len(), 2, "{:?}", r.skipped);
    assert!(!r.complete());
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
    let pack = File::open(idx.with_extension("pack")).expect("pack");
    let size = pack.metadata().expect("md").len();
    let mut head = [0u8; 12];
    pack.read_exact_at(&mut head, 0).expect("head");
    let count = u32::from_be_bytes([head[8], head[9], head[10], head[11]]);
    let mut walked = walk_pack(&pack, count, size).expect("walk");
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
        r.skipped
            .iter()
            .any(|(p, why)| *p == idx && why.contains("without it")),
        "{:?}",
        r.skipped
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
    assert!(r.complete(), "{r:?}");
    let dir = nix::fcntl::open(
        d.path(),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        Mode::empty(),
    )
    .expect("open dir");
    // SAFETY: open returned a new fd that nothing else owns.
    let dir = unsafe { OwnedFd::from_raw_fd(dir) };
    let e = open_file(&dir, b"fifo").expect_err("a fifo is refused");
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
    assert_eq!(r.findings.len(), 1, "{:?}", r.skipped);
    assert_eq!(r.findings[0].path, d.path().join(rel).join("leak"));
}

// ---- compressed files, encodings, holes, symlinked object dirs, failing closed ---

fn gz(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

fn zlib(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("zlib");
    e.finish().expect("zlib")
}

fn deflate(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("deflate");
    e.finish().expect("deflate")
}

/// A zip archive of (name, data, deflated?) entries; `descriptor`: sizes after the data
/// (as streaming writers do) instead of in the header.
fn zip(entries: &[(&str, &[u8], bool)], descriptor: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data, deflated) in entries {
        let body = if *deflated {
            deflate(data)
        } else {
            data.to_vec()
        };
        out.extend_from_slice(b"PK\x03\x04");
        out.extend_from_slice(&20u16.to_le_bytes());
        out.extend_from_slice(&(if descriptor { 8u16 } else { 0 }).to_le_bytes());
        out.extend_from_slice(&(if *deflated { 8u16 } else { 0 }).to_le_bytes());
        out.extend_from_slice(&[0; 4]); // time, date
        let (crc, cs, us) = if descriptor {
            (0u32, 0u32, 0u32)
        } else {
            (0, body.len() as u32, data.len() as u32)
        };
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&cs.to_le_bytes());
        out.extend_from_slice(&us.to_le_bytes());
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&body);
        if descriptor {
            out.extend_from_slice(b"PK\x07\x08");
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&(body.len() as u32).to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        }
    }
    out.extend_from_slice(b"PK\x01\x02 central directory follows");
    out
}

fn secret_text() -> Vec<u8> {
    let mut t = b"config\ntoken = ".to_vec();
    t.extend_from_slice(SECRET);
    t.push(b'\n');
    t
}

#[test]
fn gzip_zlib_and_zip_members_are_decompressed_and_searched() {
    let d = tempfile::tempdir().expect("tmp");
    let t = secret_text();
    fs::write(d.path().join("a.gz"), gz(&t)).expect("write");
    fs::write(d.path().join("b.zz"), zlib(&t)).expect("write");
    let filler = b"nothing to see\n".repeat(50);
    for descriptor in [false, true] {
        let z = zip(
            &[("first.txt", &filler, true), ("dir/conf.txt", &t, true)],
            descriptor,
        );
        fs::write(d.path().join(format!("c{}.zip", descriptor as u8)), z).expect("write");
    }
    // Nested: a zip in a gzip.
    fs::write(
        d.path().join("d.zip.gz"),
        gz(&zip(&[("inner.txt", &t, true)], false)),
    )
    .expect("write");
    let r = scan_dir(d.path());
    assert!(r.complete(), "{r:?}");
    // (Short inputs may be stored, not compressed: the raw pass finds those too.)
    let mut got: Vec<String> = r
        .findings
        .iter()
        .filter(|f| f.member.is_some())
        .map(|f| f.to_string())
        .collect();
    got.sort();
    let p = |n: &str| d.path().join(n).display().to_string();
    assert_eq!(
        got,
        vec![
            format!("{} (gzip):2: secret GH_TOKEN (raw)", p("a.gz")),
            format!("{} (zlib):2: secret GH_TOKEN (raw)", p("b.zz")),
            format!("{} (dir/conf.txt):2: secret GH_TOKEN (raw)", p("c0.zip")),
            format!("{} (dir/conf.txt):2: secret GH_TOKEN (raw)", p("c1.zip")),
            format!(
                "{} (gzip > zip > inner.txt):2: secret GH_TOKEN (raw)",
                p("d.zip.gz")
            ),
        ]
    );
}

#[test]
fn decompression_is_bounded_in_depth_ratio_and_size() {
    let d = tempfile::tempdir().expect("tmp");
    let t = secret_text();
    // Four layers: one more than MAX_DEPTH.
    fs::write(d.path().join("deep.gz"), gz(&gz(&gz(&gz(&t))))).expect("write");
    // A bomb: 64 MiB of zeros, then the value.
    let mut bomb = vec![0u8; 64 << 20];
    bomb.extend_from_slice(&t);
    fs::write(d.path().join("bomb.gz"), gz(&bomb)).expect("write");
    let r = scan_dir(d.path());
    assert!(!r.complete());
    let why = |n: &str| {
        r.skipped
            .iter()
            .find(|(p, _)| p.ends_with(n))
            .map(|(_, w)| w.clone())
            .unwrap_or_default()
    };
    assert!(why("deep.gz").contains("layers deep"), "{:?}", r.skipped);
    assert!(why("bomb.gz").contains("times its size"), "{:?}", r.skipped);
    assert!(r.bytes_scanned < 8 << 20, "{}", r.bytes_scanned);
    // The size bound, without the ratio: random (incompressible) data past the limit.
    let d = tempfile::tempdir().expect("tmp");
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let big: Vec<u8> = (0..(3 << 20) / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();
    fs::write(d.path().join("big.gz"), gz(&big)).expect("write");
    fs::write(d.path().join("big.bin"), &big).expect("write");
    let lim = ScanLimits {
        max_file_bytes: 1 << 20,
        ..ScanLimits::default()
    };
    let r = scan(&red(), &[d.path().to_path_buf()], long_ago(), lim);
    assert!(!r.complete());
    assert_eq!(r.skipped_count, 3, "{:?}", r.skipped);
    assert!(r.truncated.is_none());
}

#[test]
fn holes_of_sparse_files_are_skipped_not_read() {
    let d = tempfile::tempdir().expect("tmp");
    // 4 GiB of hole, then the value: found, having read only a few bytes.
    let f = File::create(d.path().join("sparse")).expect("create");
    f.write_all_at(&secret_text(), 4 << 30).expect("write");
    // A value across a hole's edge: the zeros are searched as zeros.
    let r = scan_dir(d.path());
    assert!(r.complete(), "{r:?}");
    assert_eq!(r.findings.len(), 1, "{:?}", r.findings);
    assert!(r.bytes_scanned < 1 << 20, "{}", r.bytes_scanned);
}

#[test]
fn line_wrapped_base64_and_hex_dumps_in_files_are_found() {
    let d = tempfile::tempdir().expect("tmp");
    let t = secret_text();
    let b64: String = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(&t)
    };
    let wrapped: String = b64
        .as_bytes()
        .chunks(20)
        .map(|c| format!("{}\n", std::str::from_utf8(c).expect("ascii")))
        .collect();
    fs::write(d.path().join("w.b64"), format!("header\n{wrapped}")).expect("write");
    let dump: String = t
        .chunks(16)
        .enumerate()
        .map(|(i, c)| {
            let hex: Vec<String> = c.iter().map(|b| format!("{b:02x}")).collect();
            format!("{:08x}  {}  |..|\n", i * 16, hex.join(" "))
        })
        .collect();
    fs::write(d.path().join("d.txt"), dump).expect("write");
    let r = scan_dir(d.path());
    let mut got: Vec<(String, Option<u64>, &str)> = r
        .findings
        .iter()
        .map(|f| {
            let n = f
                .path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            (n, f.line, f.encoding)
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("d.txt".to_string(), Some(1), "hex dump"),
            ("w.b64".to_string(), Some(3), "base64, line-wrapped"),
        ]
    );
}

#[test]
fn symlinked_git_object_dirs_are_never_followed() {
    let outside = tempfile::tempdir().expect("tmp");
    let obj = zlib(&[b"blob 60\0".as_slice(), &secret_text()].concat());
    fs::create_dir(outside.path().join("ab")).expect("mkdir");
    fs::write(outside.path().join("ab").join("c".repeat(38)), &obj).expect("write");
    fs::write(outside.path().join("plain"), secret_text()).expect("write");
    let d = tempfile::tempdir().expect("tmp");
    let g = d.path().join(".git");
    fs::create_dir_all(g.join("objects/pack")).expect("mkdir");
    fs::create_dir_all(g.join("refs")).expect("mkdir");
    fs::write(g.join("HEAD"), "ref: refs/heads/main\n").expect("write");
    std::os::unix::fs::symlink(outside.path().join("ab"), g.join("objects/ab")).expect("ln");
    std::os::unix::fs::symlink("/proc/self", g.join("objects/cd")).expect("ln");
    std::os::unix::fs::symlink(outside.path().join("plain"), g.join("objects/pack/p.pack"))
        .expect("ln");
    std::os::unix::fs::symlink("/proc/self/pagemap", g.join("objects/pack/p.idx")).expect("ln");
    std::os::unix::fs::symlink(outside.path(), g.join("objects/info")).expect("ln");
    let r = scan_dir(d.path());
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    assert!(r.complete(), "{r:?}");
    // A root that is itself a symlink is not followed either.
    let link = d.path().join("rootlink");
    std::os::unix::fs::symlink(outside.path(), &link).expect("ln");
    let r = scan(&red(), &[link], long_ago(), ScanLimits::default());
    assert!(r.findings.is_empty(), "{:?}", r.findings);
}

#[test]
fn a_huge_file_sorting_first_does_not_hide_a_leak() {
    let d = tempfile::tempdir().expect("tmp");
    // Dense data over the per-file limit comes first; the leak after it is still found.
    fs::write(d.path().join("aaa"), vec![b'x'; 3 << 20]).expect("write");
    fs::write(d.path().join("zzz"), secret_text()).expect("write");
    let lim = ScanLimits {
        max_file_bytes: 1 << 20,
        ..ScanLimits::default()
    };
    let r = scan(&red(), &[d.path().to_path_buf()], long_ago(), lim);
    assert_eq!(r.findings.len(), 1, "{r:?}");
    assert!(!r.complete());
    assert!(r.skipped[0].0.ends_with("aaa"), "{:?}", r.skipped);
}
