//! `taskcell doctor`: what this machine lets taskcell enforce, and how to fix what is
//! missing. Every check is a real probe (a forked child tries the operation), not a guess
//! from version numbers.

use std::io::Read;

use serde::Serialize;

use crate::cell::userns;

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    /// Whether `run` needs this to enforce the built-in profiles.
    pub required: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
    /// The tier this machine gives, why, and how to get a higher one.
    pub tier: crate::plan::tier::TierReport,
}

impl Report {
    pub fn can_enforce_everything(&self) -> bool {
        self.checks.iter().all(|c| c.ok || !c.required)
    }
}

/// Run `f` in a forked child and return its exit code and what it wrote to the pipe.
fn probe(f: impl FnOnce() -> Result<String, String>) -> Result<String, String> {
    let (r, w) = match nix::unistd::pipe() {
        Ok(p) => p,
        Err(e) => return Err(format!("pipe: {e}")),
    };
    // SAFETY: doctor runs single-threaded; the child only runs `f` and exits.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            drop(r);
            let (code, msg) = match f() {
                Ok(m) => (0, m),
                Err(m) => (1, m),
            };
            let _ = nix::unistd::write(&w, msg.as_bytes());
            // SAFETY: leave the forked child without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            drop(w);
            let mut s = String::new();
            let _ = std::fs::File::from(r).read_to_string(&mut s);
            match nix::sys::wait::waitpid(child, None) {
                Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => Ok(s),
                Ok(_) => Err(s),
                Err(e) => Err(format!("waitpid: {e}")),
            }
        }
        Err(e) => Err(format!("fork: {e}")),
    }
}

fn errno_str() -> String {
    std::io::Error::last_os_error().to_string()
}

pub fn run() -> Report {
    let mut checks = Vec::new();
    let userns = namespaces(&mut checks);
    confinement(&mut checks);
    for (name, ok, detail) in crate::cell::cgroup::doctor_rows(&crate::cell::cgroup::probe()) {
        checks.push(Check {
            name,
            ok,
            required: false,
            detail,
        });
    }

    let tier = crate::plan::tier::decide(&crate::cell::confine::machine(userns));
    Report { checks, tier }
}

