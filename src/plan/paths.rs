//! Path policy of the plan: which directory may be a workspace, and which paths must not
//! go through a symlink.
//!
//! A cell writes its workspace, and whatever it leaves there is read by the next cell's
//! plan. So a path the plan gives a cell read-write, or protects or hides, is never
//! followed through a symlink: one that goes through a link is refused here with the
//! link's name and target, and the cell's init opens each path again with
//! `RESOLVE_NO_SYMLINKS` (the one resolution that is mounted, see `cell::rootfs`), so a
//! link planted after this check fails the start instead of redirecting a mount.

use std::io;
use std::path::{Path, PathBuf};

use super::{
    creatable, normalize, push_rule, readable, Access, CreatePath, PathRule, PlanError, FIXED,
};
use crate::profile::Origin;

/// Trees that are the system, not a task: neither they nor anything below them can be a
/// workspace.
pub const SYSTEM_TREES: &[&str] = &[
    "/bin",
    "/boot",
    "/dev",
    "/efi",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/run",
    "/sbin",
    "/snap",
    "/sys",
    "/usr",
    "/var/backups",
    "/var/cache",
    "/var/lib",
    "/var/lock",
    "/var/log",
    "/var/mail",
    "/var/run",
    "/var/spool",
];

/// Directories that hold many tasks (or users): they themselves cannot be a workspace,
/// a project below them can.
pub const SHARED_DIRS: &[&str] = &["/home", "/media", "/mnt", "/opt", "/root", "/srv", "/var"];

/// Directories of the home that hold credentials or the user's whole configuration.
/// The first are refused with everything below them, the second only themselves.
const HOME_CREDENTIAL_TREES: &[&str] = &[
    ".ssh",
    ".gnupg",
    ".aws",
    ".kube",
    ".docker",
    ".password-store",
];
const HOME_SHARED_DIRS: &[&str] = &[".config", ".local", ".local/share", ".cache"];

/// Why `ws` (absolute, normalised, symlink-free) cannot be a workspace, or None.
///
/// A workspace is a task boundary: everything in it is given to the cell read-write and
/// everything the cell leaves there is trusted later. So it may not be `/`, the home
/// directory or one of its ancestors, a system tree or anything below one, a directory
/// shared by many projects or users, or a credential directory of the home.
pub fn refuse_workspace(ws: &Path, home: &Path) -> Option<String> {
    if ws == Path::new("/") {
        return Some("/ is the whole system, not a task".into());
    }
    let mut homes = vec![home.to_path_buf()];
    if let Ok(real) = std::fs::canonicalize(home) {
        if real != home {
            homes.push(real);
        }
    }
    for h in &homes {
        if h == Path::new("/") {
            continue;
        }
        if ws == h {
            return Some(format!(
                "{} is your home directory: a cell would read and change every key and dotfile in it",
                ws.display()
            ));
        }
        if h.starts_with(ws) {
            return Some(format!(
                "{} contains your home directory {}",
                ws.display(),
                h.display()
            ));
        }
        for t in HOME_CREDENTIAL_TREES {
            let t = h.join(t);
            if ws.starts_with(&t) {
                return Some(format!("{} holds credentials", t.display()));
            }
        }
        for d in HOME_SHARED_DIRS {
            if ws == h.join(d) {
                return Some(format!(
                    "{} holds the configuration of every program of yours",
                    ws.display()
                ));
            }
        }
    }
    if let Some(t) = SYSTEM_TREES.iter().find(|t| ws.starts_with(t)) {
        return Some(format!("{} is part of the system tree {t}", ws.display()));
    }
    if SHARED_DIRS.iter().any(|d| ws == Path::new(d)) {
        return Some(format!(
            "{} holds many projects or users, not one task",
            ws.display()
        ));
    }
    None
}

