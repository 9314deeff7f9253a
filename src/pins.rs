//! Profile pins: a profile file inside a path a cell can write is trusted by content.
//!
//! Any cell whose workspace holds `./deploy.toml` (an agent, a build with another profile)
//! can rewrite it, and the next `taskcell run -p ./deploy.toml` would then run with the
//! policy that cell wrote (more `write` paths, `network.mode = "host"`). So for every
//! profile file of a plan that lies inside one of the plan's writable paths, taskcell
//! keeps the sha256 of its text in the user's pin store, outside every cell:
//!
//! - first use (no pin): the digest is recorded and a note says so;
//! - same digest: the run goes on;
//! - another digest: the run is refused (exit 125) with what to do: read the change, then
//!   `taskcell trust FILE` pins what is there now.
//!
//! The store is `$XDG_STATE_HOME/taskcell/profile-pins.jsonl` (else
//! `~/.local/state/taskcell/...`), one JSON object `{"path","sha256"}` a line, appended
//! (the last line of a path wins), opened through `crate::hostfile` (never through a
//! symlink, never inside a path the cell can write). The key is the file's absolute path
//! as named, so a link planted in its place is a change, not a new file.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::hostfile::{self, Mode};
use crate::plan::profiles::ProfileFile;

/// The largest pin store read; past half of it, the store is compacted.
const MAX_STORE_BYTES: u64 = 4 << 20;

#[derive(Debug, Serialize, Deserialize)]
struct Pin {
    path: PathBuf,
    sha256: String,
}

/// Where the pin store lives, from the launcher's environment.
pub fn store_path(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let abs = |v: Option<String>| v.filter(|s| s.starts_with('/')).map(PathBuf::from);
    abs(env("XDG_STATE_HOME"))
        .or_else(|| abs(env("HOME")).map(|h| h.join(".local/state")))
        .map(|d| d.join("taskcell").join("profile-pins.jsonl"))
}

/// The pins of `store` (empty when it does not exist yet).
fn read(store: &Path, writable: &[PathBuf]) -> Result<BTreeMap<PathBuf, String>, String> {
    if std::fs::symlink_metadata(store).is_err() {
        return Ok(BTreeMap::new());
    }
    let f = hostfile::open(store, Mode::Read, writable, "the profile pin store")?;
    let mut text = String::new();
    f.take(MAX_STORE_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| format!("reading the profile pin store {}: {e}", store.display()))?;
    Ok(parse(&text))
}

/// Lines that do not parse (a torn last line) are skipped: a missing pin is a new pin.
fn parse(text: &str) -> BTreeMap<PathBuf, String> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Pin>(l).ok())
        .map(|p| (p.path, p.sha256))
        .collect()
}

fn lines(pins: &[(&Path, &str)]) -> Result<String, String> {
    let mut out = String::new();
    for (path, sha256) in pins {
        if path.to_str().is_none() {
            return Err(format!(
                "cannot pin the profile {}: its path is not UTF-8 (rename it)",
                path.display()
            ));
        }
        let line = serde_json::to_string(&Pin {
            path: path.to_path_buf(),
            sha256: sha256.to_string(),
        })
        .map_err(|e| format!("cannot pin the profile {}: {e}", path.display()))?;
        out.push_str(&line);
        out.push('\n');
    }
    Ok(out)
}

/// Record `pins` in `store` (one `write` on an `O_APPEND` file); a store past half its
/// maximum is first rewritten with the pins of files that still exist.
fn append(store: &Path, pins: &[(&Path, &str)], writable: &[PathBuf]) -> Result<(), String> {
    // A line break first: a line torn by a crash never swallows the new ones.
    let text = format!("\n{}", lines(pins)?);
    if let Some(dir) = store.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| {
                format!(
                    "creating {} for the profile pin store: {e} (set XDG_STATE_HOME to a \
                     directory of yours)",
                    dir.display()
                )
            })?;
    }
    if std::fs::symlink_metadata(store).is_ok_and(|m| m.len() > MAX_STORE_BYTES / 2) {
        compact(store, writable)?;
    }
    let mut f = hostfile::open(store, Mode::Append, writable, "the profile pin store")?;
    f.write_all(text.as_bytes())
        .map_err(|e| format!("writing the profile pin store {}: {e}", store.display()))
}

fn compact(store: &Path, writable: &[PathBuf]) -> Result<(), String> {
    let kept: Vec<(PathBuf, String)> = read(store, writable)?
        .into_iter()
        .filter(|(p, _)| std::fs::symlink_metadata(p).is_ok())
        .collect();
    let refs: Vec<(&Path, &str)> = kept
        .iter()
        .map(|(p, s)| (p.as_path(), s.as_str()))
        .collect();
    let text = lines(&refs)?;
    let dir = store.parent().unwrap_or(Path::new("/"));
    let fail = |e: std::io::Error| format!("compacting the profile pin store: {e}");
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(fail)?;
    tmp.write_all(text.as_bytes()).map_err(fail)?;
    tmp.persist(store).map_err(|e| fail(e.error))?;
    Ok(())
}

