//! User namespace: the identity map of the caller's ids, written from outside.

use std::io;

/// Deny setgroups, then map the caller's uid and gid to themselves (files keep their
/// owner; `id` inside prints the caller's ids). The same as root and as a plain user.
/// Written by the cell's init for itself right after the clone (a process may map its
/// own ids in the user namespace it created).
pub fn write_maps_self(uid: u32, gid: u32) -> Result<(), String> {
    let w = |file: &str, data: String| -> Result<(), String> {
        std::fs::write(format!("/proc/self/{file}"), data.as_bytes())
            .map_err(|e| format!("writing {file}: {e}"))
    };
    w("setgroups", "deny".into())?;
    w("uid_map", format!("{uid} {uid} 1\n"))?;
    w("gid_map", format!("{gid} {gid} 1\n"))?;
    Ok(())
}

/// Read a sysctl as a trimmed string.
pub fn sysctl(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Why user namespaces are not available, when the machine says so.
pub fn userns_restriction() -> Option<String> {
    if sysctl("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        return Some(
            "user.max_user_namespaces is 0 (raise it: sysctl -w user.max_user_namespaces=15000)"
                .into(),
        );
    }
    if sysctl("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0")
        && !nix::unistd::geteuid().is_root()
    {
        return Some("kernel.unprivileged_userns_clone is 0 (enable it: sysctl -w kernel.unprivileged_userns_clone=1)".into());
    }
    if sysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1")
        && !nix::unistd::geteuid().is_root()
    {
        return Some("AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns=1; add an AppArmor profile for taskcell with `userns,` or set the sysctl to 0)".into());
    }
    None
}

/// Turn a clone failure into a sentence that says what to do.
pub fn explain_clone_error(e: &io::Error) -> String {
    let why = userns_restriction();
    match (e.raw_os_error(), why) {
        (_, Some(why)) => format!("{e}: {why}; `taskcell doctor` shows every layer"),
        (Some(libc::ENOSPC), None) => format!(
            "{e}: a namespace limit is reached (user.max_user_namespaces or a parent namespace's limit); run `taskcell doctor`"
        ),
        (Some(libc::EPERM), None) => format!(
            "{e}: user namespaces are not allowed here (a container's seccomp or AppArmor policy?); run `taskcell doctor`"
        ),
        _ => format!("{e}; run `taskcell doctor`"),
    }
}
