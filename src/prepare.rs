//! Host-side preparation before a cell starts: create the `create` paths a plan lists
//! (an agent's config directory on its first run, taskcell's package caches), owned by
//! the caller, 0700 for directories and 0600 for files. Gets the Plan's list, nothing else.

use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::plan::CreatePath;
use crate::profile::Create;

/// Create each missing path (and its missing parents, 0700). A path that appeared in the
/// meantime is left as it is if it has the declared kind and is not a symlink. Returns
/// the paths created.
pub fn create(list: &[CreatePath]) -> Result<Vec<PathBuf>, String> {
    let mut made = Vec::new();
    for c in list {
        match make(&c.path, c.kind) {
            Ok(true) => made.push(c.path.clone()),
            Ok(false) => {}
            Err(e) => {
                return Err(format!(
                    "cannot create {} ({}, declared at {}): {e} (create it yourself, or fix the permissions of its parent)",
                    c.path.display(),
                    kind_word(c.kind),
                    c.origin
                ))
            }
        }
    }
    Ok(made)
}

pub fn kind_word(k: Create) -> &'static str {
    match k {
        Create::Dir => "a directory, mode 0700",
        Create::File => "a file, mode 0600",
    }
}

fn make(path: &Path, kind: Create) -> io::Result<bool> {
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
    }
    let created = match kind {
        Create::Dir => match std::fs::DirBuilder::new().mode(0o700).create(path) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(e),
        },
        Create::File => match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
        {
            Ok(mut f) => {
                // An empty file is no JSON document: Claude Code calls an empty
                // ~/.claude.json corrupted. A `.json` file starts as an empty object.
                if path.extension().is_some_and(|e| e == "json") {
                    use std::io::Write;
                    f.write_all(b"{}\n")?;
                }
                true
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(e),
        },
    };
    let meta = std::fs::symlink_metadata(path)?;
    let right = match kind {
        Create::Dir => meta.is_dir(),
        Create::File => meta.is_file(),
    };
    if !right {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "something else (a symlink or another kind of file) appeared there",
        ));
    }
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn cp(path: PathBuf, kind: Create) -> CreatePath {
        CreatePath {
            path,
            kind,
            origin: "test".into(),
        }
    }

    #[test]
    fn creates_private_dirs_and_files_with_parents() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/b/cache");
        let f = t.path().join("conf.json");
        let made = create(&[cp(d.clone(), Create::Dir), cp(f.clone(), Create::File)]).unwrap();
        assert_eq!(made, vec![d.clone(), f.clone()]);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&d), 0o700);
        assert_eq!(mode(&t.path().join("a")), 0o700);
        assert_eq!(mode(&f), 0o600);
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "{}\n");
        // A second time: nothing to do.
        assert!(create(&[cp(d, Create::Dir)]).unwrap().is_empty());
    }

    #[test]
    fn a_symlink_planted_in_the_place_is_refused_not_followed() {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("elsewhere");
        let link = t.path().join("conf.json");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = create(&[cp(link.clone(), Create::File)]).unwrap_err();
        assert!(e.contains("conf.json"), "{e}");
        assert!(!target.exists());
        let e = create(&[cp(link, Create::Dir)]).unwrap_err();
        assert!(e.contains("symlink"), "{e}");
    }
}
