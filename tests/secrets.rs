//! Secrets end to end, in real cells: providers, deliveries, isolation, masking, the
//! leak scan, revocation. Every value is random per run, so a match on disk or in output
//! can only come from taskcell (or the command) putting it there.

mod common;
use common::*;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

/// A fresh random value: `tc` + 24 hex characters.
fn value() -> String {
    let mut b = [0u8; 12];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("reading /dev/urandom");
    let mut s = String::from("tc");
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
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

fn spawn(ws: &Path, args: &[&str], env: &[(&str, &str)], script: &str) -> Child {
    let mut a = vec!["run", "-p", "build"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["--", "/bin/sh", "-c", script]);
    let mut c = taskcell(ws, &a);
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning taskcell")
}

fn wait_for(p: &Path) {
    let t = Instant::now();
    while !p.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{} never appeared",
            p.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Split a value with `:` after each character, as the cell prints it (`sed 's/./&:/g'`):
/// a transformation the masker does not know, so the test can see what the cell read.
fn spread(v: &str) -> String {
    v.chars().map(|c| format!("{c}:")).collect()
}

/// Files under `dirs` (host side) that contain `needle`.
fn grep_host(dirs: &[&Path], needle: &str) -> Vec<String> {
    let mut args = vec!["-rlsF", "--devices=skip", "--", needle];
    let ds: Vec<String> = dirs
        .iter()
        .filter(|d| d.exists())
        .map(|d| d.display().to_string())
        .collect();
    args.extend(ds.iter().map(|s| s.as_str()));
    let o = std::process::Command::new("grep")
        .args(&args)
        .output()
        .expect("grep");
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

// ---- providers -------------------------------------------------------------------

#[test]
fn command_provider_file_delivery() {
    let ws = Ws::new();
    let v = value();
    let spec = format!("T=cmd:printf '%s\\n' {v}");
    let o = run(
        ws.path(),
        &["--secret", &spec],
        &[],
        "echo \"path=$T_FILE\"; sed 's/./&:/g' \"$T_FILE\"; echo; stat -c '%a %u' \"$T_FILE\"; stat -c '%a' /run/secrets; \
         grep ' /run/secrets ' /proc/self/mounts | cut -d' ' -f4; (echo x > \"$T_FILE\") 2>/dev/null && echo WRITABLE; \
         (touch /run/secrets/new) 2>/dev/null && echo CREATABLE; true",
    );
    let out = ok(&o);
    let uid = nix::unistd::getuid().as_raw();
    assert!(out.contains("path=/run/secrets/T\n"), "{out}");
    // The trailing newline from printf is trimmed.
    assert!(out.contains(&format!("{}\n", spread(&v))), "{out}");
    assert!(out.contains(&format!("400 {uid}\n500\n")), "{out}");
    let opts = out.lines().find(|l| l.starts_with("ro,")).unwrap_or("");
    for o in ["ro", "nosuid", "nodev", "noexec"] {
        assert!(opts.split(',').any(|x| x == o), "{o} missing in {opts:?}");
    }
    assert!(
        !out.contains("WRITABLE") && !out.contains("CREATABLE"),
        "{out}"
    );
}

#[test]
fn env_provider_fd_delivery_and_source_var_hidden() {
    let ws = Ws::new();
    let v = value();
    let o = run(
        ws.path(),
        &[
            "--secret",
            "T=env:SRC_TOKEN",
            "--secret-opt",
            "T.deliver=fd",
            "--secret-opt",
            "T.fd=7",
            "-e",
            "SRC_TOKEN",
        ],
        &[("SRC_TOKEN", &v)],
        "echo \"fd=$T_FD\"; sed 's/./&:/g' <&7; echo; readlink /proc/self/fd/7; \
         echo \"src=${SRC_TOKEN:-unset}\"; test -e /run/secrets && echo HAS_RUN_SECRETS; \
         (echo x >&7) 2>/dev/null && echo WRITABLE; sed 's/./&:/g' /proc/self/fd/7; echo",
    );
    let out = ok(&o);
    assert!(out.contains("fd=7\n"), "{out}");
    assert!(out.contains(&format!("{}\n", spread(&v))), "{out}");
    assert!(out.contains("/memfd:taskcell-secret-T"), "{out}");
    // Even when the profile/CLI passes the source variable, it does not reach the cell.
    assert!(out.contains("src=unset"), "{out}");
    assert!(
        !out.contains("HAS_RUN_SECRETS") && !out.contains("WRITABLE"),
        "{out}"
    );
}

#[test]
fn file_provider_env_delivery() {
    let ws = Ws::new();
    let src = tempfile::tempdir().expect("tempdir");
    let v = value();
    let f = src.path().join("token");
    std::fs::write(&f, format!("{v}\n")).expect("write");
    let spec = format!("T=file:{}", f.display());
    let o = run(
        ws.path(),
        &["--secret", &spec, "--secret-opt", "T.deliver=env"],
        &[],
        "printf '%s' \"$T\" | sed 's/./&:/g'; echo; test -e /run/secrets && echo HAS_RUN_SECRETS; true",
    );
    let out = ok(&o);
    assert!(out.contains(&format!("{}\n", spread(&v))), "{out}");
    assert!(!out.contains("HAS_RUN_SECRETS"), "{out}");
    assert!(
        stderr(&o).contains("weakest") || stderr(&o).contains("WEAKEST"),
        "env delivery is flagged: {}",
        stderr(&o)
    );
}

#[test]
fn generate_provider() {
    let ws = Ws::new();
    let o = run(
        ws.path(),
        &["--secret", "G=generate:16"],
        &[],
        "wc -c < \"$G_FILE\"; tr -d '0-9a-f' < \"$G_FILE\" | wc -c",
    );
    assert_eq!(ok(&o), "32\n0\n");
}

#[test]
fn profile_declared_secret() {
    let ws = Ws::new();
    let v = value();
    let prof = ws.join("p.toml");
    std::fs::write(
        &prof,
        "extends = \"build\"\n[secrets.API_KEY]\nfrom = { env = \"K\" }\ndeliver = \"fd\"\nfd = 5\n",
    )
    .expect("write profile");
    let mut c = taskcell(
        ws.path(),
        &[
            "run",
            "-p",
            prof.to_str().expect("utf8"),
            "--",
            "/bin/sh",
            "-c",
            "echo $API_KEY_FD; sed 's/./&:/g' <&5; echo",
        ],
    );
    let o = c.env("K", &v).output().expect("taskcell");
    assert_eq!(ok(&o), format!("5\n{}\n", spread(&v)));
}

#[test]
fn failing_provider_starts_nothing_and_names_the_secret() {
    let ws = Ws::new();
    let marker = ws.join("started");
    let rv = ws.join("revoked");
    let revoke = format!(
        "T_A.revoke=sh -c 'cat >/dev/null; echo x >> {}'",
        rv.display()
    );
    let o = run(
        ws.path(),
        &[
            "--secret",
            "T_A=generate:16",
            "--secret-opt",
            &revoke,
            "--secret",
            "T_B=cmd:sh -c 'echo provider-says-no >&2; exit 3'",
        ],
        &[],
        &format!("touch {}", marker.display()),
    );
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("secret T_B: command"), "{err}");
    assert!(
        err.contains("provider-says-no"),
        "provider stderr shown: {err}"
    );
    assert!(!marker.exists(), "the command ran");
    // The secret fetched before the failure was revoked.
    assert_eq!(
        std::fs::read_to_string(&rv).unwrap_or_default(),
        "x\n",
        "{err}"
    );
    let o = run(ws.path(), &["--secret", "T=env:NOPE_NOT_SET"], &[], "true");
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("secret T: launcher's $NOPE_NOT_SET"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn short_secret_refused_unless_unmasked() {
    let ws = Ws::new();
    let o = run(ws.path(), &["--secret", "S=env:S"], &[("S", "abc")], "true");
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("shorter than 6 bytes"),
        "{}",
        stderr(&o)
    );
    let o = run(
        ws.path(),
        &["--secret", "S=env:S", "--secret-opt", "S.mask=false"],
        &[("S", "abc")],
        "cat $S_FILE",
    );
    assert_eq!(ok(&o), "abc");
}

#[test]
fn bad_names_refused() {
    let ws = Ws::new();
    let o = run(ws.path(), &["--secret", "lower=env:X"], &[], "true");
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("[A-Z_][A-Z0-9_]*"), "{}", stderr(&o));
}

// ---- isolation -------------------------------------------------------------------

#[test]
fn value_is_nowhere_else_inside() {
    let ws = Ws::new();
    let v = value();
    let script = "v=$(cat \"$T_FILE\"); \
        env | grep -F \"$v\" && echo IN_ENV; \
        grep -rlsF --devices=skip \"$v\" /tmp /dev/shm /run \"$HOME\" \"$PWD\" | grep -vx /run/secrets/T; \
        grep -lsF \"$v\" /proc/[0-9]*/environ; echo checked";
    let o = run(ws.path(), &["--secret", "T=env:S"], &[("S", &v)], script);
    assert_eq!(ok(&o), "checked\n");
    let script = "v=$(cat <&9); \
        env | grep -F \"$v\" && echo IN_ENV; \
        grep -rlsF --devices=skip \"$v\" /tmp /dev/shm /run \"$HOME\" \"$PWD\"; \
        grep -lsF \"$v\" /proc/[0-9]*/environ; echo checked";
    let o = run(
        ws.path(),
        &[
            "--secret",
            "T=env:S",
            "--secret-opt",
            "T.deliver=fd",
            "--secret-opt",
            "T.fd=9",
        ],
        &[("S", &v)],
        script,
    );
    assert_eq!(ok(&o), "checked\n");
}

/// A secret at each low fd number in turn: whatever numbers the worker's own fds have
/// (the detach pipe, init's Landlock ruleset, the error pipe), placing the secret replaces
/// none of them (seen: a secret at fd 9 was read back as the staging root's detach
/// result, "detaching the staging root: UnknownErrno").
#[test]
fn an_fd_secret_at_any_low_number_leaves_the_workers_own_fds_alone() {
    let ws = Ws::new();
    for fd in 3..=24 {
        let v = format!("fd{fd}-{}", value());
        let (a, b, c) = (
            "T=env:S".to_string(),
            "T.deliver=fd".to_string(),
            format!("T.fd={fd}"),
        );
        // The fd holds the secret (its value starts with fdN-); nothing is printed.
        let script = format!(
            "x=$(cat /proc/$$/fd/{fd}); case $x in fd{fd}-*) echo checked;; *) echo wrong;; esac"
        );
        let o = run(
            ws.path(),
            &["--secret", &a, "--secret-opt", &b, "--secret-opt", &c],
            &[("S", &v)],
            &script,
        );
        assert_eq!(ok(&o), "checked\n", "a secret at fd {fd}");
    }
}

#[test]
fn no_copy_on_host_disk_and_other_cell_cannot_read_it() {
    let ws = Ws::new();
    let v = value();
    let ready = ws.join("ready");
    let go = ws.join("go");
    let script = format!(
        "cat \"$T_FILE\" >/dev/null; touch {}; while [ ! -e {} ]; do sleep 0.05; done; echo done",
        ready.display(),
        go.display()
    );
    let spec = format!("T=cmd:printf %s {v}");
    let a = spawn(ws.path(), &["--secret", &spec], &[], &script);
    wait_for(&ready);

    let tmpdir = std::env::var("TMPDIR").unwrap_or_else(|_| "/tmp".into());
    let dirs = [
        Path::new("/tmp"),
        Path::new("/dev/shm"),
        Path::new("/run"),
        Path::new(&tmpdir),
        ws.path(),
    ];
    assert_eq!(grep_host(&dirs, &v), Vec::<String>::new(), "during the run");

    // A second cell, running at the same time, searches everything it can see.
    let ws2 = Ws::new();
    // The value is in this script (argv, not environ) so that the cell can search for it.
    let script = format!(
        "V={v}; test -e /run/secrets && echo HAS_RUN_SECRETS; \
         grep -rlsF --devices=skip \"$V\" /tmp /dev/shm \"$HOME\" \"$PWD\"; \
         for p in /proc/[0-9]*; do grep -lsF \"$V\" $p/environ; ls -l $p/fd/ 2>/dev/null | grep -q taskcell-secret && echo FD $p; done; \
         echo searched"
    );
    let o = run(ws2.path(), &[], &[], &script);
    let out = ok(&o);
    assert!(
        !out.contains("HAS_RUN_SECRETS") && !out.contains("FD "),
        "{out}"
    );
    assert_eq!(out, "searched\n", "found in the other cell");

    std::fs::write(&go, "").expect("go");
    let o = a.wait_with_output().expect("wait");
    assert_eq!(ok(&o), "done\n");
    assert_eq!(grep_host(&dirs, &v), Vec::<String>::new(), "after the run");
}

// ---- masking ---------------------------------------------------------------------

#[test]
fn masking_of_every_encoding_end_to_end() {
    let ws = Ws::new();
    let v = format!("{}/\"q\\+&=?", value());
    let script = r#"/usr/bin/python3 - "$T_FILE" <<'EOF'
import sys, base64, json, urllib.parse, os
v = open(sys.argv[1], 'rb').read()
out = [v, base64.b64encode(v), base64.b64encode(b'x' + v), base64.b64encode(b'xy' + v),
       base64.urlsafe_b64encode(v), v.hex().encode(), v.hex().upper().encode(),
       urllib.parse.quote(v, safe='').encode(), json.dumps(v.decode()).encode(),
       v.replace(b'\\', b'\\\\').replace(b'"', b'\\"')]
for o in out:
    sys.stdout.buffer.write(b'<' + o + b'>\n')
sys.stdout.flush()
# One value in two writes (two reads for the relay, most of the time).
os.write(1, b'split<' + v[:7]); os.write(1, v[7:] + b'>\n')
os.write(2, b'err<' + v + b'>\n')
EOF"#;
    let o = run(ws.path(), &["--secret", "T=env:S"], &[("S", &v)], script);
    let out = ok(&o);
    assert_eq!(out.lines().count(), 11, "{out}");
    for line in out.lines() {
        assert!(line.contains("[taskcell:T]"), "not masked: {line}");
        assert!(!line.contains(&v[..20]), "raw value in {line}");
    }
    assert!(out.contains("split<[taskcell:T]>\n"), "{out}");
    assert!(
        stderr(&o).contains("err<[taskcell:T]>"),
        "stderr: {}",
        stderr(&o)
    );
}

/// `script` in a build cell with secret T (value `v`, from the environment, delivered as
/// a file) and an audit log outside the workspace: the output and the log's path.
fn run_audited(ws: &Ws, v: &str, script: &str) -> (Output, std::path::PathBuf) {
    let log = ws.outside("audit.jsonl");
    let o = run(
        ws.path(),
        &[
            "--secret",
            "T=env:S",
            "--audit-log",
            log.to_str().expect("utf8"),
        ],
        &[("S", v)],
        script,
    );
    (o, log)
}

#[test]
fn masked_counts_and_exit_code_kept_in_audit() {
    let ws = Ws::new();
    let v = value();
    let (o, log) = run_audited(
        &ws,
        &v,
        "cat $T_FILE; echo; cat $T_FILE; printf 'no newline prompt> '; exit 7",
    );
    assert_eq!(o.status.code(), Some(7));
    assert_eq!(stdout(&o), "[taskcell:T]\n[taskcell:T]no newline prompt> ");
    let audit = std::fs::read_to_string(&log).expect("audit");
    assert!(!audit.contains(&v), "value in the audit log");
    let delivered = audit
        .lines()
        .find(|l| l.contains("\"secret_delivered\""))
        .expect("secret_delivered line");
    for want in [
        "\"name\":\"T\"",
        "\"provider\":\"env\"",
        "\"delivery\":\"file\"",
    ] {
        assert!(delivered.contains(want), "{delivered}");
    }
    let masked = audit
        .lines()
        .find(|l| l.contains("\"secret_masked\""))
        .expect("secret_masked line");
    assert!(masked.contains("\"count\":2"), "{masked}");
}

#[test]
fn hundred_megabytes_of_binary_output_pass_byte_exact() {
    let ws = Ws::new();
    let big = ws.join("big.bin");
    {
        let mut data = vec![0u8; 100 * 1000 * 1000];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut data))
            .expect("random data");
        std::fs::write(&big, &data).expect("write big file");
    }
    let o = run(
        ws.path(),
        &["--secret", "G=generate:16"],
        &[],
        &format!("cat {}", big.display()),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let want = std::fs::read(&big).expect("read big");
    assert_eq!(o.stdout.len(), want.len());
    assert!(o.stdout == want, "output differs from the file");
}

// ---- leak scan -------------------------------------------------------------------

#[test]
fn leak_scan_finds_a_file_and_a_git_commit_and_fail_fails() {
    let ws = Ws::new();
    let v = value();
    let git = if Path::new("/usr/bin/git").exists() {
        "/usr/bin/git"
    } else {
        "/usr/local/bin/git"
    };
    let st = std::process::Command::new(git)
        .args(["init", "-q"])
        .current_dir(ws.path())
        .status()
        .expect("git init");
    assert!(st.success());
    let log = ws.outside("audit.jsonl");
    let script = format!(
        "printf 'a\\nb\\n%s\\n' \"$(cat $T_FILE)\" > notes.txt; \
         cat $T_FILE > committed.txt; {git} add committed.txt && \
         {git} -c user.name=t -c user.email=t@t -c commit.gpgsign=false commit -qm leak && rm committed.txt && echo committed"
    );
    let o = run(
        ws.path(),
        &[
            "--secret",
            "T=env:S",
            "--audit-log",
            log.to_str().expect("utf8"),
        ],
        &[("S", &v)],
        &script,
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "committed\n");
    let err = stderr(&o);
    assert!(
        err.contains("taskcell: leak: ") && err.contains("notes.txt:3: secret T (raw)"),
        "{err}"
    );
    assert!(err.contains("in git object"), "{err}");
    assert!(!err.contains(&v));
    let audit = std::fs::read_to_string(&log).expect("audit");
    assert!(audit.contains("\"secret_leak\""), "{audit}");
    assert!(!audit.contains(&v));

    // on_leak = "fail": the successful command's run fails with 120.
    let o = run(
        ws.path(),
        &["--secret", "T=env:S", "--secret-opt", "T.on_leak=fail"],
        &[("S", &v)],
        "cat $T_FILE > again.txt",
    );
    assert_eq!(o.status.code(), Some(120), "{}", stderr(&o));
    // A command that failed keeps its own code.
    let o = run(
        ws.path(),
        &["--secret", "T=env:S", "--secret-opt", "T.on_leak=fail"],
        &[("S", &v)],
        "cat $T_FILE > again2.txt; exit 4",
    );
    assert_eq!(o.status.code(), Some(4));
    // Nothing written: no finding, exit 0.
    let o = run(
        ws.path(),
        &["--secret", "T=env:S", "--secret-opt", "T.on_leak=fail"],
        &[("S", &v)],
        "echo clean > clean.txt",
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stderr(&o).contains("leak:"));
}

// ---- revocation and lifetime -----------------------------------------------------

fn revoke_args(ws: &Ws) -> (String, std::path::PathBuf) {
    let rv = ws.join("revoked");
    // The revoke command checks it got the value on stdin, and records the session.
    (
        format!(
            "T.revoke=sh -c 'v=$(cat); [ \"$v\" = \"$EXPECT\" ] && echo \"ok {{session}} {{name}}\" >> {}'",
            rv.display()
        ),
        rv,
    )
}

fn revoked(rv: &Path) -> String {
    std::fs::read_to_string(rv).unwrap_or_default()
}

#[test]
fn revocation_after_normal_exit() {
    let ws = Ws::new();
    let v = value();
    let (opt, rv) = revoke_args(&ws);
    let log = ws.outside("audit.jsonl");
    let o = run(
        ws.path(),
        &[
            "--secret",
            "T=env:S",
            "--secret-opt",
            &opt,
            "--audit-log",
            log.to_str().expect("utf8"),
        ],
        &[("S", &v), ("EXPECT", &v)],
        "exit 3",
    );
    assert_eq!(o.status.code(), Some(3));
    let r = revoked(&rv);
    assert_eq!(r.lines().count(), 1, "revoked once: {r:?} {}", stderr(&o));
    assert!(r.starts_with("ok ") && r.trim_end().ends_with(" T"), "{r}");
    let audit = std::fs::read_to_string(&log).expect("audit");
    let line = audit
        .lines()
        .find(|l| l.contains("\"secret_revoked\""))
        .expect("secret_revoked");
    assert!(line.contains("\"ok\":true"), "{line}");
    // {session} is the audit session id.
    let session = r.split_whitespace().nth(1).expect("session");
    assert!(
        line.contains(&format!("\"session\":\"{session}\"")),
        "{line}"
    );
}

#[test]
fn revocation_failure_is_shown() {
    let ws = Ws::new();
    let o = run(
        ws.path(),
        &[
            "--secret",
            "T=generate:16",
            "--secret-opt",
            "T.revoke=sh -c 'echo issuer-unreachable >&2; exit 9'",
        ],
        &[],
        "true",
    );
    assert_eq!(o.status.code(), Some(0));
    let err = stderr(&o);
    assert!(
        err.contains("revoking secret T failed") && err.contains("issuer-unreachable"),
        "{err}"
    );
}

#[test]
fn revocation_after_timeout_and_ttl() {
    let ws = Ws::new();
    let v = value();
    let (opt, rv) = revoke_args(&ws);
    let o = run(
        ws.path(),
        &[
            "--secret",
            "T=env:S",
            "--secret-opt",
            &opt,
            "--timeout",
            "1s",
        ],
        &[("S", &v), ("EXPECT", &v)],
        "sleep 60",
    );
    assert_eq!(o.status.code(), Some(124), "{}", stderr(&o));
    assert_eq!(revoked(&rv).lines().count(), 1, "{}", stderr(&o));
    // ttl bounds the cell even without --timeout.
    let o = run(
        ws.path(),
        &[
            "--secret",
            "T=env:S",
            "--secret-opt",
            &opt,
            "--secret-opt",
            "T.ttl=1s",
        ],
        &[("S", &v), ("EXPECT", &v)],
        "sleep 60",
    );
    assert_eq!(o.status.code(), Some(124), "{}", stderr(&o));
    assert_eq!(revoked(&rv).lines().count(), 2, "{}", stderr(&o));
}

fn revocation_after_signal_to_taskcell(sig: nix::sys::signal::Signal) {
    let ws = Ws::new();
    let v = value();
    let (opt, rv) = revoke_args(&ws);
    let ready = ws.join("ready");
    let script = format!("touch {}; exec sleep 60", ready.display());
    let child = spawn(
        ws.path(),
        &["--secret", "T=env:S", "--secret-opt", &opt],
        &[("S", &v), ("EXPECT", &v)],
        &script,
    );
    wait_for(&ready);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).expect("kill");
    let o = child.wait_with_output().expect("wait");
    assert_eq!(o.status.code(), Some(128 + sig as i32), "{}", stderr(&o));
    assert_eq!(revoked(&rv).lines().count(), 1, "{}", stderr(&o));
}