/// The workspace, checked: `ws` (absolute, normalised) exists, is a directory, goes
/// through no symlink and is a task boundary ([`refuse_workspace`]).
pub fn workspace(ws: &Path, home: &Path) -> Result<PathBuf, PlanError> {
    let other = |msg: String| PlanError::Other { msg };
    match first_symlink(ws) {
        Ok(None) => {}
        Ok(Some((link, target))) => {
            let real = std::fs::canonicalize(ws)
                .map(|r| format!(" (-w {})", r.display()))
                .unwrap_or_default();
            return Err(other(format!(
                "workspace {} goes through the symlink {} -> {}: a cell writes its workspace, and taskcell follows no symlink into it (pass the real directory{real})",
                ws.display(),
                link.display(),
                target.display()
            )));
        }
        Err(e) => {
            return Err(other(format!(
            "workspace {} cannot be used: {e} (create it, or pass an existing directory with -w)",
            ws.display()
        )))
        }
    }
    if !ws.is_dir() {
        return Err(other(format!(
            "workspace {} is not a directory (pass a directory with -w)",
            ws.display()
        )));
    }
    if let Some(why) = refuse_workspace(ws, home) {
        return Err(other(format!(
            "{} cannot be a workspace: {why} (pass a project directory with -w)",
            ws.display()
        )));
    }
    Ok(ws.to_path_buf())
}

/// One declared path before it is checked: (path, access, optional, origin, key, what to
/// create when it is missing).
pub type Declared = (
    PathBuf,
    Access,
    bool,
    Origin,
    &'static str,
    Option<crate::profile::Create>,
);

/// Check the declared paths against the filesystem and turn them into rules.
///
/// `write` and `protect` paths, and anything below the workspace or a `write` path, go
/// through no symlink (refused, naming the link). A `hide` path may not be a symlink
/// itself; one in a parent outside every writable path (a system or stow-managed
/// directory) is resolved here, once. A `read` path outside the writable paths that is a
/// symlink (a dotfile managed by stow) is recreated as that link in the cell and its
/// target bound; one with a symlink in a parent is bound at its real location. The cell's
/// init opens every bound path again without following symlinks, so what is mounted is
/// what was checked here or nothing.
/// Missing `create` paths inside the home or the workspace go to the second list (made
/// by `prepare` before the cell starts, never through a symlink).
pub fn rules(
    raw: Vec<Declared>,
    workspace: &Path,
    home: &Path,
) -> Result<(Vec<PathRule>, Vec<CreatePath>), PlanError> {
    let mut writable: Vec<PathBuf> = vec![workspace.to_path_buf()];
    writable.extend(
        raw.iter()
            .filter(|d| d.1 == Access::Write)
            .map(|d| normalize(&d.0)),
    );
    let mut paths: Vec<PathRule> = Vec::new();
    let mut create: Vec<CreatePath> = Vec::new();
    for (path, access, optional, origin, key, make) in raw {
        let path = normalize(&path);
        if FIXED.iter().any(|f| Path::new(f) == path)
            && access != Access::Tmpfs
            && path != workspace
        {
            // /proc, /dev and /tmp are always the cell's own (unless /tmp is the workspace).
            continue;
        }
        if access == Access::Tmpfs {
            if path == Path::new("/") {
                return Err(PlanError::TmpfsOverRoot { origin, key });
            }
            push_rule(&mut paths, plain(path, access, true, optional));
            continue;
        }
        if access == Access::Hide && !readable(&path) {
            // What the caller cannot read, the cell cannot either (same uid, no
            // capabilities): nothing to hide, and no mount to pay for.
            continue;
        }
        let missing = |path: &Path, origin: Origin, what: &str| PlanError::Missing {
            origin,
            key,
            path: format!("{}{what}", path.display()),
        };
        let in_writable = |p: &Path| writable.iter().any(|w| p.starts_with(w));
        let strict = matches!(access, Access::Write | Access::Protect) || in_writable(&path);
        match crate::hold::path_kind(&path) {
            Ok(kind @ (PathKind::Dir | PathKind::NotDir)) => {
                push_rule(
                    &mut paths,
                    plain(path, access, kind == PathKind::Dir, optional),
                );
            }
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::ENOTDIR) =>
            {
                if make.is_some() && creatable(&path, home, workspace) {
                    let kind = make.unwrap_or(crate::profile::Create::Dir);
                    create.retain(|c| c.path != path);
                    create.push(CreatePath {
                        path: path.clone(),
                        kind,
                        origin: origin.to_string(),
                    });
                    let is_dir = kind == crate::profile::Create::Dir;
                    push_rule(&mut paths, plain(path, access, is_dir, optional));
                    continue;
                }
                // A `create` path outside the caller's places is left out like an
                // optional one.
                if optional || make.is_some() {
                    continue;
                }
                return Err(missing(&path, origin, ""));
            }
            Err(e) => {
                return Err(PlanError::Other {
                    msg: format!("{origin}: `{key}` path {}: {e}", path.display()),
                })
            }
            Ok(PathKind::Link { link, target }) => {
                let last = link == path;
                if strict || (access == Access::Hide && (last || in_writable(&link))) {
                    return Err(PlanError::Other {
                        msg: format!("{origin}: {}", through_symlink(key, &path, &link, &target)),
                    });
                }
                // A read or hide path through the user's own links: resolved once, here.
                let (real, is_dir) = match resolve_through(&path, &link, &target) {
                    Some(r) => r,
                    None => match std::fs::canonicalize(&path) {
                        Ok(r) => {
                            let is_dir = r.is_dir();
                            (r, is_dir)
                        }
                        Err(_) if optional => continue,
                        Err(_) => return Err(missing(&path, origin, " (a dangling symlink)")),
                    },
                };
                if in_writable(&real) {
                    return Err(PlanError::Other {
                        msg: format!(
                            "{origin}: `{key}` path {} leads through the symlink {} -> {} into {}, which a cell can write (pass {} if that is what you mean)",
                            path.display(),
                            link.display(),
                            target.display(),
                            real.display(),
                            real.display()
                        ),
                    });
                }
                if last {
                    // Recreate the link inside; bind what it points to (same access).
                    push_rule(
                        &mut paths,
                        PathRule {
                            path: path.clone(),
                            access,
                            symlink: Some(target),
                            is_dir,
                            optional,
                        },
                    );
                }
                if real != path {
                    push_rule(&mut paths, plain(real, access, is_dir, optional));
                }
            }
        }
    }
    Ok((paths, create))
}

