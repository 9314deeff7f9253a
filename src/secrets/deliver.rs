//! Delivery into the cell. The supervisor puts each value in a sealed memfd before the
//! clone; the cell inherits the fds, so no value is ever on a disk or in the `Spec`:
//! - `file`: init mounts a private tmpfs at /run/secrets (a `MountOp::SecretsTmpfs`, see `spec::secrets_tmpfs`),
//!   copies each value from its memfd into a 0400 file, makes the directory 0500 and
//!   remounts the tmpfs read-only; then closes the memfds.
//! - `fd`: the worker `dup2`s the memfd to the declared number after `close_range`.
//! - `env`: the worker reads the memfd and adds `VAR=value` to the command's environment.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use crate::plan::secrets::{Delivery, SECRETS_DIR};

/// Largest secret value, in bytes (also sizes the /run/secrets tmpfs).
pub const MAX_VALUE: usize = 1 << 20;

/// How one secret reaches the command, with the memfd (inherited at clone) that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellSecret {
    pub name: String,
    /// The memfd, open in the supervisor before the clone (close-on-exec).
    pub memfd: RawFd,
    pub how: How,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum How {
    File { path: PathBuf },
    Fd { target: RawFd },
    Env { var: String },
}

impl How {
    /// None for a watch-only secret (not delivered).
    pub fn of(d: &Delivery) -> Option<How> {
        match d {
            Delivery::File { path, .. } => Some(How::File { path: path.clone() }),
            Delivery::Fd { fd, .. } => Some(How::Fd { target: *fd }),
            Delivery::Env { var } => Some(How::Env { var: var.clone() }),
            Delivery::None => None,
        }
    }
}

/// Create a sealed memfd holding `value`: MFD_CLOEXEC | MFD_ALLOW_SEALING (|
/// MFD_NOEXEC_SEAL where the kernel has it), sealed against write, grow, shrink and
/// further seals, file offset back at 0.
pub fn sealed_memfd(name: &str, value: &[u8]) -> io::Result<OwnedFd> {
    let cname = CString::new(format!("taskcell-secret-{name}"))
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))?;
    const MFD_NOEXEC_SEAL: libc::c_uint = 0x0008;
    let base = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: memfd_create takes a NUL-terminated name and flags and returns a new fd.
    let mut fd = unsafe { libc::memfd_create(cname.as_ptr(), base | MFD_NOEXEC_SEAL) };
    if fd < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        // Kernels before 6.3 do not know MFD_NOEXEC_SEAL.
        // SAFETY: as above.
        fd = unsafe { libc::memfd_create(cname.as_ptr(), base) };
    }
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut off = 0;
    while off < value.len() {
        // SAFETY: writing from a slice we borrow to an fd we own.
        let n = unsafe {
            libc::write(
                fd.as_raw_fd(),
                value[off..].as_ptr().cast(),
                value.len() - off,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        off += n as usize;
    }
    // SAFETY: lseek and fcntl with integer arguments on our fd.
    unsafe {
        if libc::lseek(fd.as_raw_fd(), 0, libc::SEEK_SET) < 0 {
            return Err(io::Error::last_os_error());
        }
        let seals =
            libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
        if libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(fd)
}

/// Read a memfd's whole content without moving its (shared) file offset.
fn read_memfd(fd: RawFd) -> Result<Vec<u8>, String> {
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
/// declared number (without close-on-exec). The error pipe is moved out of the way first.
pub fn place_fds(secrets: &[CellSecret], err: &mut OwnedFd) -> Result<(), String> {
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
    if err.as_raw_fd() < hi {
        let n = dup_high(err.as_raw_fd())?;
        // SAFETY: n is a fresh fd we own; the old OwnedFd closes the old number.
        *err = unsafe { OwnedFd::from_raw_fd(n) };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memfd_is_sealed_and_readable_from_start() {
        let fd = sealed_memfd("T", b"value-123").expect("memfd");
        assert_eq!(read_memfd(fd.as_raw_fd()).unwrap(), b"value-123");
        // SAFETY: fcntl query on our fd.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        let want = libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
        assert_eq!(seals & want, want);
        // SAFETY: write attempt on our fd.
        let n = unsafe { libc::write(fd.as_raw_fd(), b"x".as_ptr().cast(), 1) };
        assert!(n < 0, "a sealed memfd must refuse writes");
        // SAFETY: lseek query.
        assert_eq!(unsafe { libc::lseek(fd.as_raw_fd(), 0, libc::SEEK_CUR) }, 0);
    }
}
