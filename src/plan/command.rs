//! The command resolves like on the host: its symlink chain is followed when the plan is
//! made, and a link target that the cell would not see is bound read-only (its directory)
//! or refused with a message that names the target. Reads the filesystem, changes nothing.
//!
//! Claude Code's native installer puts `~/.local/bin/claude` as a link into
//! `~/.local/share/claude/versions/`, a pyenv virtualenv's `bin/python` points into
//! `~/.pyenv/versions/X/bin/`: with only the link's directory bound, the cell sees a
//! dangling link and the command "is not found".

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Access, PathRule};

/// A directory bound read-only because the command's symlink chain leads into it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommandBind {
    /// The directory bound read-only.
    pub dir: PathBuf,
    /// The command as found (the first link of the chain).
    pub command: PathBuf,
    /// The chain's target that lies in `dir`.
    pub target: PathBuf,
}

/// The most links followed (like the kernel's limit of 40).
const MAX_HOPS: usize = 40;

/// Find `argv0` like the worker will (a path as given, else the cell's PATH), follow its
/// symlink chain on the host, and return the directories to bind for targets the cell
/// would not see. `paths` are the cell's path rules; `home` may never be bound whole.
pub fn binds(
    argv0: &str,
    path_var: &str,
    cwd: &Path,
    paths: &[PathRule],
    home: &Path,
) -> Result<Vec<CommandBind>, String> {
    let Some(found) = find(argv0, path_var, cwd, paths) else {
        return Ok(Vec::new());
    };
    let mut out: Vec<CommandBind> = Vec::new();
    let mut cur = found.clone();
    for _ in 0..MAX_HOPS {
        let Ok(meta) = std::fs::symlink_metadata(&cur) else {
            return Ok(out); // dangling: the worker reports 127 with the name
        };
        let real = real_dir_of(&cur).unwrap_or_else(|| cur.clone());
        if !visible(&real, paths) && !out.iter().any(|b| real.starts_with(&b.dir)) {
            let dir = bind_dir(&real);
            if dir == Path::new("/") || home.starts_with(&dir) {
                return Err(format!(
                    "command {} leads (through symlinks) to {}, which is outside the cell's paths; taskcell would bind its directory {} read-only, but that is {} (add the target with --read {})",
                    found.display(),
                    real.display(),
                    dir.display(),
                    if dir == Path::new("/") { "the root directory" } else { "your home directory or above it" },
                    real.display()
                ));
            }
            if let Some(r) = hidden_by(&real, paths) {
                return Err(format!(
                    "command {} leads (through symlinks) to {}, which the profile hides ({}); run another command or remove the `hide`",
                    found.display(),
                    real.display(),
                    r.display()
                ));
            }
            out.push(CommandBind {
                dir,
                command: found.clone(),
                target: real.clone(),
            });
        }
        if !meta.file_type().is_symlink() {
            return Ok(out);
        }
        let Ok(t) = std::fs::read_link(&cur) else {
            return Ok(out);
        };
        cur = match real.parent() {
            Some(p) => super::normalize(&p.join(t)),
            None => t,
        };
    }
    Ok(out)
}

/// The command as the worker's PATH search would find it (an executable that exists).
fn find(argv0: &str, path_var: &str, cwd: &Path, paths: &[PathRule]) -> Option<PathBuf> {
    if argv0.is_empty() {
        return None;
    }
    if argv0.contains('/') {
        let p = if argv0.starts_with('/') {
            PathBuf::from(argv0)
        } else {
            cwd.join(argv0)
        };
        return std::fs::symlink_metadata(&p)
            .ok()
            .map(|_| super::normalize(&p));
    }
    for dir in path_var.split(':').filter(|d| d.starts_with('/')) {
        let p = Path::new(dir).join(argv0);
        let dir_real = real_dir_of(&p).unwrap_or_else(|| p.clone());
        // Only directories the cell sees count: a PATH entry it does not have is skipped
        // by the worker too.
        if std::fs::symlink_metadata(&p).is_ok() && visible(&dir_real, paths) {
            return Some(p);
        }
    }
    None
}

/// `p` with its directory resolved (symlinks in the parents followed), the last
/// component kept as it is.
fn real_dir_of(p: &Path) -> Option<PathBuf> {
    let parent = std::fs::canonicalize(p.parent()?).ok()?;
    Some(parent.join(p.file_name()?))
}

/// The rule that decides what the cell sees at `p`: the deepest bind, tmpfs or hide
/// above it (symlink rules are links, not directories).
fn governing<'a>(p: &Path, paths: &'a [PathRule]) -> Option<&'a PathRule> {
    paths
        .iter()
        .filter(|r| r.symlink.is_none() && p.starts_with(&r.path))
        .max_by_key(|r| r.path.components().count())
}

fn visible(p: &Path, paths: &[PathRule]) -> bool {
    matches!(
        governing(p, paths).map(|r| r.access),
        Some(Access::Read | Access::Write | Access::Protect)
    )
}

fn hidden_by<'a>(p: &Path, paths: &'a [PathRule]) -> Option<&'a Path> {
    governing(p, paths)
        .filter(|r| r.access == Access::Hide)
        .map(|r| r.path.as_path())
}