/// What [`check`] found for one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not inside a writable path: trusted as named, not pinned.
    Outside,
    /// Pinned before with this digest.
    Same,
    /// First use: pinned now.
    Pinned,
    /// Pinned before with another digest (the old one).
    Changed(String),
}

/// The verdict for every file of `files` inside a writable path, pinning the new ones.
/// `writable` are the host paths the cell can write (resolved), for opening the store.
pub fn check(
    files: &[ProfileFile],
    store: Option<&Path>,
    writable: &[PathBuf],
) -> Result<Vec<(ProfileFile, Verdict)>, String> {
    let pinned: Vec<&ProfileFile> = files.iter().filter(|f| f.writable.is_some()).collect();
    if pinned.is_empty() {
        return Ok(files
            .iter()
            .map(|f| (f.clone(), Verdict::Outside))
            .collect());
    }
    let store = store.ok_or_else(|| {
        format!(
            "profile {} lies inside a path the cell can write, and taskcell has nowhere to pin \
             it (set HOME or XDG_STATE_HOME)",
            pinned[0].path.display()
        )
    })?;
    let known = read(store, writable)?;
    let mut out = Vec::with_capacity(files.len());
    let mut new: Vec<(&Path, &str)> = Vec::new();
    for f in files {
        let v = if f.writable.is_none() {
            Verdict::Outside
        } else {
            match known.get(&f.path) {
                Some(old) if *old == f.sha256 => Verdict::Same,
                Some(old) => Verdict::Changed(old.clone()),
                None => {
                    new.push((&f.path, &f.sha256));
                    Verdict::Pinned
                }
            }
        };
        out.push((f.clone(), v));
    }
    // A changed file refuses the run: nothing is pinned then (the next run says the same).
    if !new.is_empty() && !out.iter().any(|(_, v)| matches!(v, Verdict::Changed(_))) {
        append(store, &new, writable)?;
    }
    Ok(out)
}

/// What [`check`] would find, without pinning anything (`explain`, `run --dry-run`):
/// `Pinned` there means "not pinned yet".
pub fn status(
    files: &[ProfileFile],
    store: Option<&Path>,
    writable: &[PathBuf],
) -> Result<Vec<(ProfileFile, Verdict)>, String> {
    let known = match store {
        Some(s) if files.iter().any(|f| f.writable.is_some()) => read(s, writable)?,
        _ => BTreeMap::new(),
    };
    Ok(files
        .iter()
        .map(|f| {
            let v = match (&f.writable, known.get(&f.path)) {
                (None, _) => Verdict::Outside,
                (Some(_), Some(old)) if *old == f.sha256 => Verdict::Same,
                (Some(_), Some(old)) => Verdict::Changed(old.clone()),
                (Some(_), None) => Verdict::Pinned,
            };
            (f.clone(), v)
        })
        .collect())
}

/// The refusal for a changed profile file.
pub fn changed_message(f: &ProfileFile, old: &str) -> String {
    let shown = crate::display::clean_path(&f.path);
    let root = f
        .writable
        .as_deref()
        .map(crate::display::clean_path)
        .unwrap_or_default();
    format!(
        "profile {shown} changed since taskcell last ran it (sha256 {} -> {}), and it lies \
         inside {root}, which cells can write: a cell may have rewritten the policy of this \
         run. Read it (e.g. `git diff`); if the change is yours, run `taskcell trust {shown}`",
        &old[..old.len().min(12)],
        &f.sha256[..f.sha256.len().min(12)],
    )
}

