//! The worker: the process that becomes the command. Drops every privilege, then execs.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::sys::signal::{SigSet, SigmaskHow};

use super::{report, Spec};

fn fail(err: &OwnedFd, code: i32, msg: &str) -> ! {
    report(err.as_raw_fd(), code, msg);
    // SAFETY: _exit without the launcher's atexit handlers.
    unsafe { libc::_exit(code) }
}

/// Drop every capability: bounding, ambient, inheritable, effective, permitted.
pub fn drop_all_caps() -> Result<(), String> {
    use caps::CapSet;
    // Dropping from the bounding set needs CAP_SETPCAP, which a cell's processes have in
    // their user namespace. Without namespaces (best effort, plain user) there is none to
    // drop from: no_new_privs then keeps file capabilities and setuid bits from adding any.
    let can_drop_bounding =
        caps::has_cap(None, CapSet::Effective, caps::Capability::CAP_SETPCAP).unwrap_or(true);
    for cap in caps::all() {
        if !can_drop_bounding {
            break;
        }
        if let Err(e) = caps::drop(None, CapSet::Bounding, cap) {
            return Err(format!("dropping {cap} from the bounding set: {e}"));
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(|e| format!("clearing ambient caps: {e}"))?;
    caps::clear(None, CapSet::Inheritable)
        .map_err(|e| format!("clearing inheritable caps: {e}"))?;
    caps::clear(None, CapSet::Effective).map_err(|e| format!("clearing effective caps: {e}"))?;
    caps::clear(None, CapSet::Permitted).map_err(|e| format!("clearing permitted caps: {e}"))?;
    Ok(())
}

fn resource(name: &str) -> Option<nix::sys::resource::Resource> {
    use nix::sys::resource::Resource as R;
    Some(match name {
        "as" => R::RLIMIT_AS,
        "core" => R::RLIMIT_CORE,
        "cpu" => R::RLIMIT_CPU,
        "data" => R::RLIMIT_DATA,
        "fsize" => R::RLIMIT_FSIZE,
        "memlock" => R::RLIMIT_MEMLOCK,
        "nofile" => R::RLIMIT_NOFILE,
        "nproc" => R::RLIMIT_NPROC,
        "stack" => R::RLIMIT_STACK,
        _ => return None,
    })
}

/// Entry point of the worker (forked by init). Never returns.
pub fn main(
    spec: &Spec,
    mut err: OwnedFd,
    tty: Option<&std::path::Path>,
    notify_sock: Option<OwnedFd>,
    detached: Option<OwnedFd>,
    landlock: Option<&super::confine::Landlocking>,
) -> ! {
    // Signals: nothing blocked, SIGPIPE back to default (Rust's runtime ignores it).
    let _ =
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    // SAFETY: resetting a disposition to the default has no handler to race with.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    if let Err(e) = super::secrets::redirect_stdio(spec.stdio) {
        fail(&err, 125, &e);
    }
    if let Some(fd) = spec.stdin {
        // SAFETY: dup2 between fds this process holds.
        if unsafe { libc::dup2(fd, 0) } < 0 {
            let e = std::io::Error::last_os_error();
            fail(&err, 125, &format!("connecting the stdin pipe: {e}"));
        }
    }
    // The command's leader dies with init (and init with the supervisor): without a PID
    // namespace (best effort) a killed taskcell leaves no command running. Kept across
    // execve. If init is gone already, the worker was re-parented: end now.
    // SAFETY: prctl and getppid with integer arguments only.
    unsafe {
        let parent = libc::getppid();
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        if !spec.namespaces && libc::getppid() != parent {
            libc::_exit(125);
        }
    }
    // A new session: no controlling terminal, so TIOCSTI on the caller's terminal fails.
    if let Err(e) = nix::unistd::setsid() {
        fail(&err, 125, &format!("setsid: {e}"));
    }
    // Interactive: the cell's own pseudo-terminal becomes the controlling terminal, so
    // keystrokes injected with TIOCSTI land in it and never in the user's terminal.
    if let Some(path) = tty {
        let attached = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
            .open(path)
            .and_then(|f| super::pty::attach(f.as_raw_fd()));
        if let Err(e) = attached {
            fail(
                &err,
                125,
                &format!("attaching the cell's terminal {}: {e}", path.display()),
            );
        }
    }
    for r in &spec.rlimits {
        let Some(res) = resource(r.name) else {
            fail(&err, 125, &format!("unknown rlimit {}", r.name));
        };
        if let Err(e) = nix::sys::resource::setrlimit(res, r.soft, r.hard) {
            fail(
                &err,
                125,
                &format!(
                    "setting rlimit {} to {}: {e} (lower the value in the profile)",
                    r.name, r.soft
                ),
            );
        }
    }
    if spec.rlimits.iter().any(|r| r.name == "fsize") {
        // A write past the file size limit then fails with EFBIG, which programs report
        // ("File too large"), instead of killing them with SIGXFSZ. Survives execve.
        // SAFETY: setting a disposition to SIG_IGN has no handler to race with.
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        }
    }
    if let Err(e) = nix::unistd::chdir(&spec.process.cwd) {
        fail(
            &err,
            125,
            &format!(
                "working directory {} is not available inside the cell: {e}",
                spec.process.cwd.display()
            ),
        );
    }
    // Every inherited fd but 0/1/2 is closed at execve (the error pipe stays usable until
    // then).
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on our own fds.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
    }
    let secret_env = match super::secrets::env_entries(&spec.secrets) {
        Ok(v) => v,
        Err(e) => fail(&err, 125, &e),
    };
    if let Err(e) = drop_all_caps() {
        fail(&err, 125, &e);
    }
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        fail(
            &err,
            125,
            &format!("no_new_privs: {}", std::io::Error::last_os_error()),
        );
    }
    // Landlock after no_new_privs (its rules were added by a thread of init meanwhile);
    // seccomp last, so that nothing but execve runs under it.
    if let Some(l) = landlock {
        if let Err(e) = l.restrict() {
            fail(&err, 125, &e);
        }
    }
    // The host's root leaves the cell's mount namespace while the above runs (see
    // rootfs::Detaching): nothing of the command runs before it is gone.
    if let Some(done) = &detached {
        if let Err(e) = super::rootfs::wait_detached(done) {
            fail(&err, 125, &e);
        }
    }
    drop(detached);
    // Secrets delivered by fd go to their declared numbers (close-on-exec clear), last:
    // a `dup2` onto a number the worker still used (init's Landlock ruleset, the detach
    // pipe) would have replaced it with the secret. The fds still needed are moved above
    // every declared number first.
    let mut notify_sock = notify_sock;
    let placed = {
        let mut keep: Vec<&mut OwnedFd> = vec![&mut err];
        keep.extend(notify_sock.as_mut());
        super::secrets::place_fds(&spec.secrets, &mut keep)
    };
    if let Err(e) = placed {
        fail(&err, 125, &e);
    }
    if let Some(programs) = &spec.seccomp {
        // The container tier: the program's listener goes to the supervisor (and
        // is closed here: nothing in the cell may answer its own connects).
        let listener = match notify_sock {
            Some(sock) => super::confine::apply_seccomp_with_listener(programs).and_then(|l| {
                super::fdpass::send(&sock, &[l.as_raw_fd()])
                    .map_err(|e| format!("passing the seccomp listener: {e}"))
            }),
            None => super::confine::apply_seccomp(programs),
        };
        if let Err(e) = listener {
            fail(&err, 125, &e);
        }
    }
    exec(spec, &err, secret_env)
}

