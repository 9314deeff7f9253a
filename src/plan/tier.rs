//! Tiers: what a machine lets taskcell enforce, decided from what the probes found
//! (pure; `doctor`, `explain` and `run` give it the same [`Machine`]).
//!
//! - `full`: user namespaces (and with them mount, pid, net, ipc, uts, cgroup), Landlock
//!   and seccomp.
//! - `container`: no user namespaces (a container's default seccomp or AppArmor policy,
//!   a sysctl): Landlock with TCP rules and scopes (ABI 6+), seccomp with user
//!   notification, no_new_privs; the network only through the proxy, whose `connect`s
//!   the supervisor makes itself.
//! - `none`: anything less; only `--best-effort` (or `require = "none"`) runs there.
//!
//! `require` (profile `[security] require`, `--require`) is the lowest tier a cell may
//! run in; strict (the default) is `full`, `--best-effort` is `none`.

use serde::Serialize;

pub use crate::profile::Tier;

/// Landlock ABI the container tier needs: TCP rules (4) and scopes (6), since without a
/// PID namespace only the signal scope keeps the cell from the caller's other processes.
pub const CONTAINER_LANDLOCK_ABI: i32 = 6;

/// What the probes found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Machine {
    /// Unprivileged user namespaces (and the namespaces a cell needs inside one), or why
    /// not.
    pub userns: Result<(), String>,
    /// Landlock ABI, or why there is none.
    pub landlock: Result<i32, String>,
    /// Seccomp filters returning errno, or why not.
    pub seccomp: Result<(), String>,
    /// Seccomp user notification (`SECCOMP_RET_USER_NOTIF`, Linux 5.0; its ADDFD ioctl,
    /// Linux 5.14): the supervisor makes the container tier's TCP sockets and their
    /// `connect`s (nothing Docker's default seccomp profile refuses: no pidfd_getfd).
    pub user_notif: Result<(), String>,
}

/// The tier, why, and how to get the next one up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TierReport {
    pub tier: Tier,
    /// Why this tier and not a higher one (empty for `full`).
    pub why: Vec<String>,
    /// How to get the higher tier(s), one way per line.
    pub higher: Vec<String>,
    /// The probe created a user namespace (a cell is cloned with namespaces).
    pub userns: bool,
    /// The tier left when the cell's namespaces fail after all at clone time (a mount or
    /// cgroup namespace the probe did not try): `container` or `none`.
    pub without_userns: Tier,
}

/// Ways to allow user namespaces (and so the full tier), for every place taskcell runs.
pub const HOW_TO_GET_FULL: &[&str] = &[
    "Kubernetes: `hostUsers: false` in the pod spec (a user namespace per pod), with a seccomp profile that allows unshare and clone with CLONE_NEWUSER (securityContext.seccompProfile: Localhost) and, on AppArmor nodes, an AppArmor profile that allows `userns` and `mount` (securityContext.appArmorProfile)",
    "Docker/Podman: `--security-opt seccomp=PROFILE.json` with a profile that allows unshare and clone/clone3 with CLONE_NEWUSER (or `seccomp=unconfined`), and `--security-opt apparmor=unconfined` (or a profile allowing `userns,` and `mount,`)",
    "host: sysctl user.max_user_namespaces above 0 (e.g. 15000), kernel.unprivileged_userns_clone=1 where it exists, and kernel.apparmor_restrict_unprivileged_userns=0 (or an AppArmor profile for taskcell with `userns,`)",
];

