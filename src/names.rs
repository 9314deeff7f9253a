//! Name lookups (users, groups, hosts) through glibc's built-in services only: `files`
//! for users and groups (/etc/passwd, /etc/group), `files dns` for hosts (/etc/hosts,
//! then the servers of /etc/resolv.conf). No NSS module (systemd, sss, ldap, mdns,
//! resolve, myhostname) is ever loaded into taskcell, whatever /etc/nsswitch.conf says.
//!
//! Two reasons. The supervisor holds secret values: it loads no code a host's
//! configuration names into its address space. And taskcell is linked statically
//! (static-pie; see `.cargo/config.toml` and docs/performance.md): a statically linked
//! glibc loads an NSS module with a second copy of libc, which crashes (a lookup of a uid
//! that /etc/passwd does not list went on to `systemd` and ended in SIGSEGV here).
//!
//! Where taskcell looks names up, and what a machine that relied on a module sees:
//! - the home directory when `HOME` is unset or relative (`Context::from_env`): a user
//!   known only to a directory service gets `/`, as a user without an entry always did;
//! - the `taskcell` user of /etc/subuid entries written with numbers (`confine::offer`):
//!   a system user, in /etc/passwd;
//! - the proxy's names (`net::resolve`): /etc/hosts and DNS; a name only mDNS or
//!   systemd-resolved's LLMNR knew is pinned with `[network] resolve` (or `--resolve`).

/// Pin the lookups to the built-in services. Call it first, before any lookup (glibc
/// reads nsswitch.conf once, at the first lookup of each database; a database pinned
/// here never reads it).
pub fn pin() {
    #[cfg(target_env = "gnu")]
    {
        extern "C" {
            // <nss.h>: replace the service line of database `db` (a GNU extension).
            fn __nss_configure_lookup(
                db: *const libc::c_char,
                services: *const libc::c_char,
            ) -> libc::c_int;
        }
        for (db, services) in [
            (c"passwd", c"files"),
            (c"group", c"files"),
            (c"shadow", c"files"),
            (c"hosts", c"files dns"),
        ] {
            // SAFETY: two NUL-terminated static strings; glibc copies what it keeps. A
            // failure (an unknown database) leaves that database as nsswitch.conf says.
            unsafe {
                __nss_configure_lookup(db.as_ptr(), services.as_ptr());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// A uid no file lists: before pinning, glibc went on to the `systemd` module of this
    /// machine's nsswitch.conf; pinned, the lookup ends at /etc/passwd with no entry (and
    /// a statically linked taskcell does not crash).
    #[test]
    fn an_unknown_uid_is_looked_up_in_the_files_only() {
        super::pin();
        let uid = (40_000..60_000)
            .find(|u| {
                !std::fs::read_to_string("/etc/passwd")
                    .unwrap_or_default()
                    .lines()
                    .any(|l| l.split(':').nth(2) == Some(&u.to_string()))
            })
            .expect("a free uid");
        let found = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid));
        assert!(matches!(found, Ok(None)), "{found:?}");
        let maps = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps");
        assert!(
            !maps.contains("libnss_"),
            "an NSS module was loaded: {:?}",
            maps.lines()
                .filter(|l| l.contains("libnss_"))
                .collect::<Vec<_>>()
        );
        // A listed one is still found.
        let root = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(0));
        assert_eq!(
            root.ok().flatten().map(|u| u.name),
            Some("root".to_string())
        );
    }

    #[test]
    fn hosts_resolve_through_etc_hosts() {
        super::pin();
        use std::net::ToSocketAddrs;
        let addrs: Vec<_> = ("localhost", 80)
            .to_socket_addrs()
            .expect("localhost")
            .collect();
        assert!(addrs.iter().any(|a| a.ip().is_loopback()), "{addrs:?}");
    }
}
