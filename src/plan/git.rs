//! Git cannot be turned into a launcher: what a writable path's repository gets protected.
//!
//! git runs code named by files of its git directory: `config` (core.fsmonitor,
//! core.hooksPath, filters, include.path, ...), `config.worktree`, `hooks/`, and it follows
//! `commondir` and `.git` *files*. A cell that may write a repository may commit, but must
//! not leave one of these for `git status` outside to run. For every directory the cell
//! may write that is a work tree (`.git` directory or file), the plan protects (binds
//! read-only) the sensitive files of its git directory, of its common directory, of every
//! submodule under `modules/` (recursively) and of every linked worktree under
//! `worktrees/`, the `.git` file itself, and the in-repository targets of `include.path`
//! and `core.hooksPath`. A linked worktree (`.git` file pointing outside the workspace)
//! gets its git directory and common directory bound writable (so `git commit` works),
//! protected the same way. What appears during the run is found after it
//! (`crate::leftover`).

use std::path::{Path, PathBuf};

use super::paths::{first_symlink, through_symlink};
use super::{normalize, Access, PathRule, PlanError};

/// The files of a git directory through which git runs code or finds other git
/// directories.
pub const SENSITIVE: &[&str] = &["config", "config.worktree", "hooks", "commondir"];

/// How deep `modules/` may nest (submodules of submodules).
const MAX_MODULE_DEPTH: usize = 8;

/// The `gitdir:` of a `.git` file, resolved against the directory holding the file.
pub fn gitdir_of_file(dotgit: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(dotgit).ok()?;
    let line = text.lines().next()?.strip_prefix("gitdir:")?.trim();
    let p = Path::new(line);
    let base = dotgit.parent()?;
    Some(normalize(&if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }))
}

/// The common directory of the git directory `g` (its `commondir` file, or `g` itself).
pub fn commondir_of(g: &Path) -> PathBuf {
    match std::fs::read_to_string(g.join("commondir")) {
        Ok(t) => {
            let p = Path::new(t.trim());
            normalize(&if p.is_absolute() {
                p.to_path_buf()
            } else {
                g.join(p)
            })
        }
        Err(_) => g.to_path_buf(),
    }
}

/// Every git directory reachable from `g`: itself, its submodules under `modules/`
/// (recursively) and its linked worktrees under `worktrees/`.
pub fn gitdirs(g: &Path) -> Vec<PathBuf> {
    let mut out = vec![g.to_path_buf()];
    modules(&g.join("modules"), 0, &mut out);
    if let Ok(rd) = std::fs::read_dir(g.join("worktrees")) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.push(e.path());
            }
        }
    }
    out
}

fn modules(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    if depth > MAX_MODULE_DEPTH {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let p = e.path();
        if p.join("HEAD").is_file() {
            // A submodule's git directory; its own submodules are below its modules/.
            out.push(p.clone());
            modules(&p.join("modules"), depth + 1, out);
        } else {
            // A submodule name with a slash (modules/a/b).
            modules(&p, depth + 1, out);
        }
    }
}

/// `include.path`, `includeIf.*.path` and `core.hooksPath` of a git config file, as
/// written (a minimal reader of git's config syntax: sections, `key = value`, quotes).
pub fn config_paths(config: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(config) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut section = String::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix('[') {
            let name = rest.split([']', ' ', '"', '.']).next().unwrap_or("");
            section = name.to_ascii_lowercase();
            // `[core] hooksPath = x` may follow on the same line.
            let Some(after) = rest.split_once(']').map(|x| x.1.trim()) else {
                continue;
            };
            if after.is_empty() {
                continue;
            }
            push_kv(&section, after, &mut out);
            continue;
        }
        push_kv(&section, line, &mut out);
    }
    out
}

fn push_kv(section: &str, line: &str, out: &mut Vec<String>) {
    let Some((k, v)) = line.split_once('=') else {
        return;
    };
    let k = k.trim().to_ascii_lowercase();
    let v = v.trim();
    let v = v
        .strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .unwrap_or(v);
    let wanted = match section {
        "include" | "includeif" => k == "path",
        "core" => k == "hookspath" || k == "fsmonitor",
        _ => false,
    };
    if wanted && !v.is_empty() && v != "true" && v != "false" {
        out.push(v.to_string());
    }
}

