//! The encodings people use, made by the real tools in real cells: line-wrapped base64
//! (`base64`, `openssl base64`, Python's `encodebytes`, PEM), `xxd -p`, `xxd` and
//! `hexdump -C` dumps, mixed-case hex, `urllib.parse.quote`, a value whose trailing
//! whitespace a tool strips; gzip, zlib and zip files. Each must be masked in the cell's
//! output and found by the leak scan in the files it wrote. And the leak scan as the
//! attacker's target: symlinked git object directories, a 2 GiB sparse git object
//! (the supervisor's memory must stay flat), a decompression bomb that cuts the scan
//! short (on_leak = "fail" must then fail, exit 123).

mod common;
use common::*;

use std::io::Read;
use std::path::Path;
use std::process::{Output, Stdio};

/// `n` random bytes from the alphabet (letters, digits and `/`, so that URL quoting
/// has something to keep).
fn token(n: usize) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/";
    let mut b = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("reading /dev/urandom");
    let mut s: String = b.iter().map(|x| A[*x as usize % A.len()] as char).collect();
    // Starts and ends with a letter, so no test depends on where a `/` falls.
    s.replace_range(..1, "t");
    s.replace_range(n - 1.., "z");
    s
}

fn run(ws: &Path, args: &[&str], env: &[(&str, &str)], script: &str) -> Output {
    let mut a = vec!["run", "-p", "build"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["--", "/bin/sh", "-c", script]);
    let mut c = taskcell(ws, &a);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("running taskcell")
}

/// `run` with the secret T (the value `t`, from the environment), audited to `log`.
fn run_audited(ws: &Path, t: &str, log: &Path, script: &str) -> Output {
    let log = log.to_str().expect("a UTF-8 path");
    run(
        ws,
        &["--secret", "T=env:S", "--audit-log", log],
        &[("S", t)],
        script,
    )
}

/// `run` with the secret T (the value `t`) declared `on_leak = "fail"`.
fn run_failing_on_leak(ws: &Path, t: &str, script: &str) -> Output {
    run(
        ws,
        &["--secret", "T=env:S", "--secret-opt", "T.on_leak=fail"],
        &[("S", t)],
        script,
    )
}

