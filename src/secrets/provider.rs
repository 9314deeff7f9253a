//! Providers: fetch a secret's value just in time, into a zeroized buffer.
//!
//! `command` runs the argv without a shell, stdin closed, stderr shown to the user, with
//! a time limit; its stdout is the value. `file` reads a file, `env` the launcher's
//! variable, `generate` makes random bytes (hex). One trailing newline (`\n` or `\r\n`)
//! is trimmed from `command` and `file` values. Errors name the secret and the provider,
//! never the value.

use std::ffi::OsString;
use std::fmt;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStringExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use crate::plan::secrets::MAX_VALUE;
use crate::plan::secrets::{Provider, SecretPlan};

/// A secret's value. Zeroized on drop; `Debug` never shows it.
pub struct Value(Zeroizing<Vec<u8>>);

impl Value {
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Value([redacted])")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("secret {name}: {provider}: {msg}")]
pub struct FetchError {
    pub name: String,
    pub provider: String,
    pub msg: String,
}

/// Fetch `s`'s value. `env` looks up the launcher's environment.
pub fn fetch(s: &SecretPlan, env: &dyn Fn(&str) -> Option<OsString>) -> Result<Value, FetchError> {
    fetch_in(s, env, &[])
}

/// [`fetch`]; a `file:` source is refused when it is a symlink, not a regular file, or
/// inside one of `cell_writable` (host paths a cell can write).
pub fn fetch_in(
    s: &SecretPlan,
    env: &dyn Fn(&str) -> Option<OsString>,
    cell_writable: &[std::path::PathBuf],
) -> Result<Value, FetchError> {
    let fail = |msg: String| FetchError {
        name: s.name.clone(),
        provider: s.provider.describe(),
        msg,
    };
    let mut v = match &s.provider {
        Provider::Command { argv } => run_command(argv, s.timeout).map_err(fail)?,
        Provider::Env { var } => match env(var) {
            Some(v) => Zeroizing::new(v.into_vec()),
            None => {
                return Err(fail(format!(
                    "the variable {var} is not set in taskcell's environment (export it, or use another provider)"
                )))
            }
        },
        Provider::File { path } => {
            let mut buf = Zeroizing::new(vec![0u8; MAX_VALUE + 1]);
            let mut f = crate::hostfile::open(
                path,
                crate::hostfile::Mode::Read,
                cell_writable,
                "the file",
            )
            .map_err(fail)?;
            let n = read_all(&mut f, &mut buf).map_err(|e| fail(format!("reading: {e}")))?;
            buf.truncate(n);
            trim_newline(&mut buf);
            buf
        }
        Provider::Generate { bytes } => {
            let mut raw = Zeroizing::new(vec![0u8; *bytes]);
            getrandom(&mut raw).map_err(|e| fail(format!("getrandom: {e}")))?;
            let mut hex = Zeroizing::new(Vec::with_capacity(bytes * 2));
            for b in raw.iter() {
                hex.push(HEX[(b >> 4) as usize]);
                hex.push(HEX[(b & 15) as usize]);
            }
            hex
        }
    };
    if v.len() > MAX_VALUE {
        v.truncate(0);
        return Err(fail(format!(
            "the value is larger than {} KiB (taskcell's limit per secret)",
            MAX_VALUE / 1024
        )));
    }
    if v.is_empty() {
        return Err(fail("the value is empty".into()));
    }
    Ok(Value(v))
}

const HEX: &[u8; 16] = b"0123456789abcdef";

pub(crate) fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    let mut off = 0;
    while off < buf.len() {
        // SAFETY: getrandom writes at most len bytes into the buffer we own.
        let n = unsafe { libc::getrandom(buf[off..].as_mut_ptr().cast(), buf.len() - off, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        off += n as usize;
    }
    Ok(())
}

/// Read into the pre-sized `buf` (never reallocated, so no copy is left behind).
fn read_all(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Trim one trailing `\n` or `\r\n`.
pub fn trim_newline(v: &mut Zeroizing<Vec<u8>>) {
    if v.last() == Some(&b'\n') {
        v.pop();
        if v.last() == Some(&b'\r') {
            v.pop();
        }
    }
}

/// A terminating signal is pending for taskcell: the message for the fetch it stops.
fn interrupted() -> Option<String> {
    crate::signals::pending().map(|sig| {
        format!(
            "stopped: taskcell got {} while it ran (the provider was killed)",
            crate::signals::name(sig)
        )
    })
}

fn run_command(argv: &[String], timeout: Duration) -> Result<Zeroizing<Vec<u8>>, String> {
    let Some(prog) = argv.first() else {
        return Err("empty command".into());
    };
    let mut child = Command::new(prog)
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start it: {e} (is {prog} installed and in PATH?)"))?;
    let deadline = Instant::now() + timeout;
    let mut buf = Zeroizing::new(vec![0u8; MAX_VALUE + 1]);
    let mut n = 0usize;
    let mut out = child.stdout.take();
    let mut timed_out = false;
    while let Some(o) = out.as_mut() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            timed_out = true;
            break;
        }
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        // A terminating signal for taskcell (readable signalfd, not read here: the
        // supervisor takes it) ends the fetch: the provider is killed.
        // SAFETY: the signalfd is open for the whole process (a static).
        let sigfd = crate::signals::pending_fd().map(|fd| unsafe { BorrowedFd::borrow_raw(fd) });
        let mut fds = vec![nix::poll::PollFd::new(
            o.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        if let Some(sfd) = sigfd {
            fds.push(nix::poll::PollFd::new(sfd, nix::poll::PollFlags::POLLIN));
        }
        match nix::poll::poll(
            &mut fds,
            nix::poll::PollTimeout::try_from(ms).unwrap_or(nix::poll::PollTimeout::MAX),
        ) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("waiting for its output: {e}")),
        }
        if let Some(sig) = interrupted() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(sig);
        }
        if fds[0].revents().is_none_or(|r| r.is_empty()) {
            continue;
        }
        if n >= buf.len() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "printed more than {} KiB (taskcell's limit per secret)",
                MAX_VALUE / 1024
            ));
        }
        match o.read(&mut buf[n..]) {
            Ok(0) => out = None,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading its output: {e}")),
        }
    }
    drop(out);
    // Wait for the exit within what is left of the time limit.
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if !timed_out && Instant::now() < deadline => {
                if let Some(sig) = interrupted() {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(sig);
                }
                std::thread::sleep(Duration::from_millis(5))
            }
            Ok(None) => {
                timed_out = true;
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Err(e) => return Err(format!("waiting for it: {e}")),
        }
    };
    if timed_out {
        return Err(format!(
            "did not finish within {}s (raise the secret's `timeout`)",
            timeout.as_secs_f64()
        ));
    }
    match status {
        Some(st) if st.success() => {}
        Some(st) => return Err(format!("failed ({st}); its stderr is above")),
        None => return Err("ended without a status".into()),
    }
    buf.truncate(n);
    trim_newline(&mut buf);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::secrets::OnLeak;
    use crate::plan::secrets::{Delivery, DEFAULT_TIMEOUT};

    fn plan(p: Provider) -> SecretPlan {
        SecretPlan {
            name: "T".into(),
            provider: p,
            delivery: Delivery::Env { var: "T".into() },
            revoke: None,
            revoke_needs_value: true,
            ttl: None,
            timeout: DEFAULT_TIMEOUT,
            mask: true,
            on_leak: OnLeak::Warn,
            inject: None,
        }
    }

    fn noenv(_: &str) -> Option<OsString> {
        None
    }

    #[test]
    fn command_value_with_newline_trimmed() {
        let v = fetch(
            &plan(Provider::Command {
                argv: vec!["printf".into(), "abc-def\\n".into()],
            }),
            &noenv,
        )
        .unwrap();
        assert_eq!(v.bytes(), b"abc-def");
        assert_eq!(format!("{v:?}"), "Value([redacted])");
    }

    #[test]
    fn failing_command_names_secret_and_provider() {
        let e = fetch(
            &plan(Provider::Command {
                argv: vec!["false".into()],
            }),
            &noenv,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("secret T: command [\"false\"]: failed"),
            "{e}"
        );
        let e = fetch(
            &plan(Provider::Command {
                argv: vec!["/nonexistent/tool".into()],
            }),
            &noenv,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("cannot start it"), "{e}");
    }

    #[test]
    fn command_timeout() {
        let mut p = plan(Provider::Command {
            argv: vec!["sleep".into(), "5".into()],
        });
        p.timeout = Duration::from_millis(200);
        let e = fetch(&p, &noenv).unwrap_err().to_string();
        assert!(e.contains("did not finish"), "{e}");
    }

    #[test]
    fn env_and_generate() {
        let v = fetch(&plan(Provider::Env { var: "X".into() }), &|k| {
            (k == "X").then(|| OsString::from("value-x"))
        })
        .unwrap();
        assert_eq!(v.bytes(), b"value-x");
        assert!(fetch(&plan(Provider::Env { var: "X".into() }), &noenv).is_err());
        let a = fetch(&plan(Provider::Generate { bytes: 16 }), &noenv).unwrap();
        let b = fetch(&plan(Provider::Generate { bytes: 16 }), &noenv).unwrap();
        assert_eq!(a.bytes().len(), 32);
        assert!(a.bytes().iter().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.bytes(), b.bytes());
    }

    #[test]
    fn empty_value_refused() {
        let e = fetch(
            &plan(Provider::Command {
                argv: vec!["true".into()],
            }),
            &noenv,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("empty"), "{e}");
    }
}
