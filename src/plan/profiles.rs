//! The profile files that configure a cell are never the cell's.
//!
//! A profile read from disk that lies inside a path the cell can write (`-p ./deploy.toml`
//! in the workspace, a file of its `extends` chain there) is bound read-only on top of
//! that path (a `protect` rule), so the cell cannot rewrite the policy of its next run.
//! Other cells of the same workspace (another profile, an agent) still can: the plan
//! keeps each file's digest and where it lies, and `crate::pins` refuses a run whose
//! profile file changed since taskcell last ran it or the user pinned it.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{normalize, push_rule, Access, PathRule};
use crate::profile::SourceFile;

/// A profile file of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProfileFile {
    /// Absolute, as named (lexically normalised, symlinks not followed): the pin's key.
    pub path: PathBuf,
    /// sha256 (hex) of the text the plan was made from.
    pub sha256: String,
    /// The writable path of the plan (workspace or `write`) it lies in, by name or by
    /// where it really is; such a file is protected in the cell and pinned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writable: Option<PathBuf>,
}

/// The rule nearest above `p` (the deepest rule whose path is `p` or an ancestor).
fn nearest<'a>(paths: &'a [PathRule], p: &Path) -> Option<&'a PathRule> {
    paths
        .iter()
        .filter(|r| r.symlink.is_none() && p.starts_with(&r.path))
        .max_by_key(|r| r.path.components().count())
}

/// Protect every file of `files` that a cell of `paths` could write, and say where each
/// lies.
pub fn protect(files: &[SourceFile], paths: &mut Vec<PathRule>) -> Vec<ProfileFile> {
    let mut out = Vec::with_capacity(files.len());
    for f in files {
        let path = normalize(&f.path);
        let real = std::fs::canonicalize(&path).ok();
        let writable = [Some(&path), real.as_ref()]
            .into_iter()
            .flatten()
            .find_map(|p| nearest(paths, p).filter(|r| r.access == Access::Write))
            .map(|r| r.path.clone());
        // Where the file really is, seen writable by the cell: bound read-only there (a
        // bind never goes through a symlink, so the real path).
        if let Some(real) = &real {
            if nearest(paths, real).is_some_and(|r| r.access == Access::Write) {
                push_rule(
                    paths,
                    PathRule {
                        path: real.clone(),
                        access: Access::Protect,
                        symlink: None,
                        is_dir: false,
                        optional: false,
                    },
                );
            }
        }
        out.push(ProfileFile {
            path,
            sha256: f.sha256.clone(),
            writable,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(p: &Path, access: Access) -> PathRule {
        PathRule {
            path: p.to_path_buf(),
            access,
            symlink: None,
            is_dir: true,
            optional: false,
        }
    }

    fn file(p: &Path) -> SourceFile {
        SourceFile {
            path: p.to_path_buf(),
            sha256: "00".into(),
        }
    }

    #[test]
    fn a_profile_in_a_writable_path_is_protected_and_one_elsewhere_is_not() {
        let ws = tempfile::tempdir().unwrap();
        let ws = std::fs::canonicalize(ws.path()).unwrap();
        std::fs::create_dir(ws.join("ci")).unwrap();
        std::fs::create_dir(ws.join("ro")).unwrap();
        for f in ["deploy.toml", "ci/base.toml", "ro/x.toml"] {
            std::fs::write(ws.join(f), "").unwrap();
        }
        let mut paths = vec![rule(&ws, Access::Write), rule(&ws.join("ro"), Access::Read)];
        let files = [
            file(&ws.join("deploy.toml")),
            file(&ws.join("ci/../ci/base.toml")),
            file(&ws.join("ro/x.toml")),
            file(Path::new("/etc/hostname")),
        ];
        let out = protect(&files, &mut paths);
        let prot: Vec<&Path> = paths
            .iter()
            .filter(|r| r.access == Access::Protect)
            .map(|r| r.path.as_path())
            .collect();
        assert_eq!(prot, [ws.join("deploy.toml"), ws.join("ci/base.toml")]);
        assert_eq!(out[0].writable.as_deref(), Some(ws.as_path()));
        assert_eq!(out[1].path, ws.join("ci/base.toml"));
        assert_eq!(out[1].writable.as_deref(), Some(ws.as_path()));
        assert_eq!(out[2].writable, None, "under a read-only rule");
        assert_eq!(out[3].writable, None, "outside every rule");
        assert!(!paths.iter().any(|r| r.path == Path::new("/etc/hostname")));
    }

    #[test]
    fn a_link_in_the_workspace_to_a_file_outside_is_pinned_by_its_name() {
        let ws = tempfile::tempdir().unwrap();
        let ws = std::fs::canonicalize(ws.path()).unwrap();
        let out_dir = tempfile::tempdir().unwrap();
        let target = std::fs::canonicalize(out_dir.path())
            .unwrap()
            .join("wide.toml");
        std::fs::write(&target, "").unwrap();
        std::os::unix::fs::symlink(&target, ws.join("deploy.toml")).unwrap();
        let mut paths = vec![rule(&ws, Access::Write)];
        let out = protect(&[file(&ws.join("deploy.toml"))], &mut paths);
        assert_eq!(out[0].writable.as_deref(), Some(ws.as_path()));
        // Nothing outside the cell's paths is bound in for it.
        assert_eq!(paths.len(), 1);
    }
}