/// User namespaces, and every namespace a cell needs, probed in forked children; Err:
/// why a cell cannot get its namespaces here.
fn namespaces(checks: &mut Vec<Check>) -> Result<(), String> {
    let restriction = userns::userns_restriction();

    let userns = probe(|| {
        // SAFETY: unshare in the forked probe child only.
        if unsafe { libc::unshare(libc::CLONE_NEWUSER) } != 0 {
            return Err(errno_str());
        }
        Ok("ok".into())
    });
    checks.push(Check {
        name: "user namespaces",
        ok: userns.is_ok(),
        required: true,
        detail: match (&userns, &restriction) {
            (Ok(_), _) => "unprivileged user namespaces can be created".into(),
            (Err(e), Some(why)) => format!("cannot create one ({e}): {why}"),
            (Err(e), None) => format!("cannot create one ({e}); inside a container, its seccomp or AppArmor policy may forbid it"),
        },
    });

    if let (Some(h), true) = (crate::cell::confine::host_id_range(), userns.is_ok()) {
        let cwd = std::env::current_dir().unwrap_or_else(|_| "/".into());
        let r = h.range;
        let idmap = probe(|| userns::probe_idmap(&cwd, r.start).map(|_| "ok".into()));
        checks.push(Check {
            name: "idmapped mounts (root)",
            ok: idmap.is_ok(),
            required: false,
            detail: match idmap {
                Ok(_) => format!(
                    "root-started cells run as one host id of {}..{} (from {}) with the workspace ({}) idmapped to its owner",
                    r.start,
                    r.last(),
                    h.from,
                    cwd.display()
                ),
                Err(e) => format!(
                    "{} cannot be idmapped ({e}): a root-started cell there runs with host root's ids and a warning (best effort) or is refused (--strict)",
                    cwd.display()
                ),
            },
        });
    }

    if userns.is_err() {
        checks.push(Check {
            name: "without user namespaces",
            ok: false,
            required: false,
            detail: format!(
                "`run --best-effort` runs without namespaces, confined by Landlock, seccomp and no_new_privs only; lost: {}",
                crate::spec::layers::NO_USERNS_LOST.join("; ")
            ),
        });
    }

    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    let all_ns = probe(move || {
        let flags = libc::CLONE_NEWUSER
            | libc::CLONE_NEWNS
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWNET
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWUTS
            | libc::CLONE_NEWCGROUP;
        // SAFETY: unshare in the forked probe child only.
        let mut no_cgroup_ns = false;
        if unsafe { libc::unshare(flags) } != 0 {
            let einval = std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL);
            // gVisor refuses a cgroup namespace without a cgroup2 mount; cells then go
            // without one.
            // SAFETY: as above.
            if !einval || unsafe { libc::unshare(flags & !libc::CLONE_NEWCGROUP) } != 0 {
                return Err(format!(
                    "unshare(user|mnt|pid|net|ipc|uts|cgroup): {}",
                    errno_str()
                ));
            }
            no_cgroup_ns = true;
        }
        let _ = std::fs::write("/proc/self/setgroups", "deny");
        std::fs::write("/proc/self/uid_map", format!("{uid} {uid} 1"))
            .map_err(|e| format!("uid_map: {e}"))?;
        std::fs::write("/proc/self/gid_map", format!("{gid} {gid} 1"))
            .map_err(|e| format!("gid_map: {e}"))?;
        use nix::mount::{mount, MsFlags};
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(|e| format!("making / private: {e}"))?;
        mount(
            Some("tmpfs"),
            "/tmp",
            Some("tmpfs"),
            MsFlags::empty(),
            Some("size=64k"),
        )
        .map_err(|e| format!("mounting a tmpfs: {e}"))?;
        let noswap = mount(
            Some("tmpfs"),
            "/tmp",
            Some("tmpfs"),
            MsFlags::empty(),
            Some("size=64k,noswap"),
        )
        .is_ok();
        Ok(format!(
            "{}{}",
            if noswap { "noswap" } else { "swap" },
            if no_cgroup_ns { " no-cgroup-ns" } else { "" }
        ))
    });
    checks.push(Check {
        name: "namespaces (mount, pid, net, ipc, uts, cgroup)",
        ok: all_ns.is_ok(),
        required: true,
        detail: match &all_ns {
            Ok(v) if v.ends_with("no-cgroup-ns") => "all but the cgroup namespace can be created inside a user namespace (clone with CLONE_NEWCGROUP: EINVAL, as under gVisor without a cgroup2 mount: cells go without one and see their cgroup's host path), and tmpfs can be mounted".into(),
            Ok(_) => "all can be created inside a user namespace, and tmpfs can be mounted".into(),
            Err(e) => format!("failed: {e}"),
        },
    });
    checks.push(Check {
        name: "tmpfs noswap",
        ok: all_ns.as_deref().is_ok_and(|v| v.starts_with("noswap")),
        required: false,
        detail: if all_ns.as_deref().is_ok_and(|v| v.starts_with("noswap")) {
            "secrets' tmpfs can be kept out of swap".into()
        } else {
            "tmpfs `noswap` is refused here (Linux 6.4+ allows it only to root of the initial user namespace, not inside a cell's); a secret file on tmpfs could reach swap under memory pressure".into()
        },
    });
    match (userns, all_ns) {
        (Err(e), _) => Err(restriction
            .map(|why| format!("{e}: {why}"))
            .unwrap_or(format!(
                "{e}: a container's seccomp or AppArmor policy may forbid it"
            ))),
        (Ok(_), Err(e)) => Err(e),
        (Ok(_), Ok(_)) => Ok(()),
    }
}

