//! Delivery into the cell. The supervisor puts each value in a sealed memfd before the
//! clone; the cell inherits the fds, so no value is ever on a disk or in the `Spec`
//! (what goes where is a [`crate::spec::CellSecret`]; the cell side is `cell::secrets`):
//! - `file`: init mounts a private tmpfs at /run/secrets (`spec::secrets_tmpfs`), copies
//!   each value from its memfd into a 0400 file, makes the directory 0500 and remounts
//!   the tmpfs read-only; then closes the memfds.
//! - `fd`: the worker `dup2`s the memfd to the declared number after `close_range`.
//! - `env`: the worker reads the memfd and adds `VAR=value` to the command's environment.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memfd_is_sealed_and_readable_from_start() {
        let fd = sealed_memfd("T", b"value-123").expect("memfd");
        assert_eq!(
            crate::cell::secrets::read_memfd(fd.as_raw_fd()).unwrap(),
            b"value-123"
        );
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