pub use crate::hold::{first_symlink, PathKind};

/// A rule for a path reached without a symlink.
fn plain(path: PathBuf, access: Access, is_dir: bool, optional: bool) -> PathRule {
    PathRule {
        path,
        access,
        symlink: None,
        is_dir,
        optional,
    }
}

/// The message for a path of `key` that goes through the symlink `link` -> `target`.
pub fn through_symlink(key: &str, path: &Path, link: &Path, target: &Path) -> String {
    let what = if link == path {
        format!("is a symlink (to {})", target.display())
    } else {
        format!(
            "goes through the symlink {} -> {}",
            link.display(),
            target.display()
        )
    };
    format!(
        "`{key}` path {} {what}: taskcell follows no symlink in a path a cell can write, protect or hide, since a cell can plant one (pass the real path if that is what you mean, or remove the link)",
        path.display()
    )
}

/// `path` resolved through its first symlink `link` -> `target` without `realpath`: when
/// the target has no `.` or `..` and what it leads to has no further link (one `openat2`
/// says so, and whether it is a directory). None: resolve it the long way.
fn resolve_through(path: &Path, link: &Path, target: &Path) -> Option<(PathBuf, bool)> {
    if !crate::hold::plain_components(target) {
        return None;
    }
    let rest = path.strip_prefix(link).ok()?;
    let mut candidate = link.parent()?.join(target);
    if !rest.as_os_str().is_empty() {
        candidate.push(rest);
    }
    match crate::hold::path_kind(&candidate).ok()? {
        crate::hold::PathKind::Dir => Some((candidate, true)),
        crate::hold::PathKind::NotDir => Some((candidate, false)),
        crate::hold::PathKind::Link { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn resolve_through_matches_realpath_or_leaves_it_to_realpath() {
        let d = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(d.path()).unwrap();
        std::fs::create_dir_all(base.join("usr/bin")).unwrap();
        std::fs::write(base.join("usr/bin/tool"), b"").unwrap();
        std::os::unix::fs::symlink("usr/bin", base.join("bin")).unwrap();
        std::os::unix::fs::symlink(base.join("usr"), base.join("abs")).unwrap();
        std::os::unix::fs::symlink("../x/usr", base.join("dots")).unwrap();
        std::os::unix::fs::symlink("bin", base.join("chain")).unwrap();
        let t = |p: &str, link: &str, target: &str| {
            resolve_through(&base.join(p), &base.join(link), Path::new(target))
        };
        for (p, link, target) in [("bin", "bin", "usr/bin"), ("bin/tool", "bin", "usr/bin")] {
            let real = std::fs::canonicalize(base.join(p)).unwrap();
            let is_dir = real.is_dir();
            assert_eq!(t(p, link, target), Some((real, is_dir)), "{p}");
        }
        let abs = base.join("usr");
        assert_eq!(
            t("abs", "abs", abs.to_str().unwrap()),
            Some((abs.clone(), true))
        );
        // `..` in the target, or a link behind the first: realpath's job.
        assert_eq!(t("dots", "dots", "../x/usr"), None);
        assert_eq!(t("chain/tool", "chain", "bin"), None);
    }

    use super::*;

    fn refused(ws: &str) -> bool {
        refuse_workspace(Path::new(ws), Path::new("/home/u")).is_some()
    }

    #[test]
    fn home_its_ancestors_root_and_system_trees_are_refused() {
        for ws in [
            "/",
            "/home",
            "/home/u",
            "/home/u/.ssh",
            "/home/u/.ssh/keys",
            "/home/u/.config",
            "/etc",
            "/etc/ssh",
            "/usr/lib",
            "/proc/sys/kernel",
            "/run",
            "/run/user/1000",
            "/sys",
            "/dev",
            "/var",
            "/var/lib/docker",
            "/boot",
            "/opt",
        ] {
            assert!(refused(ws), "{ws} accepted");
        }
    }

    #[test]
    fn project_directories_are_accepted() {
        for ws in [
            "/home/u/src/project",
            "/home/u/.config/nvim",
            "/tmp/x",
            "/var/tmp/build",
            "/opt/project",
            "/srv/app",
            "/tmp",
        ] {
            assert!(!refused(ws), "{ws} refused");
        }
    }

    #[test]
    fn the_reason_is_one_line() {
        let r = refuse_workspace(Path::new("/home/u"), Path::new("/home/u")).unwrap();
        assert!(!r.contains('\n'));
        assert!(r.contains("home directory"), "{r}");
    }

    #[test]
    fn first_symlink_names_the_link_and_its_target() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::create_dir(real.join("sub")).unwrap();
        std::os::unix::fs::symlink("real", d.path().join("link")).unwrap();
        let base = std::fs::canonicalize(d.path()).unwrap();
        assert_eq!(first_symlink(&base.join("real/sub")).unwrap(), None);
        assert_eq!(
            first_symlink(&base.join("link/sub")).unwrap(),
            Some((base.join("link"), PathBuf::from("real")))
        );
        assert!(first_symlink(&base.join("missing")).is_err());
        // The kind comes with the check: a directory, a file, the link met on the way (a
        // final link too), a component missing before any link.
        std::fs::write(real.join("f"), "x").unwrap();
        let kind = crate::hold::path_kind;
        assert_eq!(kind(&base.join("real/sub")).unwrap(), PathKind::Dir);
        assert_eq!(kind(&base.join("real/f")).unwrap(), PathKind::NotDir);
        for p in ["link", "link/f", "link/missing"] {
            assert_eq!(
                kind(&base.join(p)).unwrap(),
                PathKind::Link {
                    link: base.join("link"),
                    target: PathBuf::from("real")
                },
                "{p}"
            );
        }
        assert_eq!(
            kind(&base.join("missing/link")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }
}