/// The directory to bind for a target: its own directory, or, for a `bin` directory,
/// the prefix above it (an interpreter's `lib/` lives next to its `bin/`).
fn bind_dir(target: &Path) -> PathBuf {
    let dir = target.parent().unwrap_or(Path::new("/"));
    if dir.file_name().is_some_and(|n| n == "bin") {
        if let Some(prefix) = dir.parent() {
            return prefix.to_path_buf();
        }
    }
    dir.to_path_buf()
}

/// `argv` with the profile's `[command] insert_args` for its program (matched by the last
/// component of `argv[0]`) inserted right after `argv[0]`.
pub fn with_inserted_args(
    insert: &std::collections::BTreeMap<String, Vec<String>>,
    argv: &[String],
) -> Vec<String> {
    let mut out = argv.to_vec();
    let prog = argv
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str());
    if let Some(args) = prog.and_then(|p| insert.get(p)) {
        out.splice(1..1, args.iter().cloned());
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn profile_args_go_after_the_program_they_name() {
        let mut m = std::collections::BTreeMap::new();
        m.insert(
            "codex".to_string(),
            vec!["-c".to_string(), "k=v".to_string()],
        );
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            with_inserted_args(&m, &v(&["codex", "exec", "hi"])),
            v(&["codex", "-c", "k=v", "exec", "hi"])
        );
        assert_eq!(
            with_inserted_args(&m, &v(&["/opt/bin/codex"])),
            v(&["/opt/bin/codex", "-c", "k=v"])
        );
        for other in [&["sh", "-c", "codex"][..], &["codex-x"], &[]] {
            assert_eq!(with_inserted_args(&m, &v(other)), v(other));
        }
    }

    use super::*;
    use std::os::unix::fs::symlink;

    fn rule(p: &Path, access: Access) -> PathRule {
        PathRule {
            path: p.to_path_buf(),
            access,
            symlink: None,
            is_dir: true,
            optional: false,
        }
    }

    #[test]
    fn a_link_into_an_unbound_directory_binds_that_directory() {
        let t = tempfile::tempdir().unwrap();
        let home = std::fs::canonicalize(t.path()).unwrap();
        let bin = home.join(".local/bin");
        let versions = home.join(".local/share/claude/versions");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&versions).unwrap();
        std::fs::write(versions.join("2.0.1"), "#!/bin/sh\n").unwrap();
        symlink(versions.join("2.0.1"), bin.join("claude")).unwrap();
        let paths = vec![rule(&home, Access::Tmpfs), rule(&bin, Access::Read)];
        let path_var = format!("/usr/bin:{}", bin.display());
        let b = binds("claude", &path_var, &home, &paths, &home).unwrap();
        assert_eq!(b.len(), 1, "{b:?}");
        assert_eq!(b[0].dir, versions);
        assert_eq!(b[0].command, bin.join("claude"));
        assert_eq!(b[0].target, versions.join("2.0.1"));
        // Already visible: nothing to add.
        let paths = vec![rule(&home, Access::Read)];
        assert!(binds("claude", &path_var, &home, &paths, &home)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn an_interpreter_in_a_bin_directory_brings_its_prefix_and_relative_links_resolve() {
        let t = tempfile::tempdir().unwrap();
        let home = std::fs::canonicalize(t.path()).unwrap();
        let prefix = home.join(".pyenv/versions/3.11.4");
        std::fs::create_dir_all(prefix.join("bin")).unwrap();
        std::fs::write(prefix.join("bin/python3.11"), "").unwrap();
        symlink("python3.11", prefix.join("bin/python3")).unwrap();
        let ws = home.join("proj");
        std::fs::create_dir_all(ws.join(".venv/bin")).unwrap();
        symlink(prefix.join("bin/python3"), ws.join(".venv/bin/python")).unwrap();
        let paths = vec![rule(&home, Access::Tmpfs), rule(&ws, Access::Write)];
        let b = binds(".venv/bin/python", "/usr/bin", &ws, &paths, &home).unwrap();
        assert_eq!(b.len(), 1, "{b:?}");
        assert_eq!(b[0].dir, prefix);
        assert_eq!(b[0].target, prefix.join("bin/python3"));
    }

    #[test]
    fn a_target_in_home_itself_or_hidden_is_refused_naming_the_target() {
        let t = tempfile::tempdir().unwrap();
        let home = std::fs::canonicalize(t.path()).unwrap();
        let bin = home.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(home.join("tool"), "").unwrap();
        symlink(home.join("tool"), bin.join("tool")).unwrap();
        let paths = vec![rule(&home, Access::Tmpfs), rule(&bin, Access::Read)];
        let e = binds("tool", &bin.display().to_string(), &home, &paths, &home).unwrap_err();
        assert!(e.contains(&home.join("tool").display().to_string()), "{e}");
        assert!(e.contains("home directory"), "{e}");
        let secret = home.join("secret");
        std::fs::create_dir_all(&secret).unwrap();
        std::fs::write(secret.join("x"), "").unwrap();
        symlink(secret.join("x"), bin.join("x")).unwrap();
        let paths = vec![rule(&home, Access::Read), rule(&secret, Access::Hide)];
        let e = binds("x", &bin.display().to_string(), &home, &paths, &home).unwrap_err();
        assert!(e.contains("hides"), "{e}");
    }
}