/// A path named in the config `config` of the git directory `g`, made absolute the way
/// git does (`~/` is the home, a relative include is relative to the config's directory,
/// a relative hooksPath to the work tree; both are taken as inside `g`'s parent here,
/// which covers both for a `.git` directory).
pub fn resolve_config_path(v: &str, config: &Path, home: &Path) -> PathBuf {
    if let Some(rest) = v.strip_prefix("~/") {
        return normalize(&home.join(rest));
    }
    let p = Path::new(v);
    if p.is_absolute() {
        return normalize(p);
    }
    normalize(&config.parent().unwrap_or(Path::new("/")).join(p))
}

/// Keys a git config written by `git init`, `git clone` or `git remote add` holds, none
/// of which makes git run a program or work elsewhere (section, key; `*` is any
/// subsection).
const HARMLESS_KEYS: &[(&str, &str)] = &[
    ("core", "repositoryformatversion"),
    ("core", "filemode"),
    ("core", "bare"),
    ("core", "logallrefupdates"),
    ("core", "ignorecase"),
    ("core", "precomposeunicode"),
    ("core", "symlinks"),
    ("extensions", "objectformat"),
    ("extensions", "refstorage"),
    ("remote", "url"),
    ("remote", "pushurl"),
    ("remote", "fetch"),
    ("branch", "remote"),
    ("branch", "merge"),
    ("branch", "rebase"),
    ("user", "name"),
    ("user", "email"),
    ("submodule", "url"),
    ("submodule", "active"),
];

/// Whether the git config `config` holds only [`HARMLESS_KEYS`] (false when it cannot be
/// read or a line is not understood).
pub fn config_is_harmless(config: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(config) else {
        return false;
    };
    let mut section = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let Some((head, after)) = rest.split_once(']') else {
                return false;
            };
            if !after.trim().is_empty() {
                return false;
            }
            section = head
                .split([' ', '"', '.'])
                .next()
                .unwrap_or("")
                .to_ascii_lowercase();
            continue;
        }
        if line.ends_with('\\') {
            return false;
        }
        let key = line
            .split('=')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if !HARMLESS_KEYS
            .iter()
            .any(|(s, k)| *s == section && *k == key)
        {
            return false;
        }
    }
    true
}

fn rule(path: PathBuf, access: Access, is_dir: bool) -> PathRule {
    PathRule {
        path,
        access,
        symlink: None,
        is_dir,
        optional: true,
    }
}