#[test]
fn revocation_after_sigint_to_taskcell() {
    revocation_after_signal_to_taskcell(nix::sys::signal::Signal::SIGINT);
}

#[test]
fn revocation_after_sigterm_to_taskcell() {
    revocation_after_signal_to_taskcell(nix::sys::signal::Signal::SIGTERM);
}

#[test]
fn several_fd_secrets_at_low_numbers() {
    let ws = Ws::new();
    let (a, b) = (value(), value());
    let o = run(
        ws.path(),
        &[
            "--secret",
            "A=env:SA",
            "--secret",
            "B=env:SB",
            "--secret-opt",
            "A.deliver=fd",
            "--secret-opt",
            "A.fd=4",
            "--secret-opt",
            "B.deliver=fd",
            "--secret-opt",
            "B.fd=3",
        ],
        &[("SA", &a), ("SB", &b)],
        "sed 's/./&:/g' <&4; echo; sed 's/./&:/g' <&3; echo; ls /proc/self/fd | tr '\\n' ' '",
    );
    let out = ok(&o);
    assert!(
        out.starts_with(&format!("{}\n{}\n", spread(&a), spread(&b))),
        "{out}"
    );
    // Nothing but stdio, the two secrets and ls's own directory fd.
    assert_eq!(out.lines().nth(2), Some("0 1 2 3 4 5 "), "{out}");
}