/// `git ARGS...` in `dir` (must succeed): its stdout.
#[track_caller]
fn git(dir: &Path, args: &[&str]) -> String {
    let o = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running git");
    assert!(o.status.success(), "git {args:?}: {o:?}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The `secret_scan` record of an audit log's text.
#[track_caller]
fn scan_record(audit: &str) -> &str {
    audit
        .lines()
        .find(|l| l.contains("\"secret_scan\""))
        .expect("a secret_scan record in the audit log")
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// The base64 characters of `v` placed at byte offset `align` of a group that depend
/// on `v` alone.
fn b64_inner(v: &[u8], align: usize) -> String {
    let mut buf = vec![0u8; align];
    buf.extend_from_slice(v);
    while !buf.len().is_multiple_of(3) {
        buf.push(0);
    }
    let mut chars = Vec::new();
    for g in buf.chunks(3) {
        let n = (u32::from(g[0]) << 16) | (u32::from(g[1]) << 8) | u32::from(g[2]);
        for s in [18, 12, 6, 0] {
            chars.push(B64[((n >> s) & 63) as usize]);
        }
    }
    let start = (8 * align).div_ceil(6);
    let end = 8 * (align + v.len()) / 6;
    String::from_utf8(chars[start..end].to_vec()).expect("ascii")
}

/// What must not appear in `text` for `v` not to have leaked: 12-character pieces of
/// the value, its hex and its base64 at each alignment, looked for in the text as it
/// is, without line breaks, and without any whitespace, ignoring case for hex.
#[track_caller]
fn assert_not_leaked(what: &str, text: &str, v: &str) {
    let joined: String = text.chars().filter(|c| *c != '\n' && *c != '\r').collect();
    let packed: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let lower = packed.to_lowercase();
    let hex: String = v.bytes().map(|b| format!("{b:02x}")).collect();
    let mut needles: Vec<(String, bool)> = vec![(v.to_string(), false), (hex, true)];
    for a in 0..3 {
        needles.push((b64_inner(v.as_bytes(), a), false));
    }
    for (n, ci) in &needles {
        for w in n.as_bytes().windows(12) {
            let w = std::str::from_utf8(w).expect("ascii");
            let leaked = if *ci {
                lower.contains(w)
            } else {
                text.contains(w) || joined.contains(w) || packed.contains(w)
            };
            assert!(!leaked, "{what}: a piece of the value leaked:\n{text}");
        }
    }
}

/// Split the cell's output into sections `== NAME` → text.
fn sections(out: &str) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = Vec::new();
    for line in out.split_inclusive('\n') {
        if let Some(name) = line.strip_prefix("== ") {
            v.push((name.trim().to_string(), String::new()));
        } else if let Some(last) = v.last_mut() {
            last.1.push_str(line);
        }
    }
    v
}

/// The script that encodes `$T` (a 40-byte token), `$Q` (a value with `/` and
/// characters URLs quote) and `$W` (a value with trailing whitespace) with the real
/// tools, printing each under `== NAME` and writing it into `out.NAME`.
const ENCODE: &str = r#"set -e
T=$(cat "$T_FILE")
emit() { name=$1; shift; echo "== $name"; "$@" | tee "out.$name"; }
k=0
while [ $k -lt 20 ]; do
  pad=$(printf '%*s' $k '' | tr ' ' P)
  printf '%sAPI_KEY=%s\nOTHER=1\n' "$pad" "$T" > .env
  emit "base64-$k" base64 .env
  k=$((k + 1))
done
printf 'API_KEY=%s\nOTHER=1\n' "$T" > .env
emit openssl openssl base64 -in .env
emit encodebytes /usr/bin/python3 -c 'import base64,sys; sys.stdout.write(base64.encodebytes(open(".env","rb").read()).decode())'
emit pem /usr/bin/python3 -c '
import base64, sys, textwrap
b = base64.b64encode(b"\x30\x82" + open(".env","rb").read()).decode()
sys.stdout.write("-----BEGIN PRIVATE KEY-----\n" + "\n".join(textwrap.wrap(b, 64)) + "\n-----END PRIVATE KEY-----\n")'
emit xxd-p xxd -p .env
emit xxd xxd .env
emit xxd-u xxd -u .env
emit hexdump hexdump -C .env
emit mixedhex /usr/bin/python3 -c '
import sys
h = open(".env","rb").read().hex()
sys.stdout.write("".join(c.upper() if i % 3 == 0 else c for i, c in enumerate(h)) + "\n")'
emit quote /usr/bin/python3 -c 'import urllib.parse,sys; print(urllib.parse.quote(open(sys.argv[1]).read()))' "$Q_FILE"
emit quoteall /usr/bin/python3 -c 'import sys; print("".join("%%%02X" % b for b in open(sys.argv[1],"rb").read()))' "$Q_FILE"
emit trimmed sh -c 'echo "value: $(cat "$W_FILE")."'
emit trimmed2 sh -c 'echo $(cat "$W_FILE")'
"#;

#[test]
fn everyday_encodings_made_by_real_tools_are_masked_in_the_output() {
    let ws = Ws::new();
    let t = token(40);
    let w = format!("{}  \n\n", token(30));
    let q = format!("{}/+=&? {}", token(20), token(10));
    let o = run(
        ws.path(),
        &[
            "--secret", "T=env:S", "--secret", "W=env:SW", "--secret", "Q=env:SQ",
        ],
        &[("S", &t), ("SW", &w), ("SQ", &q)],
        ENCODE,
    );
    let out = ok(&o);
    let secs = sections(&out);
    let names: Vec<&str> = secs.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(secs.len(), 32, "{names:?}\n{}", stderr(&o));
    for (name, text) in &secs {
        let who = if name.starts_with("trimmed") {
            "W"
        } else if name.starts_with("quote") {
            "Q"
        } else {
            "T"
        };
        assert!(
            text.contains(&format!("[taskcell:{who}]")),
            "{name}: not masked:\n{text}"
        );
        assert_not_leaked(name, text, &t);
        assert_not_leaked(name, text, w.trim());
        assert_not_leaked(name, text, &q);
    }
    // The masking cost nothing else: the line after the value is intact.
    let b = &secs.iter().find(|s| s.0 == "hexdump").expect("hexdump").1;
    assert!(b.contains("|.OTHER=1.|"), "{b}");
}

#[test]
fn leak_scan_finds_every_encoding_and_compressed_copy_in_files() {
    let ws = Ws::new();
    let t = token(40);
    let w = format!("{}  \n\n", token(30));
    let q = format!("{}/+=&? {}", token(20), token(10));
    let script = format!(
        "{ENCODE}
gzip -k .env
/usr/bin/python3 -c 'import zlib; open(\"env.zz\",\"wb\").write(zlib.compress(open(\".env\",\"rb\").read()))'
/usr/bin/python3 -c '
import zipfile
with zipfile.ZipFile(\"env.zip\", \"w\", zipfile.ZIP_DEFLATED) as z:
    z.writestr(\"first.txt\", \"nothing here\\n\" * 100)
    z.write(\".env\", \"conf/.env\")
'
gzip -c env.zip > env.zip.gz
rm .env
"
    );
    let log = ws.outside("audit.jsonl");
    let o = run(
        ws.path(),
        &[
            "--secret",
            "T=env:S",
            "--secret",
            "W=env:SW",
            "--secret",
            "Q=env:SQ",
            "--audit-log",
            log.to_str().expect("utf8"),
        ],
        &[("S", &t), ("SW", &w), ("SQ", &q)],
        &script,
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let leaks: Vec<&str> = err
        .lines()
        .filter_map(|l| l.strip_prefix("taskcell: leak: "))
        .collect();
    let found = |file: &str| {
        let p = format!("{}/{file}", ws.path().display());
        leaks
            .iter()
            .any(|l| l.starts_with(&format!("{p}:")) || l.starts_with(&format!("{p} (")))
    };
    let mut files: Vec<String> = (0..20).map(|k| format!("out.base64-{k}")).collect();
    for f in [
        "openssl",
        "encodebytes",
        "pem",
        "xxd-p",
        "xxd",
        "xxd-u",
        "hexdump",
        "mixedhex",
        "quote",
        "quoteall",
        "trimmed",
        "trimmed2",
    ] {
        files.push(format!("out.{f}"));
    }
    for f in [".env.gz", "env.zz", "env.zip", "env.zip.gz"] {
        files.push(f.to_string());
    }
    let missed: Vec<&String> = files.iter().filter(|f| !found(f)).collect();
    assert!(missed.is_empty(), "not found: {missed:?}\n{err}");
    assert!(
        leaks
            .iter()
            .any(|l| l.contains("env.zip (conf/.env):") && l.contains("secret T (raw)")),
        "{err}"
    );
    assert!(
        leaks
            .iter()
            .any(|l| l.contains("env.zip.gz (gzip > zip > conf/.env)")
                || l.contains("env.zip.gz (gzip > conf/.env)")),
        "{err}"
    );
    let audit = std::fs::read_to_string(&log).expect("audit");
    assert!(!audit.contains(&t) && !err.contains(&t));
    let scan = scan_record(&audit);
    assert!(scan.contains("\"complete\":true"), "{scan}");
}

/// The git object directories are the cell's: a symlink there is never followed, not
/// to a directory outside the workspace and not to the supervisor's own /proc.
#[test]
fn leak_scan_never_follows_symlinked_git_object_dirs() {
    let ws = Ws::new();
    let t = token(40);
    // Outside the workspace: a real git object holding the value, changed "after" the
    // cell starts (mtime in the future), so a scan that followed the link would read it.
    let outside = tempfile::Builder::new()
        .prefix("taskcell-outside-")
        .tempdir_in("/tmp")
        .expect("tmp");
    git(outside.path(), &["init", "-q"]);
    std::fs::write(outside.path().join("f"), &t).expect("write");
    let id = git(outside.path(), &["hash-object", "-w", "f"])
        .trim()
        .to_string();
    assert_eq!(id.len(), 40, "{id:?}");
    let objdir = outside.path().join(".git/objects").join(&id[..2]);
    let future = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    std::fs::File::open(objdir.join(&id[2..]))
        .and_then(|f| f.set_modified(future))
        .expect("set the object's mtime");
    // A raw copy too, in case a scan searched the files as they are.
    std::fs::write(objdir.join("plain"), &t).expect("write");
    std::fs::File::open(objdir.join("plain"))
        .and_then(|f| f.set_modified(future))
        .expect("set mtime");

    git(ws.path(), &["init", "-q"]);
    // Two more object-dir names for the /proc links, never the one the object's id takes.
    let names: Vec<&str> = ["ab", "cd", "ef"]
        .into_iter()
        .filter(|n| *n != &id[..2])
        .take(2)
        .collect();
    let script = format!(
        "set -e; cd .git/objects; ln -s {} {}; ln -s /proc/self {}; ln -s /proc/self/root {}; \
         mkdir -p pack; ln -s {} pack/evil.pack; ln -s /proc/self/pagemap pack/x.idx; \
         cd ../..; ln -s {} linked; echo done",
        objdir.display(),
        &id[..2],
        names[0],
        names[1],
        objdir.join(&id[2..]).display(),
        objdir.display()
    );
    let log = ws.outside("audit.jsonl");
    let o = run_audited(ws.path(), &t, &log, &script);
    let err = stderr(&o);
    assert_eq!(stdout(&o), "done\n", "{err}");
    assert!(!err.contains("leak:"), "a symlink was followed:\n{err}");
    let audit = std::fs::read_to_string(&log).expect("audit");
    let scan = scan_record(&audit);
    assert!(scan.contains("\"findings\":0"), "{scan}");
    assert!(!scan.contains("/proc"), "{scan}");
}

/// wait4 on one child: its exit status and peak RSS in KiB (the largest of it and its
/// waited-for descendants).
fn wait_rss(child: std::process::Child) -> (i32, i64, String) {
    let pid = child.id() as libc::pid_t;
    let mut err = child.stderr.expect("stderr piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).ok();
        s
    });
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child, with valid pointers to `status` and `ru`.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    (code, ru.ru_maxrss, reader.join().expect("stderr reader"))
}

fn run_rss(ws: &Path, t: &str, script: &str) -> (i32, i64, String) {
    let mut c = taskcell(
        ws,
        &[
            "run", "-p", "build", "--secret", "T=env:S", "--", "/bin/sh", "-c", script,
        ],
    );
    c.env("S", t).stdout(Stdio::null()).stderr(Stdio::piped());
    wait_rss(c.spawn().expect("spawn taskcell"))
}

/// A 2 GiB sparse git object (and a 2 GiB sparse file sorting first, in front of a
/// leak): the supervisor's peak memory stays what it is for a small object, and the
/// leak behind the big file is still found.
#[test]
fn leak_scan_memory_stays_flat_on_a_2_gib_sparse_git_object() {
    let t = token(40);
    let setup = |ws: &Ws| {
        git(ws.path(), &["init", "-q"]);
    };
    let obj = "mkdir -p .git/objects/ab .git/objects/pack";
    let small = Ws::new();
    setup(&small);
    let (code, base, err) = run_rss(
        small.path(),
        &t,
        &format!(
            "{obj}; truncate -s 1K .git/objects/ab/{0}; truncate -s 1K .git/objects/pack/pack-{1}.pack; \
             truncate -s 1K aaaa.bin; cat $T_FILE > zzzz.txt",
            "0".repeat(38),
            "1".repeat(40)
        ),
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("zzzz.txt:1: secret T (raw)"), "{err}");
    let big = Ws::new();
    setup(&big);
    let (code, peak, err) = run_rss(
        big.path(),
        &t,
        &format!(
            "{obj}; truncate -s 2G .git/objects/ab/{0}; \
             {{ printf 'PACK\\000\\000\\000\\002\\000\\000\\000\\001'; }} > .git/objects/pack/pack-{1}.pack; \
             truncate -s 2G .git/objects/pack/pack-{1}.pack; \
             truncate -s 2G aaaa.bin; cat $T_FILE > zzzz.txt",
            "0".repeat(38),
            "1".repeat(40)
        ),
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("zzzz.txt:1: secret T (raw)"), "{err}");
    eprintln!("peak RSS: {base} KiB with 1 KiB files, {peak} KiB with 2 GiB sparse files");
    assert!(
        peak < base + 64 * 1024,
        "the supervisor's peak RSS grew from {base} KiB to {peak} KiB"
    );
}

/// A decompression bomb (100 MiB of zeros in 100 KiB of gzip) cuts the scan short: with
/// on_leak = "warn" that is said; with on_leak = "fail" the successful run fails with
/// 123, and a leak found besides still means 120.
#[test]
fn leak_scan_cut_short_fails_closed_with_on_leak_fail() {
    let ws = Ws::new();
    let t = token(40);
    let bomb = "head -c 100000000 /dev/zero | gzip -c > bomb.gz";
    let log = ws.outside("audit.jsonl");
    let o = run_audited(ws.path(), &t, &log, bomb);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains("the leak scan did not search") && err.contains("bomb.gz"),
        "{err}"
    );
    let audit = std::fs::read_to_string(&log).expect("audit");
    let scan = scan_record(&audit);
    assert!(
        scan.contains("\"complete\":false") && scan.contains("bomb.gz"),
        "{scan}"
    );

    let o = run_failing_on_leak(ws.path(), &t, &format!("rm -f bomb.gz; {bomb}"));
    assert_eq!(o.status.code(), Some(123), "{}", stderr(&o));
    assert!(stderr(&o).contains("failing closed"), "{}", stderr(&o));

    // A leak hidden in the bomb's company is still a leak (120 wins).
    let o = run_failing_on_leak(
        ws.path(),
        &t,
        &format!("rm -f bomb.gz; {bomb}; cat $T_FILE | gzip > leak.gz"),
    );
    assert_eq!(o.status.code(), Some(120), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("leak.gz (gzip):1: secret T (raw)"),
        "{}",
        stderr(&o)
    );

    // A file the cell made unreadable cannot be searched either (as a plain user; root
    // reads it anyway, and finds the leak).
    let o = run_failing_on_leak(
        ws.path(),
        &t,
        "rm -f bomb.gz leak.gz; cat $T_FILE > hidden; chmod 000 hidden",
    );
    let want = if is_root() { 120 } else { 123 };
    assert_eq!(o.status.code(), Some(want), "{}", stderr(&o));
    let _ = std::fs::remove_file(ws.join("hidden"));
}