/// Decide the tier from what the probes found.
pub fn decide(m: &Machine) -> TierReport {
    let mut why = Vec::new();
    let mut higher = Vec::new();
    let lsm_ok = m.landlock.is_ok() && m.seccomp.is_ok();
    if let Err(e) = &m.userns {
        why.push(format!("no user namespaces: {e}"));
    }
    // What the container tier needs (and the full tier's Landlock and seccomp).
    let mut container_gaps = Vec::new();
    match &m.landlock {
        Err(e) => container_gaps.push(format!("no Landlock: {e}")),
        Ok(abi) if *abi < CONTAINER_LANDLOCK_ABI => container_gaps.push(format!(
            "Landlock ABI {abi} (the container tier needs ABI {CONTAINER_LANDLOCK_ABI}, Linux 6.12: TCP rules and signal scopes)"
        )),
        Ok(_) => {}
    }
    if let Err(e) = &m.seccomp {
        container_gaps.push(format!("no seccomp: {e}"));
    }
    if let Err(e) = &m.user_notif {
        container_gaps.push(format!(
            "no seccomp user notification (the container tier's connect check): {e}"
        ));
    }
    let without_userns = if container_gaps.is_empty() {
        Tier::Container
    } else {
        Tier::None
    };
    if m.userns.is_ok() && lsm_ok {
        return TierReport {
            tier: Tier::Full,
            why,
            higher,
            userns: true,
            without_userns,
        };
    }
    let tier = if m.userns.is_ok() {
        why.extend(
            container_gaps
                .iter()
                .filter(|g| !g.contains("notification"))
                .cloned(),
        );
        why.push("the namespaces and seccomp still apply with --best-effort".into());
        Tier::None
    } else if container_gaps.is_empty() {
        Tier::Container
    } else {
        why.extend(container_gaps);
        Tier::None
    };
    if tier == Tier::None {
        higher.push(match &m.landlock {
            Err(e) if e.contains("ENOSYS") || e.contains("not implemented") || e.contains("gVisor") => {
                "container: this kernel (or runtime: gVisor implements no Landlock) has no Landlock; run under runc or crun on Linux 6.12+ with Landlock enabled (lsm=...,landlock)".to_string()
            }
            _ => "container: Linux 6.12+ with Landlock enabled (lsm=...,landlock) and seccomp filters with user notification".to_string(),
        });
    }
    if m.userns.is_err() {
        higher.extend(HOW_TO_GET_FULL.iter().map(|s| format!("full: {s}")));
    } else if !lsm_ok {
        higher.push(
            "full: Landlock enabled (lsm=...,landlock) and seccomp filters (CONFIG_SECCOMP_FILTER)"
                .into(),
        );
    }
    TierReport {
        tier,
        why,
        higher,
        userns: m.userns.is_ok(),
        without_userns,
    }
}