#[test]
fn held_back_prefix_is_shown_while_the_command_waits() {
    // The command prints the first bytes of the secret (which the masker must hold back:
    // they could start a match) and then waits for input that only comes once the test
    // has seen them. Without the idle flush this would hang until the wait below fails.
    let ws = Ws::new();
    let v = value();
    let go = ws.join("go");
    let script = format!(
        "printf '%s' \"$(head -c 6 $T_FILE)\"; while [ ! -e {} ]; do sleep 0.05; done; echo; echo end",
        go.display()
    );
    let mut child = spawn(ws.path(), &["--secret", "T=env:S"], &[("S", &v)], &script);
    let mut out = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        loop {
            match out.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut seen = Vec::new();
    while !seen.ends_with(&v.as_bytes()[..6]) {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(chunk) => seen.extend_from_slice(&chunk),
            Err(e) => {
                let _ = child.kill();
                panic!("the held-back prefix was never shown ({e}); got {seen:?}");
            }
        }
    }
    std::fs::write(&go, "").expect("go");
    let mut rest = Vec::new();
    while let Ok(chunk) = rx.recv_timeout(Duration::from_secs(60)) {
        rest.extend_from_slice(&chunk);
    }
    reader.join().expect("reader");
    assert_eq!(String::from_utf8_lossy(&rest), "\nend\n");
    assert!(child.wait().expect("wait").success());
}

