//! Secrets inside the cell: init fills /run/secrets from the inherited memfds, the worker
//! places `fd` secrets, adds `env` ones to the environment and points stdout/stderr at the
//! relay pipes. The memfds are made by the supervisor (`secrets::deliver`); what goes
//! where is in the Spec ([`CellSecret`]).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use crate::plan::secrets::{MAX_VALUE, SECRETS_DIR};
use crate::spec::{CellSecret, How};

/// Read a memfd's whole content without moving its (shared) file offset.
pub fn read_memfd(fd: RawFd) -> Result<Vec<u8>, String> {
    let mut out = vec![0u8; MAX_VALUE + 1];
    let mut n = 0usize;
    loop {
        // SAFETY: pread into the unused tail of our buffer.
        let r = unsafe {
            libc::pread(
                fd,
                out[n..].as_mut_ptr().cast(),
                out.len() - n,
                n as libc::off_t,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("reading a secret's memfd: {e}"));
        }
        if r == 0 || n + r as usize >= out.len() {
            n += r as usize;
            break;
        }
        n += r as usize;
    }
    out.truncate(n);
    Ok(out)
}

/// In init, after the root is built: write file-delivered secrets into /run/secrets (0400,
/// owned by the cell's uid), make the directory 0500 and remount it read-only.
pub fn populate(secrets: &[CellSecret]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut any = false;
    for s in secrets {
        let How::File { path } = &s.how else { continue };
        any = true;
        let mut value = read_memfd(s.memfd)?;
        let res = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .and_then(|mut f| {
                f.write_all(&value)?;
                f.set_permissions(std::fs::Permissions::from_mode(0o400))
            });
        zeroize::Zeroize::zeroize(&mut value);
        res.map_err(|e| format!("writing secret {} to {}: {e}", s.name, path.display()))?;
    }
    if !any {
        return Ok(());
    }
    let dir = Path::new(SECRETS_DIR);
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o500))
        .map_err(|e| format!("chmod 0500 {SECRETS_DIR}: {e}"))?;
    use nix::mount::{mount, MsFlags};
    mount(
        None::<&str>,
        dir,
        None::<&str>,
        MsFlags::MS_REMOUNT
            | MsFlags::MS_BIND
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| format!("remounting {SECRETS_DIR} read-only: {e}"))?;
    Ok(())
}

/// In the worker, first thing: stdout and stderr become the supervisor's relay pipes.
pub fn redirect_stdio(stdio: Option<(RawFd, RawFd)>) -> Result<(), String> {
    if let Some((out, err)) = stdio {
        for (from, to) in [(out, 1), (err, 2)] {
            // SAFETY: dup2 between fds this process holds.
            if unsafe { libc::dup2(from, to) } < 0 {
                return Err(format!(
                    "connecting the output relay to fd {to}: {}",
                    io::Error::last_os_error()
                ));
            }
        }
    }
    Ok(())
}

/// In the worker, after `close_range(3.., CLOEXEC)`: put each fd-delivered memfd at its
/// declared number (without close-on-exec). The worker's own fds it still needs (`keep`:
/// the error pipe, the detach pipe, its copy of the Landlock ruleset, the seccomp
/// listener's socket) are moved above every declared number first: a `dup2` onto one of
/// them would have replaced it with the secret.
pub fn place_fds(secrets: &[CellSecret], keep: &mut [&mut OwnedFd]) -> Result<(), String> {
    let targets: Vec<(RawFd, RawFd)> = secrets
        .iter()
        .filter_map(|s| match s.how {
            How::Fd { target } => Some((s.memfd, target)),
            _ => None,
        })
        .collect();
    if targets.is_empty() {
        return Ok(());
    }
    let hi = targets.iter().map(|t| t.1).max().unwrap_or(2).max(2) + 1;
    let dup_high = |fd: RawFd| -> Result<RawFd, String> {
        // SAFETY: F_DUPFD_CLOEXEC returns a new fd >= hi referring to the same file.
        let n = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, hi) };
        if n < 0 {
            Err(format!("moving an fd: {}", io::Error::last_os_error()))
        } else {
            Ok(n)
        }
    };
    for fd in keep.iter_mut() {
        if fd.as_raw_fd() < hi {
            let n = dup_high(fd.as_raw_fd())?;
            // SAFETY: n is a fresh fd we own; the old OwnedFd closes the old number.
            **fd = unsafe { OwnedFd::from_raw_fd(n) };
        }
    }
    let mut moved = Vec::with_capacity(targets.len());
    for (src, target) in &targets {
        moved.push((dup_high(*src)?, *target));
    }
    for (src, target) in moved {
        // SAFETY: dup2 onto the declared number; the new fd has close-on-exec clear.
        if unsafe { libc::dup2(src, target) } < 0 {
            return Err(format!(
                "placing a secret at fd {target}: {}",
                io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// In the worker, before exec: `VAR=value` for env-delivered secrets.
pub fn env_entries(secrets: &[CellSecret]) -> Result<Vec<CString>, String> {
    let mut out = Vec::new();
    for s in secrets {
        let How::Env { var } = &s.how else { continue };
        let mut v = var.as_bytes().to_vec();
        v.push(b'=');
        v.extend_from_slice(&read_memfd(s.memfd)?);
        out.push(CString::new(v).map_err(|_| {
            format!("secret {} contains a NUL byte and cannot be delivered in the environment (deliver it as a file)", s.name)
        })?);
    }
    Ok(out)
}