/// `taskcell trust`: pin `files` as they are now (whether or not a cell can write them).
pub fn trust(files: &[ProfileFile], store: Option<&Path>) -> Result<(), String> {
    let store = store.ok_or("taskcell has nowhere to keep pins (set HOME or XDG_STATE_HOME)")?;
    let pins: Vec<(&Path, &str)> = files
        .iter()
        .map(|f| (f.path.as_path(), f.sha256.as_str()))
        .collect();
    append(store, &pins, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pf(path: &Path, sha: &str, writable: bool) -> ProfileFile {
        ProfileFile {
            path: path.to_path_buf(),
            sha256: sha.into(),
            writable: writable.then(|| PathBuf::from("/ws")),
        }
    }

    #[test]
    fn first_use_pins_the_same_passes_a_change_is_refused_until_trusted() {
        let d = tempfile::tempdir().unwrap();
        let store = d.path().join("state/taskcell/profile-pins.jsonl");
        let p = d.path().join("deploy.toml");
        std::fs::write(&p, "x").unwrap();
        let v = check(&[pf(&p, "aa", true)], Some(&store), &[]).unwrap();
        assert_eq!(v[0].1, Verdict::Pinned);
        let v = check(&[pf(&p, "aa", true)], Some(&store), &[]).unwrap();
        assert_eq!(v[0].1, Verdict::Same);
        let v = check(&[pf(&p, "bb", true)], Some(&store), &[]).unwrap();
        assert_eq!(v[0].1, Verdict::Changed("aa".into()));
        // Still refused: a refusal pins nothing.
        let v = check(&[pf(&p, "bb", true)], Some(&store), &[]).unwrap();
        assert_eq!(v[0].1, Verdict::Changed("aa".into()));
        trust(&[pf(&p, "bb", true)], Some(&store)).unwrap();
        let v = check(&[pf(&p, "bb", true)], Some(&store), &[]).unwrap();
        assert_eq!(v[0].1, Verdict::Same);
        let v = check(&[pf(&p, "cc", false)], Some(&store), &[]).unwrap();
        assert_eq!(v[0].1, Verdict::Outside);
    }

    #[test]
    fn status_says_what_check_would_without_pinning() {
        let d = tempfile::tempdir().unwrap();
        let store = d.path().join("pins.jsonl");
        let p = d.path().join("a.toml");
        let s = status(&[pf(&p, "aa", true)], Some(&store), &[]).unwrap();
        assert_eq!(s[0].1, Verdict::Pinned);
        assert!(!store.exists());
        check(&[pf(&p, "aa", true)], Some(&store), &[]).unwrap();
        let s = status(&[pf(&p, "aa", true), pf(&p, "x", false)], Some(&store), &[]).unwrap();
        assert_eq!(s[0].1, Verdict::Same);
        assert_eq!(s[1].1, Verdict::Outside);
        let s = status(&[pf(&p, "bb", true)], Some(&store), &[]).unwrap();
        assert_eq!(s[0].1, Verdict::Changed("aa".into()));
    }

    #[test]
    fn a_change_in_one_file_of_a_chain_pins_none_of_the_new_ones() {
        let d = tempfile::tempdir().unwrap();
        let store = d.path().join("pins.jsonl");
        let (a, b) = (d.path().join("a.toml"), d.path().join("b.toml"));
        check(&[pf(&a, "aa", true)], Some(&store), &[]).unwrap();
        let v = check(&[pf(&a, "a2", true), pf(&b, "bb", true)], Some(&store), &[]).unwrap();
        assert_eq!(v[0].1, Verdict::Changed("aa".into()));
        assert_eq!(v[1].1, Verdict::Pinned);
        assert!(!std::fs::read_to_string(&store).unwrap().contains("b.toml"));
    }

    #[test]
    fn a_store_inside_a_writable_path_or_behind_a_link_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(d.path()).unwrap();
        let store = real.join("pins.jsonl");
        let p = real.join("deploy.toml");
        let e = check(
            &[pf(&p, "aa", true)],
            Some(&store),
            std::slice::from_ref(&real),
        )
        .unwrap_err();
        assert!(e.contains("which the cell can write"), "{e}");
        std::fs::write(real.join("other"), "").unwrap();
        std::os::unix::fs::symlink(real.join("other"), &store).unwrap();
        let e = check(&[pf(&p, "aa", true)], Some(&store), &[]).unwrap_err();
        assert!(e.contains("symbolic link"), "{e}");
    }

    #[test]
    fn torn_lines_are_skipped_and_the_store_is_compacted_to_existing_files() {
        let d = tempfile::tempdir().unwrap();
        let store = d.path().join("pins.jsonl");
        let kept = d.path().join("kept.toml");
        std::fs::write(&kept, "").unwrap();
        let mut text = String::new();
        for i in 0..30_000 {
            text.push_str(&format!(
                "{{\"path\":\"/gone/{i:08}.toml\",\"sha256\":\"{:064}\"}}\n",
                0
            ));
        }
        text.push_str(&lines(&[(&kept, "aa")]).unwrap());
        text.push_str("{\"path\":\"/torn");
        std::fs::write(&store, &text).unwrap();
        assert!(text.len() as u64 > MAX_STORE_BYTES / 2);
        let n = d.path().join("new.toml");
        check(&[pf(&n, "nn", true)], Some(&store), &[]).unwrap();
        let pins = parse(&std::fs::read_to_string(&store).unwrap());
        assert_eq!(pins.len(), 2, "{pins:?}");
        assert_eq!(pins.get(&kept).map(String::as_str), Some("aa"));
        assert_eq!(pins.get(&n).map(String::as_str), Some("nn"));
    }

    #[test]
    fn the_store_follows_xdg_state_home_then_home() {
        let env = |k: &str| match k {
            "XDG_STATE_HOME" => Some("/s".to_string()),
            "HOME" => Some("/h".to_string()),
            _ => None,
        };
        assert_eq!(
            store_path(&env),
            Some(PathBuf::from("/s/taskcell/profile-pins.jsonl"))
        );
        let env = |k: &str| (k == "HOME").then(|| "/h".to_string());
        assert_eq!(
            store_path(&env),
            Some(PathBuf::from("/h/.local/state/taskcell/profile-pins.jsonl"))
        );
        assert_eq!(store_path(&|_| Some("rel".into())), None);
    }
}