/// The leak scan runs only when nothing of the cell is left: a process the command left
/// behind, still writing the secret into new files after the command has exited, is
/// killed before the scan starts, so every file it wrote is one the scan found (none
/// appears after the scan, and none after taskcell has returned).
#[test]
fn the_scan_sees_the_last_write_of_a_process_the_command_left_running() {
    let ws = Ws::new();
    let v = value();
    let (o, log) = run_audited(
        &ws,
        &v,
        "(setsid sh -c 'i=0; while [ $i -lt 400 ]; do i=$((i+1)); cat \"$T_FILE\" > leak-$i; sleep 0.005; done' \
         </dev/null >/dev/null 2>&1 &); while [ ! -e leak-3 ]; do sleep 0.01; done; exit 0",
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // Files that hold the value (the one the writer was killed in may be empty).
    let on_disk = || {
        std::fs::read_dir(ws.path())
            .expect("workspace")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("leak-"))
            .filter(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains(&v)))
            .count()
    };
    let first = on_disk();
    assert!(first >= 2, "the writer did not run: {first} files");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        on_disk(),
        first,
        "the cell went on writing after taskcell returned"
    );
    let audit = std::fs::read_to_string(&log).expect("audit");
    let scan: serde_json::Value = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|r| r["event"] == "secret_scan")
        .expect("secret_scan record");
    assert_eq!(
        scan["findings"].as_u64(),
        Some(first as u64),
        "files with the secret on disk: {first}, found by the scan: {scan}"
    );
}