/// The refusal when the machine's tier is below what the plan requires.
pub fn refusal(r: &TierReport, require: Tier) -> String {
    format!(
        "this machine gives the `{}` tier and the profile requires `{require}`: {} (`taskcell doctor` shows every layer). To get a higher tier: {}. Or accept a lower one: {}",
        r.tier,
        r.why.join("; "),
        r.higher.join("; "),
        match r.tier {
            Tier::Container => "--require container (or `[security] require = \"container\"`), or --best-effort",
            _ => "--best-effort (runs with what exists and says what is lost)",
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(userns: bool, landlock: Result<i32, &str>, notif: bool) -> Machine {
        Machine {
            userns: if userns {
                Ok(())
            } else {
                Err("unshare(CLONE_NEWUSER): Operation not permitted".into())
            },
            landlock: landlock.map_err(|e| e.to_string()),
            seccomp: Ok(()),
            user_notif: if notif {
                Ok(())
            } else {
                Err("actions_avail has no user_notif".into())
            },
        }
    }

    #[test]
    fn full_with_namespaces_landlock_and_seccomp() {
        let r = decide(&machine(true, Ok(6), true));
        assert_eq!(r.tier, Tier::Full);
        assert!(r.why.is_empty() && r.higher.is_empty());
        // Old Landlock ABIs are still the full tier; strict refuses the missing parts.
        assert_eq!(decide(&machine(true, Ok(3), false)).tier, Tier::Full);
    }

    #[test]
    fn container_without_userns_says_how_to_get_full() {
        let r = decide(&machine(false, Ok(7), true));
        assert_eq!(r.tier, Tier::Container);
        assert!(r.why[0].contains("no user namespaces"), "{r:?}");
        let h = r.higher.join("\n");
        assert!(h.contains("hostUsers: false"), "{h}");
        assert!(h.contains("CLONE_NEWUSER"), "{h}");
        assert!(h.contains("apparmor"), "{h}");
        assert!(h.contains("user.max_user_namespaces"), "{h}");
        assert!(
            h.contains("kernel.apparmor_restrict_unprivileged_userns"),
            "{h}"
        );
    }

    #[test]
    fn none_when_the_container_layers_are_missing() {
        // gVisor: no user namespaces for a plain user, Landlock ENOSYS.
        let r = decide(&machine(false, Err("Landlock: ENOSYS"), true));
        assert_eq!(r.tier, Tier::None);
        assert!(r.why.iter().any(|w| w.contains("no Landlock")), "{r:?}");
        assert!(r.higher[0].contains("gVisor"), "{r:?}");
        // Landlock without scopes, or no user notification.
        assert_eq!(decide(&machine(false, Ok(5), true)).tier, Tier::None);
        let r = decide(&machine(false, Ok(6), false));
        assert_eq!(r.tier, Tier::None);
        assert!(r.why.iter().any(|w| w.contains("user notification")));
        // Namespaces without Landlock (gVisor: ENOSYS) are not the full tier either; the
        // namespaces remain with --best-effort.
        let r = decide(&machine(
            true,
            Err("Landlock is not implemented here (ENOSYS: ...)"),
            true,
        ));
        assert_eq!(r.tier, Tier::None);
        assert!(r.why.iter().any(|w| w.contains("ENOSYS")), "{r:?}");
        assert!(r
            .why
            .iter()
            .any(|w| w.contains("namespaces and seccomp still apply")));
        assert!(r.higher[0].contains("gVisor"), "{r:?}");
        assert!(r.higher.iter().any(|h| h.starts_with("full:")));
    }

    #[test]
    fn require_comes_from_the_flag_best_effort_the_profile_or_strict() {
        use crate::plan::{resolve, Context, Overrides};
        use crate::profile::{Origin, Profile, Val};
        let ctx = Context {
            cwd: "/tmp".into(),
            home: "/nonexistent-home".into(),
            tmp: "/tmp".into(),
            uid: 1000,
            gid: 1000,
            env: Default::default(),
            terminal: false,
        };
        let req = |p: &Profile, ov: &Overrides| {
            resolve(p, ov, &ctx, &["true".into()])
                .expect("plan")
                .security
                .require
        };
        let mut p = Profile::default();
        // Strict (the default) is the full tier; --best-effort accepts any.
        assert_eq!(req(&p, &Overrides::default()), Tier::Full);
        let best = Overrides {
            strict: Some(false),
            ..Overrides::default()
        };
        assert_eq!(req(&p, &best), Tier::None);
        p.strict = false;
        assert_eq!(req(&p, &Overrides::default()), Tier::None);
        // The profile's `require` wins over its `strict`; --best-effort over the profile;
        // --require over everything.
        p.security.require = Some(Val {
            value: Tier::Container,
            origin: Origin::cli(),
        });
        assert_eq!(req(&p, &Overrides::default()), Tier::Container);
        assert_eq!(req(&p, &best), Tier::None);
        let flag = Overrides {
            require: Some(Tier::Full),
            strict: Some(false),
            ..Overrides::default()
        };
        assert_eq!(req(&p, &flag), Tier::Full);
    }

    #[test]
    fn tiers_are_ordered_and_refusal_names_the_way_down() {
        assert!(Tier::None < Tier::Container && Tier::Container < Tier::Full);
        let r = decide(&machine(false, Ok(6), true));
        let msg = refusal(&r, Tier::Full);
        assert!(msg.contains("`container` tier"), "{msg}");
        assert!(msg.contains("--require container"), "{msg}");
        let r = decide(&machine(false, Ok(2), true));
        assert!(refusal(&r, Tier::Container).contains("--best-effort"));
    }
}