fn cstr(s: &[u8]) -> CString {
    // Arguments and environment come from argv and the plan; an interior NUL cannot be
    // passed to execve, so it is cut there (argv from the OS cannot contain one).
    let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
    CString::new(&s[..end]).unwrap_or_default()
}

fn exec(spec: &Spec, err: &OwnedFd, secret_env: Vec<CString>) -> ! {
    let argv: Vec<CString> = spec
        .process
        .argv
        .iter()
        .map(|a| cstr(a.as_bytes()))
        .collect();
    let envp: Vec<CString> = spec
        .process
        .env
        .iter()
        .map(|(k, v)| cstr(format!("{k}={v}").as_bytes()))
        .chain(secret_env)
        .collect();
    let Some(cmd) = spec.process.argv.first() else {
        fail(err, 125, "no command given");
    };
    let path = spec
        .process
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or("/usr/local/bin:/usr/bin:/bin");
    let candidates: Vec<CString> = if cmd.contains('/') {
        vec![cstr(cmd.as_bytes())]
    } else {
        path.split(':')
            .filter(|d| !d.is_empty())
            .map(|d| cstr(Path::new(d).join(cmd).as_os_str().as_bytes()))
            .collect()
    };
    let mut saw_eacces = None;
    let mut last = nix::errno::Errno::ENOENT;
    for c in &candidates {
        let e = match nix::unistd::execve(c, &argv, &envp) {
            Err(e) => e,
            Ok(never) => match never {},
        };
        last = e;
        match e {
            nix::errno::Errno::EACCES | nix::errno::Errno::ENOEXEC | nix::errno::Errno::EISDIR => {
                saw_eacces.get_or_insert((c.clone(), e));
            }
            _ => {}
        }
    }
    if let Some((c, e)) = saw_eacces {
        fail(
            err,
            126,
            &format!(
                "{}: cannot execute inside the cell: {}",
                c.to_string_lossy(),
                e.desc()
            ),
        );
    }
    let where_ = if cmd.contains('/') {
        String::new()
    } else {
        format!(" (searched PATH={path} inside the cell)")
    };
    if last == nix::errno::Errno::ENOENT || last == nix::errno::Errno::ENOTDIR {
        fail(
            err,
            127,
            &format!(
                "{cmd}: command not found{where_}; is its directory in the profile's `read` paths?"
            ),
        );
    }
    fail(err, 126, &format!("{cmd}: cannot execute: {}", last.desc()))
}
