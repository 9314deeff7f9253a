//! What the profile's file format cannot know: whether a syscall name exists on this
//! architecture, a host rule or a forward target parses, a limit's unit is right, an
//! rlimit has that name. Checked on the merged profile (every entry keeps the file and
//! line it came from), by `taskcell check` and before every plan.

use crate::plan::net::ForwardTo;
use crate::plan::{allowlist, limits, syscalls, PlanError, RLIMIT_NAMES};
use crate::profile::{Origin, Profile};

fn invalid(origin: &Origin, msg: String) -> PlanError {
    PlanError::Variable {
        origin: origin.clone(),
        msg,
    }
}

/// The first entry of `p` that names something that does not exist, with its origin.
pub fn check(p: &Profile) -> Result<(), PlanError> {
    for (key, v) in &p.limits.resources {
        limits::check(key, &v.value)
            .map_err(|msg| invalid(&v.origin, format!("`limits.{key}`: {msg}")))?;
    }
    for (k, v) in &p.limits.rlimits {
        if !RLIMIT_NAMES.contains(&k.as_str()) {
            return Err(invalid(
                &v.origin,
                format!("unknown rlimit `{k}` (known: {})", RLIMIT_NAMES.join(", ")),
            ));
        }
    }
    for (key, list) in [
        ("deny", &p.security.seccomp_deny),
        ("allow", &p.security.seccomp_allow),
    ] {
        for n in list {
            if syscalls::number(&n.value).is_none() {
                return Err(invalid(
                    &n.origin,
                    format!(
                        "`security.seccomp.{key}`: {:?} is not a system call on this architecture (names as in `man 2 syscalls`, e.g. \"ptrace\")",
                        n.value
                    ),
                ));
            }
        }
    }
    for (key, list) in [("allow", &p.network.allow), ("deny", &p.network.deny)] {
        for v in list {
            allowlist::Rule::parse(&v.value, "")
                .map_err(|e| invalid(&v.origin, format!("`network.{key}`: {e}")))?;
        }
    }
    for f in &p.network.forward {
        ForwardTo::parse(&f.to)
            .map_err(|e| invalid(&f.origin, format!("`network.forward.to`: {e}")))?;
    }
    Ok(())
}