/// Landlock and seccomp as `run` needs them, and memfd_secret.
fn confinement(checks: &mut Vec<Check>) {
    // `run` (strict) needs Landlock with TCP rules and scopes, and seccomp.
    match crate::cell::confine::landlock_abi() {
        Ok(v) => checks.push(Check {
            name: "landlock",
            ok: v >= crate::spec::landlock::ABI_SCOPES,
            required: true,
            detail: format!(
                "ABI {v}{}",
                if v >= crate::spec::landlock::ABI_SCOPES {
                    " (filesystem and TCP rules, signal and abstract-socket scopes)"
                } else if v >= crate::spec::landlock::ABI_TCP {
                    " (no scopes for signals and abstract sockets: ABI 6, Linux 6.12; a newer kernel, or run --best-effort)"
                } else {
                    " (filesystem rules only; TCP rules need ABI 4, Linux 6.7, scopes ABI 6, Linux 6.12; a newer kernel, or run --best-effort)"
                }
            ),
        }),
        Err(e) => checks.push(Check {
            name: "landlock",
            ok: false,
            required: true,
            detail: format!("{e}; or run --best-effort"),
        }),
    }

    // SAFETY: PR_GET_SECCOMP takes no pointers.
    let seccomp_mode = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) };
    let actions = userns::sysctl("/proc/sys/kernel/seccomp/actions_avail").unwrap_or_default();
    checks.push(Check {
        name: "seccomp",
        ok: seccomp_mode >= 0 && actions.contains("errno"),
        required: true,
        detail: if seccomp_mode >= 0 {
            format!(
                "filters available (actions: {actions}){}",
                if actions.contains("user_notif") {
                    "; user notification supported"
                } else {
                    ""
                }
            )
        } else {
            format!("not available: {}", errno_str())
        },
    });

    // SAFETY: memfd_secret(0) returns a new fd or -1; the fd is closed right away.
    let ms = unsafe { libc::syscall(libc::SYS_memfd_secret, 0u32) };
    let ms_err = errno_str();
    if ms >= 0 {
        // SAFETY: closing the fd we just got.
        unsafe { libc::close(ms as i32) };
    }
    checks.push(Check {
        name: "memfd_secret",
        ok: ms >= 0,
        required: false,
        detail: if ms >= 0 {
            "available (secret pages removed from the kernel's direct map)".into()
        } else {
            format!("not available ({ms_err}; boot with secretmem.enable=1 on Linux 5.14+)")
        },
    });
}

pub fn text(r: &Report) -> String {
    let mut s = String::new();
    for c in &r.checks {
        s.push_str(&format!(
            "{} {:<46} {}\n",
            if c.ok {
                "ok  "
            } else if c.required {
                "FAIL"
            } else {
                "warn"
            },
            c.name,
            c.detail
        ));
    }
    let t = &r.tier;
    s.push_str(&format!("\ntier: {}", t.tier));
    s.push_str(match t.tier {
        crate::plan::tier::Tier::Full => " (namespaces, Landlock, seccomp)\n",
        crate::plan::tier::Tier::Container => " (no user namespaces: Landlock, seccomp, no_new_privs; egress only through the proxy; `--require container` or `[security] require = \"container\"` runs here)\n",
        crate::plan::tier::Tier::None => " (only `--best-effort` runs here, with what exists)\n",
    });
    for w in &t.why {
        s.push_str(&format!("  why: {w}\n"));
    }
    if t.tier == crate::plan::tier::Tier::Container
        || t.without_userns == crate::plan::tier::Tier::Container
    {
        s.push_str("  container tier connects: the supervisor makes the cell's TCP sockets (socket() by user notification, installed with SECCOMP_IOCTL_NOTIF_ADDFD) and connects them itself; no pidfd_getfd, so Docker's default seccomp profile needs no --cap-add\n");
    }
    for h in &t.higher {
        s.push_str(&format!("  to get {h}\n"));
    }
    s.push_str(if r.can_enforce_everything() {
        "\n`taskcell run` can enforce every layer it needs on this machine.\n"
    } else if t.tier == crate::plan::tier::Tier::Container {
        "\n`taskcell run` cannot start cells here until the FAIL lines are fixed, except in the container tier (--require container).\n"
    } else {
        "\n`taskcell run` cannot start cells here until the FAIL lines are fixed.\n"
    });
    s
}