/// Add the rules that keep git from being a launcher (see the module's doc) for every
/// writable directory of `paths` that is a git work tree or a git directory.
pub fn protect(paths: &mut Vec<PathRule>, home: &Path) -> Result<(), PlanError> {
    let roots: Vec<PathBuf> = paths
        .iter()
        .filter(|r| r.access == Access::Write && r.is_dir && r.symlink.is_none())
        .map(|r| r.path.clone())
        .collect();
    let mut add: Vec<PathRule> = Vec::new();
    let mut writable = roots.clone();
    for root in &roots {
        let dotgit = root.join(".git");
        let Ok(meta) = std::fs::symlink_metadata(&dotgit) else {
            continue;
        };
        let git_dir = if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&dotgit).unwrap_or_default();
            return Err(PlanError::Other {
                msg: through_symlink("git directory", &dotgit, &dotgit, &target),
            });
        } else if meta.is_dir() {
            dotgit.clone()
        } else {
            // A linked worktree or a submodule: the `.git` file is protected itself, and
            // the git directory it names is bound (writable, so that commits work).
            add.push(rule(dotgit.clone(), Access::Protect, false));
            match gitdir_of_file(&dotgit) {
                Some(g) => g,
                None => continue,
            }
        };
        let common = commondir_of(&git_dir);
        for d in [&git_dir, &common] {
            if let Ok(Some((link, target))) = first_symlink(d) {
                if writable.iter().any(|w| link.starts_with(w)) {
                    return Err(PlanError::Other {
                        msg: through_symlink("git directory", d, &link, &target),
                    });
                }
            }
            if !d.is_dir() {
                return Err(PlanError::Other {
                    msg: format!(
                        "the git directory {} of {} does not exist (repair the worktree with `git worktree repair`)",
                        d.display(),
                        root.display()
                    ),
                });
            }
            if !writable.iter().any(|w| d.starts_with(w)) {
                add.push(rule(d.to_path_buf(), Access::Write, true));
                writable.push(d.to_path_buf());
            }
        }
        let mut dirs = gitdirs(&common);
        if !dirs.contains(&git_dir) {
            dirs.extend(gitdirs(&git_dir));
        }
        for d in dirs {
            for name in SENSITIVE {
                let p = d.join(name);
                match std::fs::symlink_metadata(&p) {
                    Ok(m) if m.file_type().is_symlink() => {
                        let target = std::fs::read_link(&p).unwrap_or_default();
                        return Err(PlanError::Other {
                            msg: through_symlink("protect", &p, &p, &target),
                        });
                    }
                    Ok(m) => add.push(rule(p, Access::Protect, m.is_dir())),
                    Err(_) => {}
                }
            }
            for v in config_paths(&d.join("config")) {
                let t = resolve_config_path(&v, &d.join("config"), home);
                for t in [t.clone(), normalize(&root.join(&v))] {
                    if !writable.iter().any(|w| t.starts_with(w)) {
                        continue;
                    }
                    if let Ok(m) = std::fs::symlink_metadata(&t) {
                        if m.file_type().is_symlink() {
                            let target = std::fs::read_link(&t).unwrap_or_default();
                            return Err(PlanError::Other {
                                msg: through_symlink("protect", &t, &t, &target),
                            });
                        }
                        add.push(rule(t, Access::Protect, m.is_dir()));
                    }
                }
            }
        }
    }
    for r in add {
        if !paths
            .iter()
            .any(|p| p.path == r.path && (p.access == r.access || p.access == Access::Hide))
        {
            super::push_rule(paths, r);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_paths_finds_includes_hooks_path_and_fsmonitor() {
        let d = tempfile::tempdir().unwrap();
        let c = d.path().join("config");
        std::fs::write(
            &c,
            "[core]\n\thooksPath = .husky\n\tfsmonitor = \"tools/fsm\"\n[include]\n\tpath = ../shared.cfg\n[includeIf \"gitdir:x\"]\n  path = ~/inc\n[user]\n\tname = path\n",
        )
        .unwrap();
        let mut got = config_paths(&c);
        got.sort();
        assert_eq!(got, vec!["../shared.cfg", ".husky", "tools/fsm", "~/inc"]);
    }

    #[test]
    fn a_config_of_git_init_or_clone_is_harmless_one_that_runs_code_is_not() {
        let d = tempfile::tempdir().unwrap();
        let c = d.path().join("config");
        std::fs::write(&c, "[core]\n\trepositoryformatversion = 0\n\tbare = false\n[remote \"origin\"]\n\turl = /x\n\tfetch = +refs/heads/*:refs/remotes/origin/*\n[branch \"main\"]\n\tremote = origin\n").unwrap();
        assert!(config_is_harmless(&c));
        for bad in [
            "[core]\n\tfsmonitor = /x\n",
            "[core]\n\thooksPath = h\n",
            "[core]\n\tworktree = /home\n",
            "[include]\n\tpath = x\n",
            "[filter \"a\"]\n\tclean = sh\n",
            "[remote \"o\"]\n\tuploadpack = sh\n",
            "[core] fsmonitor = /x\n",
        ] {
            std::fs::write(&c, bad).unwrap();
            assert!(!config_is_harmless(&c), "{bad}");
        }
    }

    #[test]
    fn gitdirs_finds_nested_submodules_and_worktrees() {
        let d = tempfile::tempdir().unwrap();
        let g = d.path();
        for p in ["modules/a/modules/b", "modules/x/y", "worktrees/w1"] {
            std::fs::create_dir_all(g.join(p)).unwrap();
        }
        for p in [
            "modules/a/HEAD",
            "modules/a/modules/b/HEAD",
            "modules/x/y/HEAD",
        ] {
            std::fs::write(g.join(p), "ref: refs/heads/main\n").unwrap();
        }
        let mut got: Vec<String> = gitdirs(g)
            .iter()
            .map(|p| p.strip_prefix(g).unwrap().display().to_string())
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                "",
                "modules/a",
                "modules/a/modules/b",
                "modules/x/y",
                "worktrees/w1"
            ]
        );
    }
}
